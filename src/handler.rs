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
/// handler's own failures and panics.
pub(crate) fn spawn(
    ctl: &Controller,
    stream: Inner,
    handler: Pin<Box<dyn Future<Output = Result<()>>>>,
    report: impl FnOnce(Error) + 'static,
) {
    let task = HandlerTask {
        fut: AssertUnwindSafe(handler).catch_unwind(),
        stream: stream.clone(),
    };
    ctl.spawn(async move {
        let outcome = match task.await {
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
        // A stream handed to another server with `add_stream` is finished by the handler
        // that got it last.
        if stream.common().unclaim() {
            stream.finish(outcome).await;
        }
    })
    .detach();
}

/// A handler's future, flushing the connection's output each time the handler yields.
struct HandlerTask<F> {
    fut: F,
    stream: Inner,
}

impl<F: Future + Unpin> Future for HandlerTask<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let r = Pin::new(&mut self.fut).poll(cx);
        self.stream.after_poll(r.is_ready());
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
