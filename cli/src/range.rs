//! Byte ranges (RFC 9110 §14): what a `Range` header asks of a representation, the
//! `Content-Range` of each answered part, and the framing of a `multipart/byteranges` body.
//!
//! This module only computes: it reads no file and writes no response. It does not look at
//! `If-Range` either (see `conditional.rs`); the caller decides whether a range may be
//! honoured at all, then asks here which bytes.
//!
//! Where RFC 9110 lets a server choose, the choices follow nginx: a header that does not parse
//! is ignored rather than rejected (§14.2 allows either), and a request whose ranges would
//! cost more to answer than the whole representation is answered in full.

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hash, Hasher},
    ops::Range,
    sync::atomic::{AtomicU64, Ordering},
    time::SystemTime,
};

/// The most ranges one request may ask for before the header is ignored. Many tiny ranges
/// make a response mostly part heads, and answering them costs a seek each (RFC 9110 §14.2
/// lets a server ignore such a set); 100 is far above what real clients (download
/// resumers, PDF and media readers) send.
const MAX_RANGES: usize = 100;

/// What a `Range` header asks of a representation of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranges {
    /// Serve the whole representation with 200: no header, a unit other than `bytes`, a
    /// syntax error (RFC 9110 §14.2: a server MAY ignore the header), or a set of ranges not
    /// worth honouring (more than `MAX_RANGES`, or overlapping beyond `len` bytes in total).
    Full,
    /// 206: one or more satisfiable ranges, clamped to the representation, in request order
    /// (half-open `start..end`, never empty, `end <= len`).
    Satisfiable(Vec<Range<u64>>),
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// What the `Range` header `header` asks of a representation of `len` bytes.
pub fn parse(header: &str, len: u64) -> Ranges {
    let Some((unit, set)) = header.trim_matches(is_ows).split_once('=') else {
        return Ranges::Full;
    };
    if !unit.eq_ignore_ascii_case("bytes") {
        return Ranges::Full;
    }

    let mut ranges = Vec::new();
    let mut n_specs = 0;
    // RFC 9110 §5.6.1: a recipient accepts empty list elements, so "bytes=0-1,,2-3" is two
    // ranges; only a set with no element at all is a syntax error.
    for spec in set.split(',').map(|spec| spec.trim_matches(is_ows)) {
        if spec.is_empty() {
            continue;
        }
        n_specs += 1;
        if n_specs > MAX_RANGES {
            return Ranges::Full;
        }
        let Some(spec) = RangeSpec::parse(spec) else {
            return Ranges::Full;
        };
        if let Some(range) = spec.resolve(len) {
            ranges.push(range);
        }
    }
    if n_specs == 0 {
        return Ranges::Full;
    }
    if ranges.is_empty() {
        return Ranges::Unsatisfiable;
    }

    // Ranges totalling more than the representation must overlap; asking for the same bytes
    // again and again is a known amplification attack (CVE-2011-3192), so answer once, in full.
    let total = ranges.iter().try_fold(0u64, |total, range| {
        total.checked_add(range.end - range.start)
    });
    if !matches!(total, Some(total) if total <= len) {
        return Ranges::Full;
    }
    Ranges::Satisfiable(ranges)
}

/// `bytes START-LAST/LEN` for a part (LAST inclusive), the value of its `Content-Range`.
///
/// `range` must be one that `parse` returned: non-empty and within `len`.
pub fn content_range(range: &Range<u64>, len: u64) -> String {
    debug_assert!(range.start < range.end && range.end <= len);
    format!("bytes {}-{}/{}", range.start, range.end - 1, len)
}

/// A multipart/byteranges body (RFC 9110 §14.6): the parts' heads and ranges, and the exact
/// Content-Length.
///
/// The body is, in order, each part's `head` followed by the bytes of its `range`, then
/// `tail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multipart {
    /// The response's `Content-Type`: `multipart/byteranges; boundary=BOUNDARY`.
    pub content_type: String,
    /// The parts, in the order of the ranges given to `multipart`.
    pub parts: Vec<Part>,
    /// The close delimiter, `\r\n--BOUNDARY--\r\n`, sent after the last part's bytes.
    pub tail: String,
    /// The exact length of the whole body: every head, every range and the tail.
    pub content_length: u64,
}

