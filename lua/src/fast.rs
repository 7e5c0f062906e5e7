//! The per-request hot path as plain Lua C functions: the stream handle Lua gets from
//! `step` and the methods every handler calls (`header`, `fields`, `write_headers`,
//! `write_chunk`, `shutdown`).
//!
//! Why not mlua's userdata: under Lua 5.1, making one mlua userdata cost ~5k instructions
//! (four protected calls, each pushing a C closure) and each method call ~1k more (type
//! lookup, argument conversion, references kept for every table and string read); the
//! request head as a Lua table of all its fields ~10k. For a "Hello, World!" handler that
//! was a third of the module's cost per request (bench/lua-callgrind, callgrind_annotate).
//! Here a stream is a full userdata holding one `Rc<StreamSlot>` (dropped by `__gc`), its
//! methods check their `self` against the metatable (their upvalue), and a header is read
//! by name without making the head's table. Everything else a stream does (bodies,
//! sockets, trailers, an operation that has to wait) stays on mlua's `LStream`, made on
//! demand from the handle by `core.lstream`.
//!
//! Lua errors: a Lua error is a `longjmp`, which must not skip a Rust frame that owns
//! something with a destructor. So each function first does its Rust work (reading its
//! arguments with calls that never raise: `lua_type`, `lua_tolstring` on strings,
//! `lua_rawgeti`), keeps what it returns in the slot or in plain values, drops the rest,
//! and only then pushes results (which may raise on memory exhaustion) from borrows.
//! Rust panics are caught before they reach Lua.

use std::{
    cell::OnceCell,
    ffi::{c_char, c_int, c_void, CStr},
    panic::{catch_unwind, AssertUnwindSafe},
    rc::Rc,
};

use bytes::Bytes;
use mlua::{ffi, prelude::*};
use onstream::Headers;

use crate::stream::{valid_field, Done, Started, StreamSlot};

/// Registry keys: the addresses of this array's bytes (one array, since distinct statics
/// are not promised distinct addresses; its values are unused). Indices below.
static REGISTRY_KEYS: [u8; 4] = [0; 4];
/// The handles' metatable.
const METATABLE: usize = 0;
/// What `set_stream_shape` gives: the stream and connection metatables, and the field
/// names of both objects (a list, so that making an object hashes no name).
const STREAM_MT: usize = 1;
const CONNECTION_MT: usize = 2;
const FIELD_NAMES: usize = 3;

fn key(idx: usize) -> *const c_void {
    std::ptr::addr_of!(REGISTRY_KEYS[idx]).cast()
}

fn metatable_key() -> *const c_void {
    key(METATABLE)
}

/// The methods of a stream handle, each a C closure whose upvalues are the metatable and
/// the `KEYS` (pushed from an upvalue, a key is not hashed again).
const METHODS: [(&CStr, ffi::lua_CFunction); 5] = [
    (c"header", header),
    (c"fields", fields),
    (c"write_headers", write_headers),
    (c"write_chunk", write_chunk),
    (c"shutdown", shutdown),
];

/// Field names `write_headers` reads from lua-http's headers objects, upvalues 2 to 6.
const KEYS: [&CStr; 5] = [c"_n", c"_data", c"name", c"value", c"never_index"];
const KEY_N: c_int = ffi::lua_upvalueindex(2);
const KEY_DATA: c_int = ffi::lua_upvalueindex(3);
const KEY_NAME: c_int = ffi::lua_upvalueindex(4);
const KEY_VALUE: c_int = ffi::lua_upvalueindex(5);
const KEY_NEVER_INDEX: c_int = ffi::lua_upvalueindex(6);

