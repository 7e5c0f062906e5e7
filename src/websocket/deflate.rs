//! permessage-deflate (RFC 7692): the server's [`Deflate`] settings, the negotiation of
//! a client's `Sec-WebSocket-Extensions` offers against them (§5, §7.1), and the
//! per-message compressor and decompressor (§7.2) on flate2's zlib-rs backend, the one
//! that can narrow the compression window. Negotiation is a pure function; the codec
//! works on slices and vectors and does no I/O.
//!
//! The decompressor always uses a 32 KiB window: data compressed with any smaller window
//! decodes with it, so `client_max_window_bits` only matters to the client's memory.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The bytes a sync flush ends with, which RFC 7692 §7.2.1 removes from each message and
/// §7.2.2 puts back before decompressing.
const SYNC_TAIL: [u8; 4] = [0, 0, 0xFF, 0xFF];

/// Messages shorter than this go out uncompressed (RSV1 clear, allowed per message by
/// RFC 7692 §6): below it deflate rarely saves a byte and costs a compressor call.
const MIN_COMPRESSED_SIZE: usize = 64;

/// How the server uses permessage-deflate when a client offers it (RFC 7692).
///
/// The default accepts any valid offer, keeps the compression context between messages
/// in both directions (the best ratio) and compresses at zlib level 1. zlib's state is
/// made at a connection's first compressed message: about 260 KiB to compress (less
/// with a smaller `server_max_window_bits`) and 40 KiB to decompress.
///
/// ```
/// let deflate = onstream::websocket::Deflate::new()
///     .server_no_context_takeover(true)
///     .server_max_window_bits(10);
/// let opts = onstream::websocket::Options::new().deflate_with(deflate);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deflate {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: u8,
    client_max_window_bits: u8,
    level: u32,
}

impl Default for Deflate {
    fn default() -> Self {
        Deflate {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            level: 1,
        }
    }
}

impl Deflate {
    /// The defaults (see [`Deflate`]).
    pub fn new() -> Deflate {
        Deflate::default()
    }

    /// Compress each message on its own (the server keeps no window between messages),
    /// and say so in the response.
    pub fn server_no_context_takeover(mut self, yes: bool) -> Deflate {
        self.server_no_context_takeover = yes;
        self
    }

    /// Ask the client to compress each message on its own (`client_no_context_takeover`
    /// in the response, which a client must accept).
    pub fn client_no_context_takeover(mut self, yes: bool) -> Deflate {
        self.client_no_context_takeover = yes;
        self
    }

    /// The largest window the server compresses with, 8 to 15 bits (clamped). zlib
    /// cannot compress with 8 and uses 9, whose matches never reach further than 256
    /// bytes back, so the output is still valid for an 8-bit window.
    pub fn server_max_window_bits(mut self, bits: u8) -> Deflate {
        self.server_max_window_bits = bits.clamp(8, 15);
        self
    }

    /// The largest window the client may compress with, 8 to 15 bits (clamped); sent
    /// only to clients that offer `client_max_window_bits`.
    pub fn client_max_window_bits(mut self, bits: u8) -> Deflate {
        self.client_max_window_bits = bits.clamp(8, 15);
        self
    }

    /// The zlib compression level, 0 (store) to 9 (smallest, slowest); default 1.
    pub fn level(mut self, level: u32) -> Deflate {
        self.level = level.min(9);
        self
    }
}

/// What a negotiation agreed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// The `Sec-WebSocket-Extensions` value of the response.
    pub(crate) response: String,
    /// The server resets its compressor after each message.
    pub(crate) server_no_context_takeover: bool,
    /// The client resets its compressor after each message, so the server may reset
    /// its decompressor (and must, should the client rely on it: it does not matter).
    pub(crate) client_no_context_takeover: bool,
    /// The window the server compresses with.
    pub(crate) server_window_bits: u8,
    pub(crate) level: u32,
}

