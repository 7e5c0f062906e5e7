//! The reactor: one `mio::Poll` (its epoll fd is the server's `pollfd()`), the table of
//! registered sockets, and the readiness each one last reported.
//!
//! Readiness is edge-triggered: an event sets a bit and wakes the task waiting on that
//! direction; an I/O attempt that ends in `WouldBlock` clears the bit again. Everything here
//! runs on the controller's thread, between `epoll_wait` and the next task, so no event can
//! race with a task that is clearing a bit. The reactor knows nothing about HTTP or tasks.

use slab::Slab;
use std::{
    cell::{Cell, RefCell},
    io,
    rc::Rc,
    task::{Context, Poll, Waker},
    time::Duration,
};

/// The token of the cross-thread `mio::Waker`; sockets use slab indices below it.
pub(crate) const WAKER_TOKEN: mio::Token = mio::Token(usize::MAX);

const READABLE: u8 = 0b0001;
const WRITABLE: u8 = 0b0010;
/// The peer shut its side (EPOLLRDHUP) or the socket failed. Sticky: clearing
/// `READABLE` after a short read must not hide an EOF that arrived with the data.
const READ_CLOSED: u8 = 0b0100;
/// The socket can no longer send (EPOLLHUP or an error). Sticky like `READ_CLOSED`.
const WRITE_CLOSED: u8 = 0b1000;

/// Readiness and waiting tasks of one registered socket.
pub(crate) struct IoState {
    /// The slab index, which is also the socket's `mio::Token`. `u32` (an index of open
    /// sockets fits) so that with `ready` it takes 8 bytes: this state lives as long as
    /// each connection, and 8 bytes less moves it to a smaller malloc size class.
    token: u32,
    /// `READABLE` / `WRITABLE` bits: set by events, cleared by `WouldBlock`.
    ready: Cell<u8>,
    /// The one task waiting to read. Each direction has a single owner at a time (the
    /// connection task or the stream that currently reads the body), so one slot suffices.
    read_waker: Cell<Option<Waker>>,
    /// The one task waiting to write.
    write_waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for IoState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoState")
            .field("token", &self.token)
            .field("ready", &self.ready.get())
            .finish()
    }
}

impl IoState {
    /// `Ready` if the socket may be readable; otherwise stores the waker and is `Pending`.
    pub(crate) fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_ready(READABLE | READ_CLOSED, &self.read_waker, cx)
    }

    pub(crate) fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_ready(WRITABLE | WRITE_CLOSED, &self.write_waker, cx)
    }

    pub(crate) fn clear_readable(&self) {
        self.ready.set(self.ready.get() & !READABLE);
    }

    pub(crate) fn clear_writable(&self) {
        self.ready.set(self.ready.get() & !WRITABLE);
    }

    fn poll_ready(&self, bits: u8, slot: &Cell<Option<Waker>>, cx: &mut Context<'_>) -> Poll<()> {
        if self.ready.get() & bits != 0 {
            return Poll::Ready(());
        }
        let waker = match slot.take() {
            Some(w) if w.will_wake(cx.waker()) => w,
            _ => cx.waker().clone(),
        };
        slot.set(Some(waker));
        Poll::Pending
    }

    fn set_ready(&self, bits: u8) {
        self.ready.set(self.ready.get() | bits);
        if bits & (READABLE | READ_CLOSED) != 0 {
            if let Some(w) = self.read_waker.take() {
                w.wake();
            }
        }
        if bits & (WRITABLE | WRITE_CLOSED) != 0 {
            if let Some(w) = self.write_waker.take() {
                w.wake();
            }
        }
    }
}

/// The poller and its registrations.
pub(crate) struct Reactor {
    /// `mio::Poll::poll` needs `&mut`; only `Reactor::poll` borrows it.
    poll: RefCell<mio::Poll>,
    /// Reused between polls so a step allocates nothing.
    events: RefCell<mio::Events>,
    /// Registered sockets by token. Entries are removed when the socket is dropped.
    sources: RefCell<Slab<Rc<IoState>>>,
    registry: mio::Registry,
}

impl Reactor {
    pub(crate) fn new() -> io::Result<Reactor> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        Ok(Reactor {
            poll: RefCell::new(poll),
            events: RefCell::new(mio::Events::with_capacity(1024)),
            sources: RefCell::new(Slab::new()),
            registry,
        })
    }

    pub(crate) fn registry(&self) -> &mio::Registry {
        &self.registry
    }

    /// Registers `source` for both directions, edge-triggered. The socket starts out
    /// assumed ready, so the first read or write is attempted without waiting for an event.
    pub(crate) fn register(&self, source: &mut impl mio::event::Source) -> io::Result<Rc<IoState>> {
        let mut sources = self.sources.borrow_mut();
        let entry = sources.vacant_entry();
        let state = Rc::new(IoState {
            token: u32::try_from(entry.key()).map_err(|_| io::ErrorKind::OutOfMemory)?,
            ready: Cell::new(READABLE | WRITABLE),
            read_waker: Cell::new(None),
            write_waker: Cell::new(None),
        });
        self.registry.register(
            source,
            mio::Token(entry.key()),
            mio::Interest::READABLE | mio::Interest::WRITABLE,
        )?;
        entry.insert(state.clone());
        Ok(state)
    }

    pub(crate) fn deregister(&self, source: &mut impl mio::event::Source, state: &IoState) {
        // Deregistration fails only if the fd is already gone; nothing is left to undo then.
        let _ = self.registry.deregister(source);
        self.sources.borrow_mut().try_remove(state.token as usize);
        // A task still waiting on this socket would never hear of it again: a handler
        // whose connection was cut under it (shutdown timeout, abort) must wake to find
        // the connection gone, and end, rather than sleep until the loop is dropped.
        for slot in [&state.read_waker, &state.write_waker] {
            if let Some(w) = slot.take() {
                w.wake();
            }
        }
    }

    /// Waits for events for at most `timeout` and wakes the tasks waiting on them. Returns
    /// whether the cross-thread waker fired.
    /// `awake` runs as soon as the wait is over, before any task is woken.
    pub(crate) fn poll(&self, timeout: Option<Duration>, awake: impl FnOnce()) -> io::Result<bool> {
        let mut events = self.events.borrow_mut();
        let waited = self.poll.borrow_mut().poll(&mut events, timeout);
        awake();
        match waited {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(false),
            Err(e) => return Err(e),
        }
        let mut woken = false;
        let sources = self.sources.borrow();
        for event in events.iter() {
            if event.token() == WAKER_TOKEN {
                woken = true;
                continue;
            }
            let Some(state) = sources.get(event.token().0) else {
                continue;
            };
            let mut bits = 0;
            if event.is_readable() {
                bits |= READABLE;
            }
            if event.is_read_closed() || event.is_error() {
                bits |= READABLE | READ_CLOSED;
            }
            if event.is_writable() {
                bits |= WRITABLE;
            }
            if event.is_write_closed() || event.is_error() {
                bits |= WRITABLE | WRITE_CLOSED;
            }
            state.set_ready(bits);
        }
        Ok(woken)
    }

    /// The epoll file descriptor.
    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.poll.borrow().as_raw_fd()
    }
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("n_sources", &self.sources.borrow().len())
            .finish()
    }
}
