//! The Controller: a single-threaded step loop, lua-http's cqueues controller in Rust.
//!
//! It owns a `mio::Poll` (the [`Controller::pollfd`] an external main loop waits on), a
//! timer map and a queue of ready tasks (`async-task` runnables). [`Controller::step`] is one
//! turn: wait for I/O at most as long as allowed, fire due timers, then run every ready task
//! at most once. Tasks may be `!Send` (handlers hold `Rc`s, as Lua coroutines hold
//! upvalues); wakers are `Send`, and a [`Remote`] lets other threads wake the loop or hand it
//! work.
//!
//! Why our own loop: tokio and async-std keep their poller private (no pollfd, no next
//! deadline, no single step), and lua-http's whole embedding story rests on those three. The
//! loop knows nothing about HTTP.

mod io;
mod reactor;
mod timer;

pub(crate) use io::Registered;
pub use io::{TcpStream, UnixStream};
pub use timer::{sleep, sleep_until, timeout, Sleep, Timeout};

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    fmt,
    future::Future,
    os::fd::RawFd,
    rc::Rc,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use crate::error::{Error, Result};
use futures_util::FutureExt;
use reactor::{Reactor, WAKER_TOKEN};
use timer::Timers;

/// A task's metadata: the number of the last step that ran it, so a step runs each task at
/// most once (a task woken again during its own step waits for the next one).
type LastStep = AtomicU64;
type Runnable = async_task::Runnable<LastStep>;

/// A spawned task's handle: await it for the output, drop it to cancel the task, or
/// [`Task::detach`] it to let it run on its own.
pub type Task<T> = async_task::Task<T, LastStep>;

/// The single-threaded step loop. Cloning gives another handle to the same loop.
///
/// ```
/// use std::time::Duration;
/// let ctl = onstream::Controller::new()?;
/// let task = ctl.spawn(async { onstream::sleep(Duration::from_millis(5)).await; 42 });
/// while !task.is_finished() {
///     ctl.step(ctl.timeout())?;
/// }
/// assert!(ctl.empty());
/// # Ok::<(), onstream::Error>(())
/// ```
#[derive(Clone)]
pub struct Controller {
    pub(crate) inner: Rc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) reactor: Reactor,
    pub(crate) timers: RefCell<Timers>,
    /// The state other threads may touch: the run queue and the cross-thread waker.
    shared: Arc<Shared>,
    /// The time at the start of the current step's run phase: timers and deadlines use it so
    /// a step reads the clock once.
    pub(crate) now: Cell<Instant>,
    /// The number of the step under way (or last run).
    step_no: Cell<u64>,
    /// Tasks spawned and not yet finished or dropped.
    n_tasks: Rc<Cell<usize>>,
    /// Set while a step runs, to refuse re-entrant steps from inside a task.
    in_step: Cell<bool>,
    /// Runnables taken from the queue for the current round; kept to reuse its allocation.
    batch: RefCell<VecDeque<Runnable>>,
}

struct Shared {
    queue: Mutex<VecDeque<Runnable>>,
    /// True while the loop may block in `epoll_wait`: a schedule from another thread must
    /// then wake it through `waker`.
    sleeping: AtomicBool,
    waker: mio::Waker,
    /// Closures sent by [`Remote::spawn`], run on the loop's thread at the next step.
    jobs: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

impl Shared {
    fn schedule(&self, runnable: Runnable) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(runnable);
        self.wake_if_sleeping();
    }

    fn wake_if_sleeping(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            // A failed wake means the eventfd is gone with the loop; nobody is left to wake.
            let _ = self.waker.wake();
        }
    }

    fn has_work(&self) -> bool {
        !self
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
            || !self
                .jobs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
    }
}

thread_local! {
    /// The controller whose step is running on this thread, for [`Controller::current`].
    static CURRENT: RefCell<Option<Controller>> = const { RefCell::new(None) };
}

impl Controller {
    /// A new, empty loop.
    pub fn new() -> Result<Controller> {
        let reactor = Reactor::new().map_err(|e| Error::io(e).with_context("create epoll"))?;
        let waker = mio::Waker::new(reactor.registry(), WAKER_TOKEN)
            .map_err(|e| Error::io(e).with_context("create eventfd"))?;
        Ok(Controller {
            inner: Rc::new(Inner {
                reactor,
                timers: RefCell::new(Timers::default()),
                shared: Arc::new(Shared {
                    queue: Mutex::new(VecDeque::new()),
                    sleeping: AtomicBool::new(false),
                    waker,
                    jobs: Mutex::new(Vec::new()),
                }),
                now: Cell::new(Instant::now()),
                step_no: Cell::new(0),
                n_tasks: Rc::new(Cell::new(0)),
                in_step: Cell::new(false),
                batch: RefCell::new(VecDeque::new()),
            }),
        })
    }

