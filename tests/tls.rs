//! TLS over real loopback sockets with a rustls client: `Tls::On`, `Tls::Auto` (TLS and
//! cleartext on one port), self-signed certificates and their fingerprint, certificates
//! from PEM files, ALPN, and handshake failures that must cost only their connection
//! (DESIGN.md §4 item 5: lua-http's default onerror stopped the server on one).

mod common;

use std::{
    io::{Read, Write},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::*;
use onstream::{ErrorKind, Options, Server, Tls};
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, SignatureScheme,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Accepts any certificate and remembers the one it was shown (for self-signed servers).
#[derive(Debug, Default)]
struct RecordingVerifier {
    seen: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        tls_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

struct TlsReply {
    alpn: Option<Vec<u8>>,
    response: Response,
}

/// Sends one `Connection: close` GET over TLS and reads the whole answer.
fn tls_get(addr: std::net::SocketAddr, config: ClientConfig, path: &str) -> TlsReply {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = tokio::time::timeout(IO_TIMEOUT, connector.connect(name, tcp))
            .await
            .expect("handshake timed out")
            .expect("handshake failed");
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        // A peer that closes without close_notify is an error for rustls; the bytes read
        // before it still count.
        let _ = tokio::time::timeout(IO_TIMEOUT, tls.read_to_end(&mut raw))
            .await
            .expect("response timed out");
        TlsReply {
            alpn,
            response: parse_one(&raw),
        }
    })
}