/// Picks the first acceptable permessage-deflate offer among the header values, in
/// order (RFC 7692 §5: an offer with an unknown, repeated or invalid parameter is
/// declined and the next one considered). `None`: no offer accepted.
pub(crate) fn negotiate<'a>(
    values: impl Iterator<Item = &'a [u8]>,
    config: &Deflate,
) -> Option<Agreed> {
    for value in values {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        for offer in value.split(',') {
            if let Some(agreed) = accept_offer(offer, config) {
                return Some(agreed);
            }
        }
    }
    None
}

/// A parameter value: a token or a quoted string (RFC 7692 §5.2 says the value is the
/// same either way); `None` when malformed.
fn unquote(value: &str) -> Option<&str> {
    let value = value.trim();
    match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(value),
    }
}

/// A window size parameter's value: 8 to 15, digits only (RFC 7692 §7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.len() > 2 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

fn accept_offer(offer: &str, config: &Deflate) -> Option<Agreed> {
    let mut parts = offer.split(';');
    if !parts
        .next()?
        .trim()
        .eq_ignore_ascii_case("permessage-deflate")
    {
        return None;
    }
    let mut server_no_context_takeover = false;
    let mut client_no_context_takeover = false;
    let mut server_max_window_bits: Option<u8> = None;
    // Offered without a value is `Some(None)`.
    let mut client_max_window_bits: Option<Option<u8>> = None;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(unquote(value)?)),
            None => (param.trim(), None),
        };
        match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() && !server_no_context_takeover => {
                server_no_context_takeover = true
            }
            "client_no_context_takeover" if value.is_none() && !client_no_context_takeover => {
                client_no_context_takeover = true
            }
            "server_max_window_bits" if server_max_window_bits.is_none() => {
                server_max_window_bits = Some(window_bits(value?)?)
            }
            "client_max_window_bits" if client_max_window_bits.is_none() => {
                client_max_window_bits = Some(match value {
                    Some(v) => Some(window_bits(v)?),
                    None => None,
                })
            }
            _ => return None,
        }
    }

    let mut response = String::from("permessage-deflate");
    // A server may always add either no-context-takeover parameter (RFC 7692 §7.1.1).
    let server_no_context_takeover =
        server_no_context_takeover || config.server_no_context_takeover;
    if server_no_context_takeover {
        response.push_str("; server_no_context_takeover");
    }
    let client_no_context_takeover =
        client_no_context_takeover || config.client_no_context_takeover;
    if client_no_context_takeover {
        response.push_str("; client_no_context_takeover");
    }
    // The client's limit on our window is answered with the window we use (§7.1.2.1);
    // without one we may still use a smaller window, silently.
    let server_window_bits = match server_max_window_bits {
        Some(offered) => {
            let bits = offered.min(config.server_max_window_bits);
            response.push_str(&format!("; server_max_window_bits={bits}"));
            bits
        }
        None => config.server_max_window_bits,
    };
    // Only a client that offered client_max_window_bits may be told a limit (§7.1.2.2).
    if let Some(offered) = client_max_window_bits {
        let bits = offered.unwrap_or(15).min(config.client_max_window_bits);
        if bits < 15 || offered.is_some() {
            response.push_str(&format!("; client_max_window_bits={bits}"));
        }
    }
    Some(Agreed {
        response,
        server_no_context_takeover,
        client_no_context_takeover,
        server_window_bits,
        level: config.level,
    })
}

/// The server's compressor: one raw deflate stream across messages, or one per message
/// with `server_no_context_takeover`.
pub(crate) struct Deflater {
    /// Made at the first message worth compressing: zlib's state is some 260 KiB, which
    /// a connection that only sends short messages never needs.
    compress: Option<Compress>,
    level: u32,
    window_bits: u8,
    reset_each_message: bool,
}

impl Deflater {
    pub(crate) fn new(agreed: &Agreed) -> Deflater {
        // zlib cannot compress with an 8-bit window; 9 bits keep matches within 256
        // bytes (see `Deflate::server_max_window_bits`).
        Deflater {
            compress: None,
            level: agreed.level,
            window_bits: agreed.server_window_bits.max(9),
            reset_each_message: agreed.server_no_context_takeover,
        }
    }

    /// Whether a message of `len` bytes is worth compressing.
    pub(crate) fn wants(&self, len: usize) -> bool {
        len >= MIN_COMPRESSED_SIZE
    }

