//! The test harness shared by every file in `tests/`: a real `Server` stepping on its own
//! thread, and small HTTP/1 clients (raw bytes, a minimal response reader, hyper).
//!
//! Every network wait here is bounded (a few seconds at most), so a server that hangs
//! makes a test fail fast instead of stalling the suite. The harness does not retry or
//! paper over server behaviour: what a test sees is what the server sent.

#![allow(dead_code)]

pub mod h2_frames;

use std::{
    future::Future,
    io::{self, BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use bytes::Bytes;
use onstream::{
    ErrorKind, H2Engine, Headers, LocalAddr, Options, Remote, Server, ServerHandle, Stream,
};

/// How long any single network wait of a test may take before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the harness thread steps the server when nothing happens.
const STEP_INTERVAL: Duration = Duration::from_millis(50);

/// Installs a `tracing` subscriber once, filtered by `RUST_LOG`, so a failing test can be
/// rerun with the server's logs.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

// ===== TestServer =====

/// A job sent to the server's thread, run there between two steps with the `!Send` server.
type Job = Box<dyn FnOnce(&Server) + Send>;

/// An error returned by `Server::step` on the server thread.
#[derive(Debug, Clone)]
pub struct StepError {
    pub kind: ErrorKind,
    pub message: String,
}

/// A `Server` created on, and stepped by, its own thread.
///
/// The thread loops on `server.step(Some(50 ms))` until the `TestServer` is dropped,
/// records every `Err` that `step` returns (see [`TestServer::step_errors`]) and runs the
/// jobs sent with [`TestServer::exec`] between steps. Dropping the `TestServer` stops and
/// joins the thread.
pub struct TestServer {
    /// Where the server listens.
    pub local: LocalAddr,
    pub remote: Remote,
    stop: Arc<AtomicBool>,
    step_errors: Arc<Mutex<Vec<StepError>>>,
    jobs: mpsc::Sender<Job>,
    thread: Option<JoinHandle<()>>,
}

/// The HTTP/2 engine the test-suite runs on: `ONSTREAM_TEST_H2_ENGINE=crate` picks the
/// h2 crate's, anything else (or nothing) the default.
pub fn test_h2_engine() -> H2Engine {
    match std::env::var("ONSTREAM_TEST_H2_ENGINE").as_deref() {
        Ok("crate") => H2Engine::H2Crate,
        _ => H2Engine::Own,
    }
}

impl TestServer {
    /// Starts `Server::listen(opts_fn(Options::new()).host("127.0.0.1").port(0), handler)`.
    pub fn start<H, Fut>(
        opts_fn: impl FnOnce(Options) -> Options + Send + 'static,
        make_handler: impl FnOnce() -> H + Send + 'static,
    ) -> TestServer
    where
        H: FnMut(ServerHandle, Stream) -> Fut + 'static,
        Fut: Future<Output = onstream::Result<()>> + 'static,
    {
        TestServer::build(move || {
            // ONSTREAM_TEST_H2_ENGINE=crate runs the tests on the h2 crate's HTTP/2 engine
            // (`H2Engine::H2Crate`) instead of the default, onstream's own; `own` is the
            // default spelled out. A test's own `h2_engine` choice still wins.
            let opts = opts_fn(Options::new().h2_engine(test_h2_engine()))
                .host("127.0.0.1")
                .port(0);
            Server::listen(opts, make_handler())
        })
    }

    /// Starts the server that `build` makes on the server thread (for unix sockets, adopted
    /// listeners, `set_onerror` before the first step, ...). `listen_now` is called on it.
    pub fn build(build: impl FnOnce() -> onstream::Result<Server> + Send + 'static) -> TestServer {
        init_tracing();
        let stop = Arc::new(AtomicBool::new(false));
        let step_errors = Arc::new(Mutex::new(Vec::new()));
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(LocalAddr, Remote), String>>();

        let thread = {
            let stop = stop.clone();
            let step_errors = step_errors.clone();
            thread::Builder::new()
                .name("onstream-test-server".into())
                .spawn(move || {
                    let server = match build().and_then(|s| s.listen_now().map(|()| s)) {
                        Ok(server) => server,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("server setup failed: {e:?}")));
                            return;
                        }
                    };
                    let local = match server.local_addr() {
                        Ok(local) => local,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("local_addr failed: {e:?}")));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok((local, server.remote())));
                    while !stop.load(Ordering::SeqCst) {
                        if let Err(e) = server.step(Some(STEP_INTERVAL)) {
                            tracing::info!("step returned {e:?}");
                            step_errors.lock().unwrap().push(StepError {
                                kind: e.kind(),
                                message: format!("{e:?}"),
                            });
                        }
                        while let Ok(job) = jobs_rx.try_recv() {
                            job(&server);
                        }
                    }
                })
                .expect("spawn server thread")
        };

        let (local, remote) = match ready_rx.recv_timeout(IO_TIMEOUT) {
            Ok(Ok(ready)) => ready,
            Ok(Err(msg)) => panic!("{msg}"),
            Err(e) => panic!("the server thread did not start: {e}"),
        };
        TestServer {
            local,
            remote,
            stop,
            step_errors,
            jobs: jobs_tx,
            thread: Some(thread),
        }
    }

    /// The TCP address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.local.inet().expect("the server listens on TCP")
    }

    /// Runs `f` on the server thread with the server, between two steps, and returns its
    /// result.
    pub fn exec<R: Send + 'static>(&self, f: impl FnOnce(&Server) -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .send(Box::new(move |server: &Server| {
                let _ = tx.send(f(server));
            }))
            .expect("the server thread is gone");
        self.remote.wake();
        rx.recv_timeout(IO_TIMEOUT)
            .expect("the server thread did not run the job")
    }

    /// The errors `step` has returned so far.
    pub fn step_errors(&self) -> Vec<StepError> {
        self.step_errors.lock().unwrap().clone()
    }

    /// `server.connections()`, read on the server thread between two steps.
    pub fn connections(&self) -> usize {
        self.exec(|s| s.connections())
    }

    /// Waits (at most `max`) until `connections()` is `n`; returns whether it got there.
    pub fn wait_connections(&self, n: usize, max: Duration) -> bool {
        wait_until(max, || self.connections() == n)
    }

    /// Waits (at most `max`) until `step` has returned at least `n` errors.
    pub fn wait_step_errors(&self, n: usize, max: Duration) -> Vec<StepError> {
        wait_until(max, || self.step_errors.lock().unwrap().len() >= n);
        self.step_errors()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.remote.wake();
        if let Some(thread) = self.thread.take() {
            let joined = thread.join();
            if joined.is_err() && !thread::panicking() {
                panic!("the server thread panicked");
            }
        }
    }
}

