-- The same "Hello, World!" handler on lua-http's server or onstream's, for bench/lua.
-- usage: lua hello.lua lua-http|onstream PORT
local which, port = arg[1], tonumber(arg[2])
local http_server = require(which == "onstream" and "onstream.server" or "http.server")
local http_headers = require "http.headers"
local server = assert(http_server.listen {
	host = "127.0.0.1";
	port = port;
	tls = false;
	onstream = function(_, stream)
		assert(stream:get_headers())
		local res = http_headers.new()
		res:append(":status", "200")
		res:append("content-type", "text/plain")
		assert(stream:write_headers(res, false))
		assert(stream:write_chunk("Hello, World!\n", true))
	end;
})
assert(server:loop())
