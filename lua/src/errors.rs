//! lua-http's failure convention: `nil, message, errno`. The errno is what a lua-http
//! caller tests (`ce.ETIMEDOUT`, `ce.EPIPE`, …), so each onstream error is given the one
//! lua-http would have returned for the same event.

use mlua::prelude::*;

/// The message and errno of an onstream error.
pub(crate) fn describe(e: &onstream::Error) -> (String, i32) {
    let errno = if e.is_timeout() {
        libc::ETIMEDOUT
    } else if let Some(n) = e.raw_os_error() {
        n
    } else if e.status().is_some() {
        // lua-http answers malformed input with EILSEQ.
        libc::EILSEQ
    } else if e.is_disconnect() {
        libc::EPIPE
    } else if e.kind() == onstream::ErrorKind::Usage {
        libc::EINVAL
    } else {
        libc::EIO
    };
    (e.to_string(), errno)
}

/// `nil, message, errno` for an onstream error.
pub(crate) fn fail(lua: &Lua, e: &onstream::Error) -> LuaResult<LuaMultiValue> {
    let (msg, errno) = describe(e);
    (LuaNil, msg, errno).into_lua_multi(lua)
}

/// `nil, message, errno` for an I/O error.
pub(crate) fn io_fail(lua: &Lua, e: &std::io::Error) -> LuaResult<LuaMultiValue> {
    (LuaNil, e.to_string(), e.raw_os_error().unwrap_or(libc::EIO)).into_lua_multi(lua)
}
