//! onstream as a Lua module: the native half (`onstream.core`) of `require "onstream.server"`,
//! a drop-in for lua-http's `http.server` whose handlers are cqueues coroutines.
//!
//! How the halves meet: the Lua side (`lua/onstream/server.lua`) keeps lua-http's shape —
//! a server owns a cqueues controller, and everything runs in coroutines on it. One of
//! them, the *stepper*, polls the Rust server's `pollfd`/`timeout` and calls `step`, which
//! runs onstream's loop once without blocking. Each request becomes a Rust handler task
//! that holds the `Stream` and runs whatever operations Lua queued on it; Lua wraps the
//! stream in a coroutine running the user's `onstream`. A stream method queues an
//! operation (a future over the `Stream`) and polls it once at once (most end there); when
//! it has not ended, the coroutine waits on the stream's cqueues condition, which `step`
//! signals when one of the stream's operations ended. So no Lua coroutine ever yields a
//! value cqueues does not know, and the thread never blocks outside cqueues' own poll.
//!
//! This file holds the module entry and the server object; `stream.rs` the stream and
//! its operations; `fast.rs` the methods every request calls, as plain Lua C functions;
//! `options.rs` the translation of lua-http's options table; `socket.rs` `take_socket`'s
//! bridge to a cqueues socket (TLS, HTTP/2; a cleartext connection goes over as its own
//! socket); `errors.rs` the `nil, err, errno` convention.

#![warn(missing_debug_implementations, rust_2018_idioms)]

mod errors;
mod fast;
mod options;
mod socket;
mod stream;

use std::{
    cell::{Cell, RefCell},
    os::fd::{FromRawFd, OwnedFd},
    rc::Rc,
    time::Duration,
};

use mlua::{ffi, prelude::*, UserData, UserDataMethods};
use onstream::{LocalAddr, Server};
use std::ffi::c_int;

use crate::{
    errors::{fail, io_fail},
    stream::{LStream, StreamSlot},
};

/// What the Rust server's handlers and `step` share with the Lua side.
#[derive(Default)]
pub(crate) struct Shared {
    /// Streams whose handler task started since the last `step`: Lua wraps each in a
    /// coroutine.
    new_streams: RefCell<Vec<Rc<StreamSlot>>>,
    /// Streams one of whose operations ended during this `step`: their Lua condition is
    /// signalled after the step, never from inside it.
    to_signal: RefCell<Vec<Rc<StreamSlot>>>,
    /// Errors the Rust server reported (handler tasks' own failures), handed to Lua's
    /// `onerror` by the stepper.
    errors: RefCell<Vec<String>>,
    /// Sockets taken with `take_socket` whose bridge task still runs: the server is not
    /// empty while one does.
    n_bridges: Cell<usize>,
    /// Requests whose Rust handler task runs (their Lua handler has not shut the stream
    /// down): the server is not empty while one does, or its Lua coroutine would wait
    /// for a step that never comes.
    pub(crate) n_handlers: Cell<usize>,
    /// The server's loop, for the tasks this module spawns (the `take_socket` bridges).
    ctl: RefCell<Option<onstream::Controller>>,
    /// How long a bridge's output toward the client may make no progress before the
    /// bridge ends: the server's `send_timeout` (see `socket.rs`).
    bridge_send_timeout: Cell<Option<std::time::Duration>>,
}

/// Where a server's connections come from.
enum Listening {
    /// Its own socket, bound as the options say (lua-http's `listen`).
    Bind,
    /// A listening socket given by the caller (lua-http's `new` with `.socket`).
    Fd(OwnedFd),
    /// Only `add_socket` (lua-http's `new` without `.socket`).
    Nothing,
}

/// The Rust server behind one Lua server object.
struct LServer {
    server: Server,
    shared: Rc<Shared>,
}

