//! Timers: a map ordered by `(deadline, id)` so equal deadlines coexist (async-io's
//! `reactor.rs` does the same), and the `Sleep` / `Timeout` futures built on it.
//!
//! The controller asks `next_deadline` to bound how long `step` may block, and calls
//! `fire_due(now)` after each poll. A `Sleep` whose deadline moves later keeps its old entry
//! and re-arms when that entry fires: connection idle timers are pushed back on every
//! request, and this makes that push a field store instead of a map update.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use super::{Controller, Inner};
use crate::error::{Error, Result};

/// Pending timers of one controller.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    entries: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
}

impl Timers {
    fn insert(&mut self, deadline: Instant, waker: Waker) -> (Instant, u64) {
        let key = (deadline, self.next_id);
        self.next_id += 1;
        self.entries.insert(key, waker);
        key
    }

    fn remove(&mut self, key: (Instant, u64)) {
        self.entries.remove(&key);
    }

    fn update_waker(&mut self, key: (Instant, u64), waker: &Waker) {
        if let Some(w) = self.entries.get_mut(&key) {
            if !w.will_wake(waker) {
                *w = waker.clone();
            }
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.entries.keys().next().map(|k| k.0)
    }

    /// Removes and returns the wakers of every timer due at or before `now`. A timer due
    /// exactly now fires now, not one step later.
    pub(crate) fn take_due(&mut self, now: Instant, into: &mut Vec<Waker>) {
        while let Some(entry) = self.entries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            into.push(entry.remove());
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A future that completes at a deadline. Made by [`sleep`] and [`sleep_until`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Sleep {
    deadline: Instant,
    /// The controller whose timers hold `entry`; found on first poll.
    ctl: Option<Rc<Inner>>,
    /// The registered timer, whose deadline may be earlier than `deadline` (see module docs).
    entry: Option<(Instant, u64)>,
    /// The waker `entry` holds, to know without a look-up when it is already the right one.
    waker: Option<Waker>,
}

/// Completes after `duration`, measured on the controller that polls it.
///
/// ```no_run
/// # async fn f() {
/// onstream::sleep(std::time::Duration::from_millis(10)).await;
/// # }
/// ```
pub fn sleep(duration: Duration) -> Sleep {
    let now = Controller::try_current().map_or_else(Instant::now, |c| c.now());
    sleep_until(now + duration)
}

/// Completes at `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        ctl: None,
        entry: None,
        waker: None,
    }
}

impl Sleep {
    /// When this sleep completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline. Moving it later costs no timer update.
    pub fn reset(&mut self, deadline: Instant) {
        if deadline < self.deadline {
            self.disarm();
        }
        self.deadline = deadline;
    }

    fn disarm(&mut self) {
        if let (Some(ctl), Some(key)) = (&self.ctl, self.entry.take()) {
            ctl.timers.borrow_mut().remove(key);
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let ctl = this.ctl.get_or_insert_with(|| Controller::current().inner);
        let now = ctl.now.get();
        if now >= this.deadline {
            this.disarm();
            return Poll::Ready(());
        }
        match this.entry {
            Some(key) if key.0 > now => {
                // The same task polling again (a connection's driver waits on its timer
                // once per request): its waker is already the one registered, and
                // looking the entry up would cost a tree search.
                if !this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    ctl.timers.borrow_mut().update_waker(key, cx.waker());
                    this.waker = Some(cx.waker().clone());
                }
            }
            _ => {
                let key = ctl
                    .timers
                    .borrow_mut()
                    .insert(this.deadline, cx.waker().clone());
                this.entry = Some(key);
                this.waker = Some(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// A future bounded by a deadline. Made by [`timeout`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Timeout<F> {
    future: F,
    sleep: Sleep,
}

/// Runs `future` for at most `duration`; past it, the future is dropped and the result is an
/// error whose [`Error::is_timeout`] is true.
///
/// ```no_run
/// # async fn f(stream: onstream::Stream) -> onstream::Result<()> {
/// use std::time::Duration;
/// let body = onstream::timeout(Duration::from_secs(5), stream.get_body_as_bytes()).await??;
/// # Ok(()) }
/// ```
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout {
        future,
        sleep: sleep(duration),
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `future` is structurally pinned: it is never moved out of `self`, and
        // `Timeout` has no `Drop` impl that could move it. `sleep` is `Unpin`.
        #[allow(unsafe_code)]
        let (future, sleep) = unsafe {
            let this = self.get_unchecked_mut();
            (Pin::new_unchecked(&mut this.future), &mut this.sleep)
        };
        if let Poll::Ready(v) = future.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Error::timeout("deadline passed"))),
            Poll::Pending => Poll::Pending,
        }
    }
}
