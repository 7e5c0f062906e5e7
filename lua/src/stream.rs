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
    cell::{Cell, RefCell},
    future::{poll_fn, Future},
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use mlua::{ffi, prelude::*, UserData, UserDataMethods};
use onstream::{Headers, Stream};
use std::ffi::{c_char, c_int};

use crate::{errors, options::seconds, Shared};

/// What an operation gives back.
enum Done {
    Unit,
    Bytes(Option<Bytes>),
}

type OpResult = Result<Done, (String, i32)>;
type OpFuture = Pin<Box<dyn Future<Output = OpResult>>>;

/// One queued operation: its future until it ends, then its result until Lua takes it.
struct Op {
    fut: RefCell<Option<OpFuture>>,
    result: RefCell<Option<OpResult>>,
}

/// A request's stream, shared by its Rust handler task and its Lua object.
pub(crate) struct StreamSlot {
    stream: Stream,
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

    /// Queues `fut` (made from the slot, bounded by `timeout`) and wakes the handler task.
    fn queue<F, Fut>(self: &Rc<Self>, timeout: Option<f64>, make: F) -> Rc<Op>
    where
        F: FnOnce(Rc<StreamSlot>) -> Fut + 'static,
        Fut: Future<Output = onstream::Result<Done>> + 'static,
    {
        let slot = self.clone();
        let limit = timeout.map(seconds);
        // The future is built when first polled, inside the loop's step: timers need the
        // running controller.
        let fut: OpFuture = Box::pin(async move {
            let r = match limit {
                Some(limit) => match onstream::timeout(limit, make(slot)).await {
                    Ok(r) => r,
                    Err(_) => return Err(("timed out".to_owned(), libc::ETIMEDOUT)),
                },
                None => make(slot).await,
            };
            r.map_err(|e| errors::describe(&e))
        });
        let op = Rc::new(Op {
            fut: RefCell::new(Some(fut)),
            result: RefCell::new(None),
        });
        if self.finished.get() {
            *op.fut.borrow_mut() = None;
            *op.result.borrow_mut() = Some(Err(("stream closed".to_owned(), libc::EPIPE)));
            return op;
        }
        self.ops.borrow_mut().push(op.clone());
        self.try_now(&op);
        // Either way the handler task runs at the next step: to poll the operation, or to
        // flush what it wrote (onstream flushes after each poll of a handler task).
        self.wake();
        op
    }

    /// Polls a new operation once, at once, as the handler task would (its waker, the
    /// loop made current): most end there — a head or a chunk that fits the buffer — and
    /// the Lua coroutine goes on without waiting for a step. Before the task first ran
    /// there is no waker yet, and the task polls the operation instead.
    fn try_now(&self, op: &Op) {
        let Some(waker) = self.waker.borrow().clone() else {
            return;
        };
        let Some(ctl) = self.shared.ctl.borrow().clone() else {
            return;
        };
        let mut fut = op.fut.borrow_mut();
        let Some(f) = fut.as_mut() else { return };
        let polled = ctl.enter(|| f.as_mut().poll(&mut Context::from_waker(&waker)));
        if let Poll::Ready(r) = polled {
            *fut = None;
            *op.result.borrow_mut() = Some(r);
        }
    }

