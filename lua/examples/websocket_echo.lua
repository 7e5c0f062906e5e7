-- A WebSocket echo server: lua-http's own `http.websocket` on the streams of
-- onstream's `onstream.server`, or, unchanged, on lua-http's `http.server`.
--
--   lua websocket_echo.lua PORT [onstream|lua-http]
--
-- The second argument (or, without it, the environment variable WS_ECHO_SERVER) picks
-- the server module; the default is onstream's. Every text and binary message comes
-- back as it came (same type, same payload); a request that is not a WebSocket
-- handshake gets a 200 with a line of text, one with a bad handshake a 400.
-- scripts/autobahn --lua VERSION runs the Autobahn|Testsuite against it.
local port = tonumber(arg[1])
local which = arg[2] or os.getenv("WS_ECHO_SERVER") or "onstream"
if not port or (which ~= "onstream" and which ~= "lua-http") then
	io.stderr:write("usage: lua websocket_echo.lua PORT [onstream|lua-http]\n")
	os.exit(2)
end

local http_server = require(which == "onstream" and "onstream.server" or "http.server")
local http_headers = require "http.headers"
local http_util = require "http.util"
local websocket = require "http.websocket"

local function answer(stream, status, text)
	local res = http_headers.new()
	res:append(":status", status)
	res:append("content-type", "text/plain")
	assert(stream:write_headers(res, false))
	assert(stream:write_chunk(text, true))
end

local function onstream(_, stream)
	local req = assert(stream:get_headers())
	if not req:has("upgrade") then
		return answer(stream, "200", "websocket echo on " .. which .. "\n")
	end
	local ws, err = websocket.new_from_stream(stream, req)
	if not ws then
		return answer(stream, "400", err .. "\n")
	end
	assert(ws:accept())
	-- receive() answers pings and closes itself and returns nil once the connection is
	-- closed or failed (with the close code it sent); a failed send ends the echo too.
	-- receive() can also raise: lua-http 0.4 reads a frame of 126 to 65535 bytes without
	-- waiting for all of its payload (websocket.lua's read_frame asserts on a read with
	-- timeout 0; lua-http issue #140), so a frame that arrives in pieces fails it. That
	-- is reported and the connection closed, rather than left open with nobody reading
	-- it, which would leave the Autobahn client waiting forever. The input is out of step
	-- with its frames by then, so the close is sent as 1002, for which close() does not
	-- read on to wait for the client's answer (with any other code it would, and raise
	-- again).
	local ok, err = http_util.yieldable_pcall(function()
		while true do
			local data, opcode = ws:receive()
			if data == nil or not ws:send(data, opcode) then
				break
			end
		end
	end)
	if not ok then
		io.stderr:write("websocket_echo: receive raised: ", tostring(err), "\n")
		http_util.yieldable_pcall(ws.close, ws, 1002, "receive failed", 1)
	else
		ws:close()
	end
end

local server = assert(http_server.listen {
	host = "127.0.0.1";
	port = port;
	tls = false;
	onstream = onstream;
	onerror = function(_, context, op, err)
		io.stderr:write(string.format("websocket_echo: %s on %s failed: %s\n",
			tostring(context), tostring(op), tostring(err)))
	end;
})
assert(server:listen())
io.stderr:write(string.format("websocket_echo (%s) listening on port %d\n", which, port))
assert(server:loop())