/// Makes the handles' metatable and keeps it in the registry (at module load).
pub(crate) fn install(lua: &Lua) -> LuaResult<()> {
    // SAFETY: runs in `exec_raw`'s protected call and leaves the stack as it found it;
    // nothing on this frame has a destructor.
    #[allow(unsafe_code)]
    unsafe {
        lua.exec_raw::<()>((), |state| {
            ffi::luaL_checkstack(state, 4 + KEYS.len() as c_int, std::ptr::null());
            ffi::lua_createtable(state, 0, 4);
            ffi::lua_createtable(state, 0, METHODS.len() as c_int);
            for (name, f) in METHODS {
                ffi::lua_pushvalue(state, -2);
                for key in KEYS {
                    ffi::lua_pushstring(state, key.as_ptr());
                }
                ffi::lua_pushcclosure(state, f, 1 + KEYS.len() as c_int);
                ffi::lua_setfield(state, -2, name.as_ptr());
            }
            ffi::lua_setfield(state, -2, c"__index".as_ptr());
            ffi::lua_pushcfunction(state, gc);
            ffi::lua_setfield(state, -2, c"__gc".as_ptr());
            // `getmetatable` gives this string: Lua code cannot reach the metatable.
            ffi::lua_pushstring(state, c"onstream.stream.handle".as_ptr());
            ffi::lua_setfield(state, -2, c"__metatable".as_ptr());
            ffi::lua_rawsetp(state, ffi::LUA_REGISTRYINDEX, metatable_key());
        })
    }
}

/// Pushes a new handle holding `slot` (one more strong count).
///
/// # Safety
///
/// `state` is a Lua state on which `install` ran, with room for two values; a memory
/// error from Lua unwinds to the caller's protected call (the slot is not yet counted then).
#[allow(unsafe_code)]
pub(crate) unsafe fn push_handle(state: *mut ffi::lua_State, slot: &Rc<StreamSlot>) {
    let block = ffi::lua_newuserdata(state, std::mem::size_of::<*const StreamSlot>());
    let block = block.cast::<*const StreamSlot>();
    block.write(Rc::into_raw(slot.clone()));
    ffi::lua_rawgetp(state, ffi::LUA_REGISTRYINDEX, metatable_key());
    ffi::lua_setmetatable(state, -2);
}

/// The field names of a stream object and its connection, in `FIELD_NAMES`' order.
const STREAM_FIELDS: [&CStr; 8] = [
    c"_rs",
    c"_server",
    c"peer_version",
    c"id",
    c"_got",
    c"connection",
    c"_stream",
    c"version",
];
const F_RS: ffi::lua_Integer = 1;
const F_SERVER: ffi::lua_Integer = 2;
const F_PEER_VERSION: ffi::lua_Integer = 3;
const F_ID: ffi::lua_Integer = 4;
const F_GOT: ffi::lua_Integer = 5;
const F_CONNECTION: ffi::lua_Integer = 6;
const F_STREAM: ffi::lua_Integer = 7;
const F_VERSION: ffi::lua_Integer = 8;

/// Keeps server.lua's stream and connection metatables (the two arguments on the
/// stack) for `push_stream`.
///
/// # Safety
///
/// Runs in a protected call (`exec_raw`) with the two metatables at -2 and -1.
#[allow(unsafe_code)]
pub(crate) unsafe fn set_stream_shape(state: *mut ffi::lua_State) {
    ffi::luaL_checkstack(state, 2, std::ptr::null());
    ffi::lua_rawsetp(state, ffi::LUA_REGISTRYINDEX, key(CONNECTION_MT));
    ffi::lua_rawsetp(state, ffi::LUA_REGISTRYINDEX, key(STREAM_MT));
    ffi::lua_createtable(state, STREAM_FIELDS.len() as c_int, 0);
    for (i, name) in STREAM_FIELDS.iter().enumerate() {
        ffi::lua_pushstring(state, name.as_ptr());
        ffi::lua_rawseti(state, -2, i as ffi::lua_Integer + 1);
    }
    ffi::lua_rawsetp(state, ffi::LUA_REGISTRYINDEX, key(FIELD_NAMES));
}

