//! The command as a new user meets it: a second start on a busy port, a unix socket
//! file left behind, `--inetd` in a shell pipeline, zero timeouts, options that cannot
//! go together, `http://` typed for a TLS port, the access log (refused requests,
//! refused WebSocket upgrades, how soon a line shows), and what a shutdown says and
//! cuts. Each test is one of those, run against the real binary.

mod common;
use common::{Onstream, Response};
use std::{
    io::{Read, Write},
    net::TcpStream,
    os::unix::net::{UnixListener, UnixStream},
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

fn onstream() -> Command {
    Command::new(env!("CARGO_BIN_EXE_onstream"))
}

fn with_hello(args: &[&str]) -> Onstream {
    Onstream::start(args, |dir| {
        std::fs::write(dir.join("root/hello.txt"), "Hello, World!\n").unwrap();
    })
}

/// Runs a command that is expected to stop by itself, killing it (and failing) if it
/// is still running after 20 s.
fn run_bounded(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after 20 s; stdout {:?}, stderr {:?}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Defect 1: with SO_REUSEPORT on every socket, a second instance used to start and the
/// kernel split the port's connections between the two directories.
#[test]
fn a_second_instance_on_a_busy_port_fails_and_the_first_keeps_every_request() {
    let first = Onstream::start(&["--workers", "2"], |dir| {
        std::fs::write(dir.join("root/who.txt"), "first").unwrap();
    });
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("who.txt"), "second").unwrap();
    let port = first.port.to_string();
    let out = run_bounded(
        onstream()
            .arg(other.path())
            .args(["--port", &port, "--workers", "2"]),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("Address already in use"),
        "{}",
        stderr_of(&out)
    );
    for _ in 0..10 {
        assert_eq!(first.get("/who.txt").text(), "first");
    }
}

fn wait_for_unix(path: &Path) -> UnixStream {
    for _ in 0..500 {
        if let Ok(c) = UnixStream::connect(path) {
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            return c;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on {}", path.display());
}

fn get_over_unix(path: &Path) -> Response {
    let mut c = wait_for_unix(path);
    c.write_all(b"GET /a.txt HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    Response::parse(&out)
}

/// Defect 2: the socket file stayed after exit, so the next start failed.
#[test]
fn a_stale_unix_socket_is_replaced_and_the_socket_file_removed_at_exit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "over unix").unwrap();
    let sock = dir.path().join("s.sock");
    // What a killed server leaves: a socket file nothing listens on.
    drop(UnixListener::bind(&sock).unwrap());
    assert!(UnixStream::connect(&sock).is_err());
    for _ in 0..2 {
        let mut child = onstream()
            .arg(dir.path())
            .args(["--unix", sock.to_str().unwrap(), "--tls", "off", "--quiet"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        assert_eq!(get_over_unix(&sock).text(), "over unix");
        // SAFETY: kill(2) on our own child.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        assert_eq!(child.wait().unwrap().code(), Some(0));
        assert!(!sock.exists(), "the socket file outlived the server");
    }
}

#[test]
fn a_live_unix_socket_or_another_file_at_the_path_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.sock");
    let listener = UnixListener::bind(&live).unwrap();
    let out = run_bounded(
        onstream()
            .arg(dir.path())
            .args(["--unix", live.to_str().unwrap()]),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("already listening"),
        "{}",
        stderr_of(&out)
    );
    // Still the other server's.
    let _client = UnixStream::connect(&live).unwrap();
    listener.accept().unwrap();

    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "keep me").unwrap();
    let out = run_bounded(
        onstream()
            .arg(dir.path())
            .args(["--unix", file.to_str().unwrap()]),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("is not a socket"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

/// Defect 3: `--inetd` with a pipe on standard input exited 0 and said nothing.
#[test]
fn inetd_with_a_pipe_on_standard_input_says_so_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = onstream()
        .arg(dir.path())
        .arg("--inetd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may have refused the pipe and exited already: the write may fail.
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
    let out = run_bounded_child(child);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("must be a socket"),
        "{}",
        stderr_of(&out)
    );
}

fn run_bounded_child(mut child: std::process::Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "still running after 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Defect 5: a WebSocket request the echo route refused (426 for a wrong version over
/// HTTP/1, 400 over HTTP/2) was logged as 499, as if the client had gone.
#[test]
fn a_refused_websocket_request_is_logged_with_the_status_sent() {
    let s = with_hello(&["--ws-echo", "/echo"]);
    let r = s.raw(
        b"GET /echo HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade, close\r\n\
          sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 12\r\n\r\n",
    );
    assert_eq!(r.status, 426);
    let line = s.next_log_line().unwrap();
    assert!(line.contains("\"GET /echo HTTP/1.1\" 426"), "{line}");

    let url = format!("http://127.0.0.1:{}/echo", s.port);
    let out = run_bounded(Command::new("curl").args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--http2-prior-knowledge",
        &url,
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "400");
    let line = s.next_log_line().unwrap();
    assert!(line.contains("\"GET /echo HTTP/2.0\" 400"), "{line}");
}

/// Defect 6: requests the server refused before the handler (400, 414, 431, 408) were
/// not logged at all; nginx logs them.
#[test]
fn requests_refused_before_the_handler_are_logged() {
    let s = with_hello(&["--header-read-timeout", "0.5"]);
    assert_eq!(s.raw(b"GET /a b c HTTP/1.1\r\nhost: x\r\n\r\n").status, 400);
    let line = s.next_log_line().unwrap();
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.ends_with("\"GET /a b c HTTP/1.1\" 400 -"), "{line}");

    let long = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(20_000));
    assert_eq!(s.raw(long.as_bytes()).status, 414);
    let line = s.next_log_line().unwrap();
    assert!(line.ends_with("\"-\" 414 -"), "{line}");

    let many: String = (0..500).map(|i| format!("x-{i}: y\r\n")).collect();
    let many = format!("GET /many HTTP/1.1\r\nhost: x\r\n{many}\r\n");
    assert_eq!(s.raw(many.as_bytes()).status, 431);
    let line = s.next_log_line().unwrap();
    assert!(line.ends_with("\"GET /many HTTP/1.1\" 431 -"), "{line}");

    assert_eq!(s.raw(b"GET /slow HTTP/1.1\r\nhost: x\r\n").status, 408);
    let line = s.next_log_line().unwrap();
    assert!(line.ends_with("\"GET /slow HTTP/1.1\" 408 -"), "{line}");
}

/// Defect 7: RFC 9112 §3.2.2 — a server MUST accept the absolute form.
#[test]
fn an_absolute_form_target_is_served() {
    let s = with_hello(&[]);
    let req = format!(
        "GET http://127.0.0.1:{0}/hello.txt HTTP/1.1\r\nhost: 127.0.0.1:{0}\r\nconnection: close\r\n\r\n",
        s.port
    );
    let r = s.raw(req.as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Hello, World!\n");
}

/// Defect 9: a timeout of 0 was accepted, and dropped most connections.
#[test]
fn zero_timeouts_are_refused_with_a_clear_message() {
    for flag in [
        "--connection-setup-timeout",
        "--intra-stream-timeout",
        "--header-read-timeout",
        "--body-read-timeout",
        "--send-timeout",
    ] {
        let out = run_bounded(onstream().args([".", flag, "0"]));
        assert_eq!(out.status.code(), Some(2), "{flag}");
        assert!(
            stderr_of(&out).contains("must be more than 0 seconds"),
            "{flag}: {}",
            stderr_of(&out)
        );
    }
}

#[test]
fn a_certificate_with_tls_off_is_an_error_not_ignored() {
    let out =
        run_bounded(onstream().args([".", "--tls", "off", "--cert", "c.pem", "--key", "k.pem"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("cannot go with --tls off"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn upload_sizes_take_units() {
    for size in ["100MB", "100MiB", "1.5G", "512k"] {
        let s = with_hello(&["--upload", "--max-upload-size", size, "--quiet"]);
        assert_eq!(s.get("/hello.txt").status, 200, "{size}");
    }
    let out = run_bounded(onstream().args([".", "--max-upload-size", "lots"]));
    assert_eq!(out.status.code(), Some(2));
}

/// `http://` typed for a `--tls on` port: a readable 400, as nginx gives, not TLS alert
/// bytes.
#[test]
fn plain_http_on_a_tls_only_port_gets_a_readable_400() {
    let s = with_hello(&["--tls", "on", "--quiet"]);
    let r = s.get("/hello.txt");
    assert_eq!(r.status, 400);
    assert!(
        r.text()
            .contains("plain HTTP request was sent to an HTTPS port"),
        "{}",
        r.text()
    );
}

/// Defect 10: log lines reached a file or a pipe up to a second late. With the
/// every-second flush pushed out to an hour, a line must still show as soon as the
/// server has nothing else to do.
#[test]
fn a_log_line_is_written_when_the_loop_goes_quiet() {
    let s = Onstream::start_with_env(&[], &[("ONSTREAM_TEST_LOG_FLUSH_SECONDS", "3600")], |dir| {
        std::fs::write(dir.join("root/hello.txt"), "Hello, World!\n").unwrap();
    });
    for _ in 0..3 {
        assert_eq!(s.get("/hello.txt").status, 200);
        let line = s
            .next_log_line()
            .expect("the line, without waiting for the hourly flush");
        assert!(
            line.ends_with("\"GET /hello.txt HTTP/1.1\" 200 14"),
            "{line}"
        );
    }
}

/// SIGTERM says what the drain does; a download still running at `--shutdown-timeout`
/// is cut, logged, and makes the exit status 1.
#[test]
fn a_download_cut_at_the_shutdown_timeout_is_logged_and_exits_1() {
    let mut s = Onstream::start(&["--shutdown-timeout", "0.5", "--workers", "1"], |dir| {
        let big = std::fs::File::create(dir.join("root/big.bin")).unwrap();
        big.set_len(1 << 30).unwrap();
    });
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /big.bin HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut first = vec![0; 4096];
    c.read_exact(&mut first).unwrap();
    // The client reads no more: the download cannot finish in time. (A worker counts
    // its connections once per turn of its loop; give the turn that sent these bytes
    // time to end, so the count the signal reads includes this one.)
    std::thread::sleep(Duration::from_millis(300));
    s.signal(libc::SIGTERM);
    let said = s.errors.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        said.contains("draining 1 connection, up to 500ms"),
        "{said}"
    );
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(1));
    let said = s.errors.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        said.contains("1 connection cut at the shutdown timeout"),
        "{said}"
    );
    let line = s.next_log_line().expect("the cut download is logged");
    assert!(line.contains("\"GET /big.bin HTTP/1.1\""), "{line}");
}

#[test]
fn sigterm_on_an_idle_server_says_it_stops_and_exits_0() {
    let mut s = with_hello(&[]);
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
    let said = s.errors.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(said, "onstream: stopping");
}

/// Starts the command with stdout piped and returns it with the URLs its banner printed
/// and the directory it serves (removed when dropped).
fn start_reading_banner(
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, Vec<String>, tempfile::TempDir) {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "Hello, World!\n").unwrap();
    let mut child = onstream()
        .arg(dir.path())
        .args(["--port", "0", "--quiet"])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The banner is printed in one piece: once a URL has come, the rest follows at
    // once (nothing marks its end when no certificate line follows).
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut urls = Vec::new();
    let mut wait = Duration::from_secs(20);
    while let Ok(line) = rx.recv_timeout(wait) {
        if let Some(rest) = line.strip_prefix("  http://") {
            urls.push(format!("http://{rest}"));
            wait = Duration::from_millis(500);
        }
    }
    (child, urls, dir)
}

fn stop(mut child: std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Sharing: on all interfaces the banner lists localhost and every interface address,
/// and each of them answers.
#[test]
fn on_all_interfaces_every_url_printed_answers() {
    let (child, urls, _dir) = start_reading_banner(&["--bind", "0.0.0.0"], &[]);
    assert!(urls[0].starts_with("http://localhost:"), "{urls:?}");
    for url in &urls {
        let authority = url.trim_start_matches("http://").trim_end_matches('/');
        let authority = authority.replace("localhost", "127.0.0.1");
        let mut c = TcpStream::connect(&authority).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"GET /hello.txt HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out).unwrap();
        assert_eq!(Response::parse(&out).text(), "Hello, World!\n", "{url}");
    }
    stop(child);
}

/// `--open` runs the browser ($BROWSER) on the first URL.
#[test]
fn open_starts_the_browser_on_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let browser = dir.path().join("browser");
    std::fs::write(
        &browser,
        format!("#!/bin/sh\necho \"$1\" > {}\n", seen.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (child, urls, _served) = start_reading_banner(
        &["--open", "--tls", "off"],
        &[("BROWSER", browser.to_str().unwrap()), ("DISPLAY", ":0")],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(child);
    let opened = std::fs::read_to_string(&seen).expect("the browser was started");
    assert_eq!(opened.trim(), urls[0]);
}
