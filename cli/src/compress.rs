//! Compression on the fly: gzip, brotli or zstd for compressible files that have no
//! precompressed sibling, when the client accepts one of them.
//!
//! The file is read and compressed one chunk at a time and each piece of output is written
//! as it comes (with the stream's backpressure), so a response holds one input chunk and the
//! encoder's window, never the whole file. The answer has no `Content-Length` (its size is
//! known only at the end) and a weak ETag per coding (`W/"…-br"`): the compressed bytes are
//! not promised to be the same from one run to the next (another encoder version), only
//! equivalent, which is what weak means (RFC 9110 §8.8.1).
//!
//! What it does not compress, and why:
//! - requests with a `Range` (answered as today, identity and 206: a range of a compressed
//!   stream that is made anew each time could not be resumed reliably);
//! - files under [`MIN_SIZE`] (the saving is smaller than the headers) and over the
//!   `--compress-max-size` cap (default 10 MiB, about a tenth of a second of gzip on one
//!   core, which covers every text asset of a web site): compressing is CPU the client
//!   makes the server spend, and the cap bounds it per response;
//! - types that are already compressed (images, video, archives, woff2) or unknown.
//!
//! Levels are moderate, chosen for throughput over ratio: gzip 6 (zlib's default), brotli 4
//! with a 1 MiB window (brotli's own advice for dynamic content is 4–6; its default 11 is
//! for static precompression and far too slow here), zstd 3 (its default).

use std::{
    fs::File,
    io::{self, Read, Write},
};

use onstream::{Headers, Stream};

use crate::{response_headers::write_head, yield_now::yield_now};

/// Files smaller than this are sent as they are.
pub const MIN_SIZE: u64 = 1024;

/// How much of the file is read and compressed per step.
const CHUNK: usize = 64 * 1024;

/// The codings we make, in our order of preference among those the client likes equally:
/// brotli compresses text best at a similar speed to gzip; zstd is faster than both.
const CODINGS: [Coding; 3] = [Coding::Brotli, Coding::Zstd, Coding::Gzip];

/// A content coding made on the fly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Brotli,
    Zstd,
}

impl Coding {
    /// The token in `Content-Encoding` and `Accept-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }
}

/// `--compress` and `--compress-max-size`.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub max_size: u64,
}

/// The coding to send a file of `len` bytes and `content_type` in, if any: the client's
/// most preferred by q-value among ours (q=0 refuses), ties going to [`CODINGS`]' order.
pub fn choose(
    settings: &Settings,
    accept_encoding: Option<&str>,
    content_type: &str,
    len: u64,
) -> Option<Coding> {
    let accept = accept_encoding?;
    if len < MIN_SIZE || len > settings.max_size || !compressible(content_type) {
        return None;
    }
    let mut best: Option<(Coding, f32)> = None;
    for coding in CODINGS {
        let q = q_value(accept, coding.token());
        if q > 0.0 && best.is_none_or(|(_, best_q)| q > best_q) {
            best = Some((coding, q));
        }
    }
    best.map(|(coding, _)| coding)
}

/// Whether a type gains from compression: text, and the structured text formats served as
/// `application/*` or `image/svg+xml`; fonts that are not already compressed.
pub fn compressible(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime.starts_with("text/")
        || mime.ends_with("+json")
        || mime.ends_with("+xml")
        || matches!(
            mime.as_str(),
            "application/json"
                | "application/javascript"
                | "application/x-javascript"
                | "application/ecmascript"
                | "application/xml"
                | "application/wasm"
                | "application/x-sh"
                | "application/toml"
                | "application/yaml"
                | "application/x-yaml"
                | "application/sql"
                | "application/graphql"
                | "application/x-ndjson"
                | "application/rtf"
                | "application/postscript"
                | "font/ttf"
                | "font/otf"
                | "application/vnd.ms-fontobject"
        )
}

/// The q-value `Accept-Encoding` gives `coding` (RFC 9110 §12.5.3): its own element's,
/// else `*`'s, else 0. `x-gzip` stands for gzip.
fn q_value(accept_encoding: &str, coding: &str) -> f32 {
    let mut star = None;
    for element in accept_encoding.split(',') {
        let mut params = element.split(';');
        let name = params.next().unwrap_or("").trim();
        let q = params
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case("q").then(|| v.trim())
            })
            .filter_map(|q| q.parse::<f32>().ok())
            .next()
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        let named = name.eq_ignore_ascii_case(coding)
            || (coding == "gzip" && name.eq_ignore_ascii_case("x-gzip"));
        if named {
            return q;
        }
        if name == "*" {
            star = Some(q);
        }
    }
    star.unwrap_or(0.0)
}

