//! Load and faults (issue 7): the server under many connections and under client and
//! resource faults, over real loopback sockets.
//!
//! - Thousands of connections, half of them slowloris clients, while the other half are
//!   served: `header_read_timeout` closes the slow ones (with a 408 or a bare close). The
//!   server runs in a child process, so that each side has its own `RLIMIT_NOFILE`.
//! - Running out of file descriptors (EMFILE), in a child process with a low
//!   `RLIMIT_NOFILE`: accept backs off instead of spinning, and the server recovers.
//! - Clients that reset (RST) in the middle of a large response cost only their own
//!   connections and never reach `onerror`.
//! - A handler that never finishes holds only its own connection (and, by HTTP/1.1's
//!   response order, the requests pipelined after it on that connection).
//! - `close()` under load finishes every response already started.
//!
//! The tests assert outcomes, never durations: every wait is bounded, so a stall fails
//! the test instead of hanging it. Sizes are the constants below.

mod common;

use std::{
    collections::VecDeque,
    io::{self, BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use common::*;
use futures_util::StreamExt;
use onstream::{ErrorKind, Options, Server, Stream, Tls};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

// ===== sizes =====

/// Connections held open at once in the slowloris test, half well-behaved and half
/// slowloris. The server runs in a child process, so each process needs one descriptor
/// per connection; the count is scaled down (with a note on stderr) when the
/// `RLIMIT_NOFILE` of either process or the ephemeral port range cannot hold them.
const SLOWLORIS_CONNECTIONS: usize = 10_000;
/// The `header_read_timeout` that must close the slowloris clients.
const SLOWLORIS_HEADER_READ_TIMEOUT: Duration = Duration::from_millis(500);
/// How often a trickling slowloris client sends one more byte of its endless header.
const SLOWLORIS_TRICKLE_INTERVAL: Duration = Duration::from_millis(200);
/// Each well-behaved client makes at least this many requests, and goes on until every
/// slowloris client has been closed.
const GOOD_MIN_REQUESTS: usize = 3;
/// The pause between two requests of a well-behaved client.
const GOOD_REQUEST_INTERVAL: Duration = Duration::from_millis(250);
/// Connects in flight at once while opening the connections (well under the backlog).
const CONNECT_CONCURRENCY: usize = 256;
/// Descriptors left for the rest of each process (other tests run alongside).
const FD_MARGIN: u64 = 512;
/// Bounds the whole slowloris exchange; it normally takes a few seconds.
const SLOWLORIS_DEADLINE: Duration = Duration::from_secs(60);
/// How long the slowloris test's server process may take to start and report its address.
const SLOWLORIS_CHILD_START: Duration = Duration::from_secs(30);
/// How long the server process may take to answer one query (its own queries to its
/// server thread are bounded by `IO_TIMEOUT`).
const SLOWLORIS_CHILD_REPLY: Duration = Duration::from_secs(10);
/// The server process ends itself after this long even if the test never closes its
/// stdin: it outlives no test, however the test ends.
const SLOWLORIS_CHILD_LIFETIME: Duration = Duration::from_secs(300);
/// Lines of the server process's stdout kept for failure messages.
const SLOWLORIS_CHILD_TAIL: usize = 200;

/// The child server's `RLIMIT_NOFILE` in the EMFILE test.
const EMFILE_LIMIT: u64 = 64;
/// Connections the EMFILE test opens: about twice what the child can accept.
const EMFILE_CLIENTS: usize = 128;
/// How long the child's CPU time is sampled while it is out of descriptors.
const EMFILE_CPU_WINDOW: Duration = Duration::from_millis(1500);
/// The largest share of one CPU the child may get meanwhile: a spin gets all of a free
/// CPU, an idle server (waking for the 100 ms accept back-off) next to none.
const EMFILE_MAX_CPU_USED: f64 = 0.5;
/// The largest share of one CPU the child may *want* meanwhile: the time its threads ran
/// or waited to run. A spin is always runnable, so it wants all of one even on a busy
/// machine where it gets less; an idle server wants little even there (each wake-up may
/// wait for a CPU, which counts, hence the wide margin).
const EMFILE_MAX_CPU_WANTED: f64 = 0.9;

/// Clients that reset the connection in the middle of a large response.
const RESET_CLIENTS: usize = 30;
/// The large response: this many chunks of [`CHUNK`] bytes (16 MiB, far more than the
/// socket buffers hold, so the handler is mid-write when the reset comes).
const RESET_BODY_CHUNKS: usize = 256;
/// Requests a well-behaved client makes while the others reset.
const RESET_GOOD_REQUESTS: usize = 100;

/// Connections stuck behind a handler that never finishes.
const NEVER_STUCK_CONNECTIONS: usize = 8;
/// Other connections served meanwhile, each making [`NEVER_REQUESTS_EACH`] requests.
const NEVER_OTHER_CONNECTIONS: usize = 16;
const NEVER_REQUESTS_EACH: usize = 5;

/// Clients in the middle of a download when the server is closed.
const CLOSE_DOWNLOADS: usize = 32;
/// Idle keep-alive connections when the server is closed.
const CLOSE_IDLE: usize = 8;
/// Each download is this many chunks of [`CHUNK`] bytes (2 MiB) ...
const CLOSE_BODY_CHUNKS: usize = 32;
/// ... with this pause between chunks, so that the downloads are still running at close.
const CLOSE_CHUNK_PAUSE: Duration = Duration::from_millis(10);

/// The chunk size of large bodies.
const CHUNK: usize = 64 * 1024;

// ===== 1. slowloris among well-behaved clients =====

/// Half of thousands of concurrent connections send a partial request head and then
/// nothing, or one byte of it every 200 ms; the other half make requests all along. Every
/// well-behaved request is answered, every slowloris connection is closed by
/// `header_read_timeout` (with a 408 or a bare close), and the server is empty after.
/// The server runs in a child process (this test binary re-run, see [`slowloris_child`])
/// and the clients in this one, so that each has its own descriptor limit.
#[test]
fn slowloris_connections_are_closed_while_the_others_are_served() {
    if std::env::var_os(SLOWLORIS_CHILD_ENV).is_some() {
        return slowloris_child();
    }
    let mut server = ServerProcess::start();
    let total = fit_connection_count(SLOWLORIS_CONNECTIONS, server.nofile);
    let n_slow = total / 2;
    let n_good = total - n_slow;
    let addr = server.addr;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();

    // Every connection is open at once before any slowloris client starts its head.
    let conns = rt.block_on(async {
        let connects = futures_util::stream::iter(0..total)
            .map(|_| tokio::net::TcpStream::connect(addr))
            .buffer_unordered(CONNECT_CONCURRENCY)
            .collect::<Vec<_>>();
        tokio::time::timeout(SLOWLORIS_DEADLINE, connects)
            .await
            .expect("opening the connections timed out")
    });
    let mut conns: Vec<tokio::net::TcpStream> =
        conns.into_iter().map(|c| c.expect("connect")).collect();
    assert!(
        server.wait_connections(total, Duration::from_secs(30)),
        "the server holds {} of {total} connections",
        server.connections()
    );
    let opened_in = started.elapsed();

    let slow_left = Arc::new(AtomicUsize::new(n_slow));
    // Answers that arrived while slowloris connections were still open (reported only:
    // how many there are depends on timing).
    let n_answered_during = Arc::new(AtomicUsize::new(0));
    let (slow_results, good_results) = rt
        .block_on(async {
            let good_conns = conns.split_off(n_slow);
            let slow: Vec<_> = conns
                .into_iter()
                .enumerate()
                .map(|(i, c)| tokio::spawn(slowloris_client(c, i % 2 == 1, slow_left.clone())))
                .collect();
            let good: Vec<_> = good_conns
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    tokio::spawn(good_client(
                        i,
                        c,
                        slow_left.clone(),
                        n_answered_during.clone(),
                    ))
                })
                .collect();
            let all = async {
                let slow = futures_util::future::join_all(slow).await;
                let good = futures_util::future::join_all(good).await;
                (slow, good)
            };
            tokio::time::timeout(SLOWLORIS_DEADLINE, all).await.ok()
        })
        .unwrap_or_else(|| {
            server.fail(&format!(
                "the exchange did not end in {SLOWLORIS_DEADLINE:?}; slowloris clients still \
             open: {}",
                slow_left.load(Ordering::SeqCst)
            ))
        });
    // A client's failure below is the server's if the server process is gone.
    server.check_running();

    let mut n_408 = 0;
    let mut n_bare_close = 0;
    for (i, r) in slow_results.into_iter().enumerate() {
        let got = r
            .expect("slowloris task panicked")
            .unwrap_or_else(|e| panic!("slowloris client {i}: {e}"));
        if got.is_empty() {
            n_bare_close += 1;
        } else {
            let res = parse_one(&got);
            assert_eq!(res.status, 408, "slowloris client {i} got {res:?}");
            n_408 += 1;
        }
    }
    let mut n_good_requests = 0;
    for (i, r) in good_results.into_iter().enumerate() {
        let n = r
            .expect("well-behaved task panicked")
            .unwrap_or_else(|e| panic!("well-behaved client {i}: {e}"));
        assert!(n >= GOOD_MIN_REQUESTS);
        n_good_requests += n;
    }
    assert!(
        server.wait_connections(0, Duration::from_secs(30)),
        "{} connections left after every client closed",
        server.connections()
    );
    assert_eq!(hyper_get(addr, "/after").body, "/after");
    let (n_step_errors, step_errors) = server.step_errors();
    assert_eq!(n_step_errors, 0, "step returned: {step_errors}");
    server.finish();
    eprintln!(
        "slowloris: {total} connections opened in {opened_in:?}; {n_slow} slowloris closed \
         ({n_408} with 408, {n_bare_close} bare); {n_good} well-behaved clients made \
         {n_good_requests} requests ({} answered while slowloris clients were open); {:?} \
         in all",
        n_answered_during.load(Ordering::SeqCst),
        started.elapsed()
    );
}

