//! Baseline peer for `bench/run`: a hyper 1.x HTTP/1.1 "Hello, World!" server on a
//! tokio current_thread runtime (one core, like the onstream hello example).
//!
//! usage: bench-hyper <port>
//!
//! GET (any path) -> 200 "Hello, World!" (text/plain); POST/PUT read the whole
//! body first and answer "got N bytes".

use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    body::Incoming, header::HeaderValue, server::conn::http1, service::service_fn, Method, Request,
    Response,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = if req.method() == Method::POST || req.method() == Method::PUT {
        let n = match req.into_body().collect().await {
            Ok(b) => b.to_bytes().len(),
            Err(_) => 0,
        };
        Bytes::from(format!("got {n} bytes"))
    } else {
        Bytes::from_static(b"Hello, World!")
    };
    let mut res = Response::new(Full::new(body));
    res.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    Ok(res)
}

fn main() {
    let port: u16 = match std::env::args().nth(1).map(|p| p.parse()) {
        Some(Ok(p)) => p,
        _ => {
            eprintln!("usage: bench-hyper <port>");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        println!("listening on http://{addr}");
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("accept: {e}");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                // Default builder settings: this is the "stock hyper" baseline.
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(handle))
                    .await;
            });
        }
    });
}
