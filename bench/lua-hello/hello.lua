-- The same "Hello, World!" handler on lua-http's server or onstream's, for bench/lua.
-- usage: lua hello.lua lua-http|onstream PORT [read-head] [tls]
-- With `read-head` the handler also reads the request's :method and :path (onstream makes
-- the head's headers object only when a handler uses it). With `tls` the port serves TLS
-- only (`tls = true`), with the self-signed certificate each server makes by itself
-- (lua-http: RSA 2048 through luaossl, ALPN h2 first; onstream: rcgen's), else cleartext
-- only: HTTP/1.x and h2c by prior knowledge.
local which, port = arg[1], tonumber(arg[2])
local read_head, tls = false, false
for i = 3, #arg do
	if arg[i] == "read-head" then
		read_head = true
	elseif arg[i] == "tls" then
		tls = true
	else
		error("unknown argument " .. arg[i])
	end
end
local http_server = require(which == "onstream" and "onstream.server" or "http.server")
local http_headers = require "http.headers"
local server = assert(http_server.listen {
	host = "127.0.0.1";
	port = port;
	tls = tls;
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