/// Whether `set_stream_shape` ran (server.lua does not call it under LuaJIT).
///
/// # Safety
///
/// Needs one stack slot.
#[allow(unsafe_code)]
pub(crate) unsafe fn has_stream_shape(state: *mut ffi::lua_State) -> bool {
    let t = ffi::lua_rawgetp(state, ffi::LUA_REGISTRYINDEX, key(STREAM_MT));
    ffi::lua_pop(state, 1);
    t != ffi::LUA_TNIL
}

/// Pushes a stream object as server.lua describes it — `{ _rs = handle,
/// _server = server, peer_version = version, id = id, _got = 0, connection = { _stream =
/// stream, version = version } }` with their metatables — so Lua code makes no table
/// per request. `server` is an absolute stack index.
///
/// # Safety
///
/// `set_stream_shape` ran; in a protected call, with the caller's frames owning nothing
/// with a destructor; needs 5 stack slots.
#[allow(unsafe_code)]
pub(crate) unsafe fn push_stream(
    state: *mut ffi::lua_State,
    slot: &Rc<StreamSlot>,
    server: c_int,
    version: f64,
    id: Option<u32>,
) {
    ffi::lua_rawgetp(state, ffi::LUA_REGISTRYINDEX, key(FIELD_NAMES));
    let names = ffi::lua_gettop(state);
    // Sets field `f` of the table at -2 to the value at -1.
    let set = |f: ffi::lua_Integer| {
        ffi::lua_rawgeti(state, names, f);
        ffi::lua_insert(state, -2);
        ffi::lua_rawset(state, -3);
    };
    ffi::lua_createtable(state, 0, 8);
    push_handle(state, slot);
    set(F_RS);
    ffi::lua_pushvalue(state, server);
    set(F_SERVER);
    ffi::lua_pushnumber(state, version);
    set(F_PEER_VERSION);
    if let Some(id) = id {
        ffi::lua_pushinteger(state, id.into());
        set(F_ID);
    }
    ffi::lua_pushinteger(state, 0);
    set(F_GOT);
    ffi::lua_createtable(state, 0, 2);
    ffi::lua_pushvalue(state, -2);
    set(F_STREAM);
    ffi::lua_pushnumber(state, version);
    set(F_VERSION);
    ffi::lua_rawgetp(state, ffi::LUA_REGISTRYINDEX, key(CONNECTION_MT));
    ffi::lua_setmetatable(state, -2);
    set(F_CONNECTION);
    ffi::lua_rawgetp(state, ffi::LUA_REGISTRYINDEX, key(STREAM_MT));
    ffi::lua_setmetatable(state, -2);
    // The stream above the names' list: drop the list.
    ffi::lua_remove(state, names);
}

/// The slot of the handle at `idx`, if it is one (and not collected).
///
/// # Safety
///
/// `state` is a Lua state on which `install` ran. The reference lives as long as the
/// handle stays on the stack.
#[allow(unsafe_code)]
pub(crate) unsafe fn slot_at<'a>(state: *mut ffi::lua_State, idx: c_int) -> Option<&'a StreamSlot> {
    if ffi::lua_getmetatable(state, idx) == 0 {
        return None;
    }
    ffi::lua_rawgetp(state, ffi::LUA_REGISTRYINDEX, metatable_key());
    let ours = ffi::lua_rawequal(state, -1, -2) != 0;
    ffi::lua_pop(state, 2);
    if !ours {
        return None;
    }
    let p = *ffi::lua_touserdata(state, idx).cast::<*const StreamSlot>();
    p.as_ref()
}

/// `self`'s slot in a method (its upvalue is the metatable: a cheaper check than the
/// registry's), or a Lua error.
#[allow(unsafe_code)]
unsafe fn this<'a>(state: *mut ffi::lua_State) -> &'a StreamSlot {
    if ffi::lua_getmetatable(state, 1) != 0 {
        let ours = ffi::lua_rawequal(state, -1, ffi::lua_upvalueindex(1)) != 0;
        ffi::lua_pop(state, 1);
        if ours {
            let p = *ffi::lua_touserdata(state, 1).cast::<*const StreamSlot>();
            if let Some(slot) = p.as_ref() {
                return slot;
            }
        }
    }
    raise(state, c"onstream: not a stream handle")
}