/// Sends a request head that never ends, then nothing (or one byte every
/// [`SLOWLORIS_TRICKLE_INTERVAL`] when `trickle`), and returns what the server sent
/// before closing.
async fn slowloris_client(
    mut conn: tokio::net::TcpStream,
    trickle: bool,
    slow_left: Arc<AtomicUsize>,
) -> Result<Vec<u8>, String> {
    let outcome = async {
        conn.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .map_err(|e| format!("writing the partial head: {e}"))?;
        let (mut rd, mut wr) = conn.split();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            tokio::select! {
                r = rd.read(&mut buf) => match r {
                    Ok(0) => return Ok(got),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if is_reset(&e) => return Ok(got),
                    Err(e) => return Err(format!("read: {e}")),
                },
                () = tokio::time::sleep(SLOWLORIS_TRICKLE_INTERVAL), if trickle => {
                    // Fails once the server has closed; the read then ends too.
                    let _ = wr.write_all(b"a").await;
                }
            }
        }
    }
    .await;
    slow_left.fetch_sub(1, Ordering::SeqCst);
    outcome
}

/// Makes keep-alive requests every [`GOOD_REQUEST_INTERVAL`], checking each answer, until
/// it has made [`GOOD_MIN_REQUESTS`] and no slowloris client is left; returns the count.
async fn good_client(
    idx: usize,
    conn: tokio::net::TcpStream,
    slow_left: Arc<AtomicUsize>,
    n_answered_during: Arc<AtomicUsize>,
) -> Result<usize, String> {
    // Spread the clients over one interval so that they do not all ask at once.
    let offset = GOOD_REQUEST_INTERVAL.as_millis() as usize * (idx % 97) / 97;
    tokio::time::sleep(Duration::from_millis(offset as u64)).await;
    let mut conn = tokio::io::BufReader::new(conn);
    let mut n = 0;
    loop {
        let path = format!("/good/{idx}/{n}");
        conn.get_mut()
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .map_err(|e| format!("request {n}: write: {e}"))?;
        let (status, body) = read_response_async(&mut conn)
            .await
            .map_err(|e| format!("request {n}: {e}"))?;
        if status != 200 || body != path.as_bytes() {
            return Err(format!(
                "request {n}: got {status} {:?}",
                String::from_utf8_lossy(&body)
            ));
        }
        n += 1;
        if slow_left.load(Ordering::SeqCst) > 0 {
            n_answered_during.fetch_add(1, Ordering::SeqCst);
        } else if n >= GOOD_MIN_REQUESTS {
            return Ok(n);
        }
        tokio::time::sleep(GOOD_REQUEST_INTERVAL).await;
    }
}

