//! Who may ask: `--auth` (HTTP Basic, several users, hashed passwords) and `--allow-from`.
//! Refusals come before any file system access, for every method and route.

mod common;
#[path = "common/curl.rs"]
mod curl;

use common::Onstream;
use curl::curl;
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

/// `printf %s hunter2 | sha256sum`
const HUNTER2_SHA256: &str = "f52fbd32b2b3b86ff88ef6c490628285f482af15ddcb29541f94bcf526a3f6c7";

fn with_secret(args: &[&str]) -> Onstream {
    Onstream::start(args, |dir| {
        std::fs::write(dir.join("root/secret.txt"), "the secret\n").unwrap();
    })
}

fn url(s: &Onstream, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", s.port)
}

#[test]
fn without_credentials_every_request_gets_401_with_a_challenge() {
    let auth_sha = format!("bob:sha256:{HUNTER2_SHA256}");
    let s = with_secret(&[
        "--auth",
        "alice:pa:ss",
        "--auth",
        &auth_sha,
        "--upload",
        "--ws-echo",
        "/echo",
    ]);
    for (method, path) in [
        ("GET", "/secret.txt"),
        ("HEAD", "/secret.txt"),
        ("GET", "/"),
        ("GET", "/missing"),
        ("GET", "/../etc/passwd"),
        ("PUT", "/new.txt"),
        ("DELETE", "/secret.txt"),
        ("OPTIONS", "*"),
    ] {
        let r = s.request(method, path, &[("content-length", "0")]);
        assert_eq!(r.status, 401, "{method} {path}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"onstream\", charset=\"UTF-8\""),
            "{method} {path}"
        );
        assert!(!r.text().contains("secret"), "{method} {path}");
    }
    // The WebSocket echo route too: no upgrade without credentials.
    let r = s.request(
        "GET",
        "/echo",
        &[
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    );
    assert_eq!(r.status, 401);
    assert!(!std::path::Path::new(&s.root().join("new.txt")).exists());
}

#[test]
fn right_credentials_are_served_and_wrong_ones_refused_over_h1_and_h2() {
    let auth_sha = format!("bob:sha256:{HUNTER2_SHA256}");
    let s = with_secret(&["--auth", "alice:pa:ss", "--auth", &auth_sha]);
    let u = url(&s, "/secret.txt");
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        for good in ["alice:pa:ss", "bob:hunter2"] {
            let r = curl(&[version, "-u", good], &u);
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, "the secret\n"),
                "{good}"
            );
        }
        for bad in [
            "alice:pa",
            "alice:hunter2",
            "bob:",
            "carol:pa:ss",
            "bob:f52f",
        ] {
            let r = curl(&[version, "-u", bad], &u);
            assert_eq!(r.status, 401, "{version} {bad}");
            assert!(r.header("www-authenticate").is_some());
        }
        let r = curl(&[version], &u);
        assert_eq!(r.status, 401);
    }
    // A Rust client, with the header written by hand: scheme case-insensitive.
    let r = s.request(
        "GET",
        "/secret.txt",
        &[("authorization", "basic Ym9iOmh1bnRlcjI=")],
    );
    assert_eq!(r.status, 200);
    let r = s.request("GET", "/secret.txt", &[("authorization", "Basic !!!")]);
    assert_eq!(r.status, 401);
}

#[test]
fn a_huge_authorization_header_is_refused_by_the_header_limits() {
    let s = with_secret(&["--auth", "alice:secret"]);
    // Past the 64 KiB head limit, within what the server drains before closing (so the
    // client sees the 431 rather than a reset while it is still writing).
    let huge = format!("Basic {}", "A".repeat(200 << 10));
    let r = s.request("GET", "/secret.txt", &[("authorization", &huge)]);
    assert_eq!(r.status, 431);
    let r = curl(&["-u", "alice:secret"], &url(&s, "/secret.txt"));
    assert_eq!(r.status, 200, "the server still answers");
}

#[test]
fn peers_outside_allow_from_get_403_before_authentication() {
    let s = with_secret(&["--allow-from", "10.0.0.0/8", "--auth", "alice:secret"]);
    let r = curl(&["-u", "alice:secret"], &url(&s, "/secret.txt"));
    assert_eq!(r.status, 403);
    assert!(r.header("www-authenticate").is_none());
    let r = curl(&["--http2-prior-knowledge"], &url(&s, "/"));
    assert_eq!(r.status, 403);

    let s = with_secret(&["--allow-from", "10.0.0.0/8", "--allow-from", "127.0.0.1"]);
    let r = curl(&[], &url(&s, "/secret.txt"));
    assert_eq!(r.status, 200);
}

#[test]
fn bad_auth_and_cidr_values_exit_2() {
    common::assert_usage_errors(&[
        &["--auth", "nocolon"][..],
        &["--auth", ":pw"],
        &["--auth", "a:sha256:123"],
        &["--allow-from", "10.0.0.1/8"],
        &["--allow-from", "nonsense"],
    ]);
}

#[test]
fn auth_over_cleartext_on_a_public_address_warns_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_onstream"))
        .arg(dir.path())
        .args([
            "--bind", "0.0.0.0", "--port", "0", "--auth", "a:b", "--tls", "off",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .next()
        .map(Result::unwrap);
    let _ = child.kill();
    let _ = child.wait();
    let first = first.expect("a warning line");
    assert!(
        first.contains("warning") && first.contains("cleartext"),
        "{first}"
    );
}

/// The access log names the user `--auth` admitted (NCSA's authuser field), and `-` for
/// a request refused 401, whatever name it claimed.
#[test]
fn the_access_log_names_the_admitted_user() {
    let s = Onstream::start(&["--auth", "alice:pa:ss"], |dir| {
        std::fs::write(dir.join("root/secret.txt"), "the secret\n").unwrap();
    });
    // alice:pa:ss and alice:wrong, base64.
    let r = s.request(
        "GET",
        "/secret.txt",
        &[("authorization", "Basic YWxpY2U6cGE6c3M=")],
    );
    assert_eq!(r.status, 200);
    let line = s.next_log_line().unwrap();
    assert!(line.starts_with("127.0.0.1 - alice ["), "{line}");
    let r = s.request(
        "GET",
        "/secret.txt",
        &[("authorization", "Basic YWxpY2U6d3Jvbmc=")],
    );
    assert_eq!(r.status, 401);
    let line = s.next_log_line().unwrap();
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
}
