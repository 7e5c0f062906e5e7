//! HTTP/1.x: our own server codec on `httparse`, owned because lua-http's stream semantics
//! (`unget`, `get_body_until`, `take_socket`, per-call timeouts, responses written by the
//! handler as it goes) need control that hyper does not give.
//!
//! - `parse.rs`: request heads and the RFC 9112 length rules (pure).
//! - `body.rs`: request body decoding and chunked framing (pure).
//! - `encode.rs`: response heads (pure).
//! - `conn.rs`: the connection — buffers, turns, keep-alive, the driver task.
//! - `stream.rs`: one exchange on a connection.
//! - `pool.rs`: write buffers lent to connections while they have output, per thread.

pub(crate) mod body;
mod conn;
pub(crate) mod encode;
pub(crate) mod parse;
pub(crate) mod pool;
mod stream;

pub(crate) use conn::{H1Config, H1Conn, Parked};
pub(crate) use parse::Limits;
pub(crate) use stream::H1Stream;