/// A strong count of a slot reached through a handle (whose pointer came from
/// `Rc::into_raw`).
#[allow(unsafe_code)]
fn rc_of(slot: &StreamSlot) -> Rc<StreamSlot> {
    let p: *const StreamSlot = slot;
    // SAFETY: `p` is the pointer a handle holds a strong count of, alive while it is.
    unsafe {
        Rc::increment_strong_count(p);
        Rc::from_raw(p)
    }
}

/// Raises a Lua error with a static message (nothing on the caller's frames may need
/// dropping).
#[allow(unsafe_code)]
unsafe fn raise(state: *mut ffi::lua_State, msg: &'static CStr) -> ! {
    ffi::lua_pushstring(state, msg.as_ptr());
    ffi::lua_error(state)
}

/// Runs the Rust half of a method with panics caught (reported as a Lua error once the
/// panic's payload is dropped).
#[allow(unsafe_code)]
unsafe fn guarded<R>(state: *mut ffi::lua_State, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            drop(payload);
            raise(state, c"onstream: internal error (panic)")
        }
    }
}

/// `__gc`: gives the slot's strong count back.
#[allow(unsafe_code)]
unsafe extern "C-unwind" fn gc(state: *mut ffi::lua_State) -> c_int {
    let block = ffi::lua_touserdata(state, 1).cast::<*const StreamSlot>();
    if !block.is_null() {
        let p = block.replace(std::ptr::null());
        if !p.is_null() {
            guarded(state, || drop(Rc::from_raw(p)));
        }
    }
    0
}

/// The bytes of the string at `idx`, or None if it is not a string (numbers are not
/// converted: that allocates, and may raise).
#[allow(unsafe_code)]
unsafe fn string_at<'a>(state: *mut ffi::lua_State, idx: c_int) -> Option<&'a [u8]> {
    if ffi::lua_type(state, idx) != ffi::LUA_TSTRING {
        return None;
    }
    let mut len = 0usize;
    let p = ffi::lua_tolstring(state, idx, &mut len);
    Some(std::slice::from_raw_parts(p.cast::<u8>(), len))
}

/// An optional number argument (lua-http's `timeout`): nil or a number, else an error.
#[allow(unsafe_code)]
unsafe fn timeout_at(state: *mut ffi::lua_State, idx: c_int) -> Option<f64> {
    match ffi::lua_type(state, idx) {
        ffi::LUA_TNIL | ffi::LUA_TNONE => None,
        _ if ffi::lua_isnumber(state, idx) != 0 => Some(ffi::lua_tonumber(state, idx)),
        _ => raise(state, c"bad argument (timeout: number expected)"),
    }
}

/// The request head, fetched once (it is already here when a stream starts).
fn head(slot: &StreamSlot) -> Option<&Headers> {
    let cell: &OnceCell<Headers> = &slot.head;
    if cell.get().is_none() {
        let h = crate::stream::futures_now(slot.stream.get_headers())?.ok()?;
        let _ = cell.set(h);
    }
    cell.get()
}

/// `handle:header(name)`: the values of the request head's fields named `name` (as
/// lua-http's `headers:get`: each one, in order; none when absent).
#[allow(unsafe_code)]
unsafe extern "C-unwind" fn header(state: *mut ffi::lua_State) -> c_int {
    let slot = this(state);
    push_values(state, slot, 2)
}

/// `head:get(name)` for the request head's view in server.lua (`head_methods.get`):
/// `header` reached without a Lua function between. Its upvalues are the key under which
/// the view keeps the stream's handle and the handles' metatable.
#[allow(unsafe_code)]
unsafe extern "C-unwind" fn head_get(state: *mut ffi::lua_State) -> c_int {
    if ffi::lua_type(state, 1) != ffi::LUA_TTABLE {
        raise(state, c"bad argument #1 to 'get' (headers expected)")
    }
    ffi::luaL_checkstack(state, 3, std::ptr::null());
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
    // The handle stays on the stack (above the arguments) while its slot is used.
    ffi::lua_rawget(state, 1);
    if ffi::lua_getmetatable(state, -1) != 0 {
        let ours = ffi::lua_rawequal(state, -1, ffi::lua_upvalueindex(2)) != 0;
        ffi::lua_pop(state, 1);
        if ours {
            let p = *ffi::lua_touserdata(state, -1).cast::<*const StreamSlot>();
            if let Some(slot) = p.as_ref() {
                return push_values(state, slot, 2);
            }
        }
    }
    raise(state, c"onstream: not a request head")
}

