//! Header compression (RFC 7541) for the own engine.
//!
//! Decoding is `loona-hpack`'s decoder (a maintained fork of the `hpack` crate): it keeps
//! the dynamic table only — one small struct and the entries the client asked us to
//! index — so an idle connection holds its table and nothing else, and it refuses a table
//! size update above what we allowed. What it lacks is a bound on the decoded list, which
//! `Decoder::decode` adds (RFC 9113 §6.5.2's SETTINGS_MAX_HEADER_LIST_SIZE, counted as
//! RFC 7541 §4.1 counts entries: name + value + 32).
//!
//! Encoding is ours and stateless on purpose: fields are sent as static-table indexes
//! or literals *without indexing* (Huffman-coded when that is shorter, `huffman.rs`), so
//! the server keeps no encoder table per connection (the client's SETTINGS_HEADER_TABLE_SIZE only bounds what we may
//! use, and using nothing is always allowed). Responses are a few short fields; the
//! bytes saved by a dynamic table would cost memory on every idle connection.

use std::{borrow::Cow, cell::RefCell};

use super::huffman;

/// SETTINGS_HEADER_TABLE_SIZE as the protocol's default: we never announce another.
pub(crate) const TABLE_SIZE: usize = 4096;

/// Why a header block could not be used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The block is not valid HPACK: the table state is lost, a connection error
    /// (COMPRESSION_ERROR, RFC 9113 §4.3).
    Compression,
    /// The decoded list is larger than allowed (its decoded size); the table was still
    /// updated.
    TooLarge(usize),
}

/// The request direction's decoding context: one per connection.
pub(crate) struct Decoder {
    inner: loona_hpack::Decoder<'static>,
}

impl Decoder {
    pub(crate) fn new() -> Decoder {
        let mut inner = loona_hpack::Decoder::new();
        inner.set_max_allowed_table_size(TABLE_SIZE);
        Decoder { inner }
    }

    /// Decodes one complete header block, handing each field to `field`; fields past
    /// `max_list` bytes are not handed on, but the block is decoded to its end so that the
    /// table stays in step with the client's.
    pub(crate) fn decode(
        &mut self,
        block: &[u8],
        max_list: usize,
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), DecodeError> {
        let mut size = 0usize;
        let mut too_large = false;
        self.inner
            .decode_with_cb(block, |name: Cow<'_, [u8]>, value: Cow<'_, [u8]>| {
                size = size.saturating_add(name.len() + value.len() + 32);
                if size > max_list {
                    too_large = true;
                } else {
                    field(&name, &value);
                }
            })
            .map_err(|_| DecodeError::Compression)?;
        if too_large {
            return Err(DecodeError::TooLarge(size));
        }
        Ok(())
    }
}

/// Encodes one field onto `out`: a static-table index when the whole field is there, else
/// a literal without indexing (never-indexed for sensitive fields, RFC 7541 §6.2.3) whose
/// name is a static index when it can be.
pub(crate) fn encode(out: &mut Vec<u8>, name: &[u8], value: &[u8], sensitive: bool) {
    let mut name_idx = 0;
    for (i, (n, v)) in STATIC_TABLE.iter().enumerate() {
        if n.as_bytes() == name {
            if v.as_bytes() == value && !sensitive && !v.is_empty() {
                encode_int(out, 0x80, 7, i + 1);
                return;
            }
            if name_idx == 0 {
                name_idx = i + 1;
            }
        }
    }
    let first = if sensitive { 0x10 } else { 0x00 };
    encode_int(out, first, 4, name_idx);
    if name_idx == 0 {
        encode_str(out, name);
    }
    encode_str(out, value);
}

/// `:status` alone, the field every response starts with: the static table has the
/// common ones (RFC 7541 Appendix A, indexes 8 to 14).
pub(crate) fn encode_status(out: &mut Vec<u8>, status: u16) {
    let idx = match status {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => {
            let mut digits = itoa::Buffer::new();
            encode_int(out, 0x00, 4, 8);
            encode_str(out, digits.format(status).as_bytes());
            return;
        }
    };
    encode_int(out, 0x80, 7, idx);
}

