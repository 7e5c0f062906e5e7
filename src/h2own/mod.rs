//! An experimental HTTP/2 engine of our own, beside the `h2` crate's (`src/h2/`), chosen
//! with `Options::experimental_h2_engine`; the `h2` crate stays the default.
//!
//! Why: an idle connection on the `h2` crate holds about 15 KB of buffers that no option
//! sizes or frees. Here a connection holds its HPACK table, its settings and windows, and
//! buffers only while it has something to read or write: input is read into one buffer
//! per thread (`conn.rs`).
//!
//! `frame.rs`: frame headers and the frames the server writes (pure). `hpack.rs`: header
//! compression (decoding by `loona-hpack`, encoding ours and stateless). `request.rs`: a
//! header block made into a request head or trailers, with RFC 9113's malformed-request
//! rules (pure). `conn.rs`: the connection's state machines, flow control and its task.
//! `stream.rs`: `OwnStream`, the handler's side, with the operations of `h2::H2Stream`,
//! and `OwnTunnel`, a stream as a byte stream after an extended CONNECT (RFC 8441).
//!
//! Differences from the `h2` crate engine, all within RFC 9113: a header list over the
//! bound is refused with REFUSED_STREAM rather than a 431 answer; `max_send_buffer_size`
//! does not apply (output is bounded per connection, 64 KiB); no Huffman coding and no
//! dynamic table in responses. `tests/h2own.rs` runs on it always; the whole suite runs
//! on it with `ONSTREAM_TEST_H2_ENGINE=own`.

mod conn;
// Crate-visible for `fuzzing.rs`, whose targets run them over arbitrary bytes.
pub(crate) mod frame;
pub(crate) mod hpack;
pub(crate) mod request;
mod stream;

pub(crate) use conn::{serve, Conn};
pub(crate) use stream::OwnStream;
