//! WebSocket (RFC 6455) for handlers: [`accept`] checks a request's upgrade, answers
//! `101 Switching Protocols`, takes the connection over and runs `tungstenite`'s codec on
//! it (lua-http's `websocket.new_from_stream` + `accept`). Over HTTP/2 the same call
//! accepts an extended CONNECT (RFC 8441) and runs the codec on that one stream.
//!
//! What this module owns: the server side of the opening handshake (validation with a
//! clear 400/426 answer, subprotocol choice by the handler) and the limits a server needs
//! that lua-http lacked (message and frame size). Frame parsing, masking, UTF-8 checks,
//! ping/pong and the close handshake are tungstenite's. Not yet here: permessage-deflate
//! (RFC 7692).

use futures_util::{SinkExt, StreamExt};
use std::{fmt, time::Duration};
use tokio_tungstenite::{
    tungstenite::{
        handshake::derive_accept_key,
        protocol::{frame::coding::CloseCode, CloseFrame, Role, WebSocketConfig},
    },
    WebSocketStream,
};

pub use tokio_tungstenite::tungstenite::{Bytes as Payload, Message, Utf8Bytes};

use crate::{
    error::{Error, Result},
    headers::Headers,
    rt::timeout,
    stream::Stream,
    upgrade::Upgraded,
};

type WsError = tokio_tungstenite::tungstenite::Error;

/// Chooses a subprotocol from those the client offers (in its order); `None` for none.
pub type ProtocolChooser = Box<dyn Fn(&[&str]) -> Option<String>>;

/// Limits and choices for [`accept`].
///
/// ```
/// let opts = onstream::websocket::Options::new()
///     .max_message_size(1 << 20)
///     .protocols(|offered| offered.iter().find(|p| **p == "chat").map(|p| p.to_string()));
/// ```
pub struct Options {
    max_message_size: usize,
    max_frame_size: usize,
    choose_protocol: Option<ProtocolChooser>,
    ping_interval: Option<Duration>,
    close_timeout: Duration,
}

/// The largest message a peer may send by default: 64 MiB (tungstenite's default;
/// lua-http has no limit at all, DESIGN.md §4 item 11).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;
/// The largest frame by default: 16 MiB (tungstenite's default).
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 << 20;
/// How much tungstenite reads at a time (see `accept`).
const READ_BUFFER_SIZE: usize = 16 * 1024;

/// How long [`WebSocket::close`] waits for the peer's close frame.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for Options {
    fn default() -> Self {
        Options {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            choose_protocol: None,
            ping_interval: None,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
        }
    }
}

impl Options {
    /// The defaults: 64 MiB messages, 16 MiB frames, no subprotocol.
    pub fn new() -> Options {
        Options::default()
    }

    /// The largest message (all its frames together) a client may send; larger ones
    /// close the connection with 1009 (message too big).
    pub fn max_message_size(mut self, n: usize) -> Options {
        self.max_message_size = n;
        self
    }

    /// The largest single frame a client may send.
    pub fn max_frame_size(mut self, n: usize) -> Options {
        self.max_frame_size = n;
        self
    }

    /// Keepalive: while [`WebSocket::recv`] waits, a ping goes out after this long without
    /// any frame from the client, and the connection is dropped if another interval
    /// passes in silence (a half-open TCP connection otherwise lingers forever). Off by
    /// default.
    pub fn ping_interval(mut self, interval: Duration) -> Options {
        self.ping_interval = Some(interval);
        self
    }

    /// How long [`WebSocket::close`] waits for the client's close frame (default 5 s).
    pub fn close_timeout(mut self, timeout: Duration) -> Options {
        self.close_timeout = timeout;
        self
    }

    /// How to pick a subprotocol from the client's `Sec-WebSocket-Protocol` list.
    pub fn protocols(mut self, choose: impl Fn(&[&str]) -> Option<String> + 'static) -> Options {
        self.choose_protocol = Some(Box::new(choose));
        self
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("max_message_size", &self.max_message_size)
            .field("max_frame_size", &self.max_frame_size)
            .field("chooses_protocol", &self.choose_protocol.is_some())
            .finish()
    }
}

/// An open WebSocket connection, taken over from an HTTP/1.1 connection or carried by
/// one HTTP/2 stream.
pub struct WebSocket {
    inner: WebSocketStream<Upgraded>,
    protocol: Option<String>,
    ping_interval: Option<Duration>,
    close_timeout: Duration,
}

