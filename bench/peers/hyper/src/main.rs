//! Baseline peer for `bench/run`: a hyper 1.x "Hello, World!" server on a tokio
//! current_thread runtime (one core, like the onstream hello example), or with
//! HYPER_THREADS=N on the multi-thread runtime with N workers.
//! Adapted from the workplace's bench-peers anchor server (hyper-util auto builder).
//!
//! usage: bench-hyper <port> <tls_port> <cert.pem> <key.pem>
//!
//! <port>: cleartext HTTP/1.1 and HTTP/2 by prior knowledge (h2c preface), told
//! apart by hyper-util's auto builder. <tls_port>: TLS (rustls, ring provider, or
//! aws-lc-rs with the `aws-lc-rs` feature), ALPN h2 preferred, then http/1.1.
//!
//! Any path -> 200 "Hello, World!" (text/plain); POST/PUT read the whole body
//! first and answer "got N bytes".

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, header::HeaderValue, service::service_fn, Method, Request, Response};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto::Builder,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::{rustls, TlsAcceptor};

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

fn tls_acceptor(cert: &str, key: &str) -> TlsAcceptor {
    let certs = CertificateDer::pem_file_iter(cert)
        .unwrap_or_else(|e| panic!("{cert}: {e}"))
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("{cert}: {e}"));
    let key = PrivateKeyDer::from_pem_file(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    #[cfg(not(feature = "aws-lc-rs"))]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    #[cfg(feature = "aws-lc-rs")]
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("TLS certificate");
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(cfg))
}

async fn serve<I>(io: I)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    // Default builder settings: this is the "stock hyper" baseline.
    let _ = Builder::new(TokioExecutor::new())
        .serve_connection(io, service_fn(handle))
        .await;
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve(TokioIo::new(stream)).await,
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(stream).await {
                        serve(TokioIo::new(s)).await
                    }
                }
            }
        });
    }
}

async fn bind(port: u16) -> TcpListener {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ports = (
        args.get(1).map(|p| p.parse::<u16>()),
        args.get(2).map(|p| p.parse::<u16>()),
    );
    let (port, tls_port) = match ports {
        (Some(Ok(p)), Some(Ok(t))) if args.len() == 5 => (p, t),
        _ => {
            eprintln!("usage: bench-hyper <port> <tls_port> <cert.pem> <key.pem>");
            std::process::exit(2);
        }
    };
    let acceptor = tls_acceptor(&args[3], &args[4]);
    // HYPER_THREADS=N (bench/run SUITE=multi): tokio's multi-thread runtime with N
    // workers instead of current_thread.
    let threads: usize = std::env::var("HYPER_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let rt = if threads > 1 {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    rt.block_on(async move {
        let plain = bind(port).await;
        let tls = bind(tls_port).await;
        println!("listening on http://127.0.0.1:{port} and https://127.0.0.1:{tls_port}");
        tokio::spawn(accept_loop(tls, Some(acceptor)));
        accept_loop(plain, None).await;
    });
}
