//! `?download=tar`, `?download=tar.gz` and `?download=zip` on a directory URL: the folder
//! as an archive, made while it is sent.
//!
//! Nothing is staged: the tree is walked lazily ([`crate::walk`]), each file is read in
//! [`CHUNK`]s, and output is written as soon as a chunk of it is ready, waiting on the
//! client (`write_chunk`'s backpressure, bounded by the send timeout) before reading more.
//! Memory per download is one chunk, one open directory stream per level, the gzip
//! window for tar.gz, and for zip the central directory records (see `zip_format`).
//! Symlinks out of the root, hidden files (unless `Site::hidden`), and anything the walk
//! cannot open are left out.
//!
//! Choices:
//! - A file's size is taken when it is opened and exactly that many bytes are archived: a
//!   file that grows meanwhile is cut, one that shrinks is padded with zeros (the header
//!   has gone out already); tar and zip both need the size before the data.
//! - `?download=` on a file is ignored (the file is served), as other unknown queries
//!   are; an unknown format is 400. With `--no-listing` archives are refused (403): an
//!   archive lists the folder as much as the listing does.
//! - The archive holds the folder itself (`photos/…`); the root is named after the served
//!   directory.
//! - No validators: the archive is made anew each time (no ETag, no ranges).
//! - tar.gz is gzip level 1, at most [`MAX_GZIP_ARCHIVES_PER_WORKER`] at once per worker
//!   (503 beyond): the one format whose CPU cost grows with the folder.
//! - zip's central directory (up to `zip_format::MAX_CENTRAL` per archive) is memory the
//!   download holds until it ends, the part of it not yet sent included: all the zips of
//!   one worker hold at most [`MAX_ZIP_CENTRAL_PER_WORKER`] together, and a zip that
//!   would go over is cut with an error, so clients that stop reading just before the
//!   end of huge folders cannot add up gigabytes.

use std::{
    fs::File,
    io::{self, Read, Write},
    os::unix::ffi::OsStrExt,
    path::Path,
};

use onstream::{Headers, Stream};
use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::{
    path::Target,
    response_headers::write_head,
    site::{status_page, Sent, Site},
    tar_format,
    walk::{Kind, Walk},
    yield_now::yield_now,
    zip_format::ZipWriter,
};

/// How much of a file is read, and how much output gathered, per write.
const CHUNK: usize = 64 * 1024;

/// tar.gz downloads made at once by one worker; more get 503 with `Retry-After`. gzip
/// runs at 30–80 MB/s on a core, so a tar.gz of a large folder is many seconds of CPU
/// that one request can make the server spend: without a bound a few clients could keep
/// every worker busy compressing. tar and zip cost next to no CPU and are not bounded.
const MAX_GZIP_ARCHIVES_PER_WORKER: usize = 2;

/// The gzip level of tar.gz archives: 1, zlib's fastest, about three times the speed of
/// its default (6) on text for a 20 % larger output; an archive is made while the client
/// waits, and on a local network the CPU, not the link, would set the pace at level 6.
const GZIP_LEVEL: u32 = 1;

/// The zip central directories one worker keeps at once, all its downloads together.
const MAX_ZIP_CENTRAL_PER_WORKER: usize = 256 << 20;

thread_local! {
    /// tar.gz downloads in progress on this worker's thread.
    static GZIP_ARCHIVES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Bytes of zip central directory held by this worker's downloads.
    static ZIP_CENTRAL_HELD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// One zip download's share of `ZIP_CENTRAL_HELD`, given back when the download ends
/// (also when its handler is dropped midway).
#[derive(Default)]
struct ZipCentralHeld(usize);

impl ZipCentralHeld {
    /// Brings this download's share to `len` bytes, unless the worker's total would pass
    /// `budget`.
    fn track(&mut self, len: usize, budget: usize) -> io::Result<()> {
        ZIP_CENTRAL_HELD.with(|held| {
            let total = held.get() - self.0 + len;
            if len > self.0 && total > budget {
                return Err(io::Error::other(
                    "zip: the server holds too many zip directories at once (retry, or use tar)",
                ));
            }
            held.set(total);
            self.0 = len;
            Ok(())
        })
    }
}

impl Drop for ZipCentralHeld {
    fn drop(&mut self) {
        ZIP_CENTRAL_HELD.with(|held| held.set(held.get() - self.0));
    }
}

/// One tar.gz download counted in `GZIP_ARCHIVES` while it lives (also when the handler
/// is dropped midway, e.g. the client went away).
struct GzipSlot;

impl GzipSlot {
    fn take() -> Option<GzipSlot> {
        GZIP_ARCHIVES.with(|n| {
            (n.get() < MAX_GZIP_ARCHIVES_PER_WORKER).then(|| {
                n.set(n.get() + 1);
                GzipSlot
            })
        })
    }
}

impl Drop for GzipSlot {
    fn drop(&mut self) {
        GZIP_ARCHIVES.with(|n| n.set(n.get() - 1));
    }
}

/// The links on a listing page (relative: they keep the directory's URL).
pub const LISTING_LINKS: &str = "<p class=\"n\">Download this folder: \
     <a download href=\"?download=zip\">zip</a> \
     <a download href=\"?download=tar.gz\">tar.gz</a> \
     <a download href=\"?download=tar\">tar</a></p>\n";

/// An archive format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Tar,
    TarGz,
    Zip,
}