    /// The controller running the current task.
    ///
    /// # Panics
    ///
    /// Outside a task of a controller's step.
    pub fn current() -> Controller {
        Controller::try_current().expect("onstream: not inside a Controller step")
    }

    /// The controller running the current task, if any.
    pub fn try_current() -> Option<Controller> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// Spawns a task on this loop. It first runs at the next step (or later in this one).
    /// The future may be `!Send`; the returned [`Task`] cancels it when dropped unless
    /// detached.
    pub fn spawn<F>(&self, future: F) -> Task<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let n_tasks = self.inner.n_tasks.clone();
        n_tasks.set(n_tasks.get() + 1);
        let guard = TaskCount(n_tasks);
        let shared = self.inner.shared.clone();
        let (runnable, task) = async_task::Builder::new()
            .metadata(AtomicU64::new(0))
            .spawn_local(
                // `map`, not an `async` block that awaits `future`: that block would hold
                // the future twice (captured, and moved into its `.await`), doubling the
                // allocation of every task, idle connections' included.
                move |_| {
                    future.map(move |output| {
                        drop(guard);
                        output
                    })
                },
                move |r| shared.schedule(r),
            );
        runnable.schedule();
        task
    }

    /// Runs one turn of the loop: waits for I/O for at most `timeout` (`None`: until
    /// something happens), fires due timers, then runs each ready task at most once.
    ///
    /// # Panics
    ///
    /// When called from inside a task of the same controller.
    pub fn step(&self, timeout: Option<Duration>) -> Result<()> {
        let inner = &*self.inner;
        assert!(
            !inner.in_step.get(),
            "onstream: Controller::step is not re-entrant"
        );
        inner.in_step.set(true);
        let _exit = StepExit(self);
        let prev = CURRENT.with(|c| c.borrow_mut().replace(self.clone()));

        let mut wait = self.bound_wait(timeout);
        if wait != Some(Duration::ZERO) {
            // Announce the sleep before the final look at the queue, so a thread that
            // schedules after that look sees the flag and wakes us (both SeqCst).
            inner.shared.sleeping.store(true, Ordering::SeqCst);
            if inner.shared.has_work() {
                wait = Some(Duration::ZERO);
            }
        }
        // The flag drops before readiness wakes any task: wakes from this thread during
        // dispatch must not write to the eventfd.
        let polled = inner.reactor.poll(wait, || {
            inner.shared.sleeping.store(false, Ordering::SeqCst)
        });
        if let Err(e) = polled {
            CURRENT.with(|c| *c.borrow_mut() = prev);
            return Err(Error::io(e).with_context("epoll_wait"));
        }

        let now = Instant::now();
        inner.now.set(now);
        let mut due = Vec::new();
        inner.timers.borrow_mut().take_due(now, &mut due);
        due.into_iter().for_each(std::task::Waker::wake);

        let jobs =
            std::mem::take(&mut *inner.shared.jobs.lock().unwrap_or_else(|e| e.into_inner()));
        jobs.into_iter().for_each(|job| job());

        self.run_ready();
        CURRENT.with(|c| *c.borrow_mut() = prev);
        Ok(())
    }

    /// Runs every queued task that has not run in this step; tasks woken again wait.
    fn run_ready(&self) {
        let inner = &*self.inner;
        let step_no = inner.step_no.get() + 1;
        inner.step_no.set(step_no);
        let mut deferred = Vec::new();
        let mut batch = inner.batch.borrow_mut();
        loop {
            std::mem::swap(
                &mut *inner.shared.queue.lock().unwrap_or_else(|e| e.into_inner()),
                &mut *batch,
            );
            if batch.is_empty() {
                break;
            }
            while let Some(runnable) = batch.pop_front() {
                if runnable.metadata().swap(step_no, Ordering::Relaxed) == step_no {
                    deferred.push(runnable);
                } else {
                    runnable.run();
                }
            }
        }
        if !deferred.is_empty() {
            let mut queue = inner.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            for r in deferred.into_iter().rev() {
                queue.push_front(r);
            }
        }
    }

    /// Steps until `timeout` passes or no task is left (`None`: until no task is left).
    pub fn run(&self, timeout: Option<Duration>) -> Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        while !self.empty() {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                break;
            }
            self.step(left)?;
        }
        Ok(())
    }

    /// The file descriptor to wait on for readability (the epoll fd).
    pub fn pollfd(&self) -> RawFd {
        self.inner.reactor.fd()
    }

    /// The events to wait for on [`Controller::pollfd`]: always `"r"`.
    pub fn events(&self) -> &'static str {
        "r"
    }

    /// How long a host loop may wait on `pollfd` before calling `step`: zero when tasks are
    /// ready, the time to the nearest timer otherwise, `None` when only I/O can wake us.
    pub fn timeout(&self) -> Option<Duration> {
        if self.inner.shared.has_work() {
            return Some(Duration::ZERO);
        }
        let next = self.inner.timers.borrow().next_deadline()?;
        Some(next.saturating_duration_since(Instant::now()))
    }

    /// Whether no task is left.
    pub fn empty(&self) -> bool {
        self.inner.n_tasks.get() == 0
    }

    /// Runs `f` between steps as if in one: [`Controller::current`] is this controller
    /// and [`Controller::now`] is read anew, so a future `f` polls may make timers. For an
    /// embedding that polls part of a task's work outside the loop, with that task's waker
    /// (the Lua module completes a stream operation at once when it can). Inside a step it
    /// only runs `f`.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.inner.in_step.get() {
            return f();
        }
        self.inner.now.set(Instant::now().max(self.inner.now.get()));
        let prev = CURRENT.with(|c| c.borrow_mut().replace(self.clone()));
        // Restored however `f` ends.
        struct Restore(Option<Controller>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let prev = self.0.take();
                CURRENT.with(|c| *c.borrow_mut() = prev);
            }
        }
        let _restore = Restore(prev);
        f()
    }

    /// The time at the start of the current (or last) step.
    pub fn now(&self) -> Instant {
        self.inner.now.get()
    }

    /// A handle other threads can use to wake this loop or send it work.
    pub fn remote(&self) -> Remote {
        Remote {
            shared: self.inner.shared.clone(),
        }
    }

    fn bound_wait(&self, timeout: Option<Duration>) -> Option<Duration> {
        let timer = self
            .inner
            .timers
            .borrow()
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()));
        match (timeout, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl fmt::Debug for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("pollfd", &self.pollfd())
            .field("n_tasks", &self.inner.n_tasks.get())
            .field("n_timers", &self.inner.timers.borrow().len())
            .finish()
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner")
            .field("step_no", &self.step_no.get())
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Queued runnables hold `!Send` futures: drop them here, on the loop's thread, rather
        // than wherever the last `Remote` happens to go.
        let queued =
            std::mem::take(&mut *self.shared.queue.lock().unwrap_or_else(|e| e.into_inner()));
        drop(queued);
    }
}