/// A string literal (RFC 7541 §5.2): Huffman-coded when that is shorter.
fn encode_str(out: &mut Vec<u8>, s: &[u8]) {
    if s.len() < 127 {
        // One pass: coded after a one-byte length (the coded length is shorter still),
        // kept if shorter, else replaced by the plain string.
        let start = out.len();
        out.push(0);
        huffman::encode(out, s);
        let coded = out.len() - start - 1;
        if coded < s.len() {
            out[start] = 0x80 | coded as u8;
        } else {
            out.truncate(start);
            out.push(s.len() as u8);
            out.extend_from_slice(s);
        }
        return;
    }
    let coded = huffman::encoded_len(s);
    if coded < s.len() {
        encode_int(out, 0x80, 7, coded);
        huffman::encode(out, s);
    } else {
        encode_int(out, 0x00, 7, s.len());
        out.extend_from_slice(s);
    }
}

thread_local! {
    /// The `date` field as last encoded, with the date it encodes: it changes once a
    /// second, and every response carries it.
    static DATE_FIELD: RefCell<(crate::date::HttpDate, Vec<u8>)> =
        const { RefCell::new(([0; 29], Vec::new())) };
}

/// The `date` field with the current date (`date.rs`), encoded once per second.
pub(crate) fn encode_date(out: &mut Vec<u8>) {
    let date = crate::date::now();
    DATE_FIELD.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != date || cached.1.is_empty() {
            cached.1.clear();
            encode(&mut cached.1, b"date", &date, false);
            cached.0 = date;
        }
        out.extend_from_slice(&cached.1);
    });
}

/// RFC 7541 §5.1: an integer in an `n`-bit prefix after the `first` bits.
fn encode_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(fields: &[(&str, &str, bool)]) -> Vec<(String, String)> {
        let mut block = Vec::new();
        for (n, v, s) in fields {
            encode(&mut block, n.as_bytes(), v.as_bytes(), *s);
        }
        let mut got = Vec::new();
        Decoder::new()
            .decode(&block, usize::MAX, |n, v| {
                got.push((
                    String::from_utf8(n.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                ))
            })
            .unwrap();
        got
    }

    #[test]
    fn encoded_fields_decode_to_themselves() {
        let fields = [
            (":status", "200", false),
            ("content-type", "text/plain", false),
            ("x-long", &"a".repeat(300)[..], false),
            ("set-cookie", "id=1", true),
            ("accept-encoding", "gzip, deflate", false),
        ];
        let want: Vec<_> = fields
            .iter()
            .map(|(n, v, _)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(round_trip(&fields), want);
    }

    #[test]
    fn every_status_encodes() {
        for status in [200, 204, 206, 304, 400, 404, 500, 103, 431, 503] {
            let mut block = Vec::new();
            encode_status(&mut block, status);
            let mut got = Vec::new();
            Decoder::new()
                .decode(&block, usize::MAX, |n, v| {
                    got.push((n.to_vec(), v.to_vec()))
                })
                .unwrap();
            assert_eq!(
                got,
                vec![(b":status".to_vec(), status.to_string().into_bytes())]
            );
        }
    }

    #[test]
    fn a_list_over_the_bound_is_refused_but_the_table_kept() {
        let mut d = Decoder::new();
        // Literal with incremental indexing, new name "a", value "b".
        let block = [0x40, 1, b'a', 1, b'b'];
        assert_eq!(
            d.decode(&block, 10, |_, _| {}),
            Err(DecodeError::TooLarge(34))
        );
        // Index 62, the entry just added, still decodes.
        let mut got = Vec::new();
        d.decode(&[0x80 | 62], 100, |n, v| got.push((n.to_vec(), v.to_vec())))
            .unwrap();
        assert_eq!(got, vec![(b"a".to_vec(), b"b".to_vec())]);
    }

    #[test]
    fn garbage_is_a_compression_error() {
        let mut d = Decoder::new();
        assert_eq!(
            d.decode(&[0x80 | 70], 100, |_, _| {}),
            Err(DecodeError::Compression)
        );
    }
}
