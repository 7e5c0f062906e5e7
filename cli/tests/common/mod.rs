//! Runs the `onstream` binary on a free port of 127.0.0.1 over a temporary directory and
//! talks to it with raw HTTP/1.1 over real sockets: the tests need to send what real
//! clients refuse to (`..`, NUL, backslashes) and to see the exact bytes answered.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running `onstream` and the directory it serves.
pub struct Onstream {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// What the server printed to stdout after the banner (the access log).
    pub log: std::sync::mpsc::Receiver<String>,
    /// What the server printed to stderr, line by line (also passed on to the test's
    /// own stderr).
    pub errors: std::sync::mpsc::Receiver<String>,
}

/// The served directory's root inside `Onstream::dir` (a subdirectory, so that tests
/// can put files *outside* the root next to it).
pub fn root(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("root")
}

impl Onstream {
    /// Starts `onstream ROOT --port 0 ARGS…` after `fill` populated the directory
    /// (`fill` gets the temp dir; the served root is `root()`).
    pub fn start(args: &[&str], fill: impl FnOnce(&Path)) -> Onstream {
        Onstream::start_with_env(args, &[], fill)
    }

    /// [`Onstream::start`] with environment variables set for the command.
    pub fn start_with_env(
        args: &[&str],
        env: &[(&str, &str)],
        fill: impl FnOnce(&Path),
    ) -> Onstream {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(root(&dir)).unwrap();
        fill(dir.path());
        let mut child = Command::new(env!("CARGO_BIN_EXE_onstream"))
            .arg(root(&dir))
            .args(["--port", "0"])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start onstream");
        let stderr = child.stderr.take().unwrap();
        let (errors_tx, errors_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                eprintln!("{line}");
                let _ = errors_tx.send(line);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (log_tx, log_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut port_tx = Some(port_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                // The banner: "onstream: serving DIR", then indented URLs and the
                // certificate's fingerprint.
                if line.starts_with("onstream: ") {
                    continue;
                }
                if line.starts_with("  ") && port_tx.is_none() {
                    continue;
                }
                if let Some(tx) = &port_tx {
                    if let Some(rest) = line
                        .trim()
                        .strip_prefix("http://127.0.0.1:")
                        .or(line.trim().strip_prefix("https://127.0.0.1:"))
                    {
                        let port: u16 = rest.trim_end_matches('/').parse().unwrap();
                        let _ = tx.send(port);
                        port_tx = None;
                    }
                    continue;
                }
                let _ = log_tx.send(line);
            }
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("onstream printed its URL");
        Onstream {
            child,
            port,
            dir,
            log: log_rx,
            errors: errors_rx,
        }
    }

    pub fn root(&self) -> PathBuf {
        root(&self.dir)
    }

    /// Sends `request` (a whole HTTP/1.1 request; `Connection: close` is the caller's
    /// business) and reads the answer to EOF.
    pub fn raw(&self, request: &[u8]) -> Response {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        Response::parse(&out)
    }

    /// `METHOD PATH` with extra header lines, on a connection of its own.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.raw(req.as_bytes())
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[])
    }

    /// Waits (bounded) for the process to exit and returns its status code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The next access-log line, waiting at most a few seconds (the log is flushed
    /// every second).
    pub fn next_log_line(&self) -> Option<String> {
        self.log.recv_timeout(Duration::from_secs(5)).ok()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }
}

impl Drop for Onstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn parse(bytes: &[u8]) -> Response {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(bytes)));
        let head = std::str::from_utf8(&bytes[..end]).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        Response {
            status,
            headers,
            body: bytes[end + 4..].to_vec(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}
