//! Giving the loop back between steps of a long response (compressing, archiving): a
//! handler that only ever writes to a fast client would otherwise not let other
//! connections have their turn until its output buffer fills.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

/// Pending once, with the task woken at once: it runs again on a later turn of the loop.
pub fn yield_now() -> impl Future<Output = ()> {
    YieldNow(false)
}

struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