/// Makes `head_get` with `pending` (the key, at the top of the stack) as its upvalue.
///
/// # Safety
///
/// As `push_handle`.
#[allow(unsafe_code)]
pub(crate) unsafe fn push_head_get(state: *mut ffi::lua_State) {
    ffi::luaL_checkstack(state, 1, std::ptr::null());
    ffi::lua_rawgetp(state, ffi::LUA_REGISTRYINDEX, metatable_key());
    ffi::lua_pushcclosure(state, head_get, 2);
}

/// `new_head(handle)` in server.lua: the request head's view, `setmetatable({ [PENDING]
/// = handle, _flat = false }, head_mt)`, with no Lua function or `setmetatable` call
/// between (it is made for every request that reads its head). Upvalues: PENDING,
/// head_mt, the string "_flat". (Not all of `get_headers`: that one may wait, and a Lua
/// coroutine cannot yield across a C function in Lua 5.1.)
#[allow(unsafe_code)]
unsafe extern "C-unwind" fn new_head(state: *mut ffi::lua_State) -> c_int {
    ffi::luaL_checkstack(state, 4, std::ptr::null());
    ffi::lua_createtable(state, 0, 2);
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
    ffi::lua_pushvalue(state, 1);
    ffi::lua_rawset(state, -3);
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(3));
    ffi::lua_pushboolean(state, 0);
    ffi::lua_rawset(state, -3);
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(2));
    ffi::lua_setmetatable(state, -2);
    1
}

/// Makes `new_head` of the two values at the top of the stack (PENDING, head_mt).
///
/// # Safety
///
/// As `push_handle`.
#[allow(unsafe_code)]
pub(crate) unsafe fn push_new_head(state: *mut ffi::lua_State) {
    ffi::luaL_checkstack(state, 1, std::ptr::null());
    ffi::lua_pushstring(state, c"_flat".as_ptr());
    ffi::lua_pushcclosure(state, new_head, 3);
}

/// Pushes the values of the request head's fields named as the string at `name_idx`.
#[allow(unsafe_code)]
unsafe fn push_values(state: *mut ffi::lua_State, slot: &StreamSlot, name_idx: c_int) -> c_int {
    let Some(name) = string_at(state, name_idx) else {
        return 0;
    };
    let Some(h) = guarded(state, || head(slot)) else {
        raise(state, c"request head not ready")
    };
    let mut n = 0;
    for f in h.iter() {
        if f.name_bytes() == name {
            let v = f.value_bytes();
            ffi::luaL_checkstack(state, 1, std::ptr::null());
            ffi::lua_pushlstring(state, v.as_ptr().cast::<c_char>(), v.len());
            n += 1;
        }
    }
    n
}

/// `handle:fields()`: the request head as a flat list: name, value, never_index, ….
#[allow(unsafe_code)]
unsafe extern "C-unwind" fn fields(state: *mut ffi::lua_State) -> c_int {
    let slot = this(state);
    let Some(h) = guarded(state, || head(slot)) else {
        raise(state, c"request head not ready")
    };
    push_fields(state, h);
    1
}

/// Pushes `h` as a flat list: name, value, never_index, ….
///
/// # Safety
///
/// A memory error unwinds from here: the caller's frames own nothing with a destructor.
#[allow(unsafe_code)]
pub(crate) unsafe fn push_fields(state: *mut ffi::lua_State, h: &Headers) {
    ffi::luaL_checkstack(state, 3, std::ptr::null());
    ffi::lua_createtable(state, c_int::try_from(h.len() * 3).unwrap_or(0), 0);
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
}