/// One part of a `Multipart` body: its head, then the representation's bytes in `range`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The delimiter and the part's header section, ending with the blank line:
    /// `\r\n--BOUNDARY\r\nContent-Type: T\r\nContent-Range: bytes a-b/len\r\n\r\n`. The first
    /// part's head has no leading CRLF, and `Content-Type` is left out when unknown.
    pub head: String,
    /// The bytes of the representation this part carries.
    pub range: Range<u64>,
}

/// The framing of a multipart/byteranges body carrying `ranges` of a representation of `len`
/// bytes whose media type is `content_type`.
pub fn multipart(ranges: &[Range<u64>], len: u64, content_type: Option<&str>) -> Multipart {
    let boundary = new_boundary();
    let parts: Vec<Part> = ranges
        .iter()
        .enumerate()
        .map(|(part_idx, range)| {
            // RFC 2046 §5.1.1: the CRLF before a delimiter belongs to the delimiter, and the
            // first one may be left out since nothing (no preamble) precedes it.
            let crlf = if part_idx == 0 { "" } else { "\r\n" };
            let content_type = content_type
                .map(|content_type| format!("Content-Type: {content_type}\r\n"))
                .unwrap_or_default();
            let content_range = content_range(range, len);
            Part {
                head: format!(
                    "{crlf}--{boundary}\r\n{content_type}Content-Range: {content_range}\r\n\r\n"
                ),
                range: range.clone(),
            }
        })
        .collect();
    let tail = format!("\r\n--{boundary}--\r\n");
    let content_length = parts
        .iter()
        .map(|part| part.head.len() as u64 + (part.range.end - part.range.start))
        .sum::<u64>()
        + tail.len() as u64;
    Multipart {
        content_type: format!("multipart/byteranges; boundary={boundary}"),
        parts,
        tail,
        content_length,
    }
}

/// One range-spec of RFC 9110 §14.1.1, parsed but not yet held against a length.
#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    /// `first-last` (inclusive) or, without `last`, `first-`: from `first` to the end.
    Int { first: u64, last: Option<u64> },
    /// `-length`: the final `length` bytes.
    Suffix { length: u64 },
}

impl RangeSpec {
    /// The spec in `spec` (already trimmed), or `None` if it is not valid syntax: no `-`,
    /// a position that is not all digits or overflows, `-` alone, or `last < first`
    /// (RFC 9110 §14.1.1 calls that invalid, unlike a range past the end).
    fn parse(spec: &str) -> Option<RangeSpec> {
        let (first, last) = spec.split_once('-')?;
        if first.is_empty() {
            return Some(RangeSpec::Suffix {
                length: parse_position(last)?,
            });
        }
        let first = parse_position(first)?;
        let last = match last {
            "" => None,
            last => {
                let last = parse_position(last)?;
                if last < first {
                    return None;
                }
                Some(last)
            }
        };
        Some(RangeSpec::Int { first, last })
    }

    /// The bytes this spec selects of a representation of `len` bytes, or `None` if it is
    /// unsatisfiable: starting at or past the end, or a suffix of zero bytes (RFC 9110
    /// §14.1.1). An empty representation has no satisfiable range at all: a suffix of it
    /// would be empty too, so nginx answers 416 and so does this.
    fn resolve(&self, len: u64) -> Option<Range<u64>> {
        let range = match *self {
            RangeSpec::Int { first, last } => {
                // `last` is clamped to the final byte; `saturating_add` keeps
                // `bytes=0-18446744073709551615` from overflowing.
                let end = last.map_or(len, |last| last.saturating_add(1).min(len));
                first..end
            }
            RangeSpec::Suffix { length } => len.saturating_sub(length)..len,
        };
        Some(range).filter(|range| range.start < range.end)
    }
}