impl Format {
    fn extension(self) -> &'static str {
        match self {
            Format::Tar => "tar",
            Format::TarGz => "tar.gz",
            Format::Zip => "zip",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Tar => "application/x-tar",
            Format::TarGz => "application/gzip",
            Format::Zip => "application/zip",
        }
    }
}

/// The `download` parameter of a request target's query: `None` when absent, `Some(Err)`
/// for an unknown format.
pub fn requested(target: &str) -> Option<Result<Format, ()>> {
    let (_, query) = target.split_once('?')?;
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("download="))?;
    Some(match value {
        "tar" => Ok(Format::Tar),
        "tar.gz" | "tgz" => Ok(Format::TarGz),
        "zip" => Ok(Format::Zip),
        _ => Err(()),
    })
}

/// Answers `?download=` on the directory `target` (its URL ends with `/`).
pub async fn respond(
    site: &Site,
    stream: &Stream,
    method: &str,
    target: &Target,
    format: Result<Format, ()>,
) -> onstream::Result<Sent> {
    let Ok(format) = format else {
        return status_page(stream, method, 400, &[]).await;
    };
    if !site.listing {
        return status_page(stream, method, 403, &[]).await;
    }
    // Opened before the head goes out, so an unreadable folder is a clean 403.
    let walk = match Walk::new(&site.root, &target.relative, site.browse.hidden) {
        Ok(walk) => walk,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return status_page(stream, method, 404, &[]).await
        }
        Err(_) => return status_page(stream, method, 403, &[]).await,
    };
    let _slot = match format {
        Format::TarGz if method != "HEAD" => match GzipSlot::take() {
            Some(slot) => Some(slot),
            None => return status_page(stream, method, 503, &[("retry-after", "10")]).await,
        },
        _ => None,
    };
    let folder = folder_name(site.root.path(), &target.relative);
    let mut head = Headers::new();
    head.append(":status", "200");
    head.append("content-type", format.content_type());
    head.append(
        "content-disposition",
        content_disposition(&format!("{folder}.{}", format.extension())),
    );
    if method == "HEAD" {
        write_head(stream, &head, true).await?;
        return Ok(Sent {
            status: 200,
            bytes: 0,
        });
    }
    write_head(stream, &head, false).await?;
    let mut producer = Producer::new(walk, format, folder.into_bytes());
    let mut bytes = 0u64;
    loop {
        let (output, done) = producer.step()?;
        bytes += output.len() as u64;
        if done {
            stream.write_chunk(output, true).await?;
            return Ok(Sent { status: 200, bytes });
        }
        if !output.is_empty() {
            stream.write_chunk(output, false).await?;
        }
        yield_now().await;
    }
}

/// The archive's (and its top folder's) name: the directory's own name, the served
/// directory's for the root.
fn folder_name(root: &Path, relative: &Path) -> String {
    let dir = if relative.as_os_str().is_empty() {
        root
    } else {
        relative
    };
    dir.file_name()
        .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "root".to_owned())
}

/// RFC 6266 `attachment` with an ASCII `filename` fallback and the exact UTF-8 name in
/// `filename*` (RFC 8187).
pub fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if !matches!(c, '"' | '\\' | '%') => c,
            _ => '_',
        })
        .collect();
    format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
        percent_encode(name.as_bytes(), ATTR_CHAR)
    )
}

/// RFC 8187 `attr-char`: what `filename*` leaves unescaped.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// Where the archive's output goes before it is sent: as is, or through gzip.
enum Sink {
    Plain(Vec<u8>),
    Gzip(Box<flate2::write::GzEncoder<Vec<u8>>>),
}