/// Pushes what an operation started from here gives Lua: `true` when it ended well,
/// `nil, message, errno` when it failed (the message kept in the slot until then), or
/// `false` when it runs on (Lua then takes it with `LStream:pending` and waits).
#[allow(unsafe_code)]
unsafe fn push_started(state: *mut ffi::lua_State, slot: &StreamSlot, started: Started) -> c_int {
    let errno = match started {
        Started::Pending(op) => {
            *slot.pending.borrow_mut() = Some(op);
            ffi::lua_pushboolean(state, 0);
            return 1;
        }
        Started::Done(Ok(_)) => {
            ffi::lua_pushboolean(state, 1);
            return 1;
        }
        Started::Done(Err((msg, errno))) => {
            *slot.last_error.borrow_mut() = msg;
            errno
        }
    };
    ffi::luaL_checkstack(state, 3, std::ptr::null());
    ffi::lua_pushnil(state);
    {
        // A borrow of the slot's message: nothing to drop if pushing it raises.
        let msg = slot.last_error.as_ptr();
        let msg: &String = &*msg;
        ffi::lua_pushlstring(state, msg.as_ptr().cast::<c_char>(), msg.len());
    }
    ffi::lua_pushinteger(state, errno.into());
    3
}

/// What `write_headers` read: the fields, a bad field's message (built in Rust, then
/// pushed), or a layout it does not read (Lua then flattens the object itself).
enum Fields {
    Ok(Headers),
    Invalid(String),
    Unread,
}

/// Where `write_headers` finds the fields: a flat list (name, value, never_index or
/// nil, …, as `flatten` in server.lua makes it) or lua-http's headers object (`_n`
/// entries `{ name =, value =, never_index = }` in `_data`), read without Lua code.
enum Layout {
    Flat(usize),
    LuaHttp(usize),
}

/// Pushes field `i` (from 0) of the table at 2 as name, value, never_index, or returns
/// false (nothing pushed) when it is not there as a table. Reads raw, never raises; for
/// lua-http's layout `_data` is at the top of the stack.
#[allow(unsafe_code)]
unsafe fn push_field(state: *mut ffi::lua_State, layout: &Layout, i: usize) -> bool {
    match layout {
        Layout::Flat(_) => {
            let base = (i * 3) as ffi::lua_Integer;
            ffi::lua_rawgeti(state, 2, base + 1);
            ffi::lua_rawgeti(state, 2, base + 2);
            ffi::lua_rawgeti(state, 2, base + 3);
        }
        Layout::LuaHttp(_) => {
            if ffi::lua_rawgeti(state, -1, (i + 1) as ffi::lua_Integer) != ffi::LUA_TTABLE {
                ffi::lua_pop(state, 1);
                return false;
            }
            // The entry is at -1, then -2, then -3 as the values go above it.
            for (j, key) in [KEY_NAME, KEY_VALUE, KEY_NEVER_INDEX]
                .into_iter()
                .enumerate()
            {
                ffi::lua_pushvalue(state, key);
                ffi::lua_rawget(state, -2 - j as c_int);
            }
            // name, value, never_index above the entry: drop the entry.
            ffi::lua_remove(state, -4);
        }
    }
    true
}