    /// Compresses one whole message into `out` (cleared first), without the sync tail
    /// (RFC 7692 §7.2.1).
    pub(crate) fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        out.clear();
        if data.is_empty() {
            // zlib has nothing to flush after an earlier sync flush; one empty
            // fixed-Huffman block is an empty message (RFC 7692 §7.2.3.6).
            out.push(0x00);
            return Ok(());
        }
        let (level, bits) = (self.level, self.window_bits);
        let compress = self.compress.get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::new(level), false, bits)
        });
        let start = compress.total_in();
        loop {
            let consumed = (compress.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve((data.len() - consumed) / 2 + 64);
            }
            compress
                .compress_vec(&data[consumed..], out, FlushCompress::Sync)
                .map_err(std::io::Error::other)?;
            let consumed = (compress.total_in() - start) as usize;
            // Done when all input is in and the flush did not run out of room.
            if consumed == data.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&SYNC_TAIL) {
            out.truncate(out.len() - SYNC_TAIL.len());
        } else {
            return Err(std::io::Error::other("deflate output lacks its sync flush"));
        }
        if self.reset_each_message {
            compress.reset();
        }
        Ok(())
    }
}

/// Why a compressed message could not be accepted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// Its decompressed size went over the limit (close code 1009).
    TooBig,
    /// It is not valid deflate data (close code 1007).
    Corrupt,
}

/// The server's decompressor for the client's messages.
pub(crate) struct Inflater {
    /// Made at the first compressed message (about 40 KiB with its window).
    decompress: Option<Decompress>,
    reset_each_message: bool,
}

impl Inflater {
    pub(crate) fn new(agreed: &Agreed) -> Inflater {
        Inflater {
            decompress: None,
            reset_each_message: agreed.client_no_context_takeover,
        }
    }