/// Polls `cond` every 10 ms until it holds or `max` passes; returns whether it held.
pub fn wait_until(max: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + max;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

// ===== handler helpers =====

/// Response headers with `:status` and a `content-type: text/plain`.
pub fn status_headers(status: &'static str) -> Headers {
    let mut h = Headers::new();
    h.append(":status", status);
    h.append("content-type", "text/plain");
    h
}

/// Answers with `status` and `body`, written in one final chunk (so with Content-Length).
pub async fn respond(
    stream: &Stream,
    status: &'static str,
    body: impl Into<Bytes>,
) -> onstream::Result<()> {
    stream.write_headers(&status_headers(status), false).await?;
    stream.write_chunk(body.into(), true).await
}

/// A handler that answers every request with `200` and the request's `:path` as body.
pub fn path_echo(
) -> impl FnMut(ServerHandle, Stream) -> std::pin::Pin<Box<dyn Future<Output = onstream::Result<()>>>>
{
    |_srv, stream| {
        Box::pin(async move {
            let req = stream.get_headers().await?;
            let path = req.get(":path").unwrap_or("").to_string();
            respond(&stream, "200", path).await
        })
    }
}

// ===== raw HTTP/1 clients =====

/// Connects to `addr` with every read and write bounded by [`IO_TIMEOUT`].
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Writes `bytes` on a new connection, then reads until the server closes it.
///
/// A reset after some bytes ends the read like EOF does (a server that closes with unread
/// input resets the connection). Panics if the server keeps the connection open for
/// [`IO_TIMEOUT`].
pub fn raw_request(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    // The server may answer and close before reading everything (e.g. a 431): a failed
    // write is then expected, and the answer is what counts.
    let _ = stream.write_all(bytes);
    read_to_close(&mut stream, IO_TIMEOUT).unwrap_or_else(|partial| {
        panic!(
            "the server kept the connection open for {IO_TIMEOUT:?}; read so far: {:?}",
            String::from_utf8_lossy(&partial)
        )
    })
}

/// [`raw_request`] over a unix socket at `path`.
pub fn raw_request_unix(path: &std::path::Path, bytes: &[u8]) -> Vec<u8> {
    let mut stream =
        std::os::unix::net::UnixStream::connect(path).expect("connect to the unix socket");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let _ = stream.write_all(bytes);
    let mut out = Vec::new();
    match stream.read_to_end(&mut out) {
        Ok(_) => out,
        Err(e) if is_reset(&e) => out,
        Err(e) => panic!(
            "unix exchange failed ({e}); read so far: {:?}",
            String::from_utf8_lossy(&out)
        ),
    }
}

/// Reads until EOF or a reset, for at most `max`. `Err` holds what was read when the
/// connection is still open after `max`.
pub fn read_to_close(stream: &mut TcpStream, max: Duration) -> Result<Vec<u8>, Vec<u8>> {
    let deadline = Instant::now() + max;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(out);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(out)
            }
            Err(e) if is_reset(&e) => return Ok(out),
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// One parsed HTTP/1 response.
#[derive(Debug, Clone)]
pub struct Response {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub status: u16,
    /// Header fields in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body, names lower-cased.
    pub trailers: Vec<(String, String)>,
    /// Whether the body was chunked.
    pub chunked: bool,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the response carries `connection: close`.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }

    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }
}

