//! What one exchange keeps and decides the same way over HTTP/1 and HTTP/2 (lua-http's
//! `stream_common`): the request's trailers once read, the handler tasks that hold the
//! stream, whether it was finished, the client's protocol error that gave up its body,
//! and the finish policy — what the server does with a response its handler left
//! unanswered, half-written or failed. `h1::H1Stream` and `h2::H2Stream` each hold a
//! [`Common`] and carry out the policy in their own framing; a rule changed here changes
//! for both.
//!
//! The bounds on waiting for a request body are the other shared piece; they live in
//! `stream.rs`, above both versions, because they wrap the body read itself.

use std::cell::{Cell, RefCell};

use crate::headers::Headers;

/// How a handler ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    /// The handler failed on its own account.
    Failed,
    /// The handler gave up because the client broke the protocol (answered with this status).
    PeerError(u16),
}

impl Outcome {
    /// The answer for a request its handler never answered: the client's protocol error
    /// status, else 503 (lua-http's automatic response on shutdown).
    pub(crate) fn automatic_response(self) -> (Headers, String) {
        let status = match self {
            Outcome::PeerError(status) => status,
            _ => 503,
        };
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let mut head = Headers::new();
        head.append(":status", status.to_string());
        head.append("content-type", "text/plain; charset=utf-8");
        (head, format!("{reason}\n"))
    }
}

/// Where a response is, as the finish policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// No head given.
    NotStarted,
    /// A head given but not sent yet (HTTP/1 holds it until the first body write).
    HeadPending,
    /// The head went out; the body is open.
    BodyOpen,
    /// Complete, reset, or taken over (upgrade, tunnel): nothing left to do.
    Ended,
}

/// What finishing a stream must do.
#[derive(Debug)]
pub(crate) enum Finish {
    /// Answer with this head and body instead of whatever was pending.
    Answer(Headers, String),
    /// End the open body (or send the pending head) as it is.
    EndBody,
    /// The body is incomplete and the handler failed: a clean end would pass it off as
    /// whole, so the exchange is cut (HTTP/1 closes the connection, HTTP/2 resets).
    Abort,
    Nothing,
}

/// The state every version's exchange keeps alike.
#[derive(Debug, Default)]
pub(crate) struct Common {
    trailers: RefCell<Option<Headers>>,
    /// Handler tasks that hold this stream: more than one after `add_stream` hands it to
    /// another server, and only the last to end may finish it.
    n_handlers: Cell<usize>,
    /// Set once the stream was finished (by its last handler, or dropped).
    finished: Cell<bool>,
    /// The status of a protocol error the client made in the request body (a malformed
    /// chunk, trailers; a body that stopped arriving): an unanswered stream is answered
    /// with it rather than 503, however the handler ended, and later reads fail with it.
    peer_error: Cell<Option<u16>>,
}

impl Common {
    pub(crate) fn trailers(&self) -> Option<Headers> {
        self.trailers.borrow().clone()
    }

    pub(crate) fn set_trailers(&self, trailers: Option<Headers>) {
        *self.trailers.borrow_mut() = trailers;
    }

    /// A handler task takes the stream.
    pub(crate) fn claim(&self) {
        self.n_handlers.set(self.n_handlers.get() + 1);
    }

    /// A handler task is done with the stream; true when no other handler holds it.
    pub(crate) fn unclaim(&self) -> bool {
        self.n_handlers.set(self.n_handlers.get().saturating_sub(1));
        self.n_handlers.get() == 0
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished.get()
    }

    /// Marks the stream finished; true if it already was.
    pub(crate) fn mark_finished(&self) -> bool {
        self.finished.replace(true)
    }

    pub(crate) fn peer_error(&self) -> Option<u16> {
        self.peer_error.get()
    }

    pub(crate) fn set_peer_error(&self, status: u16) {
        self.peer_error.set(Some(status));
    }

    /// The finish policy: what to do with a response at `progress` after a handler that
    /// ended with `outcome`.
    pub(crate) fn finish_action(&self, progress: Progress, outcome: Outcome) -> Finish {
        // The answer names the client's error when there was one, however the handler
        // ended.
        let answer = || {
            let reason = self.peer_error.get().map_or(outcome, Outcome::PeerError);
            let (head, body) = reason.automatic_response();
            Finish::Answer(head, body)
        };
        match progress {
            Progress::NotStarted => answer(),
            // A head given but not sent may be replaced: the handler failed (503) or the
            // client broke the protocol (its status) before any byte of it went out.
            Progress::HeadPending if outcome != Outcome::Ok || self.peer_error.get().is_some() => {
                answer()
            }
            Progress::HeadPending => Finish::EndBody,
            Progress::BodyOpen if outcome != Outcome::Ok => Finish::Abort,
            Progress::BodyOpen => Finish::EndBody,
            Progress::Ended => Finish::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(f: Finish) -> Option<String> {
        match f {
            Finish::Answer(head, _) => head.get(":status").map(str::to_owned),
            _ => None,
        }
    }

    #[test]
    fn an_unanswered_request_gets_503_or_the_clients_error() {
        let c = Common::default();
        let ans = c.finish_action(Progress::NotStarted, Outcome::Ok);
        assert_eq!(status(ans).as_deref(), Some("503"));
        c.set_peer_error(408);
        let ans = c.finish_action(Progress::NotStarted, Outcome::Failed);
        assert_eq!(status(ans).as_deref(), Some("408"));
    }

    #[test]
    fn a_pending_head_is_replaced_only_after_a_failure() {
        let c = Common::default();
        assert!(matches!(
            c.finish_action(Progress::HeadPending, Outcome::Ok),
            Finish::EndBody
        ));
        let ans = c.finish_action(Progress::HeadPending, Outcome::Failed);
        assert_eq!(status(ans).as_deref(), Some("503"));
    }

    #[test]
    fn an_open_body_is_cut_only_when_the_handler_did_not_end_well() {
        let c = Common::default();
        assert!(matches!(
            c.finish_action(Progress::BodyOpen, Outcome::Failed),
            Finish::Abort
        ));
        assert!(matches!(
            c.finish_action(Progress::BodyOpen, Outcome::PeerError(400)),
            Finish::Abort
        ));
        c.set_peer_error(400);
        assert!(matches!(
            c.finish_action(Progress::BodyOpen, Outcome::Ok),
            Finish::EndBody
        ));
        assert!(matches!(
            c.finish_action(Progress::Ended, Outcome::Failed),
            Finish::Nothing
        ));
    }
}
