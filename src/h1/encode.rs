//! Response heads on the wire: the status line, the handler's fields, and the fields the
//! connection owns (`date`, `content-length` / `transfer-encoding`, `connection`).
//!
//! Pure functions over a `BytesMut`; which framing a response
//! gets is decided by the stream (`stream.rs`) and passed in. A head is written in two
//! halves, [`head_start`] when the handler gives its fields and [`head_end`] once the
//! framing is known, so that the handler's `Headers` need not be kept (copied) between.

use bytes::{BufMut, BytesMut};

use super::parse::content_length_value;
use crate::headers::Headers;

/// How a response body is delimited on the wire (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `content-length: n`.
    Length(u64),
    /// `transfer-encoding: chunked` (HTTP/1.1).
    Chunked,
    /// The body ends when the connection closes (HTTP/1.0 with unknown length).
    Close,
    /// No body may follow: HEAD, 1xx, 204, 304.
    NoBody,
}

/// Fields a handler may not set itself, because the connection decides them. The
/// handler's `content-length` is among them: the stream validated it and passes it in
/// `framing`, so exactly one framing field goes out, with digits only (RFC 9110 §8.6,
/// RFC 9112 §6.2: never with `transfer-encoding`).
fn is_connection_owned(name: &[u8]) -> bool {
    matches!(
        name,
        b"transfer-encoding" | b"content-length" | b"connection" | b"keep-alive"
    )
}

/// What a response head's fields say about its framing and its connection, learned while
/// [`head_start`] writes them and used by [`head_end`] to finish the head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadFacts {
    pub(crate) status: u16,
    /// The handler's `content-length`, checked.
    pub(crate) declared: Option<u64>,
    /// The handler asked for `transfer-encoding: chunked`.
    pub(crate) wants_chunked: bool,
    has_date: bool,
    close_requested: bool,
}

/// A handler's `content-length` that is not digits only (RFC 9110 §8.6): `+5` or `5, 5`
/// would reach the client as sent.
#[derive(Debug)]
pub(crate) struct InvalidContentLength;