/// Reads one response with a Content-Length body.
async fn read_response_async(
    r: &mut tokio::io::BufReader<tokio::net::TcpStream>,
) -> Result<(u16, Vec<u8>), String> {
    let mut line = String::new();
    if r.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
        return Err("EOF instead of a response".into());
    }
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let mut len = None;
    loop {
        line.clear();
        if r.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
            return Err("EOF in a response head".into());
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                len = value.trim().parse().ok();
            }
        }
    }
    let len: usize = len.ok_or("a response without content-length")?;
    let mut body = vec![0; len];
    r.read_exact(&mut body)
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok((status, body))
}

/// How many connections the slowloris test can hold at once: `wanted`, unless the
/// descriptor limit of this (the clients') process, raised as far as allowed, or that of
/// the server process (`server_nofile`), or the ephemeral ports cannot hold them. Each
/// process needs one descriptor per connection.
fn fit_connection_count(wanted: usize, server_nofile: u64) -> usize {
    let client_nofile = raise_nofile_limit(wanted as u64 + FD_MARGIN);
    let by_fds =
        |limit: u64| usize::try_from(limit.saturating_sub(FD_MARGIN)).unwrap_or(usize::MAX);
    let by_ports = ephemeral_ports().saturating_sub(1024);
    let n = wanted
        .min(by_fds(client_nofile))
        .min(by_fds(server_nofile))
        .min(by_ports)
        .max(2);
    if n < wanted {
        // Straight to stderr, past the test harness's capture: a CI log should show it.
        let _ = writeln!(
            io::stderr(),
            "load_and_faults: slowloris test scaled from {wanted} to {n} connections \
             (RLIMIT_NOFILE {client_nofile} in the client process, {server_nofile} in the \
             server process; {by_ports} usable ephemeral ports)"
        );
    }
    n
}

/// Raises the soft `RLIMIT_NOFILE` to `needed` (raising the hard limit too if the process
/// may) or else as far as the hard limit; returns the soft limit now in force.
fn raise_nofile_limit(needed: u64) -> u64 {
    let (soft, hard) = nofile_limit();
    if soft >= needed {
        return soft;
    }
    if set_nofile_limit(needed, hard.max(needed)).is_err() {
        let _ = set_nofile_limit(hard.min(needed), hard);
    }
    nofile_limit().0
}

// `rlim_t` is `u64` on Linux but not on every platform libc supports.
#[allow(clippy::unnecessary_cast)]
fn nofile_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(rc, 0, "getrlimit: {}", io::Error::last_os_error());
    (lim.rlim_cur as u64, lim.rlim_max as u64)
}

#[allow(clippy::unnecessary_cast)]
fn set_nofile_limit(soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: `lim` is a valid rlimit; setrlimit only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The size of the ephemeral port range (Linux's default when it cannot be read).
fn ephemeral_ports() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<usize>().ok());
            let (lo, hi) = (it.next()??, it.next()??);
            Some(hi.saturating_sub(lo) + 1)
        })
        .unwrap_or(60999 - 32768 + 1)
}

/// Set in the server process of the slowloris test: serve instead.
const SLOWLORIS_CHILD_ENV: &str = "ONSTREAM_LOAD_AND_FAULTS_SLOWLORIS_CHILD";
/// The server process's first line: `<address> <soft RLIMIT_NOFILE>`.
const SLOWLORIS_READY_PREFIX: &str = "ONSTREAM_SLOWLORIS_SERVER ";
/// The server process's answer to a query: `<query> <answer>`.
const SLOWLORIS_REPLY_PREFIX: &str = "ONSTREAM_SLOWLORIS_REPLY ";

/// The slowloris test's server options (the same whichever process serves).
fn slowloris_options(o: Options) -> Options {
    o.tls(Tls::Off)
        .header_read_timeout(SLOWLORIS_HEADER_READ_TIMEOUT)
        // Opening thousands of connections must not count against anyone.
        .connection_setup_timeout(SLOWLORIS_DEADLINE)
        .intra_stream_timeout(SLOWLORIS_DEADLINE)
        // Well-behaved clients pause longer than this between requests, so each parks
        // and is taken up again for every request: thousands of times while the
        // slowloris connections (a partial head: never parked) are open.
        .park_after(Duration::from_millis(50))
        .backlog(4096)
}

