//! The load of `bench/tls-handshakes`: N `GET /` requests with `connection: close`, each
//! on a new TLS 1.3 connection, C connections at a time, on one thread, with every
//! handshake full (no session kept) or resumed (each of the C loops offers the session
//! of its previous connection, as each h2load client does; only their first connections
//! are full). The server's certificate is not checked: this measures the
//! server's handshakes, not PKI, and the self-signed test certificate names no host.
//!
//! usage: tls-client full|resumed HOST:PORT N C
//!
//! Prints how many connections finished, and of their handshakes how many were full and
//! how many resumed (rustls' `handshake_kind`); exits 1 if any connection failed.

use std::{cell::Cell, net::SocketAddr, rc::Rc, sync::Arc, time::Instant};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    client::Resumption,
    crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider},
    pki_types::{CertificateDer, ServerName, UnixTime},
    DigitallySignedStruct, HandshakeKind, SignatureScheme,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

/// Accepts any certificate, but checks the handshake's signature as a client must.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[derive(Default)]
struct Counts {
    done: Cell<u64>,
    full: Cell<u64>,
    resumed: Cell<u64>,
    failed: Cell<u64>,
}

async fn one(connector: &TlsConnector, addr: SocketAddr, counts: &Counts) -> std::io::Result<()> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").expect("a DNS name");
    let mut tls = connector.connect(name, tcp).await?;
    match tls.get_ref().1.handshake_kind() {
        Some(HandshakeKind::Resumed) => counts.resumed.set(counts.resumed.get() + 1),
        _ => counts.full.set(counts.full.get() + 1),
    }
    tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::with_capacity(256);
    match tls.read_to_end(&mut response).await {
        Ok(_) => {}
        // A server that closes without close_notify after a complete response.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e),
    }
    if !response.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other("not a 200 response"));
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(addr), Some(n), Some(c)) = (
        args.get(1),
        args.get(2).and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(3).and_then(|n| n.parse::<u64>().ok()),
        args.get(4).and_then(|c| c.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: tls-client full|resumed HOST:PORT N C");
        std::process::exit(2);
    };
    // X25519 alone, the key share OpenSSL 3.0 clients (h2load, curl) send: rustls' own
    // first choice, X25519MLKEM768, would make a ring server ask again
    // (HelloRetryRequest), and an aws-lc-rs one do a larger exchange than h2load's.
    let provider = Arc::new(CryptoProvider {
        kx_groups: vec![rustls::crypto::aws_lc_rs::kx_group::X25519],
        ..rustls::crypto::aws_lc_rs::default_provider()
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let resumed = match mode.as_str() {
        "full" => false,
        "resumed" => true,
        _ => {
            eprintln!("mode: full or resumed");
            std::process::exit(2);
        }
    };
    // Each of the C connection loops has its own session store, as each h2load client
    // does: one shared store keeps at most 8 tickets per server, fewer than C loops use.
    let connector = move || {
        let mut config = config.clone();
        config.resumption = if resumed {
            Resumption::in_memory_sessions(4)
        } else {
            Resumption::disabled()
        };
        TlsConnector::from(Arc::new(config))
    };
    let counts = Rc::new(Counts::default());
    let next = Rc::new(Cell::new(0u64));
    let start = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let workers: Vec<_> = (0..c)
            .map(|_| {
                let (connector, counts, next) = (connector(), counts.clone(), next.clone());
                tokio::task::spawn_local(async move {
                    while next.get() < n {
                        next.set(next.get() + 1);
                        match one(&connector, addr, &counts).await {
                            Ok(()) => counts.done.set(counts.done.get() + 1),
                            Err(e) => {
                                if counts.failed.get() == 0 {
                                    eprintln!("tls-client: {e}");
                                }
                                counts.failed.set(counts.failed.get() + 1);
                            }
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.await;
        }
    });
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} done, {} failed, {} full, {} resumed, {:.2} s, {:.0} conn/s",
        counts.done.get(),
        counts.failed.get(),
        counts.full.get(),
        counts.resumed.get(),
        secs,
        counts.done.get() as f64 / secs
    );
    if counts.failed.get() > 0 {
        std::process::exit(1);
    }
}
