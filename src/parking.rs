//! The parking lot: a server's idle HTTP/1 keep-alive connections, waiting without a task.
//!
//! A keep-alive connection spends most of its life waiting for its next request, and a
//! driver task waiting costs a task and a connection state with its buffers (most of a
//! kilobyte). After `park_after` with nothing in flight the driver returns the socket as an
//! [`h1::Parked`](crate::h1::Parked), the server keeps that in its connection table, and
//! this lot keeps two ways to be told when the connection needs a driver again:
//! - a waker on the socket's readability, one small `Arc` per parked connection whose wake
//!   records the connection's key (wakers must be `Send`, so the record is a mutex-guarded
//!   list, only ever touched from the loop's thread in practice);
//! - its idle deadline, in a heap ordered by time.
//!
//! The lot's task (run by the server, `Shared::parking_loop`) takes the woken and the due
//! ones and hands each to a new driver, which reads the request or closes the idle
//! connection as its own driver would have. A connection is identified by its key in the
//! server's table and a generation number, so a waker or deadline left from an earlier
//! parking of the same key (or of a key since reused) is recognised and ignored.
//!
//! nginx does the same with its keep-alive handler: an idle connection keeps its socket,
//! a timer node and a read event, and gets its buffers back when a request comes.

use std::{
    cell::{Cell, RefCell},
    cmp::Reverse,
    collections::BinaryHeap,
    sync::{Arc, Mutex},
    task::{Wake, Waker},
    time::Instant,
};

/// Which parking of which connection: its key in the server's table and a generation.
pub(crate) type Ticket = (usize, u64);

#[derive(Default)]
pub(crate) struct ParkingLot {
    woken: Arc<Woken>,
    /// Idle deadlines, earliest first. A connection taken up before its deadline leaves
    /// its entry here until then (a heap cannot remove from the middle); it is skipped.
    deadlines: RefCell<BinaryHeap<Reverse<(Instant, Ticket)>>>,
    next_gen: Cell<u64>,
    n_parked: Cell<usize>,
    /// The lot's task is running (it ends when nothing is parked).
    running: Cell<bool>,
}

#[derive(Default)]
struct Woken {
    state: Mutex<WokenState>,
}

#[derive(Default)]
struct WokenState {
    tickets: Vec<Ticket>,
    /// The lot's task, to wake when a ticket is added.
    task: Option<Waker>,
}

impl Woken {
    fn push(&self, ticket: Ticket) {
        let task = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.tickets.push(ticket);
            state.task.take()
        };
        if let Some(task) = task {
            task.wake();
        }
    }
}

/// The waker a parked connection's socket holds.
struct ParkWaker {
    ticket: Ticket,
    woken: Arc<Woken>,
}

impl Wake for ParkWaker {
    fn wake(self: Arc<Self>) {
        self.woken.push(self.ticket);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.push(self.ticket);
    }
}

impl ParkingLot {
    /// A ticket for parking the connection with this key, and the waker its socket is to
    /// wake when input comes.
    pub(crate) fn ticket(&self, key: usize) -> (Ticket, Waker) {
        let gen = self.next_gen.get();
        self.next_gen.set(gen + 1);
        let ticket = (key, gen);
        let waker = Waker::from(Arc::new(ParkWaker {
            ticket,
            woken: self.woken.clone(),
        }));
        (ticket, waker)
    }

    /// Records a parked connection. Returns true when the lot's task must be started.
    pub(crate) fn park(&self, ticket: Ticket, idle_by: Instant) -> bool {
        self.deadlines.borrow_mut().push(Reverse((idle_by, ticket)));
        self.n_parked.set(self.n_parked.get() + 1);
        !self.running.replace(true)
    }

    /// A parked connection was taken up again.
    pub(crate) fn unpark(&self) {
        self.n_parked.set(self.n_parked.get() - 1);
    }

    /// Moves the tickets of connections whose socket woke, or whose deadline is at or
    /// before `now`, into `into`; `task` is woken when another socket wakes. Returns the
    /// next deadline.
    pub(crate) fn take_due(
        &self,
        now: Instant,
        task: &Waker,
        into: &mut Vec<Ticket>,
    ) -> Option<Instant> {
        {
            let mut state = self.woken.state.lock().unwrap_or_else(|e| e.into_inner());
            into.append(&mut state.tickets);
            match &state.task {
                Some(w) if w.will_wake(task) => {}
                _ => state.task = Some(task.clone()),
            }
        }
        let mut deadlines = self.deadlines.borrow_mut();
        while let Some(Reverse((at, ticket))) = deadlines.peek() {
            if *at > now {
                return Some(*at);
            }
            into.push(*ticket);
            deadlines.pop();
        }
        None
    }

    /// Whether the lot's task should go on: false (and the lot forgets its stale entries)
    /// when nothing is parked.
    pub(crate) fn keep_running(&self) -> bool {
        if self.n_parked.get() > 0 {
            return true;
        }
        self.running.set(false);
        self.deadlines.borrow_mut().clear();
        self.woken
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .task = None;
        false
    }

    /// Wakes the lot's task (the server is closing).
    pub(crate) fn wake_task(&self) {
        let task = self
            .woken
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .task
            .take();
        if let Some(task) = task {
            task.wake();
        }
    }
}
