//! Embedding: a server and a bare `Controller` driven from outside, as a host main loop
//! (`poll(2)`, glib, a game loop) would drive them with `pollfd()`, `events()` and
//! `timeout()`, plus `Remote` for other threads.

mod common;

use std::{
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use common::*;
use onstream::{Controller, Options, Server};

/// Waits on `fd` for readability with `poll(2)` for at most `timeout` (`None`: `cap`),
/// rounding sub-millisecond waits up so a pending timer is not busy-polled.
fn poll_fd(fd: std::os::fd::RawFd, timeout: Option<Duration>, cap: Duration) {
    let wait = timeout.map_or(cap, |t| t.min(cap));
    let ms = wait.as_micros().div_ceil(1000) as libc::c_int;
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid pollfd array of length 1 for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    assert!(n >= 0, "poll failed: {}", std::io::Error::last_os_error());
}

/// A server stepped only with `step(Some(0))` after `poll(pollfd, POLLIN, timeout())`
/// serves real requests from a client thread, as under any external main loop.
#[test]
fn a_server_driven_only_by_pollfd_and_timeout_serves_requests() {
    init_tracing();
    let server = Server::listen(Options::new().host("127.0.0.1").port(0), path_echo()).unwrap();
    server.listen_now().unwrap();
    let addr = server.local_addr().unwrap().inet().unwrap();
    assert_eq!(server.events(), "r");
    let fd = server.pollfd();

    let client = thread::spawn(move || {
        let mut bodies = Vec::new();
        let mut c = Client::connect(addr);
        for path in ["/one", "/two"] {
            bodies.push(c.get(path).body_str().to_string());
        }
        drop(c);
        bodies.push(
            parse_one(&raw_request(
                addr,
                b"GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            ))
            .body_str()
            .to_string(),
        );
        bodies
    });

    let deadline = Instant::now() + IO_TIMEOUT;
    while !client.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the client did not finish in time"
        );
        poll_fd(fd, server.timeout(), Duration::from_millis(100));
        server.step(Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(client.join().unwrap(), ["/one", "/two", "/three"]);
}

/// `timeout()` is zero when a task is ready to run, the time to the nearest timer while a
/// task sleeps, and `None` on an idle controller with nothing pending.
#[test]
fn controller_timeout_tracks_the_nearest_timer() {
    let ctl = Controller::new().unwrap();
    assert_eq!(ctl.timeout(), None, "an idle controller has no deadline");
    assert!(ctl.empty());

    let task = ctl.spawn(async {
        onstream::sleep(Duration::from_millis(200)).await;
        7
    });
    assert_eq!(
        ctl.timeout(),
        Some(Duration::ZERO),
        "a spawned task is ready at once"
    );
    assert!(!ctl.empty());

    ctl.step(Some(Duration::ZERO)).unwrap();
    let left = ctl.timeout().expect("a sleeping task sets a deadline");
    assert!(
        left > Duration::from_millis(100) && left <= Duration::from_millis(200),
        "timeout() = {left:?}, expected in (100 ms, 200 ms]"
    );

    let deadline = Instant::now() + IO_TIMEOUT;
    while !task.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the sleeping task never finished"
        );
        ctl.step(ctl.timeout()).unwrap();
    }
    assert_eq!(
        ctl.timeout(),
        None,
        "nothing is pending after the task finished"
    );
    assert!(ctl.empty());
}

/// Two sleeping tasks: `timeout()` follows the earlier one.
#[test]
fn controller_timeout_is_the_earliest_of_several_timers() {
    let ctl = Controller::new().unwrap();
    let late = ctl.spawn(onstream::sleep(Duration::from_secs(3)));
    let early = ctl.spawn(onstream::sleep(Duration::from_millis(150)));
    ctl.step(Some(Duration::ZERO)).unwrap();
    let left = ctl.timeout().unwrap();
    assert!(
        left > Duration::from_millis(50) && left <= Duration::from_millis(150),
        "timeout() = {left:?}, expected the 150 ms timer"
    );
    drop(early);
    drop(late);
}

/// A `Sleep` first polled by one task and then awaited by another wakes the second one:
/// the timer keeps the waker of its latest poller, not of the task that armed it (a `Sleep`
/// caches its registered waker to skip the timer look-up when the same task polls again).
#[test]
fn a_sleep_moved_to_another_task_wakes_that_task() {
    use std::{cell::RefCell, future::Future, rc::Rc, task::Poll};
    let ctl = Controller::new().unwrap();
    type Parked = Option<std::pin::Pin<Box<dyn Future<Output = ()>>>>;
    let parked: Rc<RefCell<Parked>> = Rc::default();
    let first = {
        let parked = parked.clone();
        ctl.spawn(std::future::poll_fn(move |cx| {
            let mut sleep: std::pin::Pin<Box<dyn Future<Output = ()>>> =
                Box::pin(onstream::sleep(Duration::from_millis(100)));
            assert!(sleep.as_mut().poll(cx).is_pending(), "armed, not yet due");
            *parked.borrow_mut() = Some(sleep);
            Poll::Ready(())
        }))
    };
    ctl.step(Some(Duration::ZERO)).unwrap();
    assert!(
        first.is_finished(),
        "the first task ends after arming the sleep"
    );
    let done = Rc::new(std::cell::Cell::new(false));
    let second = {
        let (parked, done) = (parked.clone(), done.clone());
        ctl.spawn(async move {
            let sleep = parked
                .borrow_mut()
                .take()
                .expect("the first task left its sleep");
            sleep.await;
            done.set(true);
        })
    };
    let give_up = Instant::now() + Duration::from_secs(5);
    while !done.get() && Instant::now() < give_up {
        ctl.step(Some(Duration::from_millis(50))).unwrap();
    }
    assert!(
        done.get(),
        "the task that awaited the moved sleep was never woken"
    );
    drop(second);
}

/// A closure sent with `Remote::spawn` from another thread runs on the loop's thread, and
/// the send wakes a step that was blocked waiting.
#[test]
fn remote_spawn_runs_on_the_loop_thread_and_wakes_a_blocked_step() {
    let ctl = Controller::new().unwrap();
    let remote = ctl.remote();
    let ran_on = Arc::new(Mutex::new(None));
    let sender = {
        let ran_on = ran_on.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            remote.spawn(move || *ran_on.lock().unwrap() = Some(thread::current().id()));
        })
    };

    let start = Instant::now();
    ctl.step(Some(Duration::from_secs(5))).unwrap();
    let waited = start.elapsed();
    sender.join().unwrap();
    assert!(
        waited < Duration::from_secs(2),
        "the step was not woken: it waited {waited:?}"
    );
    assert_eq!(*ran_on.lock().unwrap(), Some(thread::current().id()));
}

/// `Remote::wake` from another thread ends a step blocked with no timeout.
#[test]
fn remote_wake_ends_a_blocked_step() {
    let ctl = Controller::new().unwrap();
    let remote = ctl.remote();
    let waker = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        remote.wake();
    });
    let start = Instant::now();
    ctl.step(Some(Duration::from_secs(5))).unwrap();
    waker.join().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the step was not woken"
    );
}

/// A server's `pollfd` becomes readable when a client connects, before any step has seen
/// the connection.
#[test]
fn server_pollfd_becomes_readable_when_a_client_connects() {
    let server = Server::listen(Options::new().host("127.0.0.1").port(0), path_echo()).unwrap();
    server.listen_now().unwrap();
    let addr = server.local_addr().unwrap().inet().unwrap();
    // Let the server register its listener and settle.
    for _ in 0..3 {
        server.step(Some(Duration::ZERO)).unwrap();
    }
    let _client = connect(addr);
    let mut pfd = libc::pollfd {
        fd: server.pollfd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid pollfd array of length 1 for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, 2000) };
    assert_eq!(n, 1, "pollfd did not become readable on a new connection");
    assert!(pfd.revents & libc::POLLIN != 0);
}