    /// Ends the Lua side's use of the stream: pending operations fail, and the handler
    /// task ends, letting onstream finish the exchange.
    fn shutdown(&self) {
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
fn valid_field(name: &[u8], value: &[u8]) -> bool {
    let token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    let name_ok = match name.strip_prefix(b":") {
        Some(rest) => !rest.is_empty() && rest.iter().all(|&c| token(c)),
        None => !name.is_empty() && name.iter().all(|&c| token(c)),
    };
    name_ok && !value.iter().any(|&c| c == b'\r' || c == b'\n' || c == 0)
}

/// Header fields as a flat list: name, value, never_index, ….
///
/// Built with Lua's C API inside one protected call: through mlua's safe API each string
/// is a protected call of its own, which made this function ~48k instructions for a
/// 7-field head under Lua 5.1 (bench/lua-callgrind), a third of a request.
fn flat_fields(lua: &Lua, h: &Headers) -> LuaResult<LuaTable> {
    let n = c_int::try_from(h.len() * 3).map_err(LuaError::external)?;
    // SAFETY: the closure runs in `exec_raw`'s protected call on the state it is given;
    // it keeps the stack balanced but for the one table it leaves as the result (at most
    // two slots above it, and `lua_checkstack` is asked for them); a Lua memory error
    // unwinds to that protected call across a frame that owns nothing with a destructor.
    #[allow(unsafe_code)]
    unsafe {
        lua.exec_raw((), |state| {
            ffi::luaL_checkstack(state, 3, std::ptr::null());
            ffi::lua_createtable(state, n, 0);
            let mut i = 0;
            for f in h.iter() {
                let (name, value) = (f.name().as_bytes(), f.value_bytes());
                ffi::lua_pushlstring(state, name.as_ptr().cast::<c_char>(), name.len());
                ffi::lua_rawseti(state, -2, i + 1);
                ffi::lua_pushlstring(state, value.as_ptr().cast::<c_char>(), value.len());
                ffi::lua_rawseti(state, -2, i + 2);
                ffi::lua_pushboolean(state, c_int::from(f.never_index()));
                ffi::lua_rawseti(state, -2, i + 3);
                i += 3;
            }
        })
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
        // The request head as a flat list: name, value, never_index, name, ….
        m.add_method("get_headers", |lua, this, ()| {
            let slot = this.0.clone();
            // The head is already here for both versions: the future ends at once.
            let Some(h) = futures_now(slot.stream.get_headers()) else {
                return Err(LuaError::runtime("request head not ready"));
            };
            flat_fields(lua, &h.map_err(LuaError::external)?)
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
        m.add_method(
            "write_headers",
            |lua, this, (fields, end_stream, timeout): (LuaTable, bool, Option<f64>)| {
                let mut h = Headers::new();
                let n = fields.raw_len();
                let mut i = 1;
                while i + 2 <= n + 1 {
                    let name: LuaString = fields.raw_get(i)?;
                    let value: LuaString = fields.raw_get(i + 1)?;
                    let never: Option<bool> = fields.raw_get(i + 2)?;
                    let (name, value) = (name.as_bytes().to_vec(), value.as_bytes().to_vec());
                    if !valid_field(&name, &value) {
                        return (
                            LuaNil,
                            format!("invalid header field {:?}", String::from_utf8_lossy(&name)),
                            libc::EINVAL,
                        )
                            .into_lua_multi(lua);
                    }
                    let name = String::from_utf8_lossy(&name).to_ascii_lowercase();
                    match never {
                        Some(never) => h.append_with(name, value, never),
                        None => h.append(name, value),
                    }
                    i += 3;
                }
                started(
                    lua,
                    this.0.queue(timeout, move |s| async move {
                        s.stream
                            .write_headers(&h, end_stream)
                            .await
                            .map(|()| Done::Unit)
                    }),
                )
            },
        );
        m.add_method("write_continue", |lua, this, timeout: Option<f64>| {
            started(
                lua,
                this.0.queue(timeout, |s| async move {
                    s.stream.write_continue().await.map(|()| Done::Unit)
                }),
            )
        });
        m.add_method(
            "write_chunk",
            |lua, this, (data, end_stream, timeout): (LuaString, bool, Option<f64>)| {
                let data = Bytes::copy_from_slice(&data.as_bytes());
                started(
                    lua,
                    this.0.queue(timeout, move |s| async move {
                        s.stream
                            .write_chunk(data, end_stream)
                            .await
                            .map(|()| Done::Unit)
                    }),
                )
            },
        );
        m.add_method("shutdown", |_, this, ()| {
            this.0.shutdown();
            Ok(())
        });
        m.add_method("take_socket", |lua, this, ()| {
            match this.0.stream.take_socket() {
                Ok(up) => match crate::socket::bridge(up, &this.0.shared) {
                    Ok(fd) => fd.into_lua_multi(lua),
                    Err(e) => errors::io_fail(lua, &e),
                },
                Err(e) => errors::fail(lua, &e),
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
fn futures_now<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}
