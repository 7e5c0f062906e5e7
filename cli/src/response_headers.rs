//! What the command line adds to every response: `--header 'Name: value'`, `--cors`
//! (`Access-Control-Allow-Origin: *`), and `--no-cache` / `--cache-control VALUE`.
//!
//! The site writes every response head through [`write_head`], which applies the worker's
//! [`ResponseHeaders`]: one place, so no answer (a 304, a 401, a 404 page, a range) goes out
//! without them. They are kept per worker thread (each worker builds its own `Site` on its
//! own thread and installs them there) because the free functions that write heads
//! (`status_page`, the upload's answers) have no `Site` at hand. The WebSocket handshake's
//! 101 is written by the library and is left as it is.
//!
//! This module does not answer CORS preflights (the site does, see `preflight`).

use std::{cell::RefCell, rc::Rc};

use onstream::{Headers, Stream};

/// The fields added to, or replacing those of, every response head.
#[derive(Debug, Clone, Default)]
pub struct ResponseHeaders {
    /// `--header`s, validated at start, names lower-case. Each replaces a field of the same
    /// name the server would have sent, so a user's `Cache-Control` wins over the listing's.
    pub extra: Vec<(String, String)>,
    /// `--cors`: `Access-Control-Allow-Origin: *` (no credentials: browsers refuse `*` with
    /// them, and a static file server has nothing a cookie should unlock).
    pub cors: bool,
    /// `--no-cache` or `--cache-control`: replaces any `Cache-Control`.
    pub cache_control: Option<String>,
}

impl ResponseHeaders {
    fn is_empty(&self) -> bool {
        self.extra.is_empty() && !self.cors && self.cache_control.is_none()
    }

    fn apply(&self, head: &mut Headers) {
        if self.cors {
            head.upsert("access-control-allow-origin", "*");
            // Lets scripts read the validators and range fields, not only the CORS-safelisted ones.
            head.upsert("access-control-expose-headers", EXPOSED);
        }
        if let Some(value) = &self.cache_control {
            head.upsert("cache-control", value.clone());
        }
        for (name, value) in &self.extra {
            head.upsert(name, value.clone());
        }
    }
}

/// Response fields a cross-origin script may read with `--cors`.
const EXPOSED: &str =
    "content-length, content-range, content-encoding, etag, last-modified, accept-ranges";

thread_local! {
    static CURRENT: RefCell<Rc<ResponseHeaders>> = RefCell::new(Rc::default());
}

/// Makes `headers` the ones this thread's responses get.
pub fn install(headers: Rc<ResponseHeaders>) {
    CURRENT.with(|current| *current.borrow_mut() = headers);
}

/// `stream.write_headers(head, end_stream)` with this thread's fields applied.
pub async fn write_head(stream: &Stream, head: &Headers, end_stream: bool) -> onstream::Result<()> {
    let current = CURRENT.with(|current| current.borrow().clone());
    if current.is_empty() {
        return stream.write_headers(head, end_stream).await;
    }
    let mut head = head.clone();
    current.apply(&mut head);
    stream.write_headers(&head, end_stream).await
}

/// Fields a `--header` may not set: they frame the message or belong to one hop
/// (RFC 9110 §7.6.1), and getting them wrong breaks the connection, not just the page.
const REFUSED: [&str; 9] = [
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "host",
];

/// Parses one `--header 'Name: value'`: a valid field name, a valid value (no CR, LF or
/// NUL), and not a framing or hop-by-hop field.
pub fn parse_header(value: &str) -> Result<(String, String), String> {
    let (name, field_value) = value
        .split_once(':')
        .ok_or_else(|| "expected 'Name: value'".to_owned())?;
    let name = http::HeaderName::from_bytes(name.trim_end().as_bytes())
        .map_err(|_| format!("{name:?} is not a header field name"))?;
    let field_value = field_value.trim();
    http::HeaderValue::from_str(field_value)
        .map_err(|_| format!("{field_value:?} is not a header field value"))?;
    if REFUSED.contains(&name.as_str()) {
        return Err(format!("{name} is set by the server itself"));
    }
    Ok((name.as_str().to_owned(), field_value.to_owned()))
}

/// Parses `--cache-control VALUE`.
pub fn parse_value(value: &str) -> Result<String, String> {
    http::HeaderValue::from_str(value.trim())
        .map(|_| value.trim().to_owned())
        .map_err(|_| format!("{value:?} is not a header field value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_header("X-Frame-Options: DENY"),
            Ok(("x-frame-options".into(), "DENY".into()))
        );
        assert_eq!(
            parse_header("a:b:c"),
            Ok(("a".into(), "b:c".into())),
            "split at the first colon"
        );
        for bad in [
            "novalue",
            "bad name: x",
            ": x",
            "x: a\nb",
            "x: a\rb",
            "Content-Length: 5",
            "Transfer-Encoding: chunked",
            "Connection: close",
        ] {
            assert!(parse_header(bad).is_err(), "{bad:?}");
        }
        assert!(parse_value("max-age=60").is_ok());
        assert!(parse_value("a\nb").is_err());
    }

    #[test]
    fn the_user_s_fields_replace_the_server_s() {
        let h = ResponseHeaders {
            extra: vec![("x-a".into(), "1".into())],
            cors: true,
            cache_control: Some("no-store".into()),
        };
        let mut head = Headers::new();
        head.append(":status", "200");
        head.append("cache-control", "no-cache");
        h.apply(&mut head);
        assert_eq!(head.get("cache-control"), Some("no-store"));
        assert_eq!(head.get("x-a"), Some("1"));
        assert_eq!(head.get("access-control-allow-origin"), Some("*"));
    }
}