/// Reads one response (to a request that was not HEAD) from `r`.
///
/// Bodies are delimited by the usual rules: none for 1xx, 204 and 304; chunked (with
/// trailers); Content-Length; otherwise until EOF. Panics on malformed input or a timeout
/// of the underlying reader.
pub fn read_response<R: BufRead>(r: &mut R) -> Response {
    read_response_inner(r, false)
}

/// Reads one response to a HEAD request: never a body, whatever the headers say.
pub fn read_head_response<R: BufRead>(r: &mut R) -> Response {
    read_response_inner(r, true)
}

/// Parses every response in `bytes` (e.g. the output of [`raw_request`]).
pub fn parse_responses(mut bytes: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        out.push(read_response(&mut bytes));
    }
    out
}

/// Parses exactly one response from `bytes`, and nothing after it.
pub fn parse_one(bytes: &[u8]) -> Response {
    let all = parse_responses(bytes);
    assert_eq!(
        all.len(),
        1,
        "expected one response, got {}: {:?}",
        all.len(),
        String::from_utf8_lossy(bytes)
    );
    all.into_iter().next().unwrap()
}

fn read_line<R: BufRead>(r: &mut R) -> String {
    let mut line = Vec::new();
    match r.read_until(b'\n', &mut line) {
        Ok(0) => panic!("EOF while reading a response line"),
        Ok(_) => {}
        Err(e) => panic!("reading a response line failed: {e}"),
    }
    assert!(
        line.ends_with(b"\r\n"),
        "response line not ended by CRLF: {:?}",
        String::from_utf8_lossy(&line)
    );
    line.truncate(line.len() - 2);
    String::from_utf8(line).expect("utf-8 response line")
}

fn read_fields<R: BufRead>(r: &mut R) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    loop {
        let line = read_line(r);
        if line.is_empty() {
            return fields;
        }
        let (name, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("bad header line {line:?}"));
        fields.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
}

fn read_response_inner<R: BufRead>(r: &mut R, head: bool) -> Response {
    let status_line = read_line(r);
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("").to_string();
    assert!(
        version.starts_with("HTTP/1."),
        "bad status line {status_line:?}"
    );
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = read_fields(r);
    let mut res = Response {
        version,
        status,
        headers,
        body: Vec::new(),
        trailers: Vec::new(),
        chunked: false,
    };
    if head || (100..200).contains(&status) || status == 204 || status == 304 {
        return res;
    }
    let te = res.header("transfer-encoding").map(str::to_ascii_lowercase);
    if te.as_deref().is_some_and(|te| te.ends_with("chunked")) {
        res.chunked = true;
        loop {
            let size_line = read_line(r);
            let size = size_line.split(';').next().unwrap().trim();
            let size = usize::from_str_radix(size, 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size_line:?}"));
            if size == 0 {
                res.trailers = read_fields(r);
                break;
            }
            let mut chunk = vec![0; size];
            r.read_exact(&mut chunk).expect("read chunk");
            res.body.extend_from_slice(&chunk);
            assert_eq!(read_line(r), "", "chunk not followed by CRLF");
        }
    } else if let Some(len) = res.header("content-length") {
        let len: usize = len.parse().expect("numeric content-length");
        res.body = vec![0; len];
        r.read_exact(&mut res.body).expect("read body");
    } else {
        r.read_to_end(&mut res.body)
            .expect("read close-delimited body");
    }
    res
}

/// A client connection with a buffered reader, for keep-alive and step-by-step exchanges.
pub struct Client {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let writer = connect(addr);
        Client {
            reader: BufReader::new(writer.try_clone().unwrap()),
            writer,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write request");
    }

    pub fn read_response(&mut self) -> Response {
        read_response(&mut self.reader)
    }

