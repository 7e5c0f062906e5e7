//! The access log: one line per answered request, in NCSA common or combined format
//! (as nginx and Apache write them) on standard output, or as a JSON object through
//! `tracing`'s JSON formatter.
//!
//! Common and combined lines are buffered: a `write(2)` per request would cost as much
//! as answering a small file. They are written out as soon as the loop has a turn with
//! no new line (so `tail -f` shows a request as it is answered), and under a load that
//! logs in every turn, when the buffer fills or a second has passed (see
//! [`flush_when_quiet`]), and at exit.

use std::{
    cell::{Cell, RefCell},
    future::poll_fn,
    io::{BufWriter, Stdout, Write},
    net::SocketAddr,
    rc::Weak,
    task::{Poll, Waker},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{args::LogFormat, calendar::civil_from_days};

/// What is logged of one request.
#[derive(Debug)]
pub struct Record<'a> {
    pub peer: Option<SocketAddr>,
    /// The user `--auth` admitted (`-` in the log when none, as NCSA's `authuser`).
    pub user: Option<&'a str>,
    pub request: Request<'a>,
    pub status: u16,
    /// Body bytes sent (`-` in the log when 0, as NCSA).
    pub bytes: u64,
    pub referer: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub duration: Duration,
}

/// The request, as the log shows it between quotes.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// A request that reached the handler.
    Parsed {
        method: &'a str,
        target: &'a str,
        version: &'static str,
    },
    /// A request the server refused by itself: its request-line as received, if a whole
    /// one arrived (`-` otherwise, as nginx logs a request it could not read).
    Refused(Option<&'a str>),
}

/// The log of a running server.
#[derive(Debug)]
pub struct AccessLog {
    format: LogFormat,
    out: RefCell<BufWriter<Stdout>>,
    /// The last second formatted, and its `[10/Oct/2000:13:55:36 +0000]` text.
    stamp: RefCell<(u64, String)>,
    /// Lines logged so far, and how many of them were flushed.
    logged: Cell<u64>,
    flushed: Cell<u64>,
    /// The task of [`flush_when_quiet`], waiting for a line.
    flusher: RefCell<Option<Waker>>,
}

impl AccessLog {
    /// A log in `format`; for JSON, the `tracing` subscriber must be installed.
    pub fn new(format: LogFormat) -> AccessLog {
        AccessLog {
            format,
            out: RefCell::new(BufWriter::with_capacity(64 * 1024, std::io::stdout())),
            stamp: RefCell::new((u64::MAX, String::new())),
            logged: Cell::new(0),
            flushed: Cell::new(0),
            flusher: RefCell::new(None),
        }
    }

    /// Logs one request.
    pub fn log(&self, r: &Record<'_>) {
        self.logged.set(self.logged.get() + 1);
        if let Some(flusher) = self.flusher.borrow_mut().take() {
            flusher.wake();
        }
        if self.format == LogFormat::Json {
            let (method, target, version, line) = match r.request {
                Request::Parsed {
                    method,
                    target,
                    version,
                } => (method, target, version, ""),
                Request::Refused(line) => ("", "", "", line.unwrap_or("")),
            };
            tracing::info!(
                target: "onstream::access",
                peer = %Peer(r.peer),
                user = r.user.unwrap_or(""),
                method,
                target_uri = target,
                version,
                request_line = line,
                status = r.status,
                bytes = r.bytes,
                referer = r.referer.unwrap_or(""),
                user_agent = r.user_agent.unwrap_or(""),
                duration_us = u64::try_from(r.duration.as_micros()).unwrap_or(u64::MAX),
            );
            return;
        }
        let bytes = if r.bytes == 0 {
            "-".to_owned()
        } else {
            r.bytes.to_string()
        };
        // The line is made whole first and buffered in one piece: workers share stdout,
        // and a buffer is written out only between lines, so lines never interleave.
        use std::fmt::Write as _;
        let mut line = String::with_capacity(160);
        let _ = write!(
            line,
            "{} - {} {} \"",
            Peer(r.peer),
            Escaped(r.user.unwrap_or("-")),
            self.stamp()
        );
        let _ = match r.request {
            Request::Parsed {
                method,
                target,
                version,
            } => write!(line, "{} {} {version}", Escaped(method), Escaped(target)),
            Request::Refused(request_line) => {
                write!(line, "{}", Escaped(request_line.unwrap_or("-")))
            }
        };
        let _ = write!(line, "\" {} {}", r.status, bytes);
        if self.format == LogFormat::Combined {
            let _ = write!(
                line,
                " \"{}\" \"{}\"",
                Escaped(r.referer.unwrap_or("-")),
                Escaped(r.user_agent.unwrap_or("-"))
            );
        }
        line.push('\n');
        let _ = self.out.borrow_mut().write_all(line.as_bytes());
    }