/// A handler answering with the request's `:scheme` and `:path`.
fn scheme_echo() -> impl FnMut(
    onstream::ServerHandle,
    onstream::Stream,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = onstream::Result<()>>>,
> {
    |_srv, stream| {
        Box::pin(async move {
            let req = stream.get_headers().await?;
            let body = format!(
                "{} {}",
                req.get(":scheme").unwrap_or(""),
                req.get(":path").unwrap_or("")
            );
            respond(&stream, "200", body).await
        })
    }
}

/// `Tls::On` with a given certificate serves HTTP/1.1 over TLS, with `:scheme` https.
#[test]
fn tls_on_serves_http1_with_a_given_certificate() {
    let (cert, config) = localhost_cert();
    let server = TestServer::start(move |o| o.tls(Tls::On).tls_config(config), scheme_echo);
    let reply = tls_get(server.addr(), trusting(&cert, &[]), "/secure");
    assert_eq!(reply.response.status, 200);
    assert_eq!(reply.response.body_str(), "https /secure");
    assert!(server.step_errors().is_empty());
}

/// `Tls::Auto` (the default) serves TLS and cleartext clients on the same port.
#[test]
fn auto_serves_tls_and_cleartext_on_one_port() {
    let (cert, config) = localhost_cert();
    let server = TestServer::start(move |o| o.tls_config(config), scheme_echo);
    let tls = tls_get(server.addr(), trusting(&cert, &[]), "/a");
    assert_eq!(tls.response.body_str(), "https /a");
    let plain = raw_request(
        server.addr(),
        b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(parse_one(&plain).body_str(), "http /b");
    let again = tls_get(server.addr(), trusting(&cert, &[]), "/c");
    assert_eq!(again.response.body_str(), "https /c");
}

/// With TLS on and no configuration, the server makes a self-signed certificate and
/// reports its SHA-256 fingerprint, which is the certificate clients are shown.
#[test]
fn a_self_signed_certificate_is_made_and_its_fingerprint_reported() {
    let server = TestServer::start(|o| o.tls(Tls::On), scheme_echo);
    let reported = server
        .exec(|s| s.certificate_fingerprint())
        .expect("no fingerprint for a self-signed certificate");
    let verifier = Arc::new(RecordingVerifier::default());
    let config = ClientConfig::builder_with_provider(tls_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let reply = tls_get(server.addr(), config, "/self-signed");
    assert_eq!(reply.response.body_str(), "https /self-signed");
    let seen = verifier.seen.lock().unwrap().clone().unwrap();
    assert_eq!(onstream::tls::fingerprint(&seen), reported);
}

/// A configuration read from PEM files works, and a client offering only http/1.1 by
/// ALPN gets it (the h2 preference is tested in `http2.rs`).
#[test]
fn pem_files_configure_tls_and_an_http1_client_gets_http1() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (temp_path("cert.pem"), temp_path("key.pem"));
    std::fs::write(&cert_path, ck.cert.pem()).unwrap();
    std::fs::write(&key_path, ck.signing_key.serialize_pem()).unwrap();
    let config = onstream::tls::config_from_pem_files(&cert_path, &key_path).unwrap();
    let server = TestServer::start(move |o| o.tls(Tls::On).tls_config(config), scheme_echo);
    let cert = ck.cert.der().clone();
    let reply = tls_get(server.addr(), trusting(&cert, &[b"http/1.1"]), "/pem");
    assert_eq!(reply.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(reply.response.body_str(), "https /pem");
    let _ = std::fs::remove_file(cert_path);
    let _ = std::fs::remove_file(key_path);
}

/// A missing PEM file is a configuration error, not a panic.
#[test]
fn a_missing_pem_file_is_a_config_error() {
    let err = onstream::tls::config_from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

/// lua-http: a failed TLS handshake reached the default onerror and stopped the server.
/// onstream: the connection is closed, nothing reaches onerror, others are served.
#[test]
fn a_failed_handshake_costs_only_its_connection() {
    let (cert, config) = localhost_cert();
    let server = TestServer::start(move |o| o.tls(Tls::On).tls_config(config), scheme_echo);
    // A TLS record header followed by garbage.
    let mut c = connect(server.addr());
    c.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    // Cleartext HTTP on a TLS-only port is not served: it gets a readable 400 that
    // says why (as nginx answers), then the connection closes.
    let plain = raw_request(server.addr(), b"GET /secret HTTP/1.1\r\nHost: x\r\n\r\n");
    let plain = String::from_utf8_lossy(&plain);
    assert!(plain.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{plain}");
    assert!(
        plain.contains("plain HTTP request was sent to an HTTPS port"),
        "{plain}"
    );
    assert!(!plain.contains("/secret"), "{plain}");
    let reply = tls_get(server.addr(), trusting(&cert, &[]), "/still");
    assert_eq!(reply.response.body_str(), "https /still");
    assert!(server.wait_connections(0, Duration::from_secs(2)));
    assert!(
        server.step_errors().is_empty(),
        "{:?}",
        server.step_errors()
    );
}

/// A client that connects to a TLS port and sends nothing is closed after
/// `connection_setup_timeout`.
#[test]
fn a_silent_client_is_closed_after_the_setup_timeout() {
    let server = TestServer::start(
        |o| {
            o.tls(Tls::On)
                .connection_setup_timeout(Duration::from_millis(200))
        },
        scheme_echo,
    );
    let mut c = connect(server.addr());
    let closed = read_to_close(&mut c, Duration::from_secs(3));
    assert_eq!(closed.expect("the silent client was not closed"), b"");
    assert!(server.wait_connections(0, Duration::from_secs(1)));
}

/// `Tls::Auto` has no default port (lua-http: the port is required when `tls` is nil).
#[test]
fn auto_without_a_port_is_a_config_error() {
    let server = Server::listen(Options::new().host("127.0.0.1"), |_srv, _stream| async {
        Ok(())
    })
    .unwrap();
    let err = server.listen_now().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

/// A keep-alive TLS connection parks between requests (its socket and TLS session wait
/// without a task) and answers the next request when it comes.
#[test]
fn a_parked_tls_connection_answers_its_next_request() {
    let (cert, config) = localhost_cert();
    let server = TestServer::start(
        move |o| o.tls(Tls::On).tls_config(config).park_after(Duration::ZERO),
        scheme_echo,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let raw = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(trusting(&cert, &[])));
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.expect("handshake");
        tls.write_all(b"GET /first HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        // The answer waits in the socket; the connection meanwhile parks.
        tokio::time::sleep(Duration::from_millis(200)).await;
        tls.write_all(b"GET /second HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(IO_TIMEOUT, tls.read_to_end(&mut raw))
            .await
            .expect("responses timed out")
            .expect("the server closed without close_notify");
        raw
    });
    let responses = parse_responses(&raw);
    let bodies: Vec<&str> = responses.iter().map(Response::body_str).collect();
    assert_eq!(bodies, ["https /first", "https /second"]);
}

/// Defect: the self-signed certificate was valid from 1975 to 4096 (rcgen's default). It
/// is made anew at each start, so it now runs from a day back (a client's clock may be a
/// little behind) to about a year ahead.
#[test]
fn the_self_signed_certificate_is_valid_from_now_for_about_a_year() {
    let server = TestServer::start(|o| o.tls(Tls::On), scheme_echo);
    let verifier = Arc::new(RecordingVerifier::default());
    let config = ClientConfig::builder_with_provider(tls_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    tls_get(server.addr(), config, "/validity");
    let seen = verifier.seen.lock().unwrap().clone().unwrap();
    let (not_before, not_after) = der::validity(&seen);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        not_before <= now && now <= not_after,
        "not valid now: {not_before}..{not_after}, now {now}"
    );
    let day = 86_400;
    assert!(
        not_after - now <= 400 * day,
        "valid for {} more days",
        (not_after - now) / day
    );
    assert!(
        now - not_before <= 2 * day,
        "valid since {} days",
        (now - not_before) / day
    );
}

/// Just enough DER (X.690) to read a certificate's validity: no dependency for one test.
mod der {
    /// The content of the item at the start of `input`, which must have `tag`, and what
    /// follows it.
    fn item(input: &[u8], tag: u8) -> (&[u8], &[u8]) {
        assert_eq!(input[0], tag, "unexpected DER tag");
        let (len, header) = match input[1] {
            n if n < 0x80 => (usize::from(n), 2),
            0x81 => (usize::from(input[2]), 3),
            0x82 => (usize::from(u16::from_be_bytes([input[2], input[3]])), 4),
            n => panic!("DER length form {n:#x} in a certificate"),
        };
        (&input[header..header + len], &input[header + len..])
    }

    fn skip(input: &[u8]) -> &[u8] {
        item(input, input[0]).1
    }

    /// notBefore and notAfter as Unix times: Certificate → tbsCertificate → (version,
    /// serialNumber, signature, issuer) → validity (RFC 5280 §4.1).
    pub fn validity(cert: &[u8]) -> (i64, i64) {
        let (certificate, _) = item(cert, 0x30);
        let (mut tbs, _) = item(certificate, 0x30);
        if tbs[0] == 0xa0 {
            tbs = skip(tbs);
        }
        let (validity, _) = item(skip(skip(skip(tbs))), 0x30);
        let (not_before, rest) = time(validity);
        let (not_after, _) = time(rest);
        (not_before, not_after)
    }

    /// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
    fn time(input: &[u8]) -> (i64, &[u8]) {
        let tag = input[0];
        let (content, rest) = item(input, tag);
        let text = std::str::from_utf8(content).unwrap();
        let num = |s: &str| s.parse::<i64>().unwrap();
        let (year, text) = match tag {
            0x17 => {
                let yy = num(&text[..2]);
                (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
            }
            0x18 => (num(&text[..4]), &text[4..]),
            _ => panic!("not a time: tag {tag:#x}"),
        };
        assert_eq!(text.len(), 11, "{text:?}");
        assert!(text.ends_with('Z'), "{text:?}");
        let days = days_from_civil(year, num(&text[0..2]), num(&text[2..4]));
        let seconds = num(&text[4..6]) * 3600 + num(&text[6..8]) * 60 + num(&text[8..10]);
        (days * 86_400 + seconds, rest)
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    #[test]
    fn days_from_civil_knows_some_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1975, 1, 1), 1_826);
    }
}

/// A TLS client that asked to close (`Connection: close`) gets its answer and the
/// server's close_notify, and the server then closes at once, without waiting for the
/// client's own close_notify and FIN (`Closing` in `h1/conn/dispatch.rs`): here the client
/// keeps its socket open and the server forgets the connection anyway. Before, it read on
/// for the lingering time (an hour here).
#[test]
fn a_tls_client_that_asked_to_close_is_not_waited_for() {
    let (cert, config) = localhost_cert();
    let server = TestServer::start(
        move |o| {
            o.tls(Tls::On)
                .tls_config(config)
                .lingering_close(Duration::from_secs(3600), 1 << 20)
                .intra_stream_timeout(Duration::from_secs(3600))
        },
        scheme_echo,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(trusting(&cert, &[])));
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = tokio::time::timeout(IO_TIMEOUT, connector.connect(name, tcp))
            .await
            .expect("handshake timed out")
            .expect("handshake failed");
        tls.write_all(b"GET /bye HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(IO_TIMEOUT, tls.read_to_end(&mut raw))
            .await
            .expect("response timed out")
            .expect("the answer ends with close_notify");
        assert_eq!(parse_one(&raw).body_str(), "https /bye");
        assert!(
            server.wait_connections(0, IO_TIMEOUT),
            "the server still holds the connection"
        );
        drop(tls);
    });
}

/// A ClientHello that comes in pieces is read whole before the handshake goes on: the
/// server hands what its first read got to rustls and reads on only when that was not
/// all of it (`setup.rs`, `client_hello`). Here the record header comes first, and the
/// rest once the server has stepped.
#[test]
fn a_client_hello_split_across_reads_is_read_whole() {
    let (cert, config) = localhost_cert();
    let server = TestServer::start(move |o| o.tls(Tls::On).tls_config(config), scheme_echo);
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(trusting(&cert, &[])), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    let mut tcp = connect(server.addr());
    tcp.write_all(&hello[..5]).unwrap();
    // Two jobs run on the server thread: it has stepped (and read) in between.
    server.exec(|_| ());
    server.exec(|_| ());
    tcp.write_all(&hello[5..]).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"GET /split HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    assert_eq!(parse_one(&raw).body_str(), "https /split");
}