impl fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocket")
            .field("protocol", &self.protocol)
            .finish()
    }
}

/// Accepts the WebSocket upgrade `stream` asks for: validates it (answering 400, or 426
/// for a wrong version, and returning a protocol error when it is not one), answers
/// `101`, and returns the WebSocket.
///
/// ```no_run
/// # async fn handler(stream: onstream::Stream) -> onstream::Result<()> {
/// use onstream::websocket::{self, Message};
/// let mut ws = websocket::accept(&stream, websocket::Options::new()).await?;
/// while let Some(msg) = ws.recv().await? {
///     if msg.is_text() || msg.is_binary() {
///         ws.send(msg).await?;
///     }
/// }
/// # Ok(()) }
/// ```
pub async fn accept(stream: &Stream, options: Options) -> Result<WebSocket> {
    let req = stream.get_headers().await?;
    let key = match validate(&req, stream.version()) {
        Ok(key) => key,
        Err((status, why)) => {
            let mut res = Headers::new();
            res.append(":status", status.to_string());
            if status == 426 {
                res.append("sec-websocket-version", "13");
                res.append("upgrade", "websocket");
            }
            res.append("content-type", "text/plain; charset=utf-8");
            stream.write_headers(&res, false).await?;
            stream.write_chunk(format!("{why}\n"), true).await?;
            return Err(Error::protocol(status, why));
        }
    };
    let offered: Vec<&str> = req
        .get_all("sec-websocket-protocol")
        .flat_map(|v| v.split(|&b| b == b','))
        .filter_map(|p| std::str::from_utf8(p).ok())
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let protocol = match &options.choose_protocol {
        Some(choose) if !offered.is_empty() => choose(&offered),
        _ => None,
    };
    if let Some(p) = &protocol {
        if !offered.contains(&p.as_str()) {
            return Err(Error::usage("the chosen subprotocol was not offered"));
        }
    }

    let mut res = Headers::new();
    match &key {
        // HTTP/1.1: 101 and the accept key (RFC 6455 §4.2.2).
        Some(key) => {
            res.append(":status", "101");
            res.append("upgrade", "websocket");
            res.append("connection", "upgrade");
            res.append("sec-websocket-accept", derive_accept_key(key.as_bytes()));
        }
        // HTTP/2 extended CONNECT: a 200 opens the tunnel (RFC 8441 §5).
        None => res.append(":status", "200"),
    }
    if let Some(p) = &protocol {
        res.append("sec-websocket-protocol", p.clone());
    }
    stream.write_headers(&res, false).await?;
    let socket = stream.take_socket()?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(options.max_message_size))
        .max_frame_size(Some(options.max_frame_size))
        // tungstenite zeroes its whole read buffer before each read: at its 128 KiB
        // default that memset was a fifth of the server's CPU in the echo benchmark.
        .read_buffer_size(READ_BUFFER_SIZE);
    let inner = WebSocketStream::from_raw_socket(socket, Role::Server, Some(config)).await;
    Ok(WebSocket {
        inner,
        protocol,
        ping_interval: options.ping_interval,
        close_timeout: options.close_timeout,
    })
}