/// `handle:write_headers(headers, end_stream, timeout)`: `headers` is a flat list or
/// lua-http's object (see `Layout`). Gives nothing at all for a layout it cannot read (a
/// value that is not a string): Lua then flattens the object and calls again.
#[allow(unsafe_code)]
unsafe extern "C-unwind" fn write_headers(state: *mut ffi::lua_State) -> c_int {
    let slot = this(state);
    if ffi::lua_type(state, 2) != ffi::LUA_TTABLE {
        raise(
            state,
            c"bad argument #1 to 'write_headers' (table expected)",
        )
    }
    let end_stream = ffi::lua_toboolean(state, 3) != 0;
    let timeout = timeout_at(state, 4);
    ffi::luaL_checkstack(state, 5, std::ptr::null());
    ffi::lua_pushvalue(state, KEY_DATA);
    let layout = if ffi::lua_rawget(state, 2) == ffi::LUA_TTABLE {
        ffi::lua_pushvalue(state, KEY_N);
        ffi::lua_rawget(state, 2);
        let n = ffi::lua_tonumber(state, -1);
        ffi::lua_pop(state, 1);
        // `_data` stays at the top while the fields are read.
        Layout::LuaHttp(if n >= 1.0 { n as usize } else { 0 })
    } else {
        ffi::lua_pop(state, 1);
        Layout::Flat(ffi::lua_rawlen(state, 2) / 3)
    };
    let read = guarded(state, || {
        let n = match layout {
            Layout::Flat(n) | Layout::LuaHttp(n) => n,
        };
        let mut h = Headers::with_capacity(n);
        for i in 0..n {
            if !push_field(state, &layout, i) {
                return Fields::Unread;
            }
            // tolstring on strings never raises.
            let (name, value) = (string_at(state, -3), string_at(state, -2));
            let never = match ffi::lua_type(state, -1) {
                ffi::LUA_TNIL => None,
                _ => Some(ffi::lua_toboolean(state, -1) != 0),
            };
            let (name, value) = match (name, value) {
                (Some(name), Some(value)) => (name, value),
                _ => {
                    ffi::lua_pop(state, 3);
                    return Fields::Unread;
                }
            };
            // valid_field admits ASCII names only.
            let name_str = match std::str::from_utf8(name) {
                Ok(name_str) if valid_field(name, value) => name_str,
                _ => {
                    let name = String::from_utf8_lossy(name);
                    ffi::lua_pop(state, 3);
                    return Fields::Invalid(format!("invalid header field {name:?}"));
                }
            };
            let value = Bytes::copy_from_slice(value);
            match never {
                Some(never) => h.append_with(name_str, value, never),
                None => h.append(name_str, value),
            }
            ffi::lua_pop(state, 3);
        }
        Fields::Ok(h)
    });
    if matches!(layout, Layout::LuaHttp(_)) {
        ffi::lua_pop(state, 1);
    }
    let started = guarded(state, || match read {
        Fields::Ok(h) => Some(rc_of(slot).start(timeout, move |s| async move {
            s.stream
                .write_headers(&h, end_stream)
                .await
                .map(|()| Done::Unit)
        })),
        Fields::Invalid(msg) => Some(Started::Done(Err((msg, libc::EINVAL)))),
        Fields::Unread => None,
    });
    match started {
        Some(started) => push_started(state, slot, started),
        None => 0,
    }
}

/// `handle:write_chunk(data, end_stream, timeout)`.
#[allow(unsafe_code)]
unsafe extern "C-unwind" fn write_chunk(state: *mut ffi::lua_State) -> c_int {
    let slot = this(state);
    if ffi::lua_type(state, 2) == ffi::LUA_TNUMBER {
        // lua-http takes numbers as their string (this converts in place, and may raise).
        ffi::lua_tolstring(state, 2, std::ptr::null_mut());
    }
    let Some(data) = string_at(state, 2) else {
        raise(state, c"bad argument #1 to 'write_chunk' (string expected)")
    };
    let end_stream = ffi::lua_toboolean(state, 3) != 0;
    let timeout = timeout_at(state, 4);
    let started = guarded(state, || {
        let data = Bytes::copy_from_slice(data);
        rc_of(slot).start(timeout, move |s| async move {
            s.stream
                .write_chunk(data, end_stream)
                .await
                .map(|()| Done::Unit)
        })
    });
    push_started(state, slot, started)
}

/// `handle:shutdown()`: the Lua side is done with the stream.
#[allow(unsafe_code)]
unsafe extern "C-unwind" fn shutdown(state: *mut ffi::lua_State) -> c_int {
    let slot = this(state);
    guarded(state, || slot.shutdown());
    0
}
