//! The hello-world server (lua-http's `examples/server_hello.lua`): answers every request
//! with `Hello, World!`; a POST or PUT body is read first and its size reported.
//!
//! ```sh
//! cargo run --release --example hello -- 8000
//! curl http://127.0.0.1:8000/
//! curl -k https://127.0.0.1:8000/
//! ```
//!
//! HTTP/2 is served by onstream's own engine (the default); `ONSTREAM_H2_ENGINE=crate`
//! serves it with the h2 crate's (`Options::h2_engine(H2Engine::H2Crate)`), for
//! `bench/idle-memory` and h2load comparisons.

use bytes::Bytes;
use onstream::{H2Engine, Headers, Options, Server};

fn main() -> onstream::Result<()> {
    let port = std::env::args()
        .nth(1)
        .map(|p| p.parse().expect("PORT must be a number"))
        .unwrap_or(8000);
    let h2_engine = match std::env::var("ONSTREAM_H2_ENGINE").as_deref() {
        Ok("crate") => H2Engine::H2Crate,
        _ => H2Engine::Own,
    };
    let server = Server::listen(
        Options::new()
            .host("127.0.0.1")
            .port(port)
            .h2_engine(h2_engine),
        |_server, stream| async move {
            let req = stream.get_headers().await?;
            // The whole request is read before answering, even a GET's empty body: a
            // client that breaks the protocol after its headers is then refused rather
            // than answered (h2spec checks exactly that).
            let n = stream.get_body_as_bytes().await?.len();
            let body = match req.get(":method") {
                Some("POST" | "PUT") => Bytes::from(format!("got {n} bytes")),
                _ => Bytes::from_static(b"Hello, World!"),
            };
            let mut res = Headers::new();
            res.append(":status", "200");
            res.append("content-type", "text/plain");
            stream.write_headers(&res, false).await?;
            stream.write_chunk(body, true).await
        },
    )?;
    server.listen_now()?;
    // Tls::Auto (the default): cleartext and TLS on one port, with a self-signed
    // certificate made at start.
    let addr = server.local_addr()?;
    println!("listening on http://{addr} and https://{addr}");
    if let Some(fingerprint) = server.certificate_fingerprint() {
        println!("self-signed certificate, SHA-256 {fingerprint}");
    }
    server.run(None)
}
