//! The `Controller` on its own, without HTTP: one poll per task per step, `empty`, task
//! cancellation on drop, `onstream::timeout`, `Controller::current`, and a `Remote` that
//! outlives its loop.

mod common;

use std::{
    cell::Cell,
    future::Future,
    rc::Rc,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::Poll,
    thread,
    time::{Duration, Instant},
};

use common::IO_TIMEOUT;
use futures_util::FutureExt;
use onstream::{Controller, Task};

/// Steps `ctl` (waiting at most as long as its `timeout()` says, capped) until `task` is
/// finished or [`IO_TIMEOUT`] passes, then takes its output.
fn run_to_end<T>(ctl: &Controller, task: Task<T>) -> T {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !task.is_finished() {
        assert!(Instant::now() < deadline, "the task did not finish in time");
        let wait = ctl.timeout().map_or(Duration::from_millis(100), |t| {
            t.min(Duration::from_millis(100))
        });
        ctl.step(Some(wait)).unwrap();
    }
    task.now_or_never().expect("a finished task has its output")
}

/// Sets its flag when dropped: shows whether a task's future was dropped.
struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// A future that counts its polls in `polls`, wakes itself each time and never finishes.
fn self_waking(polls: Rc<Cell<u32>>) -> impl Future<Output = ()> {
    futures_util::future::poll_fn(move |cx| {
        polls.set(polls.get() + 1);
        cx.waker().wake_by_ref();
        Poll::Pending
    })
}

/// A task that wakes itself on every poll runs exactly once per `step` (it waits for the
/// next step rather than spinning inside this one), `timeout()` is zero between steps,
/// and such steps do not wait for their timeout.
#[test]
fn a_self_waking_task_is_polled_once_per_step_and_timeout_stays_zero() {
    let ctl = Controller::new().unwrap();
    let polls = Rc::new(Cell::new(0));
    let task = ctl.spawn(self_waking(polls.clone()));
    assert_eq!(polls.get(), 0, "spawn polled the task before any step");
    assert_eq!(ctl.timeout(), Some(Duration::ZERO), "a new task is ready");

    let started = Instant::now();
    for step in 1..=3 {
        ctl.step(Some(IO_TIMEOUT)).unwrap();
        assert_eq!(polls.get(), step, "polls after step {step}");
        assert_eq!(
            ctl.timeout(),
            Some(Duration::ZERO),
            "a woken task is waiting, yet timeout() is not zero after step {step}"
        );
    }
    assert!(
        started.elapsed() < IO_TIMEOUT,
        "a step waited although a task was ready"
    );
    assert!(!ctl.empty());
    drop(task);
}

/// Two self-waking tasks are each polled once per step, not one at the other's expense.
#[test]
fn two_self_waking_tasks_are_each_polled_once_per_step() {
    let ctl = Controller::new().unwrap();
    let (a, b) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let _ta = ctl.spawn(self_waking(a.clone()));
    let _tb = ctl.spawn(self_waking(b.clone()));
    for step in 1..=4 {
        ctl.step(Some(Duration::ZERO)).unwrap();
        assert_eq!((a.get(), b.get()), (step, step), "polls after step {step}");
    }
}

/// `empty()` is true on a new controller, false while a spawned task lives (even before it
/// first runs), and true again once it has finished, even while its `Task` handle is kept.
#[test]
fn empty_is_false_while_a_task_lives_and_true_after_it_finishes() {
    let ctl = Controller::new().unwrap();
    assert!(ctl.empty());
    let task = ctl.spawn(async {
        onstream::sleep(Duration::from_millis(20)).await;
        5
    });
    assert!(!ctl.empty(), "empty() with a task not yet run");
    ctl.step(Some(Duration::ZERO)).unwrap();
    assert!(!task.is_finished());
    assert!(!ctl.empty(), "empty() with a sleeping task");

    let deadline = Instant::now() + IO_TIMEOUT;
    while !task.is_finished() {
        assert!(Instant::now() < deadline, "the task did not finish in time");
        ctl.step(ctl.timeout()).unwrap();
    }
    assert!(ctl.empty(), "a finished task still counts");
    assert_eq!(task.now_or_never(), Some(5));
    assert!(ctl.empty());
}