/// Checks the upgrade request (RFC 6455 §4.2.1, or RFC 8441 §5 over HTTP/2); the key
/// (`None` over HTTP/2, which has none), or the status and reason to refuse it with.
fn validate(
    req: &Headers,
    version: http::Version,
) -> std::result::Result<Option<String>, (u16, &'static str)> {
    if version == http::Version::HTTP_2 {
        if req.get(":method") != Some("CONNECT") || req.get(":protocol") != Some("websocket") {
            return Err((
                400,
                "WebSocket over HTTP/2 is an extended CONNECT with :protocol websocket",
            ));
        }
        if req.get("sec-websocket-version").map(str::trim) != Some("13") {
            return Err((426, "only WebSocket version 13 is supported"));
        }
        return Ok(None);
    }
    if version != http::Version::HTTP_11 {
        return Err((400, "WebSocket needs HTTP/1.1 or HTTP/2"));
    }
    if req.get(":method") != Some("GET") {
        return Err((400, "a WebSocket upgrade must be a GET"));
    }
    let has_token = |name: &str, token: &str| {
        req.get_all(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    };
    if !has_token("upgrade", "websocket") {
        return Err((
            426,
            "this resource speaks WebSocket: send Upgrade: websocket",
        ));
    }
    if !has_token("connection", "upgrade") {
        return Err((400, "a WebSocket upgrade needs Connection: upgrade"));
    }
    if req.get("sec-websocket-version").map(str::trim) != Some("13") {
        return Err((426, "only WebSocket version 13 is supported"));
    }
    let key = req
        .get("sec-websocket-key")
        .map(str::trim)
        .filter(|k| is_websocket_key(k))
        .ok_or((400, "Sec-WebSocket-Key must be 16 bytes in base64"))?;
    Ok(Some(key.to_owned()))
}

/// A base64 encoding of 16 bytes: 22 characters and `==`.
fn is_websocket_key(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() == 24
        && b[22..] == *b"=="
        && b[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

impl WebSocket {
    /// The subprotocol agreed on, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Sends a message (text, binary, ping, pong or close).
    pub async fn send(&mut self, msg: Message) -> Result<()> {
        self.inner.send(msg).await.map_err(ws_error)
    }

    /// The next message; `None` once the connection is closed. Pings are answered and
    /// close frames acknowledged by the codec; they are still returned for the handler
    /// to see.
    pub async fn recv(&mut self) -> Result<Option<Message>> {
        let next = match self.ping_interval {
            None => self.inner.next().await,
            Some(interval) => match self.next_with_keepalive(interval).await? {
                Some(next) => next,
                None => return Err(Error::timeout("the WebSocket peer stopped answering pings")),
            },
        };
        match next {
            Some(Ok(msg)) => Ok(Some(msg)),
            Some(Err(e)) => {
                // Tell the client why before the connection goes (RFC 6455 §7.4.1).
                use tokio_tungstenite::tungstenite::Error as E;
                let code = match &e {
                    E::Capacity(_) => Some(CloseCode::Size),
                    E::Utf8(_) => Some(CloseCode::Invalid),
                    E::Protocol(_) => Some(CloseCode::Protocol),
                    _ => None,
                };
                if let Some(code) = code {
                    let frame = CloseFrame {
                        code,
                        reason: Utf8Bytes::from_static(""),
                    };
                    // The codec may already have closed; the original error matters more.
                    let _ = self.inner.close(Some(frame)).await;
                }
                Err(ws_error(e))
            }
            None => Ok(None),
        }
    }

    /// The next frame, pinging after `interval` of silence; `None` when a second
    /// interval passes without any frame.
    async fn next_with_keepalive(
        &mut self,
        interval: Duration,
    ) -> Result<Option<Option<std::result::Result<Message, WsError>>>> {
        match timeout(interval, self.inner.next()).await {
            Ok(next) => return Ok(Some(next)),
            Err(_) => self
                .inner
                .send(Message::Ping(Payload::from_static(b"onstream")))
                .await
                .map_err(ws_error)?,
        }
        Ok(timeout(interval, self.inner.next()).await.ok())
    }

    /// Closes with `code` and `reason`, then waits (at most the `close_timeout` option)
    /// for the client's close frame, discarding messages that arrive meanwhile.
    pub async fn close(&mut self, code: u16, reason: &str) -> Result<()> {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from(reason.to_owned()),
        };
        self.inner.close(Some(frame)).await.map_err(ws_error)?;
        let drain = async { while let Some(Ok(_)) = self.inner.next().await {} };
        // A client that never answers is simply dropped when the time is up.
        let _ = timeout(self.close_timeout, drain).await;
        Ok(())
    }

    /// The underlying `futures` `Sink + Stream`, e.g. to `split()` into halves used by
    /// two tasks.
    pub fn into_inner(self) -> WebSocketStream<Upgraded> {
        self.inner
    }
}

fn ws_error(e: tokio_tungstenite::tungstenite::Error) -> Error {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::ConnectionClosed | E::AlreadyClosed => Error::closed("WebSocket closed"),
        E::Io(io) => Error::from(io),
        E::Capacity(_) => Error::protocol(413, "WebSocket message or frame too big").with_source(e),
        E::Protocol(_) | E::Utf8(_) => {
            Error::protocol(400, "WebSocket protocol error").with_source(e)
        }
        other => Error::new(crate::error::ErrorKind::Io)
            .with_context("WebSocket")
            .with_source(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sixteen_bytes_of_base64() {
        assert!(is_websocket_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_websocket_key("dGhlIHNhbXBsZSBub25jZQ"));
        assert!(!is_websocket_key("dGhlIHNhbXBsZSBub25jZQ=!"));
        assert!(!is_websocket_key(""));
    }

    #[test]
    fn the_accept_key_is_rfc_6455s_example() {
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