/// Clears the step flag even if a task panics through `step`.
struct StepExit<'a>(&'a Controller);

impl Drop for StepExit<'_> {
    fn drop(&mut self) {
        self.0.inner.in_step.set(false);
    }
}

/// Decrements the live-task count when a task's future finishes or is dropped.
struct TaskCount(Rc<Cell<usize>>);

impl Drop for TaskCount {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// A `Send + Sync` handle to a controller, for other threads.
///
/// ```
/// let ctl = onstream::Controller::new()?;
/// let remote = ctl.remote();
/// std::thread::spawn(move || remote.spawn(|| println!("runs on the loop's thread")))
///     .join()
///     .unwrap();
/// ctl.step(Some(std::time::Duration::from_secs(1)))?; // wakes at once and runs the closure
/// # Ok::<(), onstream::Error>(())
/// ```
#[derive(Clone)]
pub struct Remote {
    shared: Arc<Shared>,
}

impl Remote {
    /// Wakes the loop if it is blocked in `step`; the step then returns.
    pub fn wake(&self) {
        // A failed wake means the loop is gone.
        let _ = self.shared.waker.wake();
    }

    /// Runs `job` on the loop's thread during its next step, and wakes the loop.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        self.shared
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(job));
        self.wake();
    }
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Remote")
    }
}