impl Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain(out) => {
                out.extend_from_slice(data);
                Ok(())
            }
            Sink::Gzip(e) => e.write_all(data),
        }
    }

    fn buffered(&self) -> usize {
        match self {
            Sink::Plain(out) => out.len(),
            Sink::Gzip(e) => e.get_ref().len(),
        }
    }

    fn take(&mut self) -> Vec<u8> {
        std::mem::take(match self {
            Sink::Plain(out) => out,
            Sink::Gzip(e) => e.get_mut(),
        })
    }

    fn finish(self) -> io::Result<Vec<u8>> {
        match self {
            Sink::Plain(out) => Ok(out),
            Sink::Gzip(e) => e.finish(),
        }
    }
}

/// The file whose data is being archived.
struct Current {
    file: File,
    /// Bytes still to archive.
    left: u64,
    size: u64,
    crc: crc32fast::Hasher,
}

/// Makes the archive one step at a time.
struct Producer<'a> {
    walk: Walk<'a>,
    format: Format,
    /// The folder's name: every entry's name starts with it and `/`.
    prefix: Vec<u8>,
    sink: Option<Sink>,
    zip: ZipWriter,
    /// The worker-wide count of `zip`'s central directory, kept while it is sent too.
    zip_held: ZipCentralHeld,
    current: Option<Current>,
    /// Whether the top folder's own entry went out.
    started: bool,
    /// The archive's end (tar's zero blocks, zip's central directory and end records)
    /// once the walk is over, and how much of it went out.
    tail: Option<(Vec<u8>, usize)>,
    buf: Vec<u8>,
}

impl<'a> Producer<'a> {
    fn new(walk: Walk<'a>, format: Format, prefix: Vec<u8>) -> Producer<'a> {
        let sink = match format {
            Format::TarGz => Sink::Gzip(Box::new(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(GZIP_LEVEL),
            ))),
            Format::Tar | Format::Zip => Sink::Plain(Vec::new()),
        };
        Producer {
            walk,
            format,
            prefix,
            sink: Some(sink),
            zip: ZipWriter::new(),
            zip_held: ZipCentralHeld::default(),
            current: None,
            started: false,
            tail: None,
            buf: vec![0; CHUNK],
        }
    }

    /// The next piece of output (possibly empty: gzip may hold it) and whether it is the
    /// last. Reads at most a bounded amount of input per step.
    fn step(&mut self) -> io::Result<(Vec<u8>, bool)> {
        // Counted once per step (a step adds a bounded number of entries); after the
        // walk the directory has moved into `tail` and keeps its last count.
        if self.tail.is_none() {
            self.zip_held
                .track(self.zip.central_len(), MAX_ZIP_CENTRAL_PER_WORKER)?;
        }
        let mut input = 0usize;
        while self.sink().buffered() < CHUNK && input < 16 * CHUNK {
            if let Some(n) = self.file_data()? {
                input += n.max(1);
                continue;
            }
            match self.walk.next() {
                Some(item) if !self.started => {
                    self.top()?;
                    self.entry(item)?;
                }
                Some(item) => self.entry(item)?,
                None if !self.started => self.top()?,
                None => {
                    if self.tail.is_none() {
                        let end = match self.format {
                            Format::Zip => std::mem::take(&mut self.zip).finish(),
                            Format::Tar | Format::TarGz => tar_format::END.to_vec(),
                        };
                        if self.format == Format::Zip {
                            self.zip_held.track(end.len(), MAX_ZIP_CENTRAL_PER_WORKER)?;
                        }
                        self.tail = Some((end, 0));
                    }
                    let tail = self.tail.as_mut().expect("set just above");
                    // The zip's central directory can be tens of MiB: it goes out a
                    // chunk per step like the rest, never copied whole into the sink.
                    let (end, sent) = (&tail.0, tail.1);
                    let piece = end[sent..].len().min(CHUNK);
                    let piece = end[sent..sent + piece].to_vec();
                    tail.1 += piece.len();
                    let last = tail.1 == tail.0.len();
                    self.sink().write(&piece)?;
                    if last {
                        let sink = self.sink.take().expect("the sink is there until the end");
                        return Ok((sink.finish()?, true));
                    }
                }
            }
            input += 512;
        }
        Ok((self.sink().take(), false))
    }

    fn sink(&mut self) -> &mut Sink {
        self.sink.as_mut().expect("the sink is there until the end")
    }

    /// The top folder's own entry.
    fn top(&mut self) -> io::Result<()> {
        self.started = true;
        let mut name = self.prefix.clone();
        name.push(b'/');
        self.header(&name, None, 0, 0o755)
    }