/// Writes the status line and the handler's own fields, in one pass over them that also
/// learns what [`head_end`] needs. `as_http10`: the server speaks only HTTP/1.0
/// (`Version::Http10`: the status line says so).
pub(crate) fn head_start(
    dst: &mut BytesMut,
    status: u16,
    headers: &Headers,
    as_http10: bool,
) -> Result<HeadFacts, InvalidContentLength> {
    dst.put_slice(if as_http10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    put_status(dst, status);
    let mut facts = HeadFacts {
        status,
        declared: None,
        wants_chunked: false,
        has_date: false,
        close_requested: false,
    };
    for field in headers {
        let name = field.name_bytes();
        if name.first() == Some(&b':') {
            continue;
        }
        let value = field.value_bytes();
        match name {
            b"date" => facts.has_date = true,
            b"connection" => {
                facts.close_requested |= value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
                continue;
            }
            // The first one counts, as `Headers::get` would find it.
            b"content-length" => {
                if facts.declared.is_none() {
                    facts.declared = Some(content_length_value(value).ok_or(InvalidContentLength)?);
                }
                continue;
            }
            b"transfer-encoding" => {
                if !facts.wants_chunked {
                    facts.wants_chunked = value.eq_ignore_ascii_case(b"chunked");
                }
                continue;
            }
            _ if is_connection_owned(name) => continue,
            _ => {}
        }
        put_field(dst, name, value);
    }
    Ok(facts)
}

/// Finishes a head begun by [`head_start`]: `date` unless the handler gave one, the
/// framing field, `connection`, and the empty line.
///
/// `framing` gives the framing field: `Length(n)` writes `content-length: n` (for a
/// response without a body, such as HEAD's, the length announced); `keep_alive` says
/// whether the connection stays open after this response, `http10` whether the client
/// spoke HTTP/1.0 (which needs `connection: keep-alive` to keep it).
pub(crate) fn head_end(
    dst: &mut BytesMut,
    facts: &HeadFacts,
    framing: Framing,
    keep_alive: bool,
    http10: bool,
) {
    if !facts.has_date {
        put_date(dst);
    }
    let status = facts.status;
    match framing {
        // 1xx and 204 responses must not carry a length (RFC 9110 §8.6).
        Framing::Length(n) if status >= 200 && status != 204 => {
            dst.put_slice(b"content-length: ");
            dst.put_slice(itoa::Buffer::new().format(n).as_bytes());
            dst.put_slice(b"\r\n");
        }
        Framing::Chunked => dst.put_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if status >= 200 {
        if !keep_alive || facts.close_requested {
            dst.put_slice(b"connection: close\r\n");
        } else if http10 {
            dst.put_slice(b"connection: keep-alive\r\n");
        }
    }
    dst.put_slice(b"\r\n");
}

/// Appends an informational (1xx) head such as `100 Continue` or `101 Switching Protocols`.
pub(crate) fn informational_head(dst: &mut BytesMut, status: u16, headers: &Headers) {
    dst.put_slice(b"HTTP/1.1 ");
    put_status(dst, status);
    for field in headers {
        let name = field.name_bytes();
        if name.first() == Some(&b':') || name == b"content-length" || name == b"transfer-encoding"
        {
            continue;
        }
        put_field(dst, name, field.value_bytes());
    }
    dst.put_slice(b"\r\n");
}

/// Appends a complete error response that closes the connection.
pub(crate) fn error_response(dst: &mut BytesMut, status: u16, message: &str) {
    dst.put_slice(b"HTTP/1.1 ");
    put_status(dst, status);
    put_date(dst);
    dst.put_slice(b"content-type: text/plain; charset=utf-8\r\n");
    dst.put_slice(b"content-length: ");
    dst.put_slice(itoa::Buffer::new().format(message.len() + 1).as_bytes());
    dst.put_slice(b"\r\nconnection: close\r\n\r\n");
    dst.put_slice(message.as_bytes());
    dst.put_slice(b"\n");
}

fn put_status(dst: &mut BytesMut, status: u16) {
    dst.put_slice(itoa::Buffer::new().format(status).as_bytes());
    dst.put_u8(b' ');
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    dst.put_slice(reason.as_bytes());
    dst.put_slice(b"\r\n");
}

fn put_field(dst: &mut BytesMut, name: &[u8], value: &[u8]) {
    dst.put_slice(name);
    dst.put_slice(b": ");
    dst.put_slice(value);
    dst.put_slice(b"\r\n");
}

fn put_date(dst: &mut BytesMut) {
    dst.put_slice(b"date: ");
    dst.put_slice(&crate::date::now());
    dst.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16, headers: &[(&str, &str)], framing: Framing, keep_alive: bool) -> String {
        let mut h = Headers::new();
        for (n, v) in headers {
            h.append(n, v.to_string());
        }
        let mut dst = BytesMut::new();
        let facts = head_start(&mut dst, status, &h, false).unwrap();
        head_end(&mut dst, &facts, framing, keep_alive, false);
        String::from_utf8(dst.to_vec()).unwrap()
    }

    #[test]
    fn a_known_length_gets_content_length_and_a_date() {
        let s = head(
            200,
            &[("content-type", "text/plain")],
            Framing::Length(13),
            true,
        );
        assert!(s.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: "));
        assert!(s.ends_with("GMT\r\ncontent-length: 13\r\n\r\n"));
    }

    #[test]
    fn chunked_framing_replaces_a_handler_transfer_encoding() {
        let s = head(
            200,
            &[("transfer-encoding", "gzip")],
            Framing::Chunked,
            true,
        );
        assert!(!s.contains("gzip"));
        assert!(s.contains("transfer-encoding: chunked\r\n"));
    }

    #[test]
    fn closing_connections_say_so() {
        let s = head(404, &[], Framing::Length(0), false);
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(s.contains("connection: close\r\n"));
    }

    #[test]
    fn no_content_never_carries_a_length() {
        let s = head(204, &[("content-length", "5")], Framing::NoBody, true);
        assert!(!s.contains("content-length"));
    }
}