    pub fn read_head_response(&mut self) -> Response {
        read_head_response(&mut self.reader)
    }

    /// Sends a `GET path` with Host and reads its response.
    pub fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.read_response()
    }

    /// Half-closes the sending side.
    pub fn shutdown_write(&self) {
        let _ = self.writer.shutdown(Shutdown::Write);
    }

    /// Whether the server sends anything (or closes) within `max`: `true` when a read
    /// timed out with no byte available.
    pub fn silent_for(&mut self, max: Duration) -> bool {
        self.reader.get_ref().set_read_timeout(Some(max)).unwrap();
        let got = self.reader.fill_buf().map(|b| b.len());
        self.reader
            .get_ref()
            .set_read_timeout(Some(IO_TIMEOUT))
            .unwrap();
        match got {
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            Ok(_) => false,
        }
    }

    /// Reads what is left until the server closes, for at most `max`. `Err` holds what was
    /// read if the connection is still open after `max`.
    pub fn read_to_close(&mut self, max: Duration) -> Result<Vec<u8>, Vec<u8>> {
        let mut out = self.reader.buffer().to_vec();
        self.reader.consume(out.len());
        let rest = read_to_close(self.reader.get_mut(), max);
        match rest {
            Ok(b) => {
                out.extend(b);
                Ok(out)
            }
            Err(b) => {
                out.extend(b);
                Err(out)
            }
        }
    }
}

// ===== hyper client =====

/// A response received by hyper, with the body collected.
#[derive(Debug)]
pub struct HyperResponse {
    pub status: u16,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// A GET request for `path` with a Host header (hyper's connection API adds none).
pub fn get_request(addr: SocketAddr, path: &str) -> http::Request<http_body_util::Full<Bytes>> {
    http::Request::builder()
        .method("GET")
        .uri(path)
        .header("host", addr.to_string())
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap()
}

/// A POST request for `path` carrying `body`.
pub fn post_request(
    addr: SocketAddr,
    path: &str,
    body: impl Into<Bytes>,
) -> http::Request<http_body_util::Full<Bytes>> {
    http::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", addr.to_string())
        .body(http_body_util::Full::new(body.into()))
        .unwrap()
}

/// Sends `requests` one after the other on ONE hyper HTTP/1 connection, on a per-call tokio
/// current-thread runtime; the whole exchange is bounded by [`IO_TIMEOUT`].
pub fn hyper_requests(
    addr: SocketAddr,
    requests: Vec<http::Request<http_body_util::Full<Bytes>>>,
) -> Vec<HyperResponse> {
    use http_body_util::BodyExt;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let exchange = async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .expect("hyper handshake");
            let conn = tokio::spawn(conn);
            let mut out = Vec::new();
            for req in requests {
                sender
                    .ready()
                    .await
                    .expect("connection ready for the next request");
                let res = sender.send_request(req).await.expect("hyper request");
                let (parts, body) = res.into_parts();
                let body = body.collect().await.expect("hyper body").to_bytes();
                out.push(HyperResponse {
                    status: parts.status.as_u16(),
                    version: parts.version,
                    headers: parts.headers,
                    body,
                });
            }
            drop(sender);
            let _ = conn.await;
            out
        };
        tokio::time::timeout(IO_TIMEOUT, exchange)
            .await
            .expect("the hyper exchange timed out")
    })
}

/// GETs `path` with hyper on a fresh connection.
pub fn hyper_get(addr: SocketAddr, path: &str) -> HyperResponse {
    hyper_requests(addr, vec![get_request(addr, path)])
        .pop()
        .unwrap()
}

/// A unique path under the system temp dir, for unix sockets.
pub fn temp_path(tag: &str) -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "onstream-test-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ))
}

// ===== TLS =====

/// The provider the server uses too (tls.rs): aws-lc-rs by default, ring with only the
/// `ring` feature.
pub fn tls_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    #[cfg(feature = "aws-lc-rs")]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    let provider = rustls::crypto::ring::default_provider();
    std::sync::Arc::new(provider)
}

/// A certificate for "localhost" and the server configuration that uses it.
pub fn localhost_cert() -> (
    rustls::pki_types::CertificateDer<'static>,
    std::sync::Arc<rustls::ServerConfig>,
) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let der = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let config = onstream::tls::config_from_der(vec![der.clone()], key).unwrap();
    (der, config)
}

/// A client configuration that trusts exactly `cert` and offers `alpn`, in that order.
pub fn trusting(
    cert: &rustls::pki_types::CertificateDer<'static>,
    alpn: &[&[u8]],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(tls_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}
