//! Running the command: the access log, signals and graceful drain, start-up errors,
//! inetd mode, systemd socket activation, unix sockets, the WebSocket echo route.

mod common;
use common::Onstream;
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::net::UnixStream,
    process::{Command, Stdio},
    time::Duration,
};

fn onstream() -> Command {
    Command::new(env!("CARGO_BIN_EXE_onstream"))
}

fn with_hello(args: &[&str]) -> Onstream {
    Onstream::start(args, |dir| {
        std::fs::write(dir.join("root/hello.txt"), "Hello, World!\n").unwrap();
        std::fs::write(dir.join("root/big.bin"), vec![7u8; 8 << 20]).unwrap();
    })
}

#[test]
fn each_request_gets_a_common_log_line() {
    let s = with_hello(&[]);
    s.get("/hello.txt");
    let line = s.next_log_line().expect("a log line");
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.ends_with("\"GET /hello.txt HTTP/1.1\" 200 14"),
        "{line}"
    );
    s.get("/nope");
    let line = s.next_log_line().unwrap();
    assert!(line.contains("\"GET /nope HTTP/1.1\" 404"), "{line}");
}

#[test]
fn combined_adds_referer_and_user_agent_escaped() {
    let s = with_hello(&["--log-format", "combined"]);
    s.request(
        "GET",
        "/hello.txt",
        &[("referer", "http://x/"), ("user-agent", "evil\" agent")],
    );
    let line = s.next_log_line().unwrap();
    assert!(
        line.ends_with("200 14 \"http://x/\" \"evil\\x22 agent\""),
        "{line}"
    );
}

#[test]
fn json_lines_carry_the_fields() {
    let s = with_hello(&["--log-format", "json"]);
    s.get("/hello.txt");
    let line = s.next_log_line().unwrap();
    for field in [
        "\"status\":200",
        "\"bytes\":14",
        "\"method\":\"GET\"",
        "\"target_uri\":\"/hello.txt\"",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
}

#[test]
fn quiet_logs_nothing() {
    let s = with_hello(&["--quiet"]);
    assert_eq!(s.get("/hello.txt").status, 200);
    assert_eq!(s.log.recv_timeout(Duration::from_millis(1500)).ok(), None);
}

#[test]
fn sigterm_drains_a_download_in_flight_then_exits_0() {
    let mut s = with_hello(&["--quiet"]);
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /big.bin HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut first = vec![0; 4096];
    c.read_exact(&mut first).unwrap();
    s.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    // New connections are refused once the listener is closed...
    assert!(TcpStream::connect(("127.0.0.1", s.port)).is_err());
    // ...but the download that had started finishes.
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    let head_len = first.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(first.len() - head_len + rest.len(), 8 << 20);
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn sigint_on_an_idle_server_exits_0() {
    let mut s = with_hello(&[]);
    s.signal(libc::SIGINT);
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
}

fn fails_with(args: &[&str], expected: &str) {
    let out = onstream().args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(expected), "{err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"));
}

#[test]
fn start_up_errors_are_one_line_and_exit_1() {
    fails_with(&["/no/such/dir"], "cannot serve /no/such/dir");
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    fails_with(
        &[".", "--port", &port],
        &format!("cannot listen on 127.0.0.1:{port}"),
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let bad = bad.to_str().unwrap();
    fails_with(&[".", "--cert", bad, "--key", bad], "bad.pem");
}

#[test]
fn inetd_mode_serves_the_connection_on_stdin_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "from inetd").unwrap();
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let mut child = onstream()
        .arg(dir.path())
        .args(["--inetd", "--tls", "off", "--quiet"])
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    ours.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    ours.write_all(b"GET /a.txt HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    ours.read_to_end(&mut out).unwrap();
    let r = common::Response::parse(&out);
    assert_eq!((r.status, r.text().as_str()), (200, "from inetd"));
    let status = wait(&mut child);
    assert_eq!(status, Some(0));
}

fn wait(child: &mut std::process::Child) -> Option<i32> {
    for _ in 0..500 {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

#[test]
fn systemd_socket_activation_serves_on_the_inherited_listener() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "activated").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    // `sh` puts its own pid (which `exec` keeps) in LISTEN_PID, as systemd would.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$1\" --quiet")
        .arg(env!("CARGO_BIN_EXE_onstream"))
        .arg(dir.path())
        .stdout(Stdio::null());
    // SAFETY: dup2 and fcntl are async-signal-safe; descriptor 3 is where systemd puts
    // sockets.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep the close-on-exec flag Rust sets.
            let ok = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) >= 0
            } else {
                libc::dup2(fd, 3) >= 0
            };
            if !ok {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(listener);
    let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let text = get_a_txt(&c, &c);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(text, "activated");
}

#[test]
fn a_unix_socket_serves_with_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "over unix").unwrap();
    let sock = dir.path().join("s.sock");
    let mut child = onstream()
        .arg(dir.path())
        .args([
            "--unix",
            sock.to_str().unwrap(),
            "--mode",
            "600",
            "--tls",
            "off",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut tries = 0;
    let c = loop {
        match UnixStream::connect(&sock) {
            Ok(c) => break c,
            Err(_) if tries < 250 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    };
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let text = get_a_txt(&c, &c);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(text, "over unix");
    assert_eq!(mode, 0o600);
}

#[test]
fn the_websocket_echo_route_echoes() {
    let s = with_hello(&["--ws-echo", "/echo"]);
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(
        b"GET /echo HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
          sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    // A masked text frame "hi" (FIN, opcode 1, mask key 1 2 3 4).
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend(b"hi".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    c.write_all(&frame).unwrap();
    let mut echo = [0; 4];
    c.read_exact(&mut echo).unwrap();
    assert_eq!(echo, [0x81, 2, b'h', b'i']);
    // Other paths are still files.
    assert_eq!(s.get("/hello.txt").status, 200);
}

/// `GET /a.txt` on a connection (its writing and reading sides), the body of the answer.
fn get_a_txt(mut w: impl Write, mut r: impl Read) -> String {
    w.write_all(b"GET /a.txt HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    common::Response::parse(&out).text()
}