    /// Decompresses `input` (a piece of a message's compressed payload) onto `out`,
    /// which never grows past `limit + 1` bytes: a zip bomb stops at the limit.
    pub(crate) fn push(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        let decompress = self
            .decompress
            .get_or_insert_with(|| Decompress::new(false));
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() > limit {
                    return Err(InflateError::TooBig);
                }
                // Doubling, but never past the limit: `reserve` could round up.
                let room = out.len().max(16 * 1024).min(limit + 1 - out.len());
                out.reserve_exact(room);
            }
            let (in_before, out_before) = (decompress.total_in(), out.len());
            let status = decompress
                .decompress_vec(&input[pos..], out, FlushDecompress::None)
                .map_err(|_| InflateError::Corrupt)?;
            pos += (decompress.total_in() - in_before) as usize;
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            if status == Status::StreamEnd {
                // A block with BFINAL set ends the stream; a new one may follow.
                decompress.reset(false);
                if pos == input.len() {
                    return Ok(());
                }
                continue;
            }
            let room_left = out.len() < out.capacity();
            if pos == input.len() && room_left {
                return Ok(());
            }
            if room_left
                && pos < input.len()
                && decompress.total_in() == in_before
                && out.len() == out_before
            {
                // No progress with input and room: zlib wants something else.
                return Err(InflateError::Corrupt);
            }
        }
    }

    /// Ends a message: decompresses the sync tail the sender removed (RFC 7692 §7.2.2).
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        self.push(&SYNC_TAIL, out, limit)?;
        if let (true, Some(decompress)) = (self.reset_each_message, &mut self.decompress) {
            decompress.reset(false);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(values: &[&str], config: &Deflate) -> Option<String> {
        negotiate(values.iter().map(|v| v.as_bytes()), config).map(|a| a.response)
    }

    #[test]
    fn offers_are_answered_per_rfc_7692() {
        let d = Deflate::new();
        let check = |values: &[&str], expected: Option<&str>| {
            assert_eq!(offer(values, &d).as_deref(), expected, "{values:?}");
        };
        check(&["permessage-deflate"], Some("permessage-deflate"));
        check(&["x-webkit-deflate-frame"], None);
        check(&[], None);
        check(
            &["permessage-deflate; client_max_window_bits"],
            Some("permessage-deflate"),
        );
        check(
            &["permessage-deflate; client_max_window_bits=10"],
            Some("permessage-deflate; client_max_window_bits=10"),
        );
        check(
            &["permessage-deflate; server_max_window_bits=8; client_no_context_takeover"],
            Some("permessage-deflate; client_no_context_takeover; server_max_window_bits=8"),
        );
        check(
            &["permessage-deflate;server_no_context_takeover"],
            Some("permessage-deflate; server_no_context_takeover"),
        );
        check(
            &["permessage-deflate; server_max_window_bits=\"12\""],
            Some("permessage-deflate; server_max_window_bits=12"),
        );
        // Declined offers: the next one is taken.
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=x",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; unknown",
        ] {
            check(&[bad], None);
            check(
                &[&format!(
                    "{bad}, permessage-deflate; client_no_context_takeover"
                )],
                Some("permessage-deflate; client_no_context_takeover"),
            );
        }
        check(
            &[
                "foo",
                "permessage-deflate; server_max_window_bits=9, permessage-deflate",
            ],
            Some("permessage-deflate; server_max_window_bits=9"),
        );
    }

    #[test]
    fn the_servers_settings_shape_the_answer() {
        let d = Deflate::new()
            .server_no_context_takeover(true)
            .client_no_context_takeover(true)
            .server_max_window_bits(10)
            .client_max_window_bits(11);
        assert_eq!(
            offer(&["permessage-deflate; client_max_window_bits"], &d).as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=11")
        );
        assert_eq!(
            offer(&["permessage-deflate; server_max_window_bits=12"], &d).as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10")
        );
    }

    fn round_trip(agreed: &Agreed, messages: &[Vec<u8>]) {
        let mut deflater = Deflater::new(agreed);
        let mut inflater = Inflater::new(agreed);
        let mut wire = Vec::new();
        for msg in messages {
            deflater.compress(msg, &mut wire).unwrap();
            let mut out = Vec::new();
            // Fed in small pieces, as frames arrive.
            for piece in wire.chunks(7) {
                inflater.push(piece, &mut out, 1 << 20).unwrap();
            }
            inflater.finish(&mut out, 1 << 20).unwrap();
            assert_eq!(&out, msg);
        }
    }

    #[test]
    fn messages_round_trip_with_and_without_context_takeover() {
        let text = b"the quick brown fox jumps over the lazy dog; ".repeat(200);
        let messages = vec![text.clone(), text[..500].to_vec(), Vec::new(), text];
        for (bits, reset) in [(15, false), (15, true), (8, false), (9, true), (12, false)] {
            let offered = if reset {
                format!("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits={bits}")
            } else {
                format!("permessage-deflate; server_max_window_bits={bits}")
            };
            let agreed = negotiate([offered.as_bytes()].into_iter(), &Deflate::new()).unwrap();
            round_trip(&agreed, &messages);
        }
    }

    #[test]
    fn a_zip_bomb_stops_at_the_limit() {
        let agreed = negotiate([&b"permessage-deflate"[..]].into_iter(), &Deflate::new()).unwrap();
        let mut deflater = Deflater::new(&agreed);
        let mut wire = Vec::new();
        deflater.compress(&vec![0u8; 8 << 20], &mut wire).unwrap();
        assert!(wire.len() < 256 * 1024, "{}", wire.len());
        let mut inflater = Inflater::new(&agreed);
        let mut out = Vec::new();
        assert_eq!(
            inflater.push(&wire, &mut out, 100_000),
            Err(InflateError::TooBig)
        );
        assert!(out.capacity() <= 100_001, "{}", out.capacity());
    }

    #[test]
    fn garbage_is_corrupt() {
        let agreed = negotiate([&b"permessage-deflate"[..]].into_iter(), &Deflate::new()).unwrap();
        let mut inflater = Inflater::new(&agreed);
        let mut out = Vec::new();
        let r = inflater
            .push(&[0xFF; 64], &mut out, 1 << 20)
            .and_then(|()| inflater.finish(&mut out, 1 << 20));
        assert_eq!(r, Err(InflateError::Corrupt));
    }
}
