//! A request's stream as Lua sees it: `StreamSlot` (shared by the Rust handler task and
//! the Lua object) and its operations.
//!
//! The Rust handler task of a request is `run(slot)`: it holds the `onstream::Stream` and
//! polls the operations Lua queued on it (each a future over the stream, with its own
//! deadline), so everything a stream does happens inside onstream's handler task, which
//! flushes the connection after each poll as it does for a Rust handler. A finished
//! operation keeps its result until Lua takes it, and marks the slot for `step` to signal
//! the stream's cqueues condition. The task ends when Lua shuts the stream down (the
//! Lua handler returned); onstream then answers an unanswered request, as lua-http does.

use std::{
    cell::{Cell, OnceCell, RefCell},
    future::{poll_fn, Future},
    os::fd::IntoRawFd,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use mlua::{prelude::*, UserData, UserDataMethods};
use onstream::{Headers, Stream};

use crate::{errors, options::seconds, Shared};

/// What an operation gives back.
pub(crate) enum Done {
    Unit,
    Bytes(Option<Bytes>),
}

pub(crate) type OpResult = Result<Done, (String, i32)>;
type OpFuture = Pin<Box<dyn Future<Output = OpResult>>>;

/// What starting an operation gave: its result when it ended at once, else the running
/// operation.
pub(crate) enum Started {
    Done(OpResult),
    Pending(Rc<Op>),
}

/// One queued operation: its future until it ends, then its result until Lua takes it.
pub(crate) struct Op {
    fut: RefCell<Option<OpFuture>>,
    result: RefCell<Option<OpResult>>,
}

/// A request's stream, shared by its Rust handler task and its Lua object.
pub(crate) struct StreamSlot {
    pub(crate) stream: Stream,
    /// The request head, fetched on first use by `fast.rs` (it never changes).
    pub(crate) head: OnceCell<Headers>,
    /// An operation `fast.rs` started that did not end at once, until Lua takes it with
    /// `LStream:pending` to wait on it.
    pub(crate) pending: RefCell<Option<Rc<Op>>>,
    /// The message of the last failure `fast.rs` returned, kept here while it is pushed
    /// (see fast.rs on Lua errors).
    pub(crate) last_error: RefCell<String>,
    shared: Rc<Shared>,
    /// Operations whose future has not ended; the handler task polls them.
    ops: RefCell<Vec<Rc<Op>>>,
    /// The handler task's waker: a queued operation or a shutdown wakes it.
    waker: RefCell<Option<Waker>>,
    /// Set by `shutdown`: the handler task ends once no operation runs.
    finished: Cell<bool>,
    /// Signals the stream's cqueues condition (a Lua closure given by `set_signal`).
    signal: RefCell<Option<LuaFunction>>,
}

impl StreamSlot {
    pub(crate) fn new(stream: Stream, shared: Rc<Shared>) -> Rc<StreamSlot> {
        Rc::new(StreamSlot {
            stream,
            head: OnceCell::new(),
            pending: RefCell::new(None),
            last_error: RefCell::new(String::new()),
            shared,
            ops: RefCell::new(Vec::new()),
            waker: RefCell::new(None),
            finished: Cell::new(false),
            signal: RefCell::new(None),
        })
    }

    /// The HTTP/2 stream identifier; `None` over HTTP/1.
    pub(crate) fn id(&self) -> Option<u32> {
        self.stream.id()
    }

    /// Called by `step` after the loop turned: wakes the Lua coroutines waiting on this
    /// stream.
    pub(crate) fn signal(&self) -> LuaResult<()> {
        let f = self.signal.borrow().clone();
        match f {
            Some(f) => f.call(()),
            None => Ok(()),
        }
    }

    fn wake(&self) {
        if let Some(w) = self.waker.borrow().as_ref() {
            w.wake_by_ref();
        }
    }

    /// Starts an operation (a future made from the slot, bounded by `timeout`) and wakes
    /// the handler task: either way it runs at the next step, to poll the operation or
    /// to flush what it wrote (onstream flushes after each poll of a handler task).
    ///
    /// The future is polled once at once, as the handler task would (`poll_now`): most
    /// end there — a head or a chunk that fits the buffer — and then cost no `Op` and no
    /// place in the list the task polls, and the Lua coroutine goes on without waiting
    /// for a step.
    pub(crate) fn start<F, Fut>(self: &Rc<Self>, timeout: Option<f64>, make: F) -> Started
    where
        F: FnOnce(Rc<StreamSlot>) -> Fut + 'static,
        Fut: Future<Output = onstream::Result<Done>> + 'static,
    {
        if self.finished.get() {
            return Started::Done(Err(("stream closed".to_owned(), libc::EPIPE)));
        }
        let slot = self.clone();
        let limit = timeout.map(seconds);
        // The future is built when first polled, inside the loop's step: timers need the
        // running controller.
        let mut fut: OpFuture = Box::pin(async move {
            let r = match limit {
                Some(limit) => match onstream::timeout(limit, make(slot)).await {
                    Ok(r) => r,
                    Err(_) => return Err(("timed out".to_owned(), libc::ETIMEDOUT)),
                },
                None => make(slot).await,
            };
            r.map_err(|e| errors::describe(&e))
        });
        self.wake();
        if let Some(r) = self.poll_now(&mut fut) {
            return Started::Done(r);
        }
        let op = Rc::new(Op {
            fut: RefCell::new(Some(fut)),
            result: RefCell::new(None),
        });
        self.ops.borrow_mut().push(op.clone());
        Started::Pending(op)
    }

    /// [`StreamSlot::start`], the result kept in an `Op` either way.
    fn queue<F, Fut>(self: &Rc<Self>, timeout: Option<f64>, make: F) -> Rc<Op>
    where
        F: FnOnce(Rc<StreamSlot>) -> Fut + 'static,
        Fut: Future<Output = onstream::Result<Done>> + 'static,
    {
        match self.start(timeout, make) {
            Started::Pending(op) => op,
            Started::Done(r) => Rc::new(Op {
                fut: RefCell::new(None),
                result: RefCell::new(Some(r)),
            }),
        }
    }

    /// Polls a new operation once with the handler task's waker, the loop made current.
    /// Before the task first ran there is no waker yet: the task polls it instead.
    fn poll_now(&self, fut: &mut OpFuture) -> Option<OpResult> {
        let waker = self.waker.borrow().clone()?;
        let ctl = self.shared.ctl.borrow().clone()?;
        match ctl.enter(|| fut.as_mut().poll(&mut Context::from_waker(&waker))) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        }
    }

    /// Ends the Lua side's use of the stream: pending operations fail, and the handler
    /// task ends, letting onstream finish the exchange.
    pub(crate) fn shutdown(&self) {
        if self.finished.replace(true) {
            return;
        }
        self.wake();
    }
}