/// The server process of the slowloris test (this test binary re-run with
/// [`SLOWLORIS_CHILD_ENV`]): raises its `RLIMIT_NOFILE` as far as it may, runs the
/// server in a [`TestServer`] on 127.0.0.1, reports its address and limit on stdout,
/// then answers one query per stdin line (`connections`, `step_errors`) until stdin
/// closes, or until [`SLOWLORIS_CHILD_LIFETIME`] has passed.
fn slowloris_child() {
    let nofile = raise_nofile_limit(SLOWLORIS_CONNECTIONS as u64 + FD_MARGIN);
    thread::spawn(|| {
        thread::sleep(SLOWLORIS_CHILD_LIFETIME);
        eprintln!("slowloris server process: still running after {SLOWLORIS_CHILD_LIFETIME:?}");
        std::process::exit(2);
    });
    let server = TestServer::start(slowloris_options, path_echo);
    // libtest's "test name ... " may precede it on the same line without the newline.
    println!("\n{SLOWLORIS_READY_PREFIX}{} {nofile}", server.addr());
    let _ = io::stdout().flush();
    for query in io::stdin().lock().lines().map_while(Result::ok) {
        let answer = match query.as_str() {
            "connections" => server.connections().to_string(),
            "step_errors" => {
                let errors = server.step_errors();
                format!("{} {errors:?}", errors.len())
            }
            _ => "unknown query".to_owned(),
        };
        println!("{SLOWLORIS_REPLY_PREFIX}{query} {answer}");
        let _ = io::stdout().flush();
    }
}

/// The slowloris test's view of its server process. Dropping it (the [`ChildGuard`])
/// kills and reaps the process if it still runs, so a failing test leaves none behind.
struct ServerProcess {
    child: ChildGuard,
    stdin: Option<ChildStdin>,
    /// The process's stdout, line by line.
    lines: mpsc::Receiver<String>,
    /// Its last [`SLOWLORIS_CHILD_TAIL`] stdout lines, for failure messages.
    tail: Arc<Mutex<VecDeque<String>>>,
    /// Its whole stderr, once it has ended.
    stderr: Option<JoinHandle<String>>,
    addr: SocketAddr,
    /// Its soft `RLIMIT_NOFILE`.
    nofile: u64,
}