/// Sends `head` (whose status, validators and type the caller set; `Content-Encoding` is
/// added here, and no `Content-Length`), then for GET `file` compressed with `coding`,
/// chunk by chunk. Returns the compressed bytes sent.
pub async fn send(
    stream: &Stream,
    method: &str,
    mut head: Headers,
    mut file: File,
    coding: Coding,
) -> onstream::Result<u64> {
    head.append("content-encoding", coding.token());
    if method == "HEAD" {
        write_head(stream, &head, true).await?;
        return Ok(0);
    }
    write_head(stream, &head, false).await?;
    let mut encoder = Encoder::new(coding);
    let mut input = vec![0; CHUNK];
    let mut sent = 0u64;
    loop {
        let n = match file.read(&mut input) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        encoder.write_all(&input[..n])?;
        let output = encoder.take_output();
        if !output.is_empty() {
            sent += output.len() as u64;
            stream.write_chunk(output, false).await?;
        }
        // Compressing is the one CPU-heavy thing a request can make this loop do: let the
        // other connections have their turn between chunks.
        yield_now().await;
    }
    let tail = encoder.finish()?;
    sent += tail.len() as u64;
    stream.write_chunk(tail, true).await?;
    Ok(sent)
}

/// One of the three encoders, writing into a `Vec` that is emptied after every input chunk.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(coding: Coding) -> Encoder {
        match coding {
            Coding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(6),
            )),
            // 4096: brotli's own output buffer; 20: a 1 MiB window.
            Coding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                4,
                20,
            ))),
            Coding::Zstd => Encoder::Zstd(
                // Level 3 cannot be refused; an allocation failure is the only error.
                zstd::stream::write::Encoder::new(Vec::new(), 3)
                    .expect("a zstd encoder at level 3"),
            ),
        }
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Brotli(e) => e.write_all(data),
            Encoder::Zstd(e) => e.write_all(data),
        }
    }

    /// The compressed bytes produced so far and not yet taken.
    fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Brotli(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        })
    }

    /// Ends the stream; the last compressed bytes.
    fn finish(self) -> io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Brotli(e) => Ok(e.into_inner()),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ON: Settings = Settings { max_size: 10 << 20 };

    #[test]
    fn the_client_s_q_values_decide_then_our_order() {
        let html = "text/html; charset=utf-8";
        let choose = |accept| choose(&ON, Some(accept), html, 5000);
        assert_eq!(choose("gzip, deflate, br, zstd"), Some(Coding::Brotli));
        assert_eq!(choose("gzip, zstd"), Some(Coding::Zstd));
        assert_eq!(choose("gzip"), Some(Coding::Gzip));
        assert_eq!(choose("x-gzip"), Some(Coding::Gzip));
        assert_eq!(choose("br;q=0.5, gzip"), Some(Coding::Gzip));
        assert_eq!(choose("br;q=0, zstd;q=0, gzip;q=0.1"), Some(Coding::Gzip));
        assert_eq!(choose("*"), Some(Coding::Brotli));
        assert_eq!(choose("*;q=0.5, br;q=0, zstd;Q=0.9"), Some(Coding::Zstd));
        assert_eq!(choose("*;q=0"), None);
        assert_eq!(choose("gzip;q=0"), None);
        assert_eq!(choose("identity"), None);
        assert_eq!(choose("deflate"), None);
        assert_eq!(choose(""), None);
        assert_eq!(super::choose(&ON, None, html, 5000), None);
    }

    #[test]
    fn small_large_and_incompressible_files_are_sent_as_they_are() {
        let gzip = Some("gzip");
        assert_eq!(choose(&ON, gzip, "text/plain", MIN_SIZE - 1), None);
        assert_eq!(
            choose(&ON, gzip, "text/plain", MIN_SIZE),
            Some(Coding::Gzip)
        );
        assert_eq!(choose(&ON, gzip, "text/plain", (10 << 20) + 1), None);
        assert_eq!(choose(&ON, gzip, "image/png", 5000), None);
        assert_eq!(choose(&ON, gzip, "application/octet-stream", 5000), None);
        for t in [
            "application/json",
            "application/javascript; charset=utf-8",
            "image/svg+xml",
            "application/wasm",
            "application/ld+json",
            "application/atom+xml",
        ] {
            assert!(compressible(t), "{t}");
        }
        for t in ["image/jpeg", "video/mp4", "application/zip", "font/woff2"] {
            assert!(!compressible(t), "{t}");
        }
    }

    #[test]
    fn each_encoder_round_trips_chunk_by_chunk() {
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        for coding in CODINGS {
            let mut encoder = Encoder::new(coding);
            let mut out = Vec::new();
            for chunk in text.chunks(CHUNK) {
                encoder.write_all(chunk).unwrap();
                out.extend(encoder.take_output());
            }
            out.extend(encoder.finish().unwrap());
            assert!(out.len() < text.len() / 3, "{coding:?}: {}", out.len());
            let mut back = Vec::new();
            match coding {
                Coding::Gzip => {
                    flate2::read::GzDecoder::new(&out[..])
                        .read_to_end(&mut back)
                        .unwrap();
                }
                Coding::Brotli => {
                    brotli::Decompressor::new(&out[..], 4096)
                        .read_to_end(&mut back)
                        .unwrap();
                }
                Coding::Zstd => back = zstd::decode_all(&out[..]).unwrap(),
            }
            assert_eq!(back, text, "{coding:?}");
        }
    }
}
