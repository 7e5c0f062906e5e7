//! The unread rest of a request body after its response ended: read and thrown away in
//! a task of its own, so that a client still sending can finish.
//!
//! A handler may answer (a 405, a 413, any early error) before reading the body. RFC
//! 9113 §8.1 lets the server then reset the stream with NO_ERROR, and the h2 crate does
//! so as soon as the stream's last handle is dropped; but clients still uploading take
//! that badly (Debian's curl 7.88 fails with exit 92 instead of showing the response).
//! So, as HTTP/1 discards an unread body up to `max_discard` to keep its connection,
//! the server keeps the `RecvStream` and reads on, giving the flow-control credit back,
//! until the body ends (no reset is needed then) or until the client sent more than
//! `max_discard`, went quiet for `body_read_timeout`, or took longer than
//! `intra_stream_timeout` — then dropping it makes h2 send RST_STREAM(NO_ERROR) (its
//! `maybe_cancel`: the response is complete, the request is not), as nginx does.

use h2::RecvStream;
use std::{future::poll_fn, rc::Rc, time::Duration};

use super::conn::H2Shared;
use crate::rt::{timeout, Controller};

/// How much of an unread body is waited for, and for how long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DrainLimits {
    /// The most bytes read and thrown away (`Options::max_discard`).
    pub max_bytes: u64,
    /// The longest wait for the next byte (`Options::body_read_timeout`).
    pub gap: Duration,
    /// The longest the whole drain may take (`Options::intra_stream_timeout`, as
    /// HTTP/1's discarding).
    pub within: Duration,
}

/// Reads the rest of `recv` in a task of its own; the stream counts as open on `conn`
/// until that task ends. Without a loop to run it on, `recv` is dropped at once (h2
/// resets the stream).
pub(crate) fn spawn(recv: RecvStream, conn: Rc<H2Shared>) {
    let open = StillOpen(conn);
    if let Some(ctl) = Controller::try_current() {
        ctl.spawn(drain(recv, open)).detach();
    }
}

/// Marks the stream closed on its connection when the drain ends, however it ends.
struct StillOpen(Rc<H2Shared>);

impl Drop for StillOpen {
    fn drop(&mut self) {
        self.0.stream_closed();
    }
}

async fn drain(mut recv: RecvStream, open: StillOpen) {
    let limits = open.0.drain;
    let deadline = Controller::current().now() + limits.within;
    let mut left = limits.max_bytes;
    loop {
        let now = Controller::current().now();
        let wait = limits.gap.min(deadline.saturating_duration_since(now));
        match timeout(wait, poll_fn(|cx| recv.poll_data(cx))).await {
            Ok(Some(Ok(data))) => {
                let n = data.len();
                let _ = recv.flow_control().release_capacity(n);
                if n as u64 > left {
                    tracing::debug!(peer = ?open.0.peer_addr, "HTTP/2 unread body over max_discard: reset");
                    break;
                }
                left -= n as u64;
            }
            // The body ended (the stream is closed both ways: dropping `recv` sends
            // nothing), or the client reset the stream or the connection went away.
            Ok(None | Some(Err(_))) => break,
            Err(_) => {
                tracing::debug!(peer = ?open.0.peer_addr, "HTTP/2 unread body too slow: reset");
                break;
            }
        }
    }
    drop(recv);
}