/// Dropping a `Task` handle cancels the task: its future is dropped (by the next step at
/// the latest) and never polled again, and the controller becomes empty.
#[test]
fn dropping_a_task_handle_cancels_the_task() {
    let ctl = Controller::new().unwrap();
    let dropped = Rc::new(Cell::new(false));
    let polls = Rc::new(Cell::new(0));
    let task = {
        let guard = DropFlag(dropped.clone());
        let polls = polls.clone();
        ctl.spawn(async move {
            let _guard = guard;
            futures_util::future::poll_fn(|_cx| {
                polls.set(polls.get() + 1);
                Poll::<()>::Pending
            })
            .await
        })
    };
    ctl.step(Some(Duration::ZERO)).unwrap();
    assert_eq!(polls.get(), 1, "the task did not start");
    assert!(!dropped.get());
    assert!(!ctl.empty());

    drop(task);
    ctl.step(Some(Duration::ZERO)).unwrap();
    assert!(dropped.get(), "the cancelled task's future was not dropped");
    assert_eq!(polls.get(), 1, "the cancelled task was polled again");
    assert!(ctl.empty(), "a cancelled task still counts");
}

/// Dropping the handle of a task that never ran drops its future without polling it.
#[test]
fn dropping_the_handle_of_a_task_that_never_ran_drops_its_future_unpolled() {
    let ctl = Controller::new().unwrap();
    let dropped = Rc::new(Cell::new(false));
    let polled = Rc::new(Cell::new(false));
    let task = {
        let guard = DropFlag(dropped.clone());
        let polled = polled.clone();
        ctl.spawn(async move {
            let _guard = guard;
            polled.set(true);
        })
    };
    drop(task);
    ctl.step(Some(Duration::ZERO)).unwrap();
    assert!(dropped.get(), "the future was not dropped");
    assert!(!polled.get(), "a cancelled task ran");
    assert!(ctl.empty());
}

/// A detached task runs to the end although its handle is gone.
#[test]
fn a_detached_task_runs_to_completion() {
    let ctl = Controller::new().unwrap();
    let done = Rc::new(Cell::new(false));
    {
        let done = done.clone();
        ctl.spawn(async move {
            onstream::sleep(Duration::from_millis(5)).await;
            done.set(true);
        })
        .detach();
    }
    let deadline = Instant::now() + IO_TIMEOUT;
    while !ctl.empty() {
        assert!(
            Instant::now() < deadline,
            "the detached task did not finish"
        );
        ctl.step(ctl.timeout()).unwrap();
    }
    assert!(done.get());
}

/// `onstream::timeout(d, fut)` gives an error whose `is_timeout()` is true when `fut` is
/// slower than `d` (and drops `fut`), and `fut`'s own output when it is faster.
#[test]
fn timeout_errors_on_a_slower_future_and_passes_a_faster_ones_value() {
    let ctl = Controller::new().unwrap();
    let dropped = Rc::new(Cell::new(false));
    let slow = {
        let guard = DropFlag(dropped.clone());
        ctl.spawn(onstream::timeout(Duration::from_millis(20), async move {
            let _guard = guard;
            onstream::sleep(Duration::from_secs(60)).await;
            "too late"
        }))
    };
    let started = Instant::now();
    let err = run_to_end(&ctl, slow).expect_err("the slow future won against its timeout");
    assert!(err.is_timeout(), "not a timeout error: {err:?}");
    assert!(dropped.get(), "the timed-out future was not dropped");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the timeout waited for the slow future"
    );

    let fast = ctl.spawn(onstream::timeout(Duration::from_secs(60), async {
        onstream::sleep(Duration::from_millis(5)).await;
        42
    }));
    assert_eq!(
        run_to_end(&ctl, fast).expect("the fast future timed out"),
        42
    );

    let ready = ctl.spawn(onstream::timeout(Duration::ZERO, async { "at once" }));
    assert_eq!(
        run_to_end(&ctl, ready).expect("a ready future lost to a zero timeout"),
        "at once"
    );
    assert!(ctl.empty());
}

