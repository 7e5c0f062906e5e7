//! onstream: lua-http's `http.server` in Rust — an HTTP/1.1 and HTTP/2 server, with TLS
//! (rustls) and WebSocket, that is a *steppable object* any main loop can drive
//! (`pollfd`, `events`, `timeout`, `step`, `run`), with one handler task per request
//! that may read, write, stream or take over the connection (upgrades, tunnels).
//!
//! - HTTP/1.1 with pipelining and keep-alive, HTTP/2 over TLS (ALPN) and in cleartext
//!   (prior knowledge), on one port; TLS on, off, or decided per connection
//!   ([`Tls`]), with a self-signed certificate made at start when none is given.
//! - [`websocket`]: RFC 6455 with permessage-deflate, over HTTP/1.1.
//! - Unix sockets, adoption of sockets made elsewhere (inetd, systemd), several loops
//!   on one port ([`Workers`]).
//! - A limit, with a default and an option, on every size, count and time a client
//!   controls ([`Options`]); a client's bad input costs only its own connection.
//! - Feature `tokio` (off by default): `bridge`, to await futures that need a tokio
//!   runtime (reqwest, sqlx, tonic) from a handler.
//!
//! ```no_run
//! use onstream::{Headers, Options, Server};
//!
//! fn main() -> onstream::Result<()> {
//!     let server = Server::listen(Options::new().host("127.0.0.1").port(8000),
//!         |_srv, stream| async move {
//!             let req = stream.get_headers().await?;
//!             let mut res = Headers::new();
//!             res.append(":status", "200");
//!             res.append("content-type", "text/plain");
//!             stream.write_headers(&res, false).await?;
//!             stream.write_chunk(format!("Hello, {}!\n", req.get(":path").unwrap_or("/")), true).await
//!         })?;
//!     server.run(None) // lua: server:loop()
//! }
//! ```
//!
//! An external loop instead waits for readability of [`Server::pollfd`] for at most
//! [`Server::timeout`], then calls `server.step(Some(Duration::ZERO))`.
//!
//! # Layout
//!
//! - [`rt`] (`Controller`): the single-threaded step loop on mio; knows nothing of HTTP.
//! - `net`: listening sockets and adopted descriptors (socket2).
//! - [`Server`] (`server.rs`): accept, connection set, pause/resume/close, `onerror`.
//! - `h1/`: the HTTP/1.x codec and connection.
//! - [`Stream`], [`Headers`]: the request object handlers see.
//! - [`Error`]: the one error type.
//! - [`Workers`]: one loop per core, each with its own server on the same address.
//! - `bridge` (feature `tokio`): await tokio-based futures from handlers.
//!
//! ARCHITECTURE.md in the repository has the invariants.

#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_code)]

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod bridge;
mod date;
mod error;
// Entry points for the fuzz targets in fuzz/ (feature `fuzzing`): not public API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod h1;
mod h2;
mod h2own;
mod handler;
mod headers;
mod net;
mod options;
mod parking;
mod rejected;
pub mod rt;
mod server;
mod setup;
mod sniff;
mod stream;
mod stream_common;
pub mod tls;
mod transport;
mod upgrade;
pub mod websocket;
mod workers;

pub use error::{Error, ErrorKind, Result};
pub use headers::{Field, Headers};
pub use net::{Connected, Family, Listener, LocalAddr};
pub use options::{
    H2Engine, Options, Version, DEFAULT_CLOSE_TIMEOUT, DEFAULT_CONNECTION_SETUP_TIMEOUT,
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_INTRA_STREAM_TIMEOUT, DEFAULT_SEND_TIMEOUT,
};
pub use rejected::{OnRejected, Rejected};
pub use rt::{sleep, sleep_until, timeout, Controller, Remote, Task};
pub use server::{OnError, Server, ServerHandle};
pub use stream::{Stream, Within};
pub use tls::Tls;
pub use upgrade::Upgraded;
pub use workers::{Closer, Workers};
