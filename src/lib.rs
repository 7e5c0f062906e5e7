//! onstream: lua-http's `http.server` in Rust — an HTTP/1.1 server that is a *steppable
//! object* any main loop can drive (`pollfd`, `events`, `timeout`, `step`, `run`), with
//! one handler task per request that may read, write, stream or take over the connection.
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
#![deny(unsafe_code)]

#[cfg(feature = "tokio")]
pub mod bridge;
mod date;
mod error;
// Entry points for the fuzz targets in fuzz/ (feature `fuzzing`): not public API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod h1;
mod h2;
mod handler;
mod headers;
mod net;
mod options;
mod parking;
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
    Options, Version, DEFAULT_CLOSE_TIMEOUT, DEFAULT_CONNECTION_SETUP_TIMEOUT,
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_INTRA_STREAM_TIMEOUT, DEFAULT_SEND_TIMEOUT,
};
pub use rt::{sleep, sleep_until, timeout, Controller, Remote, Task};
pub use server::{OnError, Server, ServerHandle};
pub use stream::{Stream, Within};
pub use tls::Tls;
pub use upgrade::Upgraded;
pub use workers::{Closer, Workers};
