//! The handler task: one request's `onstream` handler in a task of its own, and how its
//! end becomes the stream's end.
//!
//! The task catches a panic (it costs that request a 503, never the loop), flushes the
//! connection's output each time the handler yields (HTTP/1 writes a poll's writes in one
//! go), and sorts the handler's result: the client's fault (an error with a status, a
//! disconnect) is answered or logged; only the handler's own failures are reported, to
//! the server's `onerror`. Then the stream is finished — an unanswered request answered,
//! an open body ended — by the last task that holds it.

use futures_util::FutureExt;
use std::{
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    task::{Context, Poll},
};

use crate::{
    error::{Error, Result},
    rt::Controller,
    stream::Inner,
    stream_common::Outcome,
};

/// Runs `handler` (already holding a claim on `stream`) on `ctl`; `report` receives the
/// handler's own failures and panics. The handler's future is held in the task as it is,
/// not boxed first: one allocation per request.
pub(crate) fn spawn<F>(
    ctl: &Controller,
    stream: Inner,
    handler: F,
    report: impl FnOnce(Error) + 'static,
) where
    F: Future<Output = Result<()>> + 'static,
{
    let task = HandlerTask {
        fut: AssertUnwindSafe(handler).catch_unwind(),
        stream: stream.clone(),
    };
    // `then`, not an `async` block awaiting `task`: the block would hold the handler's
    // future twice (captured, and moved into its `.await`).
    ctl.spawn(task.then(move |result| {
        let outcome = match result {
            Ok(Ok(())) => Outcome::Ok,
            // The client's fault, not the handler's: answered, logged, not reported.
            Ok(Err(e)) if e.status().is_some() => {
                tracing::debug!("request failed: {e}");
                Outcome::PeerError(e.status().unwrap_or(400))
            }
            Ok(Err(e)) if e.is_disconnect() => {
                tracing::debug!("handler ended by a disconnect: {e}");
                Outcome::Failed
            }
            Ok(Err(e)) => {
                report(e);
                Outcome::Failed
            }
            Err(panic) => {
                let msg = panic_message(&panic);
                report(Error::handler(format!("handler panicked: {msg}")));
                Outcome::Failed
            }
        };
        async move {
            // A stream handed to another server with `add_stream` is finished by the
            // handler that got it last.
            if stream.common().unclaim() {
                stream.finish(outcome).await;
            } else {
                stream.after_poll(true);
            }
        }
    }))
    .detach();
}

pin_project_lite::pin_project! {
    /// A handler's future, flushing the connection's output each time the handler yields.
    struct HandlerTask<F> {
        #[pin]
        fut: F,
        stream: Inner,
    }
}

impl<F: Future> Future for HandlerTask<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let r = this.fut.poll(cx);
        // An ended handler's flush comes after its stream is finished (or handed on), when
        // whether a later pipelined response can share its write is known.
        if r.is_pending() {
            this.stream.after_poll(false);
        }
        r
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_owned()
    }
}