impl LServer {
    fn new(lua: &Lua, opts: LuaTable, listener: Listening) -> LuaResult<LServer> {
        let options = options::from_table(lua, &opts)?;
        let shared = Rc::new(Shared::default());
        shared
            .bridge_send_timeout
            .set(Some(options::send_timeout(&opts)?));
        let on_stream = {
            let shared = shared.clone();
            move |_srv: onstream::ServerHandle, stream: onstream::Stream| {
                let slot = StreamSlot::new(stream, shared.clone());
                shared.new_streams.borrow_mut().push(slot.clone());
                stream::run(slot)
            }
        };
        let server = match listener {
            Listening::Bind => Server::listen(options, on_stream),
            Listening::Fd(fd) => Server::new(onstream::Listener::from(fd), options, on_stream),
            Listening::Nothing => Server::without_listener(options, on_stream),
        }
        .map_err(LuaError::external)?;
        *shared.ctl.borrow_mut() = Some(server.controller().clone());
        let errors = shared.clone();
        server.set_onerror(move |_, op, e| {
            errors.errors.borrow_mut().push(format!("{op}: {e}"));
            Ok(())
        });
        Ok(LServer { server, shared })
    }
}

impl UserData for LServer {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("listen", |lua, this, ()| match this.server.listen_now() {
            Ok(()) => true.into_lua_multi(lua),
            Err(e) => fail(lua, &e),
        });
        m.add_method("localname", |lua, this, ()| {
            match this.server.local_addr() {
                Ok(LocalAddr::Inet(a)) => {
                    let family = if a.is_ipv4() {
                        libc::AF_INET
                    } else {
                        libc::AF_INET6
                    };
                    (family, a.ip().to_string(), a.port()).into_lua_multi(lua)
                }
                Ok(LocalAddr::Unix(p)) => {
                    (libc::AF_UNIX, p.to_string_lossy().into_owned()).into_lua_multi(lua)
                }
                Err(e) => fail(lua, &e),
            }
        });
        m.add_method("pollfd", |_, this, ()| Ok(this.server.pollfd()));
        m.add_method("timeout", |_, this, ()| {
            Ok(this.server.timeout().map(|t| t.as_secs_f64()))
        });
        // One turn of onstream's loop without blocking; returns `ok, streams, errors,
        // message, errno`: the stream objects of the requests that started (made for
        // `server`, see `fast::push_stream`; without `set_stream_shape`, a flat list of
        // handle, version, id for Lua to make them) and the errors reported, each nil when there
        // is none, after signalling the conditions of the streams whose operations
        // ended; `ok` false with the step's own failure.
        m.add_method("step", |lua, this, server: LuaTable| {
            let stepped = this.server.step(Some(Duration::ZERO));
            let signals: Vec<_> = this.shared.to_signal.borrow_mut().drain(..).collect();
            for slot in signals {
                slot.signal()?;
            }
            let new: Vec<_> = this.shared.new_streams.borrow_mut().drain(..).collect();
            let streams = if new.is_empty() {
                None
            } else {
                // SAFETY: the server table (the argument) and, above it, one list and at
                // most five values (checkstack asks for them); a Lua memory error unwinds
                // to exec_raw's protected call across a frame that owns nothing with a
                // destructor (`push_handle` counts the slot only once its handle can be
                // collected).
                #[allow(unsafe_code)]
                let t: LuaTable = unsafe {
                    lua.exec_raw(server, |state| {
                        ffi::luaL_checkstack(state, 7, std::ptr::null());
                        let server = ffi::lua_gettop(state);
                        if fast::has_stream_shape(state) {
                            let n = c_int::try_from(new.len()).unwrap_or(0);
                            ffi::lua_createtable(state, n, 0);
                            for (i, slot) in new.iter().enumerate() {
                                let id = slot.id();
                                let version = stream::version_number(slot);
                                fast::push_stream(state, slot, server, version, id);
                                ffi::lua_rawseti(state, -2, i as ffi::lua_Integer + 1);
                            }
                        } else {
                            // Flat: handle, version, id (false over HTTP/1: no hole, so
                            // `#` counts them), … for Lua's `new_stream`.
                            let n = c_int::try_from(new.len() * 3).unwrap_or(0);
                            ffi::lua_createtable(state, n, 0);
                            let mut i: ffi::lua_Integer = 0;
                            for slot in &new {
                                fast::push_handle(state, slot);
                                ffi::lua_rawseti(state, -2, i + 1);
                                ffi::lua_pushnumber(state, stream::version_number(slot));
                                ffi::lua_rawseti(state, -2, i + 2);
                                match slot.id() {
                                    Some(id) => ffi::lua_pushinteger(state, id.into()),
                                    None => ffi::lua_pushboolean(state, 0),
                                }
                                ffi::lua_rawseti(state, -2, i + 3);
                                i += 3;
                            }
                        }
                        ffi::lua_remove(state, server);
                    })?
                };
                Some(t)
            };
            let errors = {
                let mut errors = this.shared.errors.borrow_mut();
                if errors.is_empty() {
                    None
                } else {
                    Some(lua.create_sequence_from(errors.drain(..))?)
                }
            };
            let (msg, errno) = match &stepped {
                Ok(()) => (None, None),
                Err(e) => {
                    let (msg, errno) = errors::describe(e);
                    (Some(msg), Some(errno))
                }
            };
            (stepped.is_ok(), streams, errors, msg, errno).into_lua_multi(lua)
        });
        m.add_method("pause", |_, this, ()| {
            this.server.pause();
            Ok(())
        });
        m.add_method("resume", |_, this, ()| {
            this.server.resume();
            Ok(())
        });
        m.add_method("close", |_, this, ()| {
            this.server.close();
            Ok(())
        });
        m.add_method("empty", |_, this, ()| {
            let shared = &this.shared;
            Ok(this.server.empty() && shared.n_bridges.get() == 0 && shared.n_handlers.get() == 0)
        });
        m.add_method("connections", |_, this, ()| Ok(this.server.connections()));
        // Serves a connected socket given as a descriptor, which is duplicated: the caller
        // closes its own.
        m.add_method("add_socket", |lua, this, fd: i32| {
            let owned = match dup(fd) {
                Ok(fd) => fd,
                Err(e) => return io_fail(lua, &e),
            };
            match this.server.add_socket(owned) {
                Ok(()) => true.into_lua_multi(lua),
                Err(e) => fail(lua, &e),
            }
        });
        m.add_meta_method("__tostring", |_, this, ()| {
            Ok(format!(
                "onstream.core.server{{connections={}}}",
                this.server.connections()
            ))
        });
    }
}

