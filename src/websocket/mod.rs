//! WebSocket (RFC 6455) for handlers: [`accept`] checks a request's upgrade, answers
//! `101 Switching Protocols`, takes the connection over and speaks WebSocket on it
//! (lua-http's `websocket.new_from_stream` + `accept`). Over HTTP/2 the same call accepts
//! an extended CONNECT (RFC 8441) and speaks WebSocket on that one stream.
//!
//! What this module owns: the server side of the opening handshake (validation with a
//! clear 400/426 answer, subprotocol choice by the handler, permessage-deflate
//! negotiation), and the message layer: frames, masking, fragments, UTF-8 checked as text
//! arrives, ping/pong, the close handshake, and the limits a server needs that lua-http
//! lacked (message and frame size, also after decompression). permessage-deflate
//! (RFC 7692) is used whenever the client offers it unless [`Options::deflate`] turns it
//! off; [`Deflate`] sets its parameters. `tungstenite` only lends its [`Message`] type
//! and the accept key.
//!
//! - `frame.rs`: frame headers as bytes, masking, close codes (pure).
//! - `deflate.rs`: [`Deflate`], offer negotiation, the compressor and decompressor.
//! - `conn.rs`: the reader and writer halves over the taken socket.
//!
//! Not here: other extensions (none is in use on the Web), sending fragmented messages
//! (each message goes out as one frame).

mod conn;
mod deflate;
pub(crate) mod frame;

use std::{fmt, time::Duration};
use tungstenite::{
    handshake::derive_accept_key,
    protocol::{frame::coding::CloseCode, CloseFrame},
};

pub use deflate::Deflate;
pub use tungstenite::{Bytes as Payload, Message, Utf8Bytes};

use crate::{
    error::{Error, Result},
    headers::Headers,
    rt::timeout,
    stream::Stream,
};

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
    deflate: Option<Deflate>,
}

/// The largest message a peer may send by default: 64 MiB (tungstenite's default;
/// lua-http has no limit at all, DESIGN.md §4 item 11).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;
/// The largest frame by default: 16 MiB (tungstenite's default).
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 << 20;

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
            deflate: Some(Deflate::default()),
        }
    }
}

impl Options {
    /// The defaults: 64 MiB messages, 16 MiB frames, no subprotocol, permessage-deflate
    /// when the client offers it.
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

    /// Whether to accept permessage-deflate (RFC 7692) when the client offers it, with
    /// the [`Deflate`] defaults; on by default.
    pub fn deflate(mut self, on: bool) -> Options {
        self.deflate = on.then(Deflate::default);
        self
    }

    /// Accept permessage-deflate with these settings.
    pub fn deflate_with(mut self, deflate: Deflate) -> Options {
        self.deflate = Some(deflate);
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
            .field("ping_interval", &self.ping_interval)
            .field("close_timeout", &self.close_timeout)
            .field("deflate", &self.deflate)
            .finish()
    }
}

/// An open WebSocket connection, taken over from an HTTP/1.1 connection or carried by
/// one HTTP/2 stream.
pub struct WebSocket {
    reader: conn::Reader,
    writer: conn::Writer,
    protocol: Option<String>,
    extensions: Option<String>,
}

impl fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocket")
            .field("protocol", &self.protocol)
            .field("extensions", &self.extensions)
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
    let agreed = options
        .deflate
        .as_ref()
        .and_then(|config| deflate::negotiate(req.get_all("sec-websocket-extensions"), config));
    if let Some(agreed) = &agreed {
        res.append("sec-websocket-extensions", agreed.response.clone());
    }
    stream.write_headers(&res, false).await?;
    let socket = stream.take_socket()?;
    let config = conn::Config {
        max_message_size: options.max_message_size,
        max_frame_size: options.max_frame_size,
        ping_interval: options.ping_interval,
        close_timeout: options.close_timeout,
    };
    let (reader, writer) = conn::new(socket, config, agreed.as_ref());
    Ok(WebSocket {
        reader,
        writer,
        protocol,
        extensions: agreed.map(|a| a.response),
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

    /// The `Sec-WebSocket-Extensions` answer sent to the client, if any extension was
    /// agreed on (today only permessage-deflate, with its parameters).
    pub fn extensions(&self) -> Option<&str> {
        self.extensions.as_deref()
    }

    /// Sends a message (text, binary, ping, pong or close). With permessage-deflate,
    /// text and binary messages of 64 bytes or more go out compressed.
    pub async fn send(&mut self, msg: Message) -> Result<()> {
        self.writer.send(msg).await
    }

    /// The next message; `None` once the connection is closed. Pings are answered and
    /// close frames acknowledged here; they are still returned for the handler to see.
    ///
    /// A client that breaks the protocol is sent a close frame with the reason's code
    /// (1002 protocol error, 1007 text that is not UTF-8, 1009 over a size limit) and
    /// the error is returned.
    pub async fn recv(&mut self) -> Result<Option<Message>> {
        self.reader.recv().await
    }

    /// Closes with `code` and `reason` (at most 123 bytes), then waits (at most the
    /// `close_timeout` option) for the client's close frame, discarding messages that
    /// arrive meanwhile.
    pub async fn close(&mut self, code: u16, reason: &str) -> Result<()> {
        if !self.writer.close_sent() {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: Utf8Bytes::from(reason.to_owned()),
            };
            self.writer.send(Message::Close(Some(frame))).await?;
        }
        let close_timeout = self.reader.config.close_timeout;
        let drain = async { while let Ok(Some(_)) = self.reader.recv().await {} };
        // A client that never answers is simply dropped when the time is up.
        let _ = timeout(close_timeout, drain).await;
        Ok(())
    }

    /// Splits into a receiving and a sending half, e.g. for two tasks: one reading,
    /// one writing. The reader still answers pings and close frames.
    pub fn split(self) -> (WebSocketReader, WebSocketWriter) {
        conn::split(&self.reader);
        (
            WebSocketReader {
                reader: self.reader,
            },
            WebSocketWriter {
                writer: self.writer,
            },
        )
    }
}

/// The receiving half of a [`WebSocket`] (see [`WebSocket::split`]).
pub struct WebSocketReader {
    reader: conn::Reader,
}

impl WebSocketReader {
    /// The next message, as [`WebSocket::recv`].
    pub async fn recv(&mut self) -> Result<Option<Message>> {
        self.reader.recv().await
    }
}

impl fmt::Debug for WebSocketReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketReader").finish_non_exhaustive()
    }
}

/// The sending half of a [`WebSocket`] (see [`WebSocket::split`]).
pub struct WebSocketWriter {
    writer: conn::Writer,
}

impl WebSocketWriter {
    /// Sends a message, as [`WebSocket::send`].
    pub async fn send(&mut self, msg: Message) -> Result<()> {
        self.writer.send(msg).await
    }

    /// Sends a close frame with `code` and `reason`; the reading half then sees the
    /// client's answer and ends.
    pub async fn close(&mut self, code: u16, reason: &str) -> Result<()> {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from(reason.to_owned()),
        };
        self.writer.send(Message::Close(Some(frame))).await
    }
}

impl fmt::Debug for WebSocketWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketWriter").finish_non_exhaustive()
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
