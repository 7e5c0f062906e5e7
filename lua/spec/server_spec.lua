-- onstream.server from Lua: lua-http's server API, served by onstream, checked with real
-- clients (lua-http's own client and websocket, raw cqueues sockets) over loopback.
-- Run by scripts/lua-test. Every wait is bounded by LIMIT seconds of a cqueues loop.

local LIMIT = 10

local http_server = require "onstream.server"
local http_headers = require "http.headers"
local http_request = require "http.request"
local http_client = require "http.client"
local http_websocket = require "http.websocket"
local cqueues = require "cqueues"
local cc = require "cqueues.condition"
local ce = require "cqueues.errno"
local cs = require "cqueues.socket"

-- Runs `client(server)` beside a server made from `options`, both on one controller,
-- until the client is done; then closes the server and waits for it to drain.
local function with_server(options, client)
	options.host = options.host or "127.0.0.1"
	options.port = options.port or 0
	if options.tls == nil and not options.tls_auto then
		options.tls = false
	end
	local server = assert(http_server.listen(options))
	assert(server:listen())
	local cq = cqueues.new()
	local finished = false
	cq:wrap(function()
		assert(server:loop())
	end)
	cq:wrap(function()
		client(server)
		finished = true
		server:close()
	end)
	local ok, err, _, thd = cq:loop(LIMIT)
	if not ok then
		error(thd and debug.traceback(thd, err) or err, 0)
	end
	assert.truthy(finished, "the client did not finish")
	assert.truthy(cq:empty(), "the server did not drain within the limit")
	return server
end

local function uri(server, path, scheme)
	local _, host, port = server:localname()
	return string.format("%s://%s:%d%s", scheme or "http", host, port, path or "/")
end

local function respond(stream, status, body, fields)
	local h = http_headers.new()
	h:append(":status", tostring(status))
	for name, value in pairs(fields or {}) do
		h:append(name, value)
	end
	assert(stream:write_headers(h, body == nil))
	if body ~= nil then
		assert(stream:write_chunk(body, true))
	end
end

-- A raw request over a plain socket; returns everything the server sent until it closed.
local function raw(server, bytes)
	local _, host, port = server:localname()
	local sock = assert(cs.connect(host, port))
	sock:setmode("b", "b")
	assert(sock:write(bytes))
	assert(sock:flush())
	local got = sock:read("*a")
	sock:close()
	return got or ""
end

-- A self-signed certificate made with luaossl (lua-http's TLS library).
local function make_pem()
	local pkey = require "openssl.pkey"
	local x509 = require "openssl.x509"
	local x509_name = require "openssl.x509.name"
	local key = pkey.new { type = "EC"; curve = "prime256v1" }
	local crt = x509.new()
	crt:setVersion(3)
	crt:setSerial(7)
	local name = x509_name.new()
	name:add("CN", "onstream-lua-test")
	crt:setSubject(name)
	crt:setIssuer(name)
	crt:setPublicKey(key)
	local now = os.time()
	crt:setLifetime(now - 60, now + 3600)
	assert(crt:sign(key))
	return crt:tostring("PEM"), key:toPEM("private"), crt:digest("sha256", "s")
end

describe("onstream.server", function()
	it("answers lua-http's client over HTTP/1.1", function()
		with_server({
			onstream = function(_, stream)
				local req = assert(stream:get_headers())
				respond(stream, 200, "hello " .. req:get(":path"), { ["content-type"] = "text/plain" })
			end;
		}, function(server)
			local headers, stream = assert(http_request.new_from_uri(uri(server, "/there")):go(LIMIT))
			assert.same("200", headers:get(":status"))
			assert.same("text/plain", headers:get("content-type"))
			assert.same("hello /there", assert(stream:get_body_as_string()))
		end)
	end)

	it("gives the request head with http.headers' methods, and a real one once changed", function()
		local seen = {}
		with_server({
			onstream = function(_, stream)
				local h = assert(stream:get_headers())
				seen.method, seen.path = h:get(":method"), h:get(":path")
				seen.multi = { h:get("x-a") }
				seen.seq = h:get_as_sequence("x-a")
				seen.comma = h:get_comma_separated("x-a")
				seen.absent = { h:get("x-none") }
				seen.has = { h:has("x-b"), h:has("x-none") }
				seen.geti = { h:geti(1) }
				seen.len = h:len()
				local names = {}
				for name in h:each() do
					names[#names + 1] = name
				end
				seen.names = table.concat(names, " ")
				seen.tostring = tostring(h)
				seen.clone_is_real = getmetatable(h:clone()) == http_headers.mt
				h:upsert("x-b", "changed")
				seen.real = getmetatable(h) == http_headers.mt
				seen.after = { h:get("x-b"), h:get(":path"), h:len() }
				-- A second call gives the trailers after the body: none here.
				seen.second = { stream:get_headers(LIMIT) }
				respond(stream, 200, "ok")
			end;
		}, function(server)
			local answer = raw(server, "GET /p?q HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-B: b\r\nx-a: 2\r\n"
				.. "Cookie: c=1\r\nConnection: close\r\n\r\n")
			assert.truthy(answer:match("^HTTP/1.1 200"), answer)
		end)
		assert.same("GET", seen.method)
		assert.same("/p?q", seen.path)
		assert.same({ "1", "2" }, seen.multi)
		assert.same({ n = 2, "1", "2" }, seen.seq)
		assert.same("1,2", seen.comma)
		assert.same({}, seen.absent)
		assert.same({ true, false }, seen.has)
		assert.same({ ":method", "GET", false }, seen.geti)
		assert.same(":method :scheme :path :authority x-a x-b x-a cookie connection", seen.names)
		assert.same(string.format("http.headers{%d headers}", seen.len), seen.tostring)
		assert.truthy(seen.clone_is_real)
		assert.truthy(seen.real)
		assert.same({ "changed", "/p?q", seen.len }, seen.after)
		assert.same({}, seen.second)
	end)

	-- write_headers reads lua-http's objects in Rust and flattens the others in Lua.
	it("writes lua-http's headers, other headers objects and numbers; a bad name is EINVAL", function()
		local bad = {}
		with_server({
			onstream = function(_, stream)
				local req = assert(stream:get_headers())
				local path = req:get(":path")
				if path == "/number" then
					local h = http_headers.new()
					h:append(":status", "200")
					h:append("x-number", 42)
					assert(stream:write_headers(h, true))
				elseif path == "/other" then
					local h = require "onstream.headers".new()
					h:append(":status", "201")
					h:append("X-Other", "yes")
					assert(stream:write_headers(h, true))
				else
					local h = http_headers.new()
					h:append(":status", "200")
					h:append("bad name", "x")
					bad = { stream:write_headers(h, false) }
					respond(stream, 500)
				end
			end;
		}, function(server)
			local number = raw(server, "GET /number HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			assert.truthy(number:match("^HTTP/1.1 200") and number:match("\r\nx%-number: 42\r\n"), number)
			local other = raw(server, "GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			assert.truthy(other:match("^HTTP/1.1 201") and other:match("\r\nx%-other: yes\r\n"), other)
			local answer = raw(server, "GET /bad HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			assert.truthy(answer:match("^HTTP/1.1 500"), answer)
		end)
		assert.same(nil, bad[1])
		assert.truthy(tostring(bad[2]):match("invalid header field"), tostring(bad[2]))
		assert.same(ce.EINVAL, bad[3])
	end)

	it("gives trailers on a later get_headers, and ETIMEDOUT when the body stalls", function()
		local seen = {}
		with_server({
			onstream = function(_, stream)
				local path = assert(stream:get_headers()):get(":path")
				if path == "/stall" then
					seen.stall = { stream:get_headers(0.05) }
					-- What was read while waiting is still the body's.
					seen.stall_body = stream:get_body_chars(3)
					respond(stream, 200, "stalled")
				else
					local trailers = assert(stream:get_headers(LIMIT))
					seen.trailer = trailers:get("x-sum")
					seen.body = stream:get_body_as_string()
					seen.third = { stream:get_headers(LIMIT) }
					respond(stream, 200, "trailers")
				end
			end;
		}, function(server)
			local answer = raw(server, "POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
				.. "Connection: close\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 42\r\n\r\n")
			assert.truthy(answer:match("^HTTP/1.1 200"), answer)
			local _, host, port = server:localname()
			local sock = assert(cs.connect(host, port))
			sock:setmode("b", "b")
			-- Three bytes of a body announced as ten, then nothing.
			assert(sock:write("POST /stall HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"))
			assert(sock:flush())
			local status = assert(sock:read("*l"))
			assert.truthy(status:match("^HTTP/1.1 200"), status)
			sock:close()
		end)
		assert.same("42", seen.trailer)
		assert.same("abc", seen.body)
		assert.same({}, seen.third)
		assert.same({ nil, "timed out", ce.ETIMEDOUT }, { seen.stall[1], seen.stall[2], seen.stall[3] })
		assert.same("abc", seen.stall_body)
	end)

	it("answers over HTTP/2 by prior knowledge, with stream.connection.version 2", function()
		local seen
		with_server({
			onstream = function(_, stream)
				seen = stream.connection.version
				respond(stream, 200, "two")
			end;
		}, function(server)
			local req = http_request.new_from_uri(uri(server, "/"))
			req.version = 2
			local headers, stream = assert(req:go(LIMIT))
			assert.same("200", headers:get(":status"))
			assert.same("two", assert(stream:get_body_as_string()))
		end)
		assert.same(2, seen)
	end)

	it("answers as HTTP/1.0 when pinned with version = 1.0", function()
		local seen
		with_server({
			version = 1.0;
			onstream = function(_, stream)
				seen = stream.connection.version
				respond(stream, 200, "old")
			end;
		}, function(server)
			local headers, stream = assert(http_request.new_from_uri(uri(server, "/")):go(LIMIT))
			assert.same("200", headers:get(":status"))
			assert.same(1.0, stream.peer_version)
			assert.same("old", assert(stream:get_body_as_string()))
		end)
		assert.same(1.0, seen)
	end)

	it("makes a self-signed certificate for tls = true and serves HTTPS", function()
		with_server({
			tls = true;
			onstream = function(_, stream)
				respond(stream, 200, "secret")
			end;
		}, function(server)
			local req = http_request.new_from_uri(uri(server, "/", "https"))
			local ctx = require "http.tls".new_client_context()
			ctx:setVerify(require "openssl.ssl.context".VERIFY_NONE)
			req.ctx = ctx
			local headers, stream = assert(req:go(LIMIT))
			assert.same("200", headers:get(":status"))
			assert.same("secret", assert(stream:get_body_as_string()))
		end)
	end)

	it("serves a TLS client that offers only an ALPN protocol it does not know", function()
		with_server({
			tls = true;
			onstream = function(_, stream)
				respond(stream, 200, "no alpn")
			end;
		}, function(server)
			local req = http_request.new_from_uri(uri(server, "/", "https"))
			local ctx = require "http.tls".new_client_context()
			ctx:setVerify(require "openssl.ssl.context".VERIFY_NONE)
			ctx:setAlpnProtos { "foo" }
			req.ctx = ctx
			local headers, stream = assert(req:go(LIMIT))
			assert.same("200", headers:get(":status"))
			assert.same("no alpn", assert(stream:get_body_as_string()))
		end)
	end)

	describe("ctx as PEM", function()

		-- Serves HTTPS with `ctx`; returns the SHA-256 of the certificate the client saw.
		local function served_certificate(ctx)
			local digest
			with_server({
				tls = true;
				ctx = ctx;
				onstream = function(_, stream)
					respond(stream, 200, "pem")
				end;
			}, function(server)
				local req = http_request.new_from_uri(uri(server, "/", "https"))
				local client_ctx = require "http.tls".new_client_context()
				client_ctx:setVerify(require "openssl.ssl.context".VERIFY_NONE)
				req.ctx = client_ctx
				local headers, stream = assert(req:go(LIMIT))
				-- Asked before the body is read: lua-http closes the connection after it.
				local ssl = assert(stream.connection:checktls())
				digest = assert(ssl:getPeerCertificate()):digest("sha256", "s")
				assert.same("200", headers:get(":status"))
				assert.same("pem", assert(stream:get_body_as_string()))
			end)
			return digest
		end

		it("serves the certificate given as PEM text", function()
			local cert, key, digest = make_pem()
			assert.same(digest, served_certificate { cert = cert; key = key })
		end)

		it("serves the certificate given as paths of PEM files", function()
			local cert, key, digest = make_pem()
			local cert_path, key_path = os.tmpname(), os.tmpname()
			for path, text in pairs { [cert_path] = cert; [key_path] = key } do
				local f = assert(io.open(path, "w"))
				assert(f:write(text))
				f:close()
			end
			local got = served_certificate { cert = cert_path; key = key_path }
			os.remove(cert_path)
			os.remove(key_path)
			assert.same(digest, got)
		end)

		it("refuses PEM without a certificate, or a missing file, with nil, err", function()
			local _, key = make_pem()
			for _, ctx in ipairs {
				{ cert = "-----BEGIN NOTHING-----\n-----END NOTHING-----\n"; key = key };
				{ cert = "/nonexistent/cert.pem"; key = key };
			} do
				local server, err = http_server.listen {
					host = "127.0.0.1";
					port = 0;
					tls = true;
					ctx = ctx;
					onstream = function() end;
				}
				assert.falsy(server)
				assert.truthy(err:find("ctx.cert", 1, true) or err:find("/nonexistent/cert.pem", 1, true), err)
			end
		end)
	end)

	it("returns nil, err, ETIMEDOUT from write_chunk(timeout) to a client that reads nothing", function()
		local got, n_written
		local done = cc.new()
		with_server({
			onstream = function(_, stream)
				local h = http_headers.new()
				h:append(":status", "200")
				assert(stream:write_headers(h, false))
				local block = string.rep("x", 64 * 1024)
				-- Bounded: loopback buffers hold a few MB; 1000 blocks are 64 MB.
				for i = 1, 1000 do
					local ok, err, errno = stream:write_chunk(block, false, 0.05)
					if not ok then
						got, n_written = { ok, err, errno }, i - 1
						break
					end
				end
				done:signal()
			end;
		}, function(server)
			local _, host, port = server:localname()
			local sock = assert(cs.connect(host, port))
			sock:setmode("b", "b")
			assert(sock:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			assert(sock:flush())
			-- Reads nothing until the handler gave up writing.
			if got == nil then
				assert(done:wait(LIMIT))
			end
			sock:close()
		end)
		assert.truthy(got, "every write went through")
		assert.same({ nil, "timed out", ce.ETIMEDOUT }, got)
		assert.truthy(n_written > 0)
	end)

	it("refuses a luaossl context and names its replacement", function()
		local ctx = require "http.tls".new_server_context()
		local ok, err = pcall(http_server.listen, {
			host = "127.0.0.1";
			port = 0;
			ctx = ctx;
			onstream = function() end;
		})
		assert.falsy(ok)
		assert.truthy(tostring(err):find("cert = ", 1, true))
	end)

	it("reads bodies piecewise: chars, until a pattern, unget, the rest", function()
		local parts = {}
		with_server({
			onstream = function(_, stream)
				parts.first = stream:get_body_chars(3)
				parts.line = stream:get_body_until("\n", true, false)
				stream:unget("<back>")
				parts.rest = stream:get_body_as_string()
				parts.after = { stream:get_next_chunk() }
				respond(stream, 204)
			end;
		}, function(server)
			local req = http_request.new_from_uri(uri(server, "/"))
			req.headers:upsert(":method", "POST")
			req:set_body("abcdef\nghi")
			local headers = assert(req:go(LIMIT))
			assert.same("204", headers:get(":status"))
		end)
		assert.same("abc", parts.first)
		assert.same("def", parts.line)
		assert.same("<back>ghi", parts.rest)
		assert.same({}, parts.after)
	end)

	it("saves a body to a file and sends a file as a body", function()
		local saved
		with_server({
			onstream = function(_, stream)
				local f = assert(stream:get_body_as_file())
				saved = f:read("*a")
				f:seek("set")
				local h = http_headers.new()
				h:append(":status", "200")
				assert(stream:write_headers(h, false))
				assert(stream:write_body_from_file(f))
				f:close()
			end;
		}, function(server)
			local req = http_request.new_from_uri(uri(server, "/"))
			req.headers:upsert(":method", "PUT")
			req:set_body(string.rep("0123456789", 20000))
			local _, stream = assert(req:go(LIMIT))
			assert.same(200000, #assert(stream:get_body_as_string()))
		end)
		assert.same(200000, #saved)
	end)

	it("runs handlers as cqueues coroutines: one waits on a condition another signals", function()
		local cond = cc.new()
		local order = {}
		with_server({
			onstream = function(_, stream)
				local path = assert(stream:get_headers()):get(":path")
				if path == "/wait" then
					cond:wait()
					order[#order + 1] = "waited"
				else
					cqueues.sleep(0)
					order[#order + 1] = "signalled"
					cond:signal()
				end
				respond(stream, 200, path)
			end;
		}, function(server)
			local done = cc.new()
			local n = 0
			for _, path in ipairs { "/wait", "/signal" } do
				cqueues.running():wrap(function()
					local _, stream = assert(http_request.new_from_uri(uri(server, path)):go(LIMIT))
					assert.same(path, stream:get_body_as_string())
					n = n + 1
					done:signal()
				end)
			end
			while n < 2 do
				done:wait()
			end
		end)
		assert.same({ "signalled", "waited" }, order)
	end)

	it("returns nil, err, ETIMEDOUT when a body does not come within the timeout", function()
		local got
		with_server({
			onstream = function(_, stream)
				got = { stream:get_next_chunk(0.01) }
				respond(stream, 408)
			end;
		}, function(server)
			local _, host, port = server:localname()
			local sock = assert(cs.connect(host, port))
			sock:setmode("b", "b")
			assert(sock:write("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"))
			assert(sock:flush())
			-- The body never comes: the handler's read gives up, and its answer arrives.
			local status = assert(sock:read("*l"))
			assert.truthy(status:match("^HTTP/1.1 408"), status)
			sock:close()
		end)
		assert.same(nil, got[1])
		assert.same(ce.ETIMEDOUT, got[3])
	end)

	it("reports a handler's error to onerror and answers 503", function()
		local reported
		with_server({
			onstream = function()
				error("boom")
			end;
			onerror = function(_, _, op, err)
				reported = op .. ": " .. tostring(err)
			end;
		}, function(server)
			local headers = assert(http_request.new_from_uri(uri(server, "/")):go(LIMIT))
			assert.same("503", headers:get(":status"))
		end)
		assert.truthy(reported:find("onstream", 1, true))
		assert.truthy(reported:find("boom", 1, true))
	end)

	it("reports a handler that failed after waiting, and serves the next requests", function()
		local reported = {}
		with_server({
			onstream = function(_, stream)
				local path = assert(stream:get_headers()):get(":path")
				-- Every handler waits once, so each goes through a cqueues thread and back
				-- to the pool; the failing one ends its coroutine.
				cqueues.sleep(0)
				if path == "/fail" then
					error("late boom")
				end
				respond(stream, 200, path)
			end;
			onerror = function(_, _, op, err)
				reported[#reported + 1] = op .. ": " .. tostring(err)
			end;
		}, function(server)
			for i = 1, 5 do
				local path = i == 3 and "/fail" or "/ok" .. i
				local headers, stream = assert(http_request.new_from_uri(uri(server, path)):go(LIMIT))
				if path == "/fail" then
					assert.same("503", headers:get(":status"))
				else
					assert.same("200", headers:get(":status"))
					assert.same(path, assert(stream:get_body_as_string()))
				end
			end
		end)
		assert.same(1, #reported)
		assert.truthy(reported[1]:find("late boom", 1, true))
	end)

	it("hands over the connection with take_socket, bytes already sent included", function()
		local got
		with_server({
			onstream = function(_, stream)
				respond(stream, 101, nil, { upgrade = "echo", connection = "upgrade" })
				local sock = assert(stream:take_socket())
				got = sock:read(5)
				assert(sock:write("pong:" .. got))
				assert(sock:flush())
				sock:close()
			end;
		}, function(server)
			local answer = raw(server, "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\nearly")
			assert.truthy(answer:match("^HTTP/1.1 101"))
			assert.truthy(answer:match("\r\n\r\npong:early$"))
		end)
		assert.same("early", got)
	end)

	-- Autobahn 3.3 on lua/examples/websocket_echo.lua: the handler echoes a frame, sends a
	-- close and closes its socket, while the client's ping is on its way. The bridge
	-- behind take_socket read the ping, failed to pass it to the closed handler (EPIPE)
	-- and closed the connection at once, losing the echo and the close still in the
	-- socket pair. The handler sends the client's ping itself, after its close and before
	-- it yields, so that the bridge finds both at its next step. Over cleartext HTTP/1 the
	-- handler has the connection's own socket (no bridge); over TLS, the bridge.
	for _, tls in ipairs { false, true } do
		it("passes on what the handler wrote before it closed, though the client sent more"
			.. (tls and " (TLS)" or ""), function()
			-- Client frames are masked; a zero key leaves the payload as it is.
			local mask = "\0\0\0\0"
			local text = "\129" .. string.char(128 + 13) .. mask .. "Hello, world!"
			local ping = "\137\128" .. mask
			local echo = "\129\13Hello, world!"
			local close = "\136\24\3\234Reserved bits not zero"
			local client
			with_server({
				tls = tls;
				onstream = function(_, stream)
					respond(stream, 101, nil, { upgrade = "websocket", connection = "upgrade" })
					local sock = assert(stream:take_socket())
					assert.same(text, sock:read(#text))
					assert(sock:write(echo .. close))
					assert(sock:flush())
					sock:close()
					assert(client:write(ping))
					assert(client:flush())
				end;
			}, function(server)
				local _, host, port = server:localname()
				client = assert(cs.connect(host, port))
				client:setmode("b", "b")
				if tls then
					local ctx = require "http.tls".new_client_context()
					ctx:setVerify(require "openssl.ssl.context".VERIFY_NONE)
					assert(client:starttls(ctx, LIMIT))
				end
				assert(client:write("GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n" .. text))
				assert(client:flush())
				local got = client:read("*a") or ""
				client:close()
				assert.truthy(got:match("^HTTP/1.1 101"))
				assert.same(echo .. close, got:sub(-#(echo .. close)))
			end)
		end)
	end

	-- A TLS connection taken with take_socket is bridged by a task on the server's loop.
	-- A client that never reads held that bridge (both sockets, two buffers) forever
	-- once the handler had given up and closed: the bridge now ends when the handler's
	-- output has waited on the client for send_timeout, and the server empties while the
	-- client still holds its end.
	it("ends a TLS take_socket bridge whose client never reads, after send_timeout", function()
		local wrote, handler_done = 0, false
		local cert, key = make_pem()
		local server = assert(http_server.new {
			tls = true;
			ctx = { cert = cert; key = key };
			send_timeout = 0.3;
			onstream = function(_, stream)
				respond(stream, 101, nil, { upgrade = "flood", connection = "upgrade" })
				local sock = assert(stream:take_socket())
				sock:setmode("b", "b")
				local chunk = string.rep("x", 64 * 1024)
				for _ = 1, 1024 do
					local ok = sock:xwrite(chunk, "n", 0.5)
					if not ok then
						break
					end
					wrote = wrote + #chunk
				end
				sock:close()
				handler_done = true
			end;
		})
		local s, c = assert(cs.pair())
		assert(server:add_socket(s))
		local cq = cqueues.new()
		local drained = false
		cq:wrap(function()
			assert(server:loop())
			drained = true
		end)
		local cut_while_open = false
		cq:wrap(function()
			local ctx = require "http.tls".new_client_context()
			ctx:setVerify(require "openssl.ssl.context".VERIFY_NONE)
			assert(c:starttls(ctx, LIMIT))
			c:setmode("b", "b")
			assert(c:write("GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: flood\r\n\r\n"))
			assert(c:flush())
			-- Never read: wait (bounded) for the server to let go of the connection.
			local deadline = cqueues.monotime() + 5
			while not drained and cqueues.monotime() < deadline do
				cqueues.sleep(0.05)
			end
			cut_while_open = drained
			c:close()
		end)
		assert(cq:loop(LIMIT))
		assert.truthy(handler_done, "the handler did not finish")
		assert.truthy(wrote < 1024 * 64 * 1024, "the client took everything")
		assert.truthy(cut_while_open, "the bridge outlived send_timeout toward a client that never reads")
	end)

	it("takes the connection's own socket over cleartext HTTP/1", function()
		local peer, read
		with_server({
			onstream = function(_, stream)
				respond(stream, 101, nil, { upgrade = "echo", connection = "upgrade" })
				local sock = assert(stream:take_socket())
				peer = { sock:peername() }
				read = sock:read(5)
				sock:close()
			end;
		}, function(server)
			local _, host, port = server:localname()
			local client = assert(cs.connect(host, port))
			client:setmode("b", "b")
			assert(client:write("GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\nearly"))
			assert(client:flush())
			client:read("*a")
			local _, chost, cport = client:localname()
			client:close()
			-- The socket pair of a bridge would have no address.
			assert.same({ cs.AF_INET, chost, cport }, peer)
		end)
		assert.same("early", read)
	end)

	it("speaks WebSocket through lua-http's http.websocket.new_from_stream", function()
		with_server({
			onstream = function(_, stream)
				local ws = assert(http_websocket.new_from_stream(stream, assert(stream:get_headers())))
				assert(ws:accept())
				while true do
					local msg, opcode = ws:receive()
					if msg == nil then
						break
					end
					assert(ws:send(msg, opcode))
				end
				ws:close()
			end;
		}, function(server)
			local ws = http_websocket.new_from_uri(uri(server, "/", "ws"))
			assert(ws:connect(LIMIT))
			assert(ws:send("hello"))
			assert.same("hello", (ws:receive(LIMIT)))
			assert(ws:send(string.rep("x", 100000), "binary"))
			assert.same(100000, #assert(ws:receive(LIMIT)))
			assert(ws:close())
		end)
	end)

	it("serves a socket given with add_socket, and its controller empties after", function()
		local server = assert(http_server.new {
			tls = false;
			onstream = function(_, stream)
				respond(stream, 200, "paired")
			end;
		})
		local s, c = assert(cs.pair())
		assert(server:add_socket(s))
		local cq = cqueues.new()
		cq:wrap(function()
			assert(server:loop())
		end)
		cq:wrap(function()
			local conn = assert(http_client.negotiate(c, { version = 1.1 }))
			local stream = assert(conn:new_stream())
			local h = http_headers.new()
			h:append(":method", "GET")
			h:append(":scheme", "http")
			h:append(":path", "/")
			h:append(":authority", "x")
			assert(stream:write_headers(h, true))
			assert.same("200", assert(stream:get_headers()):get(":status"))
			assert.same("paired", stream:get_body_as_string())
			conn:close()
		end)
		assert(cq:loop(LIMIT))
		assert.truthy(cq:empty())
	end)

	it("gives a stream for an added socket whose first bytes are no request, and its socket", function()
		local seen = {}
		local server = assert(http_server.new {
			tls = false;
			onstream = function(s, stream)
				seen.head = { stream:get_headers() }
				local sock = assert(stream.connection:take_socket())
				s:close()
				seen.read = sock:read("*a")
				sock:close()
			end;
		})
		local s, c = assert(cs.pair())
		assert(server:add_socket(s))
		local cq = cqueues.new()
		cq:wrap(function()
			assert(server:loop())
		end)
		cq:wrap(function()
			-- Token characters, then the end: no method and space ever comes.
			assert(c:write("hello"))
			assert(c:flush())
			c:close()
		end)
		assert(cq:loop(LIMIT))
		assert.truthy(cq:empty())
		assert.same({ nil, "not an HTTP request", ce.EILSEQ }, seen.head)
		assert.same("hello", seen.read)
	end)

	it("accepts from a cqueues listening socket given to new", function()
		local sock = assert(cs.listen { host = "127.0.0.1"; port = 0 })
		local server = assert(http_server.new {
			socket = sock;
			tls = false;
			onstream = function(s, stream)
				respond(stream, 200, "from a given socket")
				s:close()
			end;
		})
		assert(server:listen())
		local family, host, port = server:localname()
		assert.same(cs.AF_INET, family)
		local cq = cqueues.new()
		cq:wrap(function()
			assert(server:loop())
		end)
		cq:wrap(function()
			local url = string.format("http://%s:%d/", host, port)
			local _, stream = assert(http_request.new_from_uri(url):go(LIMIT))
			assert.same("from a given socket", stream:get_body_as_string())
		end)
		assert(cq:loop(LIMIT))
		assert.truthy(cq:empty())
	end)

	it("listen(timeout) binds a given socket named by host name, and returns nil, err, errno on failure", function()
		local named = assert(http_server.new {
			socket = assert(cs.listen { host = "localhost"; port = 0 });
			tls = false;
			onstream = function() end;
		})
		assert.same(true, named:listen(LIMIT))
		local family = named:localname()
		assert.truthy(family == cs.AF_INET or family == cs.AF_INET6)
		named:close()

		local taken = assert(http_server.listen {
			host = "127.0.0.1";
			port = 0;
			tls = false;
			onstream = function() end;
		})
		assert(taken:listen(LIMIT))
		local _, _, port = taken:localname()
		-- The same port again, through onstream's bind and through cqueues'.
		local again = assert(http_server.listen {
			host = "127.0.0.1";
			port = port;
			reuseaddr = false;
			tls = false;
			onstream = function() end;
		})
		local ok, err, errno = again:listen(LIMIT)
		assert.same({ nil, ce.EADDRINUSE }, { ok, errno })
		assert.same("string", type(err))
		local given = assert(http_server.new {
			socket = assert(cs.listen { host = "127.0.0.1"; port = port; reuseaddr = false });
			tls = false;
			onstream = function() end;
		})
		ok, err, errno = given:listen(LIMIT)
		assert.same({ nil, ce.EADDRINUSE }, { ok, errno })
		assert.same("string", type(err))
		again:close()
		given:close()
		taken:close()
	end)

	it("pauses and resumes accepting", function()
		with_server({
			onstream = function(_, stream)
				respond(stream, 200, "ok")
			end;
		}, function(server)
			server:pause()
			local _, host, port = server:localname()
			local sock = assert(cs.connect(host, port))
			sock:setmode("b", "b")
			assert(sock:write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
			assert(sock:flush())
			-- Paused: nothing is answered (bounded wait).
			local line, err = sock:xread("*l", nil, 0.05)
			assert.same({ nil, ce.ETIMEDOUT }, { line, err })
			sock:clearerr()
			server:resume()
			assert.truthy(assert(sock:read("*a")):match("^HTTP/1.1 200"))
			sock:close()
		end)
	end)

	it("works as a cqueues pollable: pollfd, events, timeout, step", function()
		local server = assert(http_server.listen {
			host = "127.0.0.1";
			port = 0;
			tls = false;
			onstream = function(s, stream)
				respond(stream, 200, "stepped")
				s:close()
			end;
		})
		assert(server:listen())
		assert.same("number", type(server:pollfd()))
		assert.truthy(server:events():find("r", 1, true))
		local cq = cqueues.new()
		cq:wrap(function()
			local _, stream = assert(http_request.new_from_uri(uri(server, "/")):go(LIMIT))
			assert.same("stepped", stream:get_body_as_string())
		end)
		cq:wrap(function()
			-- The server polled as an object, stepped by hand.
			local deadline = cqueues.monotime() + LIMIT
			while not server:empty() and cqueues.monotime() < deadline do
				cqueues.poll(server)
				assert(server:step(0))
			end
		end)
		assert(cq:loop(LIMIT))
		assert.truthy(server:empty())
	end)

	describe("survives what froze or killed lua-http", function()
		local function survives(request, status_pattern)
			local served = 0
			with_server({
				tls_auto = true;
				onstream = function(_, stream)
					served = served + 1
					respond(stream, 200, "fine")
				end;
				onerror = function(_, _, op, err)
					error("onerror reached: " .. op .. ": " .. tostring(err))
				end;
			}, function(server)
				local answer = raw(server, request)
				if status_pattern then
					assert.truthy(answer:match(status_pattern), answer)
				end
				local headers = assert(http_request.new_from_uri(uri(server, "/after")):go(LIMIT))
				assert.same("200", headers:get(":status"))
			end)
			assert.same(1, served)
		end

		it("Content-Length: abc", function()
			survives("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", "^HTTP/1.1 400")
		end)
		it("a negative Content-Length", function()
			survives("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", "^HTTP/1.1 400")
		end)
		it("a Transfer-Encoding that does not end in chunked", function()
			survives("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", "^HTTP/1.1 [45]0[01]")
		end)
		it("a broken TLS handshake", function()
			-- A TLS record header announcing a ClientHello, then garbage.
			survives("\22\3\1\0\5\1\0\0\1\255garbage")
		end)
	end)
end)