/// A first-pos, last-pos or suffix-length: `1*DIGIT`, which must fit in a `u64`.
/// (`u64::from_str` alone would also take a leading `+`.)
fn parse_position(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Optional whitespace (RFC 9110 §5.6.3): spaces and horizontal tabs.
fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// A fresh multipart boundary: 16 hex digits of a keyed hash of the time and a counter, then
/// the counter itself in 8 or more hex digits.
///
/// A boundary must not occur in the parts' bytes (RFC 2046 §5.1.1). A fixed or per-file one
/// could be planted in a file by whoever can write it, to forge parts in the responses of
/// others; this one is unique within the process (the counter) and not guessable from
/// outside it (std's `RandomState` is seeded randomly per process). That is not
/// cryptographic, and needs not be: 64 unguessable bits against a single request.
fn new_boundary() -> String {
    static N_BOUNDARIES: AtomicU64 = AtomicU64::new(0);
    let counter = N_BOUNDARIES.fetch_add(1, Ordering::Relaxed);
    let mut hasher = RandomState::new().build_hasher();
    SystemTime::now().hash(&mut hasher);
    counter.hash(&mut hasher);
    format!("{:016x}{counter:08x}", hasher.finish())
}

#[cfg(test)]
// A one-range slice is what a single-part request is, not a mistyped range.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    fn check(header: &str, len: u64, expected: Ranges) {
        assert_eq!(parse(header, len), expected, "{header:?} of {len} bytes");
    }

    fn one(range: Range<u64>) -> Ranges {
        Ranges::Satisfiable(vec![range])
    }

    fn satisfiable(ranges: &[Range<u64>]) -> Ranges {
        Ranges::Satisfiable(ranges.to_vec())
    }

    #[test]
    fn the_three_forms_of_range_spec() {
        check("bytes=0-499", 10_000, one(0..500));
        check("bytes=500-999", 10_000, one(500..1000));
        check("bytes=9500-", 10_000, one(9500..10_000));
        check("bytes=-500", 10_000, one(9500..10_000));
        check("bytes=0-0", 10_000, one(0..1));
        check("bytes=-1", 10_000, one(9999..10_000));
        check("bytes=0-", 10_000, one(0..10_000));
    }

    #[test]
    fn unit_is_case_insensitive() {
        check("Bytes=0-1", 10, one(0..2));
        check("BYTES=0-1", 10, one(0..2));
    }

    #[test]
    fn other_units_are_ignored() {
        check("items=0-1", 10, Ranges::Full);
        check("byte=0-1", 10, Ranges::Full);
        check("bytesx=0-1", 10, Ranges::Full);
        check("=0-1", 10, Ranges::Full);
        check("0-1", 10, Ranges::Full);
        check("", 10, Ranges::Full);
    }

    #[test]
    fn several_ranges_keep_request_order() {
        check("bytes=5-6,0-1", 10, satisfiable(&[5..7, 0..2]));
        check("bytes=0-1,-2,4-5", 10, satisfiable(&[0..2, 8..10, 4..6]));
    }

    #[test]
    fn whitespace_around_elements_is_allowed() {
        check("bytes=0-1, 3-4", 10, satisfiable(&[0..2, 3..5]));
        check("bytes=0-1 ,\t3-4", 10, satisfiable(&[0..2, 3..5]));
        check("  bytes=0-1 ", 10, one(0..2));
        check("bytes= 0-1", 10, one(0..2));
    }

    #[test]
    fn whitespace_inside_a_spec_or_around_the_unit_is_a_syntax_error() {
        check("bytes=0 -1", 10, Ranges::Full);
        check("bytes=0- 1", 10, Ranges::Full);
        check("bytes =0-1", 10, Ranges::Full);
        check("bytes=- 1", 10, Ranges::Full);
    }

    #[test]
    fn empty_list_elements_are_tolerated() {
        check("bytes=,0-1", 10, one(0..2));
        check("bytes=0-1,,3-4,", 10, satisfiable(&[0..2, 3..5]));
        check("bytes= , ,0-1", 10, one(0..2));
    }

    #[test]
    fn a_set_without_any_spec_is_a_syntax_error() {
        check("bytes=", 10, Ranges::Full);
        check("bytes=,", 10, Ranges::Full);
        check("bytes= , ", 10, Ranges::Full);
    }

    #[test]
    fn invalid_specs_make_the_header_ignored() {
        for spec in [
            "5-4", "-", "a-1", "0-b", "1", "+1-2", "1-+2", "--1", "1--2", "0x1-2", "1-2-3", "-1-",
            "1.5-2", "١-٢",
        ] {
            check(&format!("bytes={spec}"), 10, Ranges::Full);
            // Even next to a valid spec: the whole header is one syntax.
            check(&format!("bytes=0-1,{spec}"), 10, Ranges::Full);
        }
    }

    #[test]
    fn positions_that_overflow_are_a_syntax_error() {
        check("bytes=18446744073709551616-", 10, Ranges::Full);
        check("bytes=0-18446744073709551616", 10, Ranges::Full);
        check("bytes=-18446744073709551616", 10, Ranges::Full);
        check("bytes=99999999999999999999999999-", 10, Ranges::Full);
    }

    #[test]
    fn positions_at_the_limit_of_u64_are_valid() {
        check("bytes=0-18446744073709551615", 10, one(0..10));
        check("bytes=-18446744073709551615", 10, one(0..10));
        check("bytes=18446744073709551615-", 10, Ranges::Unsatisfiable);
        check(
            "bytes=18446744073709551615-18446744073709551615",
            10,
            Ranges::Unsatisfiable,
        );
    }

    #[test]
    fn leading_zeros_are_digits_like_any_other() {
        check("bytes=007-0009", 10, one(7..10));
    }

    #[test]
    fn a_spec_starting_at_or_past_the_end_is_dropped() {
        check("bytes=10-", 10, Ranges::Unsatisfiable);
        check("bytes=10-20", 10, Ranges::Unsatisfiable);
        check("bytes=11-11", 10, Ranges::Unsatisfiable);
        check("bytes=0-1,10-20", 10, one(0..2));
        check("bytes=10-20,9-", 10, one(9..10));
    }

    #[test]
    fn a_zero_suffix_is_dropped() {
        check("bytes=-0", 10, Ranges::Unsatisfiable);
        check("bytes=-0,2-3", 10, one(2..4));
        check("bytes=-000", 10, Ranges::Unsatisfiable);
    }

    #[test]
    fn last_is_clamped_to_the_final_byte() {
        check("bytes=5-100", 10, one(5..10));
        check("bytes=9-9", 10, one(9..10));
        check("bytes=9-10", 10, one(9..10));
    }

    #[test]
    fn a_suffix_longer_than_the_representation_is_all_of_it() {
        check("bytes=-11", 10, one(0..10));
        check("bytes=-10", 10, one(0..10));
        check("bytes=-9", 10, one(1..10));
    }

    #[test]
    fn nothing_of_an_empty_representation_is_satisfiable() {
        check("bytes=0-", 0, Ranges::Unsatisfiable);
        check("bytes=0-0", 0, Ranges::Unsatisfiable);
        check("bytes=-1", 0, Ranges::Unsatisfiable);
        check("bytes=-100", 0, Ranges::Unsatisfiable);
        check("bytes=-0", 0, Ranges::Unsatisfiable);
        // The syntax is still checked first.
        check("bytes=1-0", 0, Ranges::Full);
        check("items=-1", 0, Ranges::Full);
    }

    #[test]
    fn up_to_max_ranges_are_honoured() {
        let specs: Vec<String> = (0..MAX_RANGES)
            .map(|byte| format!("{byte}-{byte}"))
            .collect();
        let expected: Vec<Range<u64>> = (0..MAX_RANGES as u64).map(|byte| byte..byte + 1).collect();
        check(
            &format!("bytes={}", specs.join(",")),
            1000,
            Ranges::Satisfiable(expected),
        );
    }

    #[test]
    fn more_than_max_ranges_make_the_header_ignored() {
        let specs: Vec<String> = (0..=MAX_RANGES)
            .map(|byte| format!("{byte}-{byte}"))
            .collect();
        check(&format!("bytes={}", specs.join(",")), 1000, Ranges::Full);
        // Counted before satisfiability: unsatisfiable specs are work to parse too.
        let specs = vec!["5000-"; MAX_RANGES + 1];
        check(&format!("bytes={}", specs.join(",")), 1000, Ranges::Full);
        // Empty elements are not ranges.
        let mut specs = vec![""; 10 * MAX_RANGES];
        specs.push("0-0");
        check(&format!("bytes={}", specs.join(",")), 1000, one(0..1));
    }

    #[test]
    fn overlapping_ranges_within_the_length_are_honoured() {
        check("bytes=0-5,3-8", 20, satisfiable(&[0..6, 3..9]));
        check("bytes=0-4,0-4", 10, satisfiable(&[0..5, 0..5]));
    }

    #[test]
    fn ranges_summing_beyond_the_length_are_answered_in_full() {
        check("bytes=0-5,3-9", 10, Ranges::Full);
        check("bytes=0-,0-", 10, Ranges::Full);
        check("bytes=-6,0-4", 10, Ranges::Full);
        check("bytes=0-0,0-", 10, Ranges::Full);
        // Exactly the length is still fine, even in pieces.
        check("bytes=0-4,5-", 10, satisfiable(&[0..5, 5..10]));
        check("bytes=5-,0-4", 10, satisfiable(&[5..10, 0..5]));
    }

    #[test]
    fn clamping_happens_before_the_overlap_sum() {
        // 0-1000 and 5-1000 are 1996 bytes as asked, but 15 once clamped: over the length.
        check("bytes=0-1000,5-1000", 10, Ranges::Full);
        // Unsatisfiable specs do not count at all.
        check("bytes=0-9,20-30", 10, one(0..10));
    }

    #[test]
    fn content_range_names_the_last_byte_inclusively() {
        assert_eq!(content_range(&(0..1), 10), "bytes 0-0/10");
        assert_eq!(content_range(&(0..10), 10), "bytes 0-9/10");
        assert_eq!(
            content_range(&(9500..10_000), 10_000),
            "bytes 9500-9999/10000"
        );
    }

    /// Reassembles a multipart body from its framing and a representation, as the server
    /// would send it.
    fn assemble(body: &Multipart, representation: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in &body.parts {
            out.extend_from_slice(part.head.as_bytes());
            out.extend_from_slice(
                &representation[part.range.start as usize..part.range.end as usize],
            );
        }
        out.extend_from_slice(body.tail.as_bytes());
        out
    }

    fn boundary_of(body: &Multipart) -> &str {
        body.content_type
            .strip_prefix("multipart/byteranges; boundary=")
            .expect("content type names the boundary")
    }

    #[test]
    fn multipart_frames_each_part_with_its_type_and_range() {
        let representation = b"0123456789";
        let body = multipart(&[0..2, 5..10], 10, Some("text/plain"));
        let boundary = boundary_of(&body).to_string();
        let expected = format!(
            "--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\n01\
             \r\n--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 5-9/10\r\n\r\n56789\
             \r\n--{boundary}--\r\n"
        );
        assert_eq!(
            String::from_utf8(assemble(&body, representation)).unwrap(),
            expected
        );
        assert_eq!(body.parts[0].range, 0..2);
        assert_eq!(body.parts[1].range, 5..10);
        assert_eq!(body.tail, format!("\r\n--{boundary}--\r\n"));
    }

    #[test]
    fn multipart_leaves_out_an_unknown_content_type() {
        let body = multipart(&[3..4], 10, None);
        let boundary = boundary_of(&body);
        assert_eq!(
            body.parts[0].head,
            format!("--{boundary}\r\nContent-Range: bytes 3-3/10\r\n\r\n")
        );
    }

    #[test]
    fn multipart_content_length_is_exactly_the_body() {
        let representation: Vec<u8> = (0..=255).collect();
        let cases: [&[Range<u64>]; 4] = [
            &[0..1],
            &[0..256],
            &[10..20, 0..5, 200..256],
            &[1..2, 1..2, 1..2, 1..2],
        ];
        for ranges in cases {
            for content_type in [None, Some("application/octet-stream")] {
                let body = multipart(ranges, 256, content_type);
                assert_eq!(body.parts.len(), ranges.len());
                let heads: u64 = body.parts.iter().map(|part| part.head.len() as u64).sum();
                let bytes: u64 = ranges.iter().map(|range| range.end - range.start).sum();
                assert_eq!(body.content_length, heads + bytes + body.tail.len() as u64);
                assert_eq!(
                    body.content_length,
                    assemble(&body, &representation).len() as u64
                );
            }
        }
    }

    #[test]
    fn boundaries_are_long_valid_and_unique() {
        let boundaries: std::collections::HashSet<String> = (0..1000)
            .map(|_| boundary_of(&multipart(&[0..1], 1, None)).to_string())
            .collect();
        assert_eq!(boundaries.len(), 1000);
        for boundary in &boundaries {
            // RFC 2046 §5.1.1: 1 to 70 characters; hex digits are all in its `bchars`.
            assert!((20..=70).contains(&boundary.len()), "{boundary}");
            assert!(boundary.bytes().all(|byte| byte.is_ascii_hexdigit()));
        }
    }

    /// What `parse` should say about a set of `(first, last)` specs, computed the slow and
    /// obvious way.
    fn model(specs: &[(u64, u64)], len: u64) -> Ranges {
        if specs.iter().any(|&(first, last)| first > last) {
            return Ranges::Full;
        }
        let ranges: Vec<Range<u64>> = specs
            .iter()
            .filter(|&&(first, _)| first < len)
            .map(|&(first, last)| first..(last + 1).min(len))
            .collect();
        if ranges.is_empty() {
            Ranges::Unsatisfiable
        } else if ranges
            .iter()
            .map(|range| range.end - range.start)
            .sum::<u64>()
            > len
        {
            Ranges::Full
        } else {
            Ranges::Satisfiable(ranges)
        }
    }

    fn assert_invariants(header: &str, len: u64, ranges: &Ranges) {
        if let Ranges::Satisfiable(ranges) = ranges {
            assert!(!ranges.is_empty(), "{header:?} of {len}");
            for range in ranges {
                assert!(range.start < range.end, "{header:?} of {len}: {range:?}");
                assert!(range.end <= len, "{header:?} of {len}: {range:?}");
            }
        }
    }

    #[test]
    fn every_small_single_range_matches_the_model() {
        for len in 0..10 {
            for first in 0..12 {
                for last in 0..12 {
                    let header = format!("bytes={first}-{last}");
                    let ranges = parse(&header, len);
                    assert_invariants(&header, len, &ranges);
                    assert_eq!(ranges, model(&[(first, last)], len), "{header:?} of {len}");
                }
                let header = format!("bytes={first}-");
                let ranges = parse(&header, len);
                assert_invariants(&header, len, &ranges);
                assert_eq!(ranges, model(&[(first, u64::MAX - 1)], len), "{header:?}");

                let suffix = first;
                let header = format!("bytes=-{suffix}");
                let ranges = parse(&header, len);
                assert_invariants(&header, len, &ranges);
                let expected = if suffix == 0 || len == 0 {
                    Ranges::Unsatisfiable
                } else {
                    one(len.saturating_sub(suffix)..len)
                };
                assert_eq!(ranges, expected, "{header:?} of {len}");
            }
        }
    }

    #[test]
    fn every_small_pair_of_ranges_matches_the_model() {
        for len in 0..10 {
            for a in 0..12 {
                for b in 0..12 {
                    for c in 0..12 {
                        for d in 0..12 {
                            let header = format!("bytes={a}-{b}, {c}-{d}");
                            let ranges = parse(&header, len);
                            assert_invariants(&header, len, &ranges);
                            assert_eq!(ranges, model(&[(a, b), (c, d)], len), "{header:?}");
                        }
                    }
                }
            }
        }
    }
}