/// `Controller::current()` inside a task is the controller running it (same `pollfd`);
/// outside any step there is none.
#[test]
fn controller_current_inside_a_task_is_the_running_controller() {
    let ctl = Controller::new().unwrap();
    let other = Controller::new().unwrap();
    assert_ne!(ctl.pollfd(), other.pollfd());
    assert!(
        Controller::try_current().is_none(),
        "a current controller outside any step"
    );

    let on_ctl = ctl.spawn(async { Controller::current().pollfd() });
    let on_other = other.spawn(async { Controller::try_current().map(|c| c.pollfd()) });
    assert_eq!(run_to_end(&ctl, on_ctl), ctl.pollfd());
    assert_eq!(run_to_end(&other, on_other), Some(other.pollfd()));
    assert!(
        Controller::try_current().is_none(),
        "step left its controller current"
    );
}

/// A task may spawn more work on `Controller::current()`, and it runs on the same loop.
#[test]
fn a_task_spawns_on_the_current_controller() {
    let ctl = Controller::new().unwrap();
    let task = ctl.spawn(async {
        Controller::current()
            .spawn(async {
                onstream::sleep(Duration::from_millis(1)).await;
                Controller::current().pollfd()
            })
            .await
    });
    assert_eq!(run_to_end(&ctl, task), ctl.pollfd());
    assert!(ctl.empty());
}

/// A `Remote` used from another thread after its controller was dropped does not panic:
/// `wake` and `spawn` do nothing (the job never runs).
#[test]
fn a_remote_outliving_its_controller_does_not_panic() {
    let ctl = Controller::new().unwrap();
    let remote = ctl.remote();
    // A queued task holds a `!Send` future: it must go with the loop, not with the Remote.
    ctl.spawn(async {
        let _not_send = Rc::new(());
        std::future::pending::<()>().await
    })
    .detach();
    drop(ctl);

    let ran = Arc::new(AtomicBool::new(false));
    let worker = {
        let ran = ran.clone();
        thread::spawn(move || {
            remote.wake();
            remote.wake();
            remote.spawn(move || ran.store(true, Ordering::SeqCst));
            remote.clone().wake();
            drop(remote);
        })
    };
    worker
        .join()
        .expect("using a Remote after its controller was dropped panicked");
    assert!(!ran.load(Ordering::SeqCst), "a job ran with no loop");
}

/// A `Remote` is `Send + Sync + Clone` (checked at compile time), and a wake from another
/// thread while the loop is alive ends a step blocked without a timeout.
#[test]
fn a_remote_is_send_and_sync_and_wakes_a_blocked_step() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<onstream::Remote>();

    let ctl = Controller::new().unwrap();
    let remote = ctl.remote();
    let _keep = ctl.spawn(std::future::pending::<()>());
    let waker = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        remote.wake();
    });
    let started = Instant::now();
    ctl.step(Some(IO_TIMEOUT)).unwrap(); // runs the new task
    ctl.step(Some(IO_TIMEOUT)).unwrap(); // blocks until the wake
    assert!(
        started.elapsed() < IO_TIMEOUT,
        "the remote wake did not end the step"
    );
    waker.join().unwrap();
}

/// `enter` makes the controller current between steps, so that a future polled there
/// can make a timer (which needs `Controller::current`), and the timer then fires in a
/// later step as any other.
#[test]
fn enter_lets_a_timer_be_made_between_steps() {
    let ctl = Controller::new().unwrap();
    assert!(Controller::try_current().is_none());
    let sleep = ctl.enter(|| {
        assert!(Controller::try_current().is_some());
        onstream::sleep(Duration::from_millis(1))
    });
    assert!(Controller::try_current().is_none());
    let task = ctl.spawn(sleep);
    run_to_end(&ctl, task);
}
