//! onstream's own HTTP/2 engine, the default (`H2Engine::Own`); the `h2` crate's
//! (`src/h2/`) stays selectable with `Options::h2_engine(H2Engine::H2Crate)`.
//!
//! Why: an idle connection on the `h2` crate holds about 20 KB of buffers that no option
//! sizes or frees. Here a connection holds its HPACK table, its settings and windows, and
//! buffers only while it has something to read or write: input is read into one buffer
//! per thread (`conn.rs`). About 1.6 KB per idle connection, and fewer instructions per
//! request (bench/README.md).
//!
//! `frame.rs`: frame headers and the frames the server writes (pure). `hpack.rs`: header
//! compression (decoding by `loona-hpack`, encoding ours and stateless; `huffman.rs`
//! its string coding). `request.rs`: a
//! header block made into a request head or trailers, with RFC 9113's malformed-request
//! rules (pure). `conn.rs`: the connection's state machines, flow control and its task.
//! `stream.rs`: `OwnStream`, the handler's side, with the operations of `h2::H2Stream`,
//! and `OwnTunnel`, a stream as a byte stream after an extended CONNECT (RFC 8441).
//!
//! Limits, as on the `h2` crate engine: a header list over `max_header_size` is answered
//! 431 (the block still decoded whole, so that the HPACK table stays in step), and so is
//! one with more than `max_headers` regular fields (the `h2` crate counts none); a stream
//! buffers at most `h2_max_send_buffer_size` of DATA for the socket, and the connection
//! at most 64 KiB.
//!
//! Differences from the `h2` crate engine, all within RFC 9113: a pseudo-header field in
//! trailers is a stream error (the `h2` crate drops it); a write waits for flow-control
//! credit instead of buffering DATA the window does not allow yet; no dynamic table in
//! responses (a field the h2 crate would send as one index byte the second time goes as a
//! literal each time). `tests/h2own.rs` runs on it always; the whole suite
//! runs on it by default, and on the `h2` crate's with `ONSTREAM_TEST_H2_ENGINE=crate`.

mod conn;
// Crate-visible for `fuzzing.rs`, whose targets run them over arbitrary bytes.
pub(crate) mod frame;
pub(crate) mod hpack;
mod huffman;
pub(crate) mod request;
mod stream;

pub(crate) use conn::{serve, Conn};
pub(crate) use stream::OwnStream;
