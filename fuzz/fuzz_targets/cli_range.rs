//! The command's `Range` header parsing (`cli/src/range.rs`): whatever the header, the
//! ranges answered are non-empty, within the representation, at most 100, and together
//! no longer than it; their `Content-Range` and, for several, the multipart body's
//! `Content-Length` add up.
//!
//! Input: the representation's length, then the header. A first byte below 0x80 is the
//! length itself (0 to 127, where the edge cases are); otherwise the next eight bytes
//! (little-endian, top bit cleared: a file's size fits in an `off_t`) are.
//!
//! The cli is a binary crate; range.rs needs only std, so it is compiled in here as a
//! module rather than giving the cli a library target.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../cli/src/range.rs"]
mod range;

use range::Ranges;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let (len, header) = if first < 0x80 {
        (u64::from(first), rest)
    } else {
        let Some((bytes, header)) = rest.split_first_chunk::<8>() else {
            return;
        };
        (u64::from_le_bytes(*bytes) & i64::MAX as u64, header)
    };
    // The server hands the site valid UTF-8 only (`Headers::get`).
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    let Ranges::Satisfiable(ranges) = range::parse(header, len) else {
        return;
    };
    assert!((1..=100).contains(&ranges.len()), "{} ranges", ranges.len());
    let mut total = 0u64;
    for r in &ranges {
        assert!(
            r.start < r.end && r.end <= len,
            "{r:?} of {len} from {header:?}"
        );
        total += r.end - r.start;
        assert_eq!(
            range::content_range(r, len),
            format!("bytes {}-{}/{len}", r.start, r.end - 1)
        );
    }
    assert!(total <= len, "{total} bytes of {len} from {header:?}");
    if ranges.len() > 1 {
        let body = range::multipart(&ranges, len, Some("text/plain"));
        assert_eq!(body.parts.len(), ranges.len());
        let heads: u64 = body.parts.iter().map(|p| p.head.len() as u64).sum();
        assert_eq!(body.content_length, heads + total + body.tail.len() as u64);
    }
});
