-- `luarocks make lua/onstream-scm-0.rockspec` from the repository root: builds the native
-- module with cargo for the Lua luarocks runs for, and installs it with the Lua files.
-- Needs a Rust toolchain (cargo) on PATH.
rockspec_format = "3.0"
package = "onstream"
version = "scm-0"
source = {
	-- `luarocks make` builds the checkout it runs in; nothing is fetched.
	url = "git+file://.";
}
description = {
	summary = "lua-http's http.server API served by onstream (Rust): HTTP/1.1, HTTP/2, TLS, WebSocket";
	license = "MIT";
}
dependencies = {
	"lua >= 5.1, < 5.5";
	"cqueues";
}
build = {
	type = "command";
	build_command = [[LUA="$(LUA)" lua/rock-build]];
	install = {
		lib = {
			["onstream.core"] = "target/lua/rock/onstream/core.so";
		};
		lua = {
			["onstream.server"] = "lua/onstream/server.lua";
			["onstream.headers"] = "lua/onstream/headers.lua";
		};
	};
}