    fn entry(&mut self, item: crate::walk::Item) -> io::Result<()> {
        let mut name = self.prefix.clone();
        name.push(b'/');
        name.extend_from_slice(item.path.as_os_str().as_bytes());
        match item.kind {
            Kind::Dir => {
                name.push(b'/');
                self.header(&name, None, item.mtime, item.mode)
            }
            Kind::File { file, size } => {
                self.header(&name, Some(size), item.mtime, item.mode)?;
                self.current = Some(Current {
                    file,
                    left: size,
                    size,
                    crc: crc32fast::Hasher::new(),
                });
                Ok(())
            }
        }
    }

    /// A directory's (`size: None`) or a file's header.
    fn header(&mut self, name: &[u8], size: Option<u64>, mtime: u64, mode: u32) -> io::Result<()> {
        let bytes = match (self.format, size) {
            (Format::Zip, None) => self.zip.dir(name, mtime, mode)?,
            (Format::Zip, Some(size)) => self.zip.file(name, size, mtime, mode),
            (_, None) => tar_format::header(name, true, 0, mtime, mode),
            (_, Some(size)) => tar_format::header(name, false, size, mtime, mode),
        };
        self.sink().write(&bytes)
    }

    /// Archives the next chunk of the current file: `Some(bytes)` while there is one,
    /// `None` when no file is being archived. A file's end writes its padding (tar) or
    /// data descriptor (zip).
    fn file_data(&mut self) -> io::Result<Option<usize>> {
        let Some(current) = self.current.as_mut() else {
            return Ok(None);
        };
        if current.left == 0 {
            let current = self.current.take().expect("checked above");
            let end = match self.format {
                Format::Zip => self.zip.file_end(current.crc.finalize())?,
                Format::Tar | Format::TarGz => vec![0; tar_format::padding(current.size)],
            };
            self.sink().write(&end)?;
            return Ok(Some(0));
        }
        let want = current.left.min(CHUNK as u64) as usize;
        let n = match current.file.read(&mut self.buf[..want]) {
            Ok(0) => {
                // The file shrank since its header went out: zeros keep the archive whole.
                self.buf[..want].fill(0);
                want
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        current.left -= n as u64;
        current.crc.update(&self.buf[..n]);
        let data = std::mem::take(&mut self.buf);
        let result = self.sink().write(&data[..n]);
        self.buf = data;
        result.map(|()| Some(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every zip of a worker counts against one budget, growing and shrinking as each
    /// download's directory does, and a download's share goes back when it ends.
    #[test]
    fn zip_directories_share_one_budget_per_worker() {
        let held = || ZIP_CENTRAL_HELD.with(|h| h.get());
        let mut a = ZipCentralHeld::default();
        let mut b = ZipCentralHeld::default();
        a.track(600, 1000).unwrap();
        b.track(300, 1000).unwrap();
        assert_eq!(held(), 900);
        let err = b.track(500, 1000).unwrap_err();
        assert!(
            err.to_string().contains("too many zip directories"),
            "{err}"
        );
        assert_eq!(held(), 900, "a refused growth takes nothing");
        // Not growing is never refused, even over a budget lowered meanwhile.
        b.track(300, 100).unwrap();
        drop(a);
        assert_eq!(held(), 300);
        b.track(1000, 1000).unwrap();
        drop(b);
        assert_eq!(held(), 0);
    }

    #[test]
    fn the_download_parameter_names_the_format() {
        assert_eq!(requested("/d/?download=zip"), Some(Ok(Format::Zip)));
        assert_eq!(
            requested("/d/?a=1&download=tar.gz"),
            Some(Ok(Format::TarGz))
        );
        assert_eq!(requested("/d/?download=tar"), Some(Ok(Format::Tar)));
        assert_eq!(requested("/d/?download=rar"), Some(Err(())));
        assert_eq!(requested("/d/?nodownload=zip"), None);
        assert_eq!(requested("/d/"), None);
    }

    #[test]
    fn content_disposition_has_an_ascii_fallback_and_the_exact_name() {
        assert_eq!(
            content_disposition("photos.zip"),
            "attachment; filename=\"photos.zip\"; filename*=UTF-8''photos.zip"
        );
        assert_eq!(
            content_disposition("ünï \"q\".tar"),
            "attachment; filename=\"_n_ _q_.tar\"; filename*=UTF-8''%C3%BCn%C3%AF%20%22q%22.tar"
        );
    }

    #[test]
    fn folders_are_named_after_themselves_and_the_root_after_its_directory() {
        assert_eq!(folder_name(Path::new("/srv/site"), Path::new("")), "site");
        assert_eq!(
            folder_name(Path::new("/srv/site"), Path::new("a/photos")),
            "photos"
        );
        assert_eq!(folder_name(Path::new("/"), Path::new("")), "root");
    }
}
