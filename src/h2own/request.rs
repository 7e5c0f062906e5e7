//! A decoded header block made into a request head or trailers, with RFC 9113 §8.2–8.3's
//! rules: what is *malformed* (a stream error, PROTOCOL_ERROR) is found here, before any
//! handler sees the request. Pure: fields in, `Headers` or the reason out.

use bytes::{Bytes, BytesMut};

use crate::headers::{common_name, Field, Headers};

/// What one header block decoded to, in arrival order.
#[derive(Default)]
pub(crate) struct Block {
    /// All names and values, one after the other, so that the list costs one buffer.
    bytes: BytesMut,
    /// (name length, value length) per field, in order.
    lens: Vec<(usize, usize)>,
}

impl Block {
    pub(crate) fn push(&mut self, name: &[u8], value: &[u8]) {
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(value);
        self.lens.push((name.len(), value.len()));
    }

    /// How many regular (not pseudo-header) fields the block has: what
    /// `Options::max_headers` bounds, as for HTTP/1.
    pub(crate) fn n_regular(&self) -> usize {
        self.fields()
            .filter(|(name, _)| name.first() != Some(&b':'))
            .count()
    }

    pub(crate) fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut at = 0;
        self.lens.iter().map(move |&(n, v)| {
            let name = &self.bytes[at..at + n];
            let value = &self.bytes[at + n..at + n + v];
            at += n + v;
            (name, value)
        })
    }

    /// The block as a request head, or why it is malformed.
    pub(crate) fn into_request(self) -> Result<Headers, &'static str> {
        let mut seen_regular = false;
        let (mut method, mut scheme, mut path, mut authority) = (None, false, None, false);
        let mut protocol = false;
        for (name, value) in self.fields() {
            check_value(value)?;
            if let Some(pseudo) = name.strip_prefix(b":") {
                if seen_regular {
                    return Err("a pseudo-header after a regular field");
                }
                let slot = match pseudo {
                    b"method" => method.replace(value).is_some(),
                    b"scheme" => std::mem::replace(&mut scheme, true),
                    b"path" => path.replace(value).is_some(),
                    b"authority" => std::mem::replace(&mut authority, true),
                    b"protocol" => std::mem::replace(&mut protocol, true),
                    _ => return Err("an unknown or response pseudo-header"),
                };
                if slot {
                    return Err("a repeated pseudo-header");
                }
            } else {
                seen_regular = true;
                check_regular(name, value)?;
            }
        }
        let Some(method) = method else {
            return Err("no :method");
        };
        if protocol {
            // RFC 8441 §4: an extended CONNECT carries all of them.
            if method != b"CONNECT" || !scheme || !authority || matches!(path, None | Some(b"")) {
                return Err("a :protocol request that is not a whole extended CONNECT");
            }
        } else if method == b"CONNECT" {
            // RFC 9113 §8.5: :authority only.
            if scheme || path.is_some() || !authority {
                return Err("a CONNECT request with :scheme or :path, or without :authority");
            }
        } else {
            match path {
                None | Some(b"") => return Err("no :path"),
                _ if !scheme => return Err("no :scheme"),
                _ => {}
            }
        }
        Ok(self.into_headers())
    }

    /// The block as trailers: no pseudo-header may appear (RFC 9113 §8.1).
    pub(crate) fn into_trailers(self) -> Result<Headers, &'static str> {
        for (name, value) in self.fields() {
            check_value(value)?;
            if name.first() == Some(&b':') {
                return Err("a pseudo-header in trailers");
            }
            check_regular(name, value)?;
        }
        Ok(self.into_headers())
    }

    fn into_headers(self) -> Headers {
        let n = self.lens.len();
        let bytes = self.bytes.freeze();
        let mut at = 0;
        let fields = self.lens.iter().map(|&(n, v)| {
            let name = match std::str::from_utf8(&bytes[at..at + n])
                .ok()
                .and_then(common_name)
            {
                Some(known) => Bytes::from_static(known.as_bytes()),
                None => bytes.slice(at..at + n),
            };
            let value = bytes.slice(at + n..at + n + v);
            at += n + v;
            Field::parsed(name, value, false)
        });
        Headers::shared_from(n, fields)
    }
}

/// RFC 9113 §8.2.1–8.2.2: lower-case token names, no connection-specific fields, `te`
/// only as `trailers`.
fn check_regular(name: &[u8], value: &[u8]) -> Result<(), &'static str> {
    if name.is_empty()
        || !name
            .iter()
            .all(|&b| crate::headers::is_tchar(b) && !b.is_ascii_uppercase())
    {
        return Err("a field name that is not a lower-case token");
    }
    match name {
        b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade" => {
            Err("a connection-specific field")
        }
        b"te" if value != b"trailers" => Err("te other than trailers"),
        _ => Ok(()),
    }
}

/// RFC 9113 §8.2.1: no NUL, CR or LF, and no whitespace at either end.
fn check_value(value: &[u8]) -> Result<(), &'static str> {
    if value.iter().any(|&b| matches!(b, 0 | b'\r' | b'\n')) {
        return Err("NUL, CR or LF in a field value");
    }
    if value.first().is_some_and(|&b| b == b' ' || b == b'\t')
        || value.last().is_some_and(|&b| b == b' ' || b == b'\t')
    {
        return Err("whitespace at the edge of a field value");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(fields: &[(&str, &str)]) -> Block {
        let mut b = Block::default();
        for (n, v) in fields {
            b.push(n.as_bytes(), v.as_bytes());
        }
        b
    }

    const GET: [(&str, &str); 3] = [(":method", "GET"), (":scheme", "http"), (":path", "/")];

    #[test]
    fn a_plain_request_keeps_its_order() {
        let mut fields = GET.to_vec();
        fields.push(("x-a", "1"));
        fields.push(("content-type", "text/plain"));
        let h = block(&fields).into_request().unwrap();
        let names: Vec<_> = h.iter().map(|f| f.name().to_owned()).collect();
        assert_eq!(
            names,
            [":method", ":scheme", ":path", "x-a", "content-type"]
        );
        assert_eq!(h.get("content-type"), Some("text/plain"));
    }

    #[test]
    fn malformed_requests_are_refused() {
        let cases: &[&[(&str, &str)]] = &[
            &[(":method", "GET"), (":path", "/")],
            &[(":method", "GET"), (":scheme", "http"), (":path", "")],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":path", "/"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":status", "200"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                ("x", "1"),
                (":path", "/"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("X-Up", "1"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("connection", "x"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("te", "gzip"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("x", " 1"),
            ],
            &[
                (":method", "CONNECT"),
                (":authority", "a:1"),
                (":path", "/"),
            ],
        ];
        for case in cases {
            assert!(block(case).into_request().is_err(), "{case:?}");
        }
        assert!(block(&[(":method", "CONNECT"), (":authority", "a:1")])
            .into_request()
            .is_ok());
        let extended = [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https"),
            (":path", "/chat"),
            (":authority", "a"),
        ];
        assert!(block(&extended).into_request().is_ok());
        assert!(block(&extended[1..]).into_request().is_err());
    }

    #[test]
    fn trailers_have_no_pseudo_headers() {
        assert!(block(&[("x", "1")]).into_trailers().is_ok());
        assert!(block(&[(":path", "/")]).into_trailers().is_err());
    }
}
