//! What RFC 9113 calls a malformed request (§8.1.1) that the h2 crate lets through, so
//! that onstream treats it as the stream error it is (RST_STREAM PROTOCOL_ERROR) before
//! any handler sees the request or its trailers.
//!
//! The h2 crate already rejects connection-specific fields, `te` other than
//! `trailers`, pseudo-header fields after regular ones or repeated, and trailers without
//! END_STREAM (stream errors), and upper-case names, unknown pseudo-header fields and
//! control characters in values (connection errors). It accepts field
//! values that begin or end with whitespace, which §8.2.1 forbids ("a field value MUST
//! NOT start or end with an ASCII whitespace character"): an intermediary that trims
//! them and one that does not would see different values.
//!
//! Pseudo-header fields in trailers cannot be caught here: h2 drops them while decoding
//! (`Recv::recv_trailers` keeps only the regular fields), so they never reach onstream.

use http::HeaderMap;

/// Why a request's or a trailer section's regular fields are malformed, if they are.
pub(crate) fn fields_fault(fields: &HeaderMap) -> Option<&'static str> {
    fields
        .values()
        .any(|v| edge_whitespace(v.as_bytes()))
        .then_some("a field value starts or ends with whitespace")
}

fn edge_whitespace(value: &[u8]) -> bool {
    let ws = |b: &u8| *b == b' ' || *b == b'\t';
    value.first().is_some_and(ws) || value.last().is_some_and(ws)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(value: &'static str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert("x-field", http::HeaderValue::from_static(value));
        m
    }

    #[test]
    fn values_with_whitespace_at_either_end_are_malformed() {
        for bad in [" v", "v ", "\tv", "v\t", " ", "\t"] {
            assert!(fields_fault(&map(bad)).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn inner_whitespace_and_empty_values_are_fine() {
        for good in ["v", "a b", "a\tb", ""] {
            assert!(fields_fault(&map(good)).is_none(), "{good:?}");
        }
    }
}