/// The Rust handler task of one request: polls the stream's operations until Lua shuts
/// the stream down.
pub(crate) fn run(slot: Rc<StreamSlot>) -> impl Future<Output = onstream::Result<()>> {
    // Counted from now (the task may first run at the next step), down however the task
    // ends (dropped with the loop too).
    struct Running(Rc<Shared>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.n_handlers.set(self.0.n_handlers.get() - 1);
        }
    }
    let shared = slot.shared.clone();
    shared.n_handlers.set(shared.n_handlers.get() + 1);
    let running = Running(shared);
    async move {
        let _running = running;
        serve(slot).await
    }
}

async fn serve(slot: Rc<StreamSlot>) -> onstream::Result<()> {
    poll_fn(|cx| {
        *slot.waker.borrow_mut() = Some(cx.waker().clone());
        let mut ended = false;
        // Polled from a copy: an operation's future never queues another, but Lua may
        // queue while this runs only between steps, so the copy is exact.
        let ops: Vec<Rc<Op>> = slot.ops.borrow().clone();
        for op in &ops {
            let mut fut = op.fut.borrow_mut();
            let Some(f) = fut.as_mut() else { continue };
            if let Poll::Ready(r) = f.as_mut().poll(cx) {
                *fut = None;
                *op.result.borrow_mut() = Some(r);
                ended = true;
            }
        }
        if slot.finished.get() {
            for op in &ops {
                if op.fut.borrow_mut().take().is_some() {
                    *op.result.borrow_mut() = Some(Err(("stream closed".to_owned(), libc::EPIPE)));
                    ended = true;
                }
            }
        }
        // Operations that ended at once (`try_now`) leave the list here too.
        slot.ops.borrow_mut().retain(|op| op.fut.borrow().is_some());
        if ended {
            slot.shared.to_signal.borrow_mut().push(slot.clone());
        }
        if slot.finished.get() && slot.ops.borrow().is_empty() {
            // The slot outlives the task in Lua: drop the waker (it holds the task).
            slot.waker.borrow_mut().take();
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// An operation as Lua holds it while it runs.
struct LOp(Rc<Op>);

/// An operation's result as Lua gets it: a value (true for operations that give none) or
/// `nil, message, errno`; end of body is a lone nil.
fn result_values(lua: &Lua, r: OpResult) -> LuaResult<LuaMultiValue> {
    match r {
        Ok(Done::Unit) => true.into_lua_multi(lua),
        Ok(Done::Bytes(Some(b))) => lua.create_string(&b)?.into_lua_multi(lua),
        Ok(Done::Bytes(None)) => LuaNil.into_lua_multi(lua),
        Err((msg, errno)) => (LuaNil, msg, errno).into_lua_multi(lua),
    }
}

/// What a stream method returns: the result when the operation ended at once, else the
/// running operation (a userdata, which no result is) for Lua to wait on.
fn started(lua: &Lua, op: Rc<Op>) -> LuaResult<LuaMultiValue> {
    let done = op.result.borrow_mut().take();
    match done {
        Some(r) => result_values(lua, r),
        None => LOp(op).into_lua_multi(lua),
    }
}

impl UserData for LOp {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("ready", |_, this, ()| Ok(this.0.result.borrow().is_some()));
        // The result, once: a value (true for operations that give none) or
        // `nil, message, errno`; end of body is a lone nil.
        m.add_method("take", |lua, this, ()| {
            match this.0.result.borrow_mut().take() {
                None => Err(LuaError::runtime("operation still running")),
                Some(r) => result_values(lua, r),
            }
        });
    }
}

/// A stream as Lua holds it.
pub(crate) struct LStream(Rc<StreamSlot>);

impl LStream {
    pub(crate) fn new(slot: Rc<StreamSlot>) -> LStream {
        LStream(slot)
    }
}

/// Checks a field as `Headers::append` wants it (it panics on what it must not send).
pub(crate) fn valid_field(name: &[u8], value: &[u8]) -> bool {
    let token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    let name_ok = match name.strip_prefix(b":") {
        Some(rest) => !rest.is_empty() && rest.iter().all(|&c| token(c)),
        None => !name.is_empty() && name.iter().all(|&c| token(c)),
    };
    name_ok && !value.iter().any(|&c| c == b'\r' || c == b'\n' || c == 0)
}

/// Header fields as a flat list (see `fast::push_fields`), built in one protected call:
/// through mlua's safe API each string would be a protected call of its own.
fn flat_fields(lua: &Lua, h: &Headers) -> LuaResult<LuaTable> {
    // SAFETY: `push_fields` leaves the one table on the stack; a Lua memory error unwinds
    // to exec_raw's protected call across frames that own nothing with a destructor.
    #[allow(unsafe_code)]
    unsafe {
        lua.exec_raw((), |state| crate::fast::push_fields(state, h))
    }
}

/// The request's HTTP version as lua-http numbers it.
pub(crate) fn version_number(slot: &StreamSlot) -> f64 {
    match slot.stream.version() {
        http::Version::HTTP_10 => 1.0,
        http::Version::HTTP_2 => 2.0,
        _ => 1.1,
    }
}

impl UserData for LStream {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("set_signal", |_, this, f: LuaFunction| {
            *this.0.signal.borrow_mut() = Some(f);
            Ok(())
        });
        // An operation `fast.rs` started that did not end at once (it returned false).
        m.add_method("pending", |_, this, ()| {
            match this.0.pending.borrow_mut().take() {
                Some(op) => Ok(LOp(op)),
                None => Err(LuaError::runtime("no operation pending")),
            }
        });
        // The request's trailers as a flat list (as `get_headers`), or nil: none came, or
        // the body has not ended.
        m.add_method("get_trailers", |lua, this, ()| {
            let Some(Ok(Some(h))) = futures_now(this.0.stream.get_trailers()) else {
                return Ok(None);
            };
            flat_fields(lua, &h).map(Some)
        });
        m.add_method("peername", |lua, this, ()| {
            addr(lua, this.0.stream.peer_addr())
        });
        m.add_method("localname", |lua, this, ()| {
            addr(lua, this.0.stream.local_addr())
        });
        m.add_method("unget", |_, this, s: LuaString| {
            this.0.stream.unget(Bytes::copy_from_slice(&s.as_bytes()));
            Ok(true)
        });
        m.add_method("get_next_chunk", |lua, this, timeout: Option<f64>| {
            started(
                lua,
                this.0.queue(timeout, |s| async move {
                    s.stream.get_next_chunk().await.map(Done::Bytes)
                }),
            )
        });
        m.add_method("get_body_as_string", |lua, this, timeout: Option<f64>| {
            started(
                lua,
                this.0.queue(timeout, |s| async move {
                    s.stream
                        .get_body_as_bytes()
                        .await
                        .map(|b| Done::Bytes(Some(b)))
                }),
            )
        });
        m.add_method("write_continue", |lua, this, timeout: Option<f64>| {
            started(
                lua,
                this.0.queue(timeout, |s| async move {
                    s.stream.write_continue().await.map(|()| Done::Unit)
                }),
            )
        });
        // The descriptor, and the bytes the server had read past the request (to be read
        // first) when it is the connection's own socket; a TLS connection or an HTTP/2
        // tunnel gives one end of a socket pair bridged to it (`socket.rs`).
        m.add_method("take_socket", |lua, this, ()| {
            let up = match this.0.stream.take_socket() {
                Ok(up) => up,
                Err(e) => return errors::fail(lua, &e),
            };
            match up.into_socket() {
                Ok((fd, buffered)) => {
                    let buffered = lua.create_string(&buffered)?;
                    (fd.into_raw_fd(), buffered).into_lua_multi(lua)
                }
                Err(up) => match crate::socket::bridge(up, &this.0.shared) {
                    Ok(fd) => fd.into_lua_multi(lua),
                    Err(e) => errors::io_fail(lua, &e),
                },
            }
        });
    }
}

fn addr(lua: &Lua, a: Option<std::net::SocketAddr>) -> LuaResult<LuaMultiValue> {
    match a {
        Some(a) => {
            let family = if a.is_ipv4() {
                libc::AF_INET
            } else {
                libc::AF_INET6
            };
            (family, a.ip().to_string(), a.port()).into_lua_multi(lua)
        }
        // A unix socket (or none): cqueues gives AF_UNIX and a path; the path is unknown.
        None => (libc::AF_UNIX, "").into_lua_multi(lua),
    }
}

/// Polls a future once, for futures that end at once.
pub(crate) fn futures_now<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}