/// Duplicates a descriptor the caller keeps owning.
fn dup(fd: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) only reads `fd`; a negative result is an error.
    #[allow(unsafe_code)]
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `new` is a descriptor we just created and own alone.
    #[allow(unsafe_code)]
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// `require "onstream.core"`.
#[mlua::lua_module(name = "onstream_core")]
fn onstream_core(lua: &Lua) -> LuaResult<LuaTable> {
    let exports = lua.create_table()?;
    // new_server(options): a server that binds as `options` say (lua-http's `listen`).
    exports.set(
        "listen",
        lua.create_function(|lua, opts: LuaTable| LServer::new(lua, opts, Listening::Bind))?,
    )?;
    // new_server(options, fd): a server accepting from a listening socket's descriptor
    // (duplicated), or with no listener when `fd` is nil (lua-http's `new`).
    exports.set(
        "new",
        lua.create_function(|lua, (opts, fd): (LuaTable, Option<i32>)| {
            let listening = match fd {
                Some(fd) => Listening::Fd(dup(fd).map_err(LuaError::external)?),
                None => Listening::Nothing,
            };
            LServer::new(lua, opts, listening)
        })?,
    )?;
    // peek(fd, n): up to `n` bytes the peer sent, left in the socket, and whether it has
    // shut its writing side (POLLRDHUP, seen even while those bytes wait): `add_socket`
    // sniffs a connection's first bytes with it.
    exports.set(
        "peek",
        lua.create_function(|lua, (fd, n): (i32, usize)| {
            let mut buf = vec![0u8; n];
            // SAFETY: recv writes at most `n` bytes into `buf`, which holds `n`.
            #[allow(unsafe_code)]
            let got = unsafe {
                libc::recv(
                    fd,
                    buf.as_mut_ptr().cast(),
                    n,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            let got = usize::try_from(got).unwrap_or(0);
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLRDHUP,
                revents: 0,
            };
            // SAFETY: one pollfd, valid for the call; a zero timeout never blocks.
            #[allow(unsafe_code)]
            unsafe {
                libc::poll(&mut pfd, 1, 0)
            };
            let ended = pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0;
            Ok((lua.create_string(&buf[..got])?, ended))
        })?,
    )?;
    // lstream(handle): the mlua side of a stream handle from `step` (bodies, sockets,
    // trailers, operations that wait), made when a handler first needs it.
    exports.set(
        "lstream",
        lua.create_function(|lua, handle: LuaValue| {
            // SAFETY: reads the handle passed (on the stack for the call) and pushes a
            // light userdata or nil; nothing here owns a destructor.
            #[allow(unsafe_code)]
            let p: Option<LuaLightUserData> = unsafe {
                lua.exec_raw(handle, |state| {
                    let p = fast::slot_at(state, -1).map(|s| s as *const stream::StreamSlot);
                    ffi::lua_pop(state, 1);
                    match p {
                        Some(p) => ffi::lua_pushlightuserdata(state, p.cast_mut().cast()),
                        None => ffi::lua_pushnil(state),
                    }
                })?
            };
            let Some(p) = p else {
                return Err(LuaError::runtime("onstream: not a stream handle"));
            };
            let p = p.0.cast_const().cast::<stream::StreamSlot>();
            // SAFETY: `p` is a live handle's pointer (from `Rc::into_raw`), a strong count
            // the handle keeps while the caller holds it.
            #[allow(unsafe_code)]
            let slot = unsafe {
                std::rc::Rc::increment_strong_count(p);
                std::rc::Rc::from_raw(p)
            };
            Ok(LStream::new(slot))
        })?,
    )?;
    // set_stream_shape(stream_mt, connection_mt): the metatables of the stream objects
    // `step` makes.
    exports.set(
        "set_stream_shape",
        lua.create_function(|lua, mts: (LuaTable, LuaTable)| {
            // SAFETY: stores the two tables passed; nothing here owns a destructor.
            #[allow(unsafe_code)]
            unsafe {
                lua.exec_raw::<()>(mts, |state| fast::set_stream_shape(state))
            }
        })?,
    )?;
    // new_head(PENDING, head_mt): server.lua's `new_head` (fast.rs).
    exports.set(
        "new_head",
        lua.create_function(|lua, upvalues: (LuaValue, LuaTable)| {
            // SAFETY: makes one closure of the values passed; nothing here owns a
            // destructor.
            #[allow(unsafe_code)]
            unsafe {
                lua.exec_raw::<LuaFunction>(upvalues, |state| fast::push_new_head(state))
            }
        })?,
    )?;
    // head_get(key): `get` for the request head's view, which keeps its stream's handle
    // under `key` (fast.rs).
    exports.set(
        "head_get",
        lua.create_function(|lua, key: LuaValue| {
            // SAFETY: makes one closure of the key passed; nothing here owns a destructor.
            #[allow(unsafe_code)]
            unsafe {
                lua.exec_raw::<LuaFunction>(key, |state| fast::push_head_get(state))
            }
        })?,
    )?;
    fast::install(lua)?;
    exports.set("version", env!("CARGO_PKG_VERSION"))?;
    Ok(exports)
}
