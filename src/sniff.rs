//! Pure classifiers over a connection's first bytes (lua-http's `is_tls_client_hello`):
//! what protocol a client is speaking before anything is decided. `None` means "need
//! more bytes". No I/O here.

/// Whether the first bytes start a TLS handshake record (content type 22, RFC 8446 §5.1).
/// One byte decides: no HTTP/1 request or HTTP/2 preface starts with byte 0x16, since
/// methods are tokens of printable characters.
pub(crate) fn is_tls(first: &[u8]) -> Option<bool> {
    first.first().map(|&b| b == 0x16)
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
}
