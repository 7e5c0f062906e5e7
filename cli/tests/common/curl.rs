//! curl as the client: `curl -s -i ARGS… URL` with a time limit, its answer parsed. Used
//! with `#[path = "common/curl.rs"] mod curl;` beside `mod common;`.

#![allow(dead_code)]

use std::process::Command;

/// One answer curl printed (the last one, when it followed or retried).
#[derive(Debug)]
pub struct Answer {
    /// e.g. "HTTP/1.1" or "HTTP/2".
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// As curl gives it: decoded when `--compressed` was passed.
    pub body: Vec<u8>,
}

impl Answer {
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

/// Runs `curl -s -i --max-time 30 ARGS… URL` and parses what it printed.
pub fn curl(args: &[&str], url: &str) -> Answer {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "30"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?} {url}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&out.stdout)
}

fn parse(mut bytes: &[u8]) -> Answer {
    loop {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(bytes)));
        let head = std::str::from_utf8(&bytes[..end]).unwrap();
        let rest = &bytes[end + 4..];
        let mut lines = head.split("\r\n");
        let mut status_line = lines.next().unwrap().split(' ');
        let version = status_line.next().unwrap().to_owned();
        let status: u16 = status_line.next().unwrap().parse().unwrap();
        // An interim answer (100 Continue) is followed by the real one.
        if (100..200).contains(&status) && rest.starts_with(b"HTTP/") {
            bytes = rest;
            continue;
        }
        let headers = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        return Answer {
            version,
            status,
            headers,
            body: rest.to_vec(),
        };
    }
}
