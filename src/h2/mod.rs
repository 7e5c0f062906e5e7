//! HTTP/2 on the `h2` crate: `conn.rs` drives a server connection as a task on the step
//! loop; `stream.rs` gives each request the same `Stream` operations as HTTP/1.
//!
//! `malformed.rs` finds what RFC 9113 calls malformed that the h2 crate lets through.
//! `drain.rs` reads what a client still sends after its response ended; `send_watch.rs`
//! tells the connection task when its output is stuck on a client that does not read.
//!
//! `tunnel.rs` turns a stream into a byte stream for extended CONNECT (RFC 8441), which
//! carries WebSocket over HTTP/2.
//!
//! Not offered: `Upgrade: h2c` (deprecated by RFC 9113; cleartext HTTP/2 is by prior
//! knowledge only) and server push (browsers removed it).

mod conn;
mod drain;
mod malformed;
mod send_watch;
mod stream;
mod tunnel;

pub(crate) use conn::{serve, H2Config, H2Shared};
pub(crate) use stream::H2Stream;
