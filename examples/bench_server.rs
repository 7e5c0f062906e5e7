//! The server the peers' benchmark runs (`../shared/bench-peers/run.sh` as `CMD_ours`, and
//! issue 14's table): one `Controller` driving two `Server`s, HTTP/1.1 and h2c (prior
//! knowledge) on PORT with `Tls::Off`, and TLS (ALPN h2, then http/1.1) on TLS_PORT with
//! the given PEM certificate and key, so that every peer does the same TLS work. GET and
//! POST `/` alike read the request body and answer `Hello, World!`. With
//! `ONSTREAM_H2_ENGINE=crate` HTTP/2 is served by the h2 crate's engine
//! (`Options::h2_engine(H2Engine::H2Crate)`) instead of onstream's own, the default.
//!
//! ```sh
//! cargo run --release --example bench_server -- 8000 8443 cert.pem key.pem
//! SERVERS="hyper-ct actix nginx h2o ours" \
//!   CMD_ours="target/release/examples/bench_server {port} {tls_port} {cert} {key}" \
//!   ../shared/bench-peers/run.sh
//! ```

use onstream::{tls, Controller, H2Engine, Headers, Options, Server, ServerHandle, Stream, Tls};

async fn hello(_server: ServerHandle, stream: Stream) -> onstream::Result<()> {
    stream.get_headers().await?;
    stream.get_body_as_bytes().await?;
    let mut res = Headers::new();
    res.append(":status", "200");
    res.append("content-type", "text/plain");
    stream.write_headers(&res, false).await?;
    stream
        .write_chunk(bytes::Bytes::from_static(b"Hello, World!"), true)
        .await
}

fn main() -> onstream::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, port, tls_port, cert, key] = &args[..] else {
        eprintln!("usage: bench_server PORT TLS_PORT CERT.pem KEY.pem");
        std::process::exit(2);
    };
    let number = |p: &String| -> u16 { p.parse().expect("a port is a number") };
    let ctl = Controller::new()?;
    let h2_engine = match std::env::var("ONSTREAM_H2_ENGINE").as_deref() {
        Ok("crate") => H2Engine::H2Crate,
        _ => H2Engine::Own,
    };
    let base = Options::new()
        .host("127.0.0.1")
        .controller(ctl.clone())
        .h2_engine(h2_engine);
    let plain = Server::listen(base.clone().port(number(port)).tls(Tls::Off), hello)?;
    let secure = Server::listen(
        base.port(number(tls_port))
            .tls(Tls::On)
            .tls_config(tls::config_from_pem_files(cert, key)?),
        hello,
    )?;
    plain.listen_now()?;
    secure.listen_now()?;
    ctl.run(None)
}
