-- The same "Hello, World!" handler on lua-http's server or onstream's, for bench/lua.
-- usage: lua hello.lua lua-http|onstream PORT [read-head]
-- With `read-head` the handler also reads the request's :method and :path (onstream makes
-- the head's headers object only when a handler uses it).
local which, port, read_head = arg[1], tonumber(arg[2]), arg[3] == "read-head"
local http_server = require(which == "onstream" and "onstream.server" or "http.server")
local http_headers = require "http.headers"
local server = assert(http_server.listen {
	host = "127.0.0.1";
	port = port;
	tls = false;
	onstream = function(_, stream)
		local req = assert(stream:get_headers())
		if read_head then
			assert(req:get(":method") == "GET" and req:get(":path"))
		end
		local res = http_headers.new()
		res:append(":status", "200")
		res:append("content-type", "text/plain")
		assert(stream:write_headers(res, false))
		assert(stream:write_chunk("Hello, World!\n", true))
	end;
})
assert(server:loop())
