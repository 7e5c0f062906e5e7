//! Pure classifiers over a connection's first bytes (lua-http's `is_tls_client_hello`
//! and its h2 preface check): what protocol a client is speaking before anything is
//! decided. `None` means "need
//! more bytes". No I/O here.

/// Whether the first bytes start a TLS handshake record (content type 22, RFC 8446 §5.1).
/// One byte decides: no HTTP/1 request or HTTP/2 preface starts with byte 0x16, since
/// methods are tokens of printable characters.
pub(crate) fn is_tls(first: &[u8]) -> Option<bool> {
    first.first().map(|&b| b == 0x16)
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the first bytes are the HTTP/2 preface (cleartext HTTP/2 by prior knowledge):
/// `None` while what arrived is a proper prefix of it.
pub(crate) fn is_h2_preface(first: &[u8]) -> Option<bool> {
    let n = first.len().min(H2_PREFACE.len());
    if first[..n] != H2_PREFACE[..n] {
        Some(false)
    } else if n < H2_PREFACE.len() {
        None
    } else {
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_hello_is_tls_and_requests_are_not() {
        assert_eq!(is_tls(b""), None);
        assert_eq!(is_tls(&[0x16, 0x03, 0x01, 0x02, 0x00]), Some(true));
        assert_eq!(is_tls(b"GET / HTTP/1.1\r\n"), Some(false));
        assert_eq!(is_tls(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Some(false));
        assert_eq!(is_tls(b"\r\nGET /"), Some(false));
    }

    #[test]
    fn the_h2_preface_is_recognised_at_any_split() {
        for n in 0..H2_PREFACE.len() {
            assert_eq!(is_h2_preface(&H2_PREFACE[..n]), None, "prefix of {n} bytes");
        }
        assert_eq!(is_h2_preface(H2_PREFACE), Some(true));
        let mut more = H2_PREFACE.to_vec();
        more.extend_from_slice(b"\0\0\0\x04");
        assert_eq!(is_h2_preface(&more), Some(true));
        assert_eq!(is_h2_preface(b"GET / HTTP/1.1"), Some(false));
        assert_eq!(is_h2_preface(b"PRI / HTTP/1.1"), Some(false));
    }
}