impl ServerProcess {
    fn start() -> ServerProcess {
        let mut child = ChildGuard::rerun(
            "slowloris_connections_are_closed_while_the_others_are_served",
            SLOWLORIS_CHILD_ENV,
        );
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (line_tx, lines) = mpsc::channel::<String>();
        {
            let stdout = child.0.stdout.take().unwrap();
            let tail = tail.clone();
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    {
                        let mut tail = tail.lock().unwrap();
                        if tail.len() == SLOWLORIS_CHILD_TAIL {
                            tail.pop_front();
                        }
                        tail.push_back(line.clone());
                    }
                    let _ = line_tx.send(line);
                }
            });
        }
        let stderr = {
            let mut stderr = child.0.stderr.take().unwrap();
            thread::spawn(move || {
                let mut s = String::new();
                let _ = stderr.read_to_string(&mut s);
                s
            })
        };
        let mut server = ServerProcess {
            stdin: child.0.stdin.take(),
            child,
            lines,
            tail,
            stderr: Some(stderr),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            nofile: 0,
        };
        let ready = server.wait_line(SLOWLORIS_READY_PREFIX, SLOWLORIS_CHILD_START);
        let ready = ready.unwrap_or_else(|| server.fail("the server process did not start"));
        let parsed = ready
            .split_once(' ')
            .and_then(|(a, n)| Some((a.parse().ok()?, n.trim().parse().ok()?)));
        let Some((addr, nofile)) = parsed else {
            server.fail(&format!("the server process reported {ready:?}"))
        };
        (server.addr, server.nofile) = (addr, nofile);
        server
    }

    /// The rest of the first stdout line (within `max`) that contains `prefix`, after it.
    fn wait_line(&self, prefix: &str, max: Duration) -> Option<String> {
        let deadline = Instant::now() + max;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            if let Some(at) = line.find(prefix) {
                return Some(line[at + prefix.len()..].to_owned());
            }
        }
    }

    /// Sends `query` and returns the answer.
    fn query(&mut self, query: &str) -> String {
        let sent = self
            .stdin
            .as_mut()
            .map(|stdin| writeln!(stdin, "{query}").and_then(|()| stdin.flush()));
        if !matches!(sent, Some(Ok(()))) {
            self.fail(&format!("could not send {query:?} to the server process"));
        }
        let prefix = format!("{SLOWLORIS_REPLY_PREFIX}{query} ");
        match self.wait_line(&prefix, SLOWLORIS_CHILD_REPLY) {
            Some(answer) => answer,
            None => self.fail(&format!("the server process did not answer {query:?}")),
        }
    }

    /// `server.connections()` in the server process.
    fn connections(&mut self) -> usize {
        let answer = self.query("connections");
        answer
            .trim()
            .parse()
            .unwrap_or_else(|_| self.fail(&format!("connections: {answer:?}")))
    }

    /// Waits (at most `max`) until the server holds `n` connections.
    fn wait_connections(&mut self, n: usize, max: Duration) -> bool {
        wait_until(max, || self.connections() == n)
    }

    /// How many errors `step` has returned in the server process, and their list.
    fn step_errors(&mut self) -> (usize, String) {
        let answer = self.query("step_errors");
        let parsed = answer
            .split_once(' ')
            .and_then(|(n, list)| Some((n.parse().ok()?, list.to_owned())));
        parsed.unwrap_or_else(|| self.fail(&format!("step_errors: {answer:?}")))
    }

    /// Fails the test if the server process has ended.
    fn check_running(&mut self) {
        if !matches!(self.child.0.try_wait(), Ok(None)) {
            self.fail("the server process ended during the test");
        }
    }

    /// Ends the process (closing its stdin ends it) and checks that it ended well.
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = wait_child(&mut self.child.0, Duration::from_secs(20));
        if !status.is_some_and(|s| s.success()) {
            self.fail(&format!("the server process ended with {status:?}"));
        }
    }

    /// Kills and reaps the process, then panics with `msg` and what it printed.
    fn fail(&mut self, msg: &str) -> ! {
        let status = match self.child.0.try_wait() {
            Ok(Some(status)) => Some(status),
            _ => {
                let _ = self.child.0.kill();
                self.child.0.wait().ok()
            }
        };
        // Its stdout and stderr close when it ends: the readers end too.
        let stderr = self.stderr.take().map(|t| t.join().unwrap_or_default());
        let status = status.map_or("not reaped".to_owned(), |s| s.to_string());
        let stdout = Vec::from(self.tail.lock().unwrap().clone()).join("\n");
        panic!(
            "{msg}\nthe server process: {status}; the end of its stdout:\n{stdout}\nits \
             stderr:\n{}",
            stderr.unwrap_or_default()
        );
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

// ===== 2. running out of file descriptors =====

/// Set in the child process of the EMFILE test: run the child side instead.
const CHILD_ENV: &str = "ONSTREAM_LOAD_AND_FAULTS_EMFILE_CHILD";
const CHILD_ADDR_PREFIX: &str = "ONSTREAM_CHILD_ADDR ";
const CHILD_ERRORS_PREFIX: &str = "ONSTREAM_CHILD_STEP_ERRORS ";

/// A server whose process runs out of descriptors (a child of this test, re-running this
/// test binary with `RLIMIT_NOFILE` = 64) accepts what it can, serves those connections,
/// uses little CPU while more wait in the backlog (accept backs off instead of retrying at
/// once), and serves the waiting connections, and new ones, once descriptors are free.
#[test]
fn running_out_of_descriptors_neither_spins_nor_stops_the_server() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return emfile_child();
    }
    let mut child = ChildGuard::rerun(
        "running_out_of_descriptors_neither_spins_nor_stops_the_server",
        CHILD_ENV,
    );
    let pid = child.0.id();
    let stdout_lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let (line_tx, line_rx) = mpsc::channel::<String>();
    {
        let stdout = child.0.stdout.take().unwrap();
        let lines = stdout_lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line.clone());
                let _ = line_tx.send(line);
            }
        });
    }
    let stderr = {
        let mut stderr = child.0.stderr.take().unwrap();
        thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        })
    };
    let child_output = || stdout_lines.lock().unwrap().join("\n");

    let addr: SocketAddr = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match line_rx.recv_timeout(left) {
                Ok(line) => {
                    // libtest's "test name ... " may precede it on the same line.
                    if let Some(at) = line.find(CHILD_ADDR_PREFIX) {
                        let a = &line[at + CHILD_ADDR_PREFIX.len()..];
                        break a.trim().parse().expect("child address");
                    }
                }
                Err(_) => panic!("the child did not start; its output:\n{}", child_output()),
            }
        }
    };

    // Each client asks once and keeps its connection (keep-alive): an accepted client holds
    // one of the child's descriptors until it goes.
    let mut clients: Vec<(usize, Client)> = (0..EMFILE_CLIENTS)
        .map(|i| {
            let mut c = Client::connect(addr);
            c.send(format!("GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
            (i, c)
        })
        .collect();

    // Collect answers until none has come for a second: those are the accepted clients.
    let mut answered = Vec::new();
    let mut last_progress = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    while last_progress.elapsed() < Duration::from_secs(1) && Instant::now() < deadline {
        let mut i = 0;
        while i < clients.len() {
            if has_input(&clients[i].1) {
                let (idx, mut c) = clients.swap_remove(i);
                assert_eq!(c.read_response().body_str(), format!("/{idx}"));
                answered.push((idx, c));
                last_progress = Instant::now();
            } else {
                i += 1;
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    let pending = clients;
    assert!(
        !answered.is_empty(),
        "the child answered no client; its output:\n{}",
        child_output()
    );
    assert!(
        !pending.is_empty(),
        "the child answered all {EMFILE_CLIENTS} clients: it never ran out of descriptors"
    );

    // Out of descriptors with connections waiting: the child must idle, not spin. Both the
    // CPU time it got and, where the kernel keeps sched_info, the CPU it wanted (run time
    // plus time waiting for a CPU) are bounded: the second catches a spin on a busy
    // machine, where the spinner gets only part of a CPU.
    let demand_before = cpu_demand_ns(pid);
    let ticks_before = cpu_ticks(pid);
    let window_start = Instant::now();
    thread::sleep(EMFILE_CPU_WINDOW);
    let window = window_start.elapsed().as_secs_f64();
    let used = (cpu_ticks(pid) - ticks_before) as f64 / clock_ticks_per_second() / window;
    let wanted = match (demand_before, cpu_demand_ns(pid)) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before) as f64 / 1e9 / window),
        _ => None,
    };
    assert!(
        used < EMFILE_MAX_CPU_USED && !matches!(wanted, Some(w) if w >= EMFILE_MAX_CPU_WANTED),
        "the child got {:.0}% of a CPU and wanted {wanted:?} while out of descriptors",
        used * 100.0
    );
    assert!(
        child.0.try_wait().expect("try_wait").is_none(),
        "the child exited while out of descriptors; its output:\n{}",
        child_output()
    );
    // The connections it holds are still served, and the waiting ones are not (yet).
    {
        let (idx, c) = &mut answered[0];
        assert_eq!(c.get(&format!("/{idx}/again")).status, 200);
    }
    assert!(
        pending.iter().all(|(_, c)| !has_input(c)),
        "a waiting client was answered before any descriptor was freed"
    );

    // Free the descriptors: every waiting client is then accepted and answered. Each one
    // is dropped once answered, so the child never needs more than it has.
    let n_held = answered.len();
    let n_pending = pending.len();
    drop(answered);
    let mut pending = pending;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pending.is_empty() && Instant::now() < deadline {
        let mut i = 0;
        while i < pending.len() {
            if has_input(&pending[i].1) {
                let (idx, mut c) = pending.swap_remove(i);
                assert_eq!(c.read_response().body_str(), format!("/{idx}"));
            } else {
                i += 1;
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        pending.is_empty(),
        "{} of {n_pending} waiting clients were never served after descriptors were freed",
        pending.len()
    );
    assert_eq!(Client::connect(addr).get("/fresh").body_str(), "/fresh");

    // Closing the child's stdin ends it; it reports what `step` returned.
    drop(child.0.stdin.take());
    let status = wait_child(&mut child.0, Duration::from_secs(20));
    let stderr = stderr.join().unwrap_or_default();
    let output = child_output();
    assert!(
        status.is_some_and(|s| s.success()),
        "the child ended with {status:?}; stdout:\n{output}\nstderr:\n{stderr}"
    );
    assert!(
        output
            .lines()
            .any(|l| l == format!("{CHILD_ERRORS_PREFIX}0")),
        "step returned errors in the child:\n{output}"
    );
    eprintln!(
        "emfile: the child held {n_held} clients, {n_pending} waited; while out of \
         descriptors it wanted {} of a CPU and got {:.1}%",
        wanted.map_or("(no sched_info)".to_owned(), |w| format!(
            "{:.1}%",
            w * 100.0
        )),
        used * 100.0
    );
}

/// The child side: a server in a process limited to [`EMFILE_LIMIT`] descriptors, until
/// stdin closes. It steps with no interval of its own (unlike the harness's 50 ms), so it
/// wakes only for I/O and timers, such as the accept back-off.
fn emfile_child() {
    let (_, hard) = nofile_limit();
    set_nofile_limit(EMFILE_LIMIT, hard).expect("lower RLIMIT_NOFILE");
    init_tracing();
    let server = Server::listen(
        Options::new().host("127.0.0.1").port(0).tls(Tls::Off),
        path_echo(),
    )
    .expect("listen");
    let addr = server.local_addr().expect("local_addr");
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let remote = server.remote();
        thread::spawn(move || {
            let _ = io::stdin().read_to_end(&mut Vec::new());
            stop.store(true, Ordering::SeqCst);
            remote.wake();
        });
    }
    println!(
        "\n{CHILD_ADDR_PREFIX}{}",
        addr.inet().expect("a TCP address")
    );
    let _ = io::stdout().flush();
    let mut n_errors = 0;
    while !stop.load(Ordering::SeqCst) {
        if let Err(e) = server.step(None) {
            n_errors += 1;
            println!("step error: {e:?}");
        }
    }
    println!("{CHILD_ERRORS_PREFIX}{n_errors}");
}

/// Kills (by its own handle) and reaps the child if a failing test leaves it running.
struct ChildGuard(Child);

impl ChildGuard {
    /// This test binary run again as a child for the one test `name`, with `env` set (the
    /// test then plays the server), stdin, stdout and stderr piped.
    fn rerun(name: &str, env: &str) -> ChildGuard {
        ChildGuard(
            Command::new(std::env::current_exe().expect("current_exe"))
                .args(["--exact", name, "--nocapture", "--test-threads=1"])
                .env(env, "1")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn the child server"),
        )
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn wait_child(child: &mut Child, max: Duration) -> Option<std::process::ExitStatus> {
    let mut status = None;
    wait_until(max, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status
}

/// Whether the server has sent something (or closed) on `c`, without waiting.
fn has_input(c: &Client) -> bool {
    if !c.reader.buffer().is_empty() {
        return true;
    }
    c.writer.set_nonblocking(true).unwrap();
    let r = c.writer.peek(&mut [0u8; 1]);
    c.writer.set_nonblocking(false).unwrap();
    match r {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// The user plus system CPU time of process `pid`, all threads, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/pid/stat");
    // Fields after the parenthesised command name start at field 3 (state); utime and
    // stime are fields 14 and 15 (proc(5)).
    let rest = &stat[stat.rfind(')').expect("a stat line") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    utime + stime
}

/// The nanoseconds the threads of process `pid` have run or waited to run
/// (`/proc/<pid>/task/*/schedstat`, fields 1 and 2), if the kernel keeps sched_info.
fn cpu_demand_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        let mut fields = stat.split_whitespace().map(|f| f.parse::<u64>().ok());
        total += fields.next()?? + fields.next()??;
    }
    Some(total)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(n > 0, "sysconf(_SC_CLK_TCK)");
    n as f64
}

// ===== 3. resets in the middle of a response =====

/// How a large response's handler ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteOutcome {
    Complete,
    Failed { kind: ErrorKind, disconnect: bool },
}

/// Clients that reset (SO_LINGER 0, then close) before, at, or in the middle of a 16 MiB
/// response cost only their connections: the handlers' writes fail as disconnects, which
/// never reach `onerror` (so `step` returns no error), connections are released, and
/// other clients, including one that downloads the whole large body, are served
/// throughout.
#[test]
fn clients_resetting_mid_response_cost_only_their_connections() {
    let outcomes: Arc<Mutex<Vec<WriteOutcome>>> = Arc::default();
    let n_big_started = Arc::new(AtomicUsize::new(0));
    let server = {
        let outcomes = outcomes.clone();
        let n_big_started = n_big_started.clone();
        TestServer::start(
            |o| o.tls(Tls::Off),
            move || {
                move |_srv, stream: Stream| {
                    let outcomes = outcomes.clone();
                    let n_big_started = n_big_started.clone();
                    async move {
                        let req = stream.get_headers().await?;
                        let path = req.get(":path").unwrap_or("").to_owned();
                        if path != "/big" {
                            return respond(&stream, "200", path).await;
                        }
                        n_big_started.fetch_add(1, Ordering::SeqCst);
                        let r = write_big_body(&stream).await;
                        outcomes.lock().unwrap().push(match &r {
                            Ok(()) => WriteOutcome::Complete,
                            Err(e) => WriteOutcome::Failed {
                                kind: e.kind(),
                                disconnect: e.is_disconnect(),
                            },
                        });
                        r
                    }
                }
            },
        )
    };
    let addr = server.addr();

    let good = thread::spawn(move || {
        let mut c = Client::connect(addr);
        for i in 0..RESET_GOOD_REQUESTS {
            let path = format!("/small/{i}");
            assert_eq!(c.get(&path).body_str(), path);
        }
        let mut big = Client::connect(addr);
        let res = big.get("/big");
        assert_eq!(res.status, 200);
        assert_eq!(res.body.len(), RESET_BODY_CHUNKS * CHUNK);
        assert!(res.body.iter().all(|&b| b == b'x'));
    });

    let mut resetters: Vec<TcpStream> = (0..RESET_CLIENTS)
        .map(|_| {
            let mut s = connect(addr);
            s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    for (i, s) in resetters.iter_mut().enumerate() {
        // A third reset at once, a third after the response head, a third 256 KiB in.
        let enough = |got: &[u8]| match i % 3 {
            0 => true,
            1 => got.windows(4).any(|w| w == b"\r\n\r\n"),
            _ => got.len() >= 256 * 1024,
        };
        let mut got = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        while !enough(&got) {
            let n = s.read(&mut buf).expect("read part of the response");
            assert!(n > 0, "the server closed a response it had not finished");
            got.extend_from_slice(&buf[..n]);
        }
        if !got.is_empty() {
            assert!(
                got.starts_with(b"HTTP/1.1 200"),
                "{:?}",
                &got[..got.len().min(64)]
            );
        }
    }
    for s in resetters {
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s); // RST
    }

    good.join().expect("the well-behaved client failed");
    assert!(
        server.wait_connections(0, Duration::from_secs(10)),
        "{} connections left after the resets",
        server.connections()
    );
    assert!(
        wait_until(Duration::from_secs(5), || outcomes.lock().unwrap().len()
            == n_big_started.load(Ordering::SeqCst)),
        "a large-response handler never ended"
    );
    let outcomes = outcomes.lock().unwrap().clone();
    let n_failed = outcomes
        .iter()
        .filter(|o| matches!(o, WriteOutcome::Failed { .. }))
        .count();
    for o in &outcomes {
        if let WriteOutcome::Failed { kind, disconnect } = o {
            assert!(
                disconnect,
                "a reset surfaced as a non-disconnect error {kind:?}"
            );
        }
    }
    assert!(
        n_failed >= 1,
        "no handler saw a reset mid-response: {outcomes:?}"
    );
    assert!(
        server.step_errors().is_empty(),
        "step returned: {:?}",
        server.step_errors()
    );
    assert_eq!(hyper_get(addr, "/after").body, "/after");
    eprintln!(
        "resets: {} large responses started, {n_failed} ended by a reset",
        outcomes.len()
    );
}

/// Writes [`RESET_BODY_CHUNKS`] chunks of `x`, chunked.
async fn write_big_body(stream: &Stream) -> onstream::Result<()> {
    stream.write_headers(&status_headers("200"), false).await?;
    let chunk = vec![b'x'; CHUNK];
    for _ in 0..RESET_BODY_CHUNKS {
        stream.write_chunk(&chunk, false).await?;
    }
    stream.write_chunk([], true).await
}

// ===== 4. a handler that never finishes =====

/// Handlers for `/never` wait forever. Other connections are served meanwhile; a request
/// pipelined after `/never` on the same connection has its handler run but its response
/// held back (HTTP/1.1 answers in request order); and `close()` with a short
/// `close_timeout` still empties the server, closing the stuck connections without a
/// response.
#[test]
fn a_handler_that_never_finishes_holds_only_its_own_connection() {
    let (started_tx, started_rx) = mpsc::channel::<String>();
    let server = TestServer::start(
        |o| o.tls(Tls::Off).close_timeout(Duration::from_millis(300)),
        move || {
            move |_srv, stream: Stream| {
                let started = started_tx.clone();
                async move {
                    let req = stream.get_headers().await?;
                    let path = req.get(":path").unwrap_or("").to_owned();
                    let _ = started.send(path.clone());
                    if path == "/never" {
                        std::future::pending::<()>().await;
                    }
                    respond(&stream, "200", path).await
                }
            }
        },
    );
    let addr = server.addr();

    let mut stuck: Vec<Client> = (0..NEVER_STUCK_CONNECTIONS)
        .map(|i| {
            let mut c = Client::connect(addr);
            c.send(
                format!(
                    "GET /never HTTP/1.1\r\nHost: x\r\n\r\nGET /after/{i} HTTP/1.1\r\nHost: x\r\n\r\n"
                )
                .as_bytes(),
            );
            c
        })
        .collect();
    // Both handlers of every stuck connection run.
    let mut n_never = 0;
    let mut n_after = 0;
    while n_never < NEVER_STUCK_CONNECTIONS || n_after < NEVER_STUCK_CONNECTIONS {
        let path = started_rx
            .recv_timeout(IO_TIMEOUT)
            .expect("a handler of a stuck connection did not start");
        if path == "/never" {
            n_never += 1;
        } else if path.starts_with("/after/") {
            n_after += 1;
        }
    }

    let others: Vec<_> = (0..NEVER_OTHER_CONNECTIONS)
        .map(|i| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                for j in 0..NEVER_REQUESTS_EACH {
                    let path = format!("/other/{i}/{j}");
                    assert_eq!(c.get(&path).body_str(), path);
                }
            })
        })
        .collect();
    for t in others {
        t.join().expect("a client on another connection failed");
    }
    assert_eq!(hyper_get(addr, "/hyper").body, "/hyper");
    for c in &mut stuck {
        assert!(
            c.silent_for(Duration::from_millis(100)),
            "a response went out on a connection whose first handler never finished"
        );
    }
    assert!(
        server.wait_connections(NEVER_STUCK_CONNECTIONS, IO_TIMEOUT),
        "{} connections open, {NEVER_STUCK_CONNECTIONS} expected",
        server.connections()
    );

    server.exec(|s| s.close());
    for c in &mut stuck {
        let rest = c
            .read_to_close(IO_TIMEOUT)
            .expect("close_timeout did not close a stuck connection");
        assert!(
            rest.is_empty(),
            "a response overtook the unfinished one: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
    assert!(
        wait_until(IO_TIMEOUT, || server.exec(|s| s.empty())),
        "the server did not empty; {} connections left",
        server.connections()
    );
    assert!(
        server.step_errors().is_empty(),
        "step returned: {:?}",
        server.step_errors()
    );
}

// ===== 5. close() under load =====

/// Many clients are in the middle of a 2 MiB download (written in chunks with pauses) and
/// a few keep-alive connections are idle when `close()` is called: every download
/// completes with its whole body and then the connection closes, idle connections close,
/// new connections are refused, and the server becomes empty.
#[test]
fn close_under_load_completes_every_started_response() {
    let n_finished = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start(
        |o| o.tls(Tls::Off).close_timeout(Duration::from_secs(30)),
        {
            let n_finished = n_finished.clone();
            move || {
                move |_srv, stream: Stream| {
                    let n_finished = n_finished.clone();
                    async move {
                        let req = stream.get_headers().await?;
                        let path = req.get(":path").unwrap_or("").to_owned();
                        if !path.starts_with("/download/") {
                            return respond(&stream, "200", path).await;
                        }
                        let mut head = status_headers("200");
                        head.append("content-length", (CLOSE_BODY_CHUNKS * CHUNK).to_string());
                        stream.write_headers(&head, false).await?;
                        for j in 0..CLOSE_BODY_CHUNKS {
                            let last = j + 1 == CLOSE_BODY_CHUNKS;
                            stream.write_chunk(vec![chunk_byte(j); CHUNK], last).await?;
                            if !last {
                                onstream::sleep(CLOSE_CHUNK_PAUSE).await;
                            }
                        }
                        n_finished.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    }
                }
            }
        },
    );
    let addr = server.addr();

    let mut idle: Vec<Client> = (0..CLOSE_IDLE)
        .map(|i| {
            let mut c = Client::connect(addr);
            assert_eq!(c.get(&format!("/idle/{i}")).status, 200);
            c
        })
        .collect();
    let (head_tx, head_rx) = mpsc::channel::<usize>();
    let downloads: Vec<_> = (0..CLOSE_DOWNLOADS)
        .map(|i| {
            let head_tx = head_tx.clone();
            thread::spawn(move || download(addr, i, head_tx))
        })
        .collect();
    for _ in 0..CLOSE_DOWNLOADS {
        head_rx
            .recv_timeout(IO_TIMEOUT)
            .expect("a download's response head did not arrive");
    }

    let n_finished_before_close = {
        let n_finished = n_finished.clone();
        server.exec(move |s| {
            let n = n_finished.load(Ordering::SeqCst);
            s.close();
            n
        })
    };
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "a closed server accepted a new connection"
    );
    for (i, d) in downloads.into_iter().enumerate() {
        d.join()
            .expect("download thread panicked")
            .unwrap_or_else(|e| panic!("download {i}: {e}"));
    }
    assert_eq!(n_finished.load(Ordering::SeqCst), CLOSE_DOWNLOADS);
    for c in &mut idle {
        let rest = c
            .read_to_close(IO_TIMEOUT)
            .expect("an idle connection was left open by close()");
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    }
    assert!(
        wait_until(IO_TIMEOUT, || server.exec(|s| s.empty())),
        "the closed server did not empty; {} connections left",
        server.connections()
    );
    assert!(
        server.step_errors().is_empty(),
        "step returned: {:?}",
        server.step_errors()
    );
    // Not an assertion on timing but a check that the test tested something: with 10 ms
    // between chunks a body takes at least 310 ms, and close came right after the last
    // head arrived.
    let n_running = CLOSE_DOWNLOADS - n_finished_before_close;
    assert!(n_running > 0, "no download was still running at close");
    eprintln!("close: {n_running} of {CLOSE_DOWNLOADS} downloads were running at close");
}

/// The byte that fills chunk `j` of a download.
fn chunk_byte(j: usize) -> u8 {
    b'a' + (j % 26) as u8
}

/// Downloads `/download/{idx}`, reporting on `head_tx` once its head is in; checks the
/// whole body and that the server closes the connection after it.
fn download(addr: SocketAddr, idx: usize, head_tx: mpsc::Sender<usize>) -> Result<(), String> {
    let mut s = connect(addr);
    s.write_all(format!("GET /download/{idx} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line)
        .map_err(|e| format!("status line: {e}"))?;
    if !line.starts_with("HTTP/1.1 200 ") {
        return Err(format!("status line {line:?}"));
    }
    let mut len = None;
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => return Err("EOF in the head".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("head: {e}")),
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                len = value.trim().parse::<usize>().ok();
            }
        }
    }
    if len != Some(CLOSE_BODY_CHUNKS * CHUNK) {
        return Err(format!("content-length {len:?}"));
    }
    let _ = head_tx.send(idx);
    let mut body = Vec::with_capacity(CLOSE_BODY_CHUNKS * CHUNK);
    let mut buf = vec![0u8; CHUNK];
    while body.len() < CLOSE_BODY_CHUNKS * CHUNK {
        let want = buf.len().min(CLOSE_BODY_CHUNKS * CHUNK - body.len());
        match r.read(&mut buf[..want]) {
            Ok(0) => return Err(format!("closed after {} body bytes", body.len())),
            Ok(n) => body.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("after {} body bytes: {e}", body.len())),
        }
    }
    if let Some(k) = (0..body.len()).find(|&k| body[k] != chunk_byte(k / CHUNK)) {
        return Err(format!("wrong byte at offset {k}"));
    }
    let mut rest = r.buffer().to_vec();
    match read_to_close(r.get_mut(), IO_TIMEOUT) {
        Ok(more) => rest.extend(more),
        Err(_) => return Err("the connection stayed open after the response".into()),
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the body", rest.len()));
    }
    Ok(())
}