    /// Writes out what is buffered.
    pub fn flush(&self) {
        self.flushed.set(self.logged.get());
        let _ = self.out.borrow_mut().flush();
    }

    /// This second's time stamp, formatted once per second rather than per line.
    fn stamp(&self) -> std::cell::Ref<'_, str> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if self.stamp.borrow().0 != now {
            *self.stamp.borrow_mut() = (now, clf_time(now));
        }
        std::cell::Ref::map(self.stamp.borrow(), |s| s.1.as_str())
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The task that writes the log out when the loop goes quiet: after a line is logged it
/// waits one turn of the loop at a time until a turn passes with no new line, then
/// flushes. A loop busy enough to log in every turn keeps batching; the every-second
/// flush of the command bounds the delay then. Ends when the log is dropped.
pub async fn flush_when_quiet(log: Weak<AccessLog>) {
    loop {
        // Wait for an unflushed line.
        let pending = poll_fn(|cx| match log.upgrade() {
            None => Poll::Ready(false),
            Some(log) if log.logged.get() != log.flushed.get() => Poll::Ready(true),
            Some(log) => {
                *log.flusher.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        if !pending.await {
            return;
        }
        loop {
            let Some(seen) = log.upgrade().map(|l| l.logged.get()) else {
                return;
            };
            next_turn().await;
            match log.upgrade() {
                None => return,
                Some(l) if l.logged.get() == seen => {
                    l.flush();
                    break;
                }
                Some(_) => {}
            }
        }
    }
}

/// Ready in the loop's next turn: a task that wakes itself runs again only in the
/// next step (see `Controller::step`), after that step's I/O.
async fn next_turn() {
    let mut yielded = false;
    poll_fn(|cx| {
        if std::mem::replace(&mut yielded, true) {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// The client's address, `-` on a unix socket.
struct Peer(Option<SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{}", a.ip()),
            None => f.write_str("-"),
        }
    }
}

/// A logged field with `"`, `\` and control bytes escaped, so a request cannot forge
/// log lines (nginx escapes the same way).
struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '"' | '\\' => write!(f, "\\x{:02X}", c as u32)?,
                c if c.is_control() => write!(f, "\\x{:02X}", c as u32)?,
                c => write!(f, "{c}")?,
            }
        }
        Ok(())
    }
}

/// `[10/Oct/2000:13:55:36 +0000]` for a Unix time, in UTC.
fn clf_time(secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "[{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000]",
        MONTHS[(m - 1) as usize],
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_in_common_log_format() {
        assert_eq!(clf_time(0), "[01/Jan/1970:00:00:00 +0000]");
        assert_eq!(clf_time(971_186_136), "[10/Oct/2000:13:55:36 +0000]");
        assert_eq!(clf_time(1_709_164_800), "[29/Feb/2024:00:00:00 +0000]");
    }

    #[test]
    fn quotes_and_control_bytes_are_escaped() {
        assert_eq!(Escaped("/a\"b\\c\n").to_string(), "/a\\x22b\\x5Cc\\x0A");
        assert_eq!(Escaped("/ü").to_string(), "/ü");
    }
}
