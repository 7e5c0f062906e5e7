--[[ onstream.server: lua-http's `http.server` API served by onstream's Rust server.

A program switches with one line:

	local http_server = require "onstream.server"

The shape is lua-http's own: a server owns a cqueues controller (its own, or `.cq`), and
`pollfd`/`events`/`timeout`/`step`/`loop` are that controller's, so the server is a
cqueues pollable and can be nested in another controller. On that controller run:

  - the stepper: one coroutine that waits for the Rust server's pollfd (or its timer, or a
    kick from Lua), calls its non-blocking `step`, and wraps each request that step
    produced in a coroutine;
  - one coroutine per request, running the user's `onstream(server, stream)`.

A stream method that has to wait (a body not arrived yet, a client slower than the
handler) queues the operation in Rust, kicks the stepper, and waits on the stream's
cqueues condition, which the stepper signals when an operation of that stream ended. The
thread only ever blocks in cqueues' own poll.
]]

local core = require "onstream.core"
local cqueues = require "cqueues"
local cc = require "cqueues.condition"
local cs = require "cqueues.socket"
local ce = require "cqueues.errno"
local ca = require "cqueues.auxlib"

-- lua-http users get lua-http's own header objects; without lua-http, an equivalent.
local headers_ok, new_headers = pcall(function()
	return require "http.headers".new
end)
if not headers_ok then
	new_headers = require "onstream.headers".new
end

local unpack = table.unpack or unpack -- luacheck: ignore 143
local monotime = cqueues.monotime

local BLOCK = 64 * 1024

local function pack(...)
	return { n = select("#", ...), ... }
end

-- ===== streams =====

local stream_methods = {}
local stream_mt = {
	__name = "onstream.stream";
	__index = stream_methods;
}

function stream_mt:__tostring()
	return string.format("onstream.stream{version=%s}", tostring(self.peer_version))
end

local connection_methods = {}
local connection_mt = {
	__name = "onstream.connection";
	__index = connection_methods;
}

stream_methods.type = "server"
connection_methods.type = "server"

--[[ Under PUC Lua a stream object is made by `step` in Rust (lua/src/fast.rs,
`push_stream`), so no Lua code runs for it:

	setmetatable({
		_rs = handle;            -- lua/src/fast.rs: the methods every request uses; the
		                         -- rest are on its mlua object (`slow`), made when needed
		_server = server;
		peer_version = version;  -- 1.0, 1.1 or 2
		id = id;                 -- HTTP/2's stream identifier; nil over HTTP/1
		_got = 0;                -- what get_headers gave: 0 nothing yet, 1 the head,
		                         -- 2 the trailers too
		connection = setmetatable({ _stream = <the stream>; version = version },
			connection_mt);
	}, stream_mt)

Under LuaJIT, Lua code makes them (`new_stream`, from the handle, version and id `step`
gives): its compiled code makes tables faster than calls into C do, and C functions
interrupt its traces (bench/lua-callgrind: ~2k instructions per request more for the
C-made objects under LuaJIT, ~1.5k fewer under Lua 5.1). The same holds for `new_head`.
]]
local new_stream
if jit then
	function new_stream(server, rs, version, id)
		local self = setmetatable({
			_rs = rs;
			_server = server;
			peer_version = version;
			id = id;
			_got = 0;
		}, stream_mt)
		self.connection = setmetatable({
			_stream = self;
			version = version;
		}, connection_mt)
		return self
	end
else
	core.set_stream_shape(stream_mt, connection_mt)
end

-- The stream's mlua object (bodies, sockets, trailers, operations that wait).
local function slow(self)
	local s = self._slow
	if s == nil then
		s = core.lstream(self._rs)
		self._slow = s
	end
	return s
end

-- Waits the cqueues way for an operation queued in Rust, then returns its result.
-- The stream's cqueues condition, made when a coroutine first has to wait (most
-- requests never do); `step` signals it when one of the stream's operations ends.
local function cond_of(self)
	local cond = self._cond
	if cond == nil then
		cond = cc.new()
		self._cond = cond
		slow(self):set_signal(function()
			cond:signal()
		end)
	end
	return cond
end

-- Tells the stepper a step is due (the handle's writes and shutdown do the same inline).
-- It steps again before it next waits when it is not waiting now (the flag), and is woken
-- when it is (the condition: a cqueues condition signalled with no waiter is lost).
local function kick(server)
	server._kicked = true
	if server._waiting then
		server._waiting = false
		server._kick_cond:signal()
	end
end

-- An mlua stream method gives its result when the operation ended at once, else the
-- running operation (a userdata: no result is one), waited for here the cqueues way (the
-- handle's methods give false instead: see `wait_pending`). The stepper is kicked either
-- way: the handler task has work at the next step (the operation, or flushing what it
-- wrote).
local function await(self, r1, ...)
	kick(self._server)
	if type(r1) ~= "userdata" then
		return r1, ...
	end
	local cond = cond_of(self)
	while not r1:ready() do
		cqueues.poll(cond)
	end
	return r1:take()
end

-- What is left of a deadline, as the `timeout` argument of the next call.
local function left(deadline)
	if deadline == nil then
		return nil
	end
	return math.max(0, deadline - monotime())
end

-- A headers object from the flat list the Rust side gives: name, value, never_index, ….
local function headers_from(flat)
	local h = new_headers()
	for i = 1, #flat, 3 do
		h:append(flat[i], flat[i + 1], flat[i + 2])
	end
	return h
end

--[[ The request head a handler gets is a view with `http.headers`' methods over the flat
list of its fields (name, value, never_index, …), fetched from Rust when first read:
building lua-http's object (a table per field and per name) cost ~58k instructions for 7
fields under Lua 5.1 (bench/lua-callgrind), more than the rest of a request. `get`, what
most handlers call, asks Rust for that name alone (the list itself, ~10k for a 5-field
head, is then never made); the other reading methods work on the list; the first
changing one (append, delete, modifyi, upsert, sort) turns the view, in place, into a
real headers object (its fields, its metatable), and from then on it is one. Before that, `getmetatable` and raw access (lua-http's private
`_data`, `_index`, `_n`) tell it apart. ]]
local PENDING = {}
local head_methods = {}
local head_mt = {
	__name = "http.headers";
	__index = head_methods;
}

local function flat_of(h)
	local flat = h._flat
	if not flat then
		flat = h[PENDING]:fields()
		h._flat = flat
	end
	return flat
end

-- new_head(rs) is `setmetatable({ [PENDING] = rs, _flat = false }, head_mt)`: a C
-- function (lua/src/fast.rs) under PUC Lua, one Lua call less per request; Lua code
-- under LuaJIT (see `new_stream`).
local new_head
if jit then
	function new_head(rs)
		return setmetatable({ [PENDING] = rs, _flat = false }, head_mt)
	end
else
	new_head = core.new_head(PENDING, head_mt)
end

local function materialise(h)
	local real = headers_from(flat_of(h))
	h[PENDING], h._flat = nil, nil
	for k, v in pairs(real) do
		h[k] = v
	end
	return setmetatable(h, getmetatable(real))
end

for _, name in ipairs { "append", "delete", "modifyi", "upsert", "sort" } do
	head_methods[name] = function(self, ...)
		return materialise(self)[name](self, ...)
	end
end

function head_methods:len()
	return #flat_of(self) / 3
end
head_mt.__len = head_methods.len

function head_mt:__tostring()
	return string.format("http.headers{%d headers}", self:len())
end

function head_methods:clone()
	return headers_from(flat_of(self))
end

function head_methods:each()
	local flat, i = flat_of(self), -2
	return function()
		i = i + 3
		if flat[i] ~= nil then
			return flat[i], flat[i + 1], flat[i + 2]
		end
	end, self
end
head_mt.__pairs = head_methods.each

function head_methods:has(name)
	local flat = flat_of(self)
	for i = 1, #flat, 3 do
		if flat[i] == name then
			return true
		end
	end
	return false
end

function head_methods:geti(i)
	local flat = flat_of(self)
	local j = i * 3 - 2
	if i < 1 or flat[j] == nil then
		return nil
	end
	return flat[j], flat[j + 1], flat[j + 2]
end

function head_methods:get_as_sequence(name)
	local flat, r, n = flat_of(self), {}, 0
	for i = 1, #flat, 3 do
		if flat[i] == name then
			n = n + 1
			r[n] = flat[i + 1]
		end
	end
	r.n = n
	return r
end

-- From Rust by name, a C function (the head's table is never made for a handler that
-- only reads a few fields): each value of that name, none when absent.
head_methods.get = core.head_get(PENDING)

function head_methods:get_comma_separated(name)
	local r = self:get_as_sequence(name)
	if r.n == 0 then
		return nil
	end
	return table.concat(r, ",", 1, r.n)
end

function head_methods:dump(file, prefix)
	file = file or io.stderr
	prefix = prefix or ""
	for name, value in self:each() do
		assert(file:write(string.format("%s%s: %s\n", prefix, name, value)))
	end
	assert(file:flush())
end

--[[ lua-http's semantics: the first call gives the request head (here at once: onstream
makes a stream once its head has arrived); later calls give the trailers once the body
has ended, waiting for it within `timeout` (the body read meanwhile is kept for the body
methods), then nil. ]]
function stream_methods:get_headers(timeout)
	local got = self._got
	if got == 0 then
		self._got = 1
		return new_head(self._rs)
	elseif got == 2 then
		return nil
	end
	local deadline = timeout and monotime() + timeout
	local parts = {}
	while true do
		local chunk, err, errno = self:get_next_chunk(left(deadline))
		if chunk == nil then
			if parts[1] ~= nil then
				self:unget(table.concat(parts))
			end
			if err ~= nil then
				return nil, err, errno
			end
			break
		end
		parts[#parts + 1] = chunk
	end
	self._got = 2
	local flat = slow(self):get_trailers()
	if flat == nil then
		return nil
	end
	return headers_from(flat)
end

function stream_methods:get_next_chunk(timeout)
	return await(self, slow(self):get_next_chunk(timeout))
end

function stream_methods:get_body_as_string(timeout)
	return await(self, slow(self):get_body_as_string(timeout))
end

function stream_methods:get_body_chars(n, timeout)
	local deadline = timeout and monotime() + timeout
	local parts, have = {}, 0
	while have < n do
		local chunk, err, errno = self:get_next_chunk(left(deadline))
		if chunk == nil then
			if err ~= nil then
				if have > 0 then
					self:unget(table.concat(parts))
				end
				return nil, err, errno
			end
			break
		end
		parts[#parts + 1] = chunk
		have = have + #chunk
	end
	local body = table.concat(parts)
	if #body > n then
		self:unget(body:sub(n + 1))
		body = body:sub(1, n)
	end
	if body == "" and n > 0 then
		return nil
	end
	return body
end

function stream_methods:get_body_until(pattern, plain, include_pattern, timeout)
	local deadline = timeout and monotime() + timeout
	local body = ""
	while true do
		local s, e = body:find(pattern, 1, plain)
		if s then
			local rest = body:sub(e + 1)
			if rest ~= "" then
				self:unget(rest)
			end
			return include_pattern and body:sub(1, e) or body:sub(1, s - 1)
		end
		local chunk, err, errno = self:get_next_chunk(left(deadline))
		if chunk == nil then
			if err ~= nil then
				if body ~= "" then
					self:unget(body)
				end
				return nil, err, errno
			end
			if body == "" then
				return nil
			end
			return body
		end
		body = body .. chunk
	end
end

function stream_methods:save_body_to_file(file, timeout)
	local deadline = timeout and monotime() + timeout
	while true do
		local chunk, err, errno = self:get_next_chunk(left(deadline))
		if chunk == nil then
			if err ~= nil then
				return nil, err, errno
			end
			return true
		end
		local ok, werr, werrno = file:write(chunk)
		if not ok then
			return nil, werr, werrno
		end
	end
end

function stream_methods:get_body_as_file(timeout)
	local file, err, errno = io.tmpfile()
	if not file then
		return nil, err, errno
	end
	local ok
	ok, err, errno = self:save_body_to_file(file, timeout)
	if not ok then
		file:close()
		return nil, err, errno
	end
	assert(file:seek("set"))
	return file
end

function stream_methods:unget(str)
	return slow(self):unget(str)
end

-- Fields as the Rust side takes them: name, value, never_index, …, in one table reused
-- by every call (the Rust side copies them at once). Numbers become strings, as
-- lua-http's writers make them.
local flat_fields, flat_n = {}, 0
local lua_http_headers_mt = headers_ok and require "http.headers".mt

local function flatten(headers)
	local flat, n = flat_fields, 0
	for name, value, never_index in headers:each() do
		if type(name) == "number" then
			name = tostring(name)
		end
		if type(value) == "number" then
			value = tostring(value)
		end
		flat[n + 1], flat[n + 2], flat[n + 3] = name, value, never_index
		n = n + 3
	end
	for i = n + 1, flat_n do
		flat[i] = nil
	end
	flat_n = n
	return flat
end

-- An operation the handle started that did not end at once (it gave false), waited for
-- the cqueues way.
local function wait_pending(self)
	local op = slow(self):pending()
	local cond = cond_of(self)
	while not op:ready() do
		cqueues.poll(cond)
	end
	return op:take()
end

--[[ lua-http's headers objects go to Rust as they are: it reads their `_data` entries
itself, with no Lua code per field. A request head passed on as it came gives its list;
any other object (or a lua-http one holding a value that is no string, which Rust does
not read: it gives nothing) is flattened here. ]]
function stream_methods:write_headers(headers, end_stream, timeout)
	local rs = self._rs
	end_stream = not not end_stream
	local mt = getmetatable(headers)
	local ok, err, errno
	if mt == lua_http_headers_mt then
		ok, err, errno = rs:write_headers(headers, end_stream, timeout)
	elseif mt == head_mt then
		ok, err, errno = rs:write_headers(flat_of(headers), end_stream, timeout)
	end
	if ok == nil and err == nil then
		ok, err, errno = rs:write_headers(flatten(headers), end_stream, timeout)
		if ok == nil and err == nil then
			return nil, "invalid header field (not a string)", ce.EINVAL
		end
	end
	local server = self._server
	server._kicked = true
	if server._waiting then
		kick(server)
	end
	if ok == false then
		return wait_pending(self)
	end
	return ok, err, errno
end

function stream_methods:write_continue(timeout)
	return await(self, slow(self):write_continue(timeout))
end

function stream_methods:write_chunk(chunk, end_stream, timeout)
	local ok, err, errno = self._rs:write_chunk(chunk, not not end_stream, timeout)
	local server = self._server
	server._kicked = true
	if server._waiting then
		kick(server)
	end
	if ok == false then
		return wait_pending(self)
	end
	return ok, err, errno
end

function stream_methods:write_body_from_string(str, timeout)
	return self:write_chunk(str, true, timeout)
end

-- `options` is a file, or a table { file = f, count = n } as in lua-http.
function stream_methods:write_body_from_file(options, timeout)
	local deadline = timeout and monotime() + timeout
	local file, count
	if io.type(options) then
		file = options
	else
		file, count = options.file, options.count
	end
	while count == nil or count > 0 do
		local want = count and math.min(count, BLOCK) or BLOCK
		local data, err, errno = file:read(want)
		if data == nil then
			if err ~= nil then
				return nil, err, errno
			end
			if count ~= nil then
				return nil, "file ended before the count given", ce.EIO
			end
			break
		end
		if count then
			count = count - #data
		end
		local ok
		ok, err, errno = self:write_chunk(data, count == 0, left(deadline))
		if not ok then
			return nil, err, errno
		end
		if count == 0 then
			return true
		end
	end
	return self:write_chunk("", true, left(deadline))
end

function stream_methods:shutdown()
	self._rs:shutdown()
	local server = self._server
	server._kicked = true
	if server._waiting then
		kick(server)
	end
	return true
end

function stream_methods:peername()
	return slow(self):peername()
end

function stream_methods:localname()
	return slow(self):localname()
end

-- The connection under the stream, as a cqueues socket (after a 101, or for an
-- extended CONNECT over HTTP/2); bytes the client already sent are read first. Over
-- cleartext HTTP/1 it is the connection's own socket, with those bytes put back into
-- its input buffer; otherwise one end of a socket pair the server bridges to it.
function stream_methods:take_socket()
	local fd, buffered, errno = slow(self):take_socket()
	if not fd then
		return nil, buffered, errno
	end
	self._server:_kick()
	local sock = cs.fdopen(fd)
	sock:setmode("b", "b")
	if buffered and #buffered > 0 then
		assert(sock:unget(buffered))
	end
	return sock
end

function connection_methods:take_socket()
	return self._stream:take_socket()
end

function connection_methods:peername()
	return self._stream:peername()
end

function connection_methods:localname()
	return self._stream:localname()
end

-- ===== the server =====

local server_methods = {
	max_concurrent = math.huge;
	connection_setup_timeout = 10;
	intra_stream_timeout = 10;
}
-- The name is lua-http's: code that checks `tostring(server)` keeps working.
local server_mt = {
	__name = "http.server";
	__index = server_methods;
}

function server_mt:__tostring()
	local n = self._core and self._core:connections() or 0
	return string.format("http.server{socket=%s;n_connections=%d}", tostring(self.socket), n)
end

local LUAOSSL_CTX = "onstream.server: .ctx takes onstream's own TLS settings, "
	.. "{ cert = <PEM text or path>, key = <PEM text or path> }, not a luaossl context"

local function check_ctx(ctx)
	if ctx ~= nil and type(ctx) ~= "table" then
		error(LUAOSSL_CTX, 3)
	end
end

-- The table the Rust side reads (lua-http's fields, checked).
local function core_options(tbl)
	return {
		host = tbl.host;
		port = tbl.port;
		path = tbl.path;
		family = tbl.family;
		v6only = tbl.v6only;
		mode = tbl.mode;
		mask = tbl.mask;
		unlink = tbl.unlink;
		reuseaddr = tbl.reuseaddr;
		reuseport = tbl.reuseport;
		tls = tbl.tls;
		ctx = tbl.ctx;
		version = tbl.version;
		max_concurrent = tbl.max_concurrent;
		connection_setup_timeout = tbl.connection_setup_timeout;
		intra_stream_timeout = tbl.intra_stream_timeout;
		header_read_timeout = tbl.header_read_timeout;
		body_read_timeout = tbl.body_read_timeout;
		send_timeout = tbl.send_timeout;
		close_timeout = tbl.close_timeout;
	}
end

-- The Rust server; for `new` with a socket it is made on first use (cqueues binds
-- lazily, and lua-http does nothing with the socket before its first step either).
-- `timeout` bounds cqueues' listen, which resolves a host name without blocking the thread.
function server_methods:_get_core(timeout)
	if self._core == nil and not self._closed then
		local sock = self.socket
		local ok, err, errno = ca.fileresult(sock:listen(timeout))
		if not ok then
			return nil, err, errno
		end
		self._core = core.new(self._options, sock:pollfd())
	end
	return self._core
end

function server_methods:_kick()
	kick(self)
end

--[[ Handlers run in pooled coroutines, resumed by the stepper itself: most requests run
to their end without waiting (their head is here, their answer fits the buffers), and
then cost no coroutine of their own, no cqueues thread and, on Lua 5.1, no pcall
trampoline (the coroutine is the protected call). A worker yields DONE when its handler
returned and waits for the next stream; one whose handler waits (yields a cqueues poll)
is handed to a cqueues thread, `drive`, that passes its yields up to the controller and
the answers down, and pools it again when the handler returns. A handler's error ends
its coroutine, which is not pooled. ]]
local DONE = {}
local MAX_POOLED = 64

local function worker(server, stream)
	while true do
		server.onstream(server, stream)
		server, stream = coroutine.yield(DONE)
	end
end

-- Reports a handler's failure from a cqueues thread of its own: the default onerror
-- throws, which ends that thread (and makes `loop` return the error, as in lua-http),
-- never the stepper.
local function report(server, stream, err)
	server:onerror()(server, stream, "onstream", err)
end

-- What follows a resume of a worker: `ok, DONE` (the handler returned), `ok, …` (it waits
-- on what it yielded) or `false, err` (it failed).
local function resumed(server, stream, co, ok, first, ...)
	if ok and first == DONE then
		stream:shutdown()
		local pool = server._pool
		if #pool < MAX_POOLED then
			pool[#pool + 1] = co
		end
		return true
	elseif not ok then
		stream:shutdown()
		server.cq:wrap(report, server, stream, first)
		return true
	end
	return false, pack(first, ...)
end

local function drive(server, stream, co, yielded)
	while true do
		local answer = pack(coroutine.yield(unpack(yielded, 1, yielded.n)))
		local ended
		ended, yielded = resumed(server, stream, co, coroutine.resume(co, unpack(answer, 1, answer.n)))
		if ended then
			kick(server)
			return
		end
	end
end

local function run_stream(server, stream)
	local pool = server._pool
	local n = #pool
	local co = pool[n]
	if co then
		pool[n] = nil
	else
		co = coroutine.create(worker)
	end
	local ended, yielded = resumed(server, stream, co, coroutine.resume(co, server, stream))
	if not ended then
		server.cq:wrap(drive, server, stream, co, yielded)
	end
end

-- Steps in a row before the stepper lets the controller's other threads run.
local MAX_STEPS_IN_A_ROW = 16

local function stepper(self)
	local rs
	local pollable = {
		pollfd = function()
			return rs:pollfd()
		end;
		events = function()
			return "r"
		end;
		timeout = function()
			return rs:timeout()
		end;
	}
	local in_a_row = 0
	while true do
		if self._closed and self._core == nil then
			break
		end
		local err, errno
		rs, err, errno = self:_get_core()
		if rs == nil then
			self:onerror()(self, self, "listen", err, errno)
			break
		end
		self._kicked = false
		local ok, streams, errors, step_err, step_errno = rs:step(self)
		if new_stream then
			if streams then
				for i = 1, #streams, 3 do
					run_stream(self, new_stream(self, streams[i], streams[i + 1], streams[i + 2] or nil))
				end
			end
		elseif streams then
			for i = 1, #streams do
				run_stream(self, streams[i])
			end
		end
		if errors then
			for i = 1, #errors do
				self:onerror()(self, self, "onstream", errors[i])
			end
		end
		if not ok then
			self:onerror()(self, self, "step", step_err, step_errno)
		end
		-- Nothing left to serve (closed and drained, or only `add_socket` connections and
		-- all of them done): the controller may become empty, as lua-http's does.
		if rs:empty() then
			break
		end
		-- Work is due at once (handlers just ran, tasks are ready): step again without a
		-- round through the controller, a bounded number of times.
		in_a_row = in_a_row + 1
		if in_a_row >= MAX_STEPS_IN_A_ROW or not (self._kicked or rs:timeout() == 0) then
			in_a_row = 0
			self._waiting = true
			cqueues.poll(pollable, self._kick_cond)
			self._waiting = false
		end
	end
	self._stepping = false
end

function server_methods:_ensure_stepper()
	if not self._stepping then
		self._stepping = true
		self.cq:wrap(stepper, self)
	end
end

local function new_server(tbl, options, rs)
	local cq = tbl.cq
	if cq == nil then
		cq = cqueues.new()
	end
	local self = setmetatable({
		cq = cq;
		socket = tbl.socket;
		onstream = tbl.onstream;
		onerror_ = tbl.onerror;
		tls = tbl.tls;
		version = tbl.version;
		max_concurrent = tbl.max_concurrent;
		connection_setup_timeout = tbl.connection_setup_timeout;
		intra_stream_timeout = tbl.intra_stream_timeout;
		_options = options;
		_core = rs;
		_closed = false;
		_kick_cond = cc.new();
		_stepping = false;
		-- Whether the stepper waits on its pollable and `_kick_cond`, and whether a step
		-- was asked for since its last one.
		_waiting = false;
		_kicked = false;
		-- Idle handler coroutines (see `run_stream`).
		_pool = {};
	}, server_mt)
	self:_ensure_stepper()
	return self
end

local function check_common(tbl)
	if tbl.cq ~= nil then
		assert(cqueues.type(tbl.cq) == "controller", "optional cq field should be a cqueue controller")
	end
	assert(tbl.onstream, "missing 'onstream'")
	check_ctx(tbl.ctx)
end

--[[ new { socket = <cqueues socket>?, onstream = f, … }: a server accepting from the given
listening socket, or (without one) serving only what `add_socket` gives it. ]]
local function new(tbl)
	check_common(tbl)
	if tbl.socket ~= nil then
		assert(cs.type(tbl.socket), "optional socket field should be a cqueues socket")
		-- Its failures are returned, not thrown (lua-http does the same).
		tbl.socket:onerror(function(_, _, why)
			return why
		end)
	end
	if tbl.ctx == nil and tbl.tls ~= false then
		error("TLS settings (.ctx = { cert = …, key = … }) are required when .tls isn't false", 2)
	end
	local options = core_options(tbl)
	local rs
	if tbl.socket == nil then
		rs = core.new(options)
	end
	return new_server(tbl, options, rs)
end

--[[ listen { host = …, port = … | path = …, onstream = f, … }: a server on its own socket,
bound lazily (on the first step, or by :listen()). With TLS possible and no `.ctx`, a
self-signed certificate for `host` is made. ]]
local function listen(tbl)
	check_common(tbl)
	assert(tbl.host or tbl.path, "need host or path")
	local options = core_options(tbl)
	if tbl.host and tbl.port == nil then
		if tbl.tls == true then
			options.port = 443
		elseif tbl.tls == false then
			options.port = 80
		else
			error("need port", 2)
		end
	end
	if tbl.ctx == nil and tbl.tls ~= false and not tbl.host then
		error("TLS settings (.ctx) are required for a UNIX socket unless .tls is false", 2)
	end
	local ok, rs = pcall(core.listen, options)
	if not ok then
		return nil, tostring(rs), ce.EINVAL
	end
	return new_server(tbl, options, rs)
end

function server_methods:onerror_(context, op, err, errno) -- luacheck: ignore 212
	local msg = op
	if err then
		msg = msg .. ": " .. tostring(err)
	end
	error(msg, 2)
end

function server_methods:onerror(...)
	local old = self.onerror_
	if select("#", ...) > 0 then
		self.onerror_ = ...
	end
	return old
end

--[[ Binds now, and returns `nil, err, errno` on failure (lua-http's listen). With a
`.socket` the bind is cqueues' (a host name resolved within `timeout`: `nil, err,
ETIMEDOUT` after it, as lua-http); otherwise onstream's, which does not wait: an address
is bound at once, and a host name is resolved by the system resolver before (the timeout
does not bound that). ]]
function server_methods:listen(timeout)
	if self._closed then
		return true
	end
	local rs, err, errno = self:_get_core(timeout)
	if not rs then
		return nil, err, errno
	end
	if self.socket == nil and self._options.host == nil and self._options.path == nil then
		return true
	end
	local ok
	ok, err, errno = rs:listen()
	self:_kick()
	if not ok then
		return nil, err, errno
	end
	return true
end

function server_methods:localname()
	if self._closed then
		return nil
	end
	local rs, err, errno = self:_get_core()
	if not rs then
		return nil, err, errno
	end
	return rs:localname()
end

function server_methods:pause()
	if self._core then
		self._core:pause()
	end
	self:_kick()
	return true
end

function server_methods:resume()
	if self._core then
		self._core:resume()
	end
	self:_kick()
	return true
end

function server_methods:close()
	if not self._closed then
		self._closed = true
		if self._core then
			self._core:close()
		end
		if self.socket then
			self.socket:close()
			self.socket = nil
		end
	end
	self:_kick()
	return true
end

function server_methods:pollfd()
	return self.cq:pollfd()
end

function server_methods:events()
	return self.cq:events()
end

function server_methods:timeout()
	return self.cq:timeout()
end

function server_methods:empty()
	return self.cq:empty()
end

function server_methods:step(...)
	return self.cq:step(...)
end

function server_methods:loop(...)
	return self.cq:loop(...)
end

function server_methods:connections()
	return self._core and self._core:connections() or 0
end

--[[ A connection whose first bytes are no HTTP request still gets a stream in lua-http
(its HTTP/1 server makes one before reading the head), and a handler may take its socket
(lua-http's spec "taking socket from underlying connection"). onstream answers such
bytes itself, so for `add_socket` (the one way Lua sees a connection before onstream
does) the first bytes are peeked, left in the socket: what can begin a request (a method
and a space, a CRLF before one, a TLS ClientHello) goes to onstream, anything else to
`onstream` as a raw stream over the cqueues socket. Connections onstream accepts itself
are not sniffed: that would need the library to hand over unparsable connections. ]]
local PEEK = 32

-- true: onstream serves it; false: not a request; nil: too few bytes to tell.
local function starts_request(prefix, ended)
	if prefix == "" then
		-- Nothing sent (yet): onstream closes a silent connection as lua-http does.
		return ended or nil
	end
	local first = prefix:byte(1)
	if first == 0x16 or first == 13 or first == 10 then
		return true
	end
	local method = prefix:match("^[%w!#$%%&'*+.^_`|~-]+")
	if method == nil then
		return false
	elseif #method < #prefix then
		return prefix:sub(#method + 1, #method + 1) == " "
	elseif ended or #prefix >= PEEK then
		return false
	end
	return nil
end

local raw_methods = {}
local raw_mt = {
	__name = "onstream.stream";
	__index = raw_methods;
}
raw_methods.type = "server"

local function not_http()
	return nil, "not an HTTP request", ce.EILSEQ
end
for _, name in ipairs {
	"get_headers", "get_next_chunk", "get_body_as_string", "get_body_chars", "get_body_until",
	"save_body_to_file", "get_body_as_file", "write_headers", "write_continue", "write_chunk",
	"write_body_from_string", "write_body_from_file",
} do
	raw_methods[name] = not_http
end

function raw_methods:take_socket()
	local sock = self._socket
	if sock == nil then
		return nil, "socket already taken", ce.EPIPE
	end
	self._socket = nil
	return sock
end

function raw_methods:shutdown()
	if self._socket then
		self._socket:close()
		self._socket = nil
	end
	return true
end

function raw_methods:peername()
	if self._socket then
		return self._socket:peername()
	end
end

function raw_methods:localname()
	if self._socket then
		return self._socket:localname()
	end
end

local function new_raw_stream(server, socket)
	local self = setmetatable({ _socket = socket; _server = server; peer_version = 1.1 }, raw_mt)
	self.connection = setmetatable({ _stream = self; version = 1.1 }, connection_mt)
	return self
end

local function hand_over(self, socket)
	local rs, err, errno = self:_get_core()
	if rs then
		local ok
		ok, err, errno = rs:add_socket(socket:pollfd())
		if not ok then
			rs = nil
		end
	end
	socket:close()
	self:_ensure_stepper()
	self:_kick()
	if not rs then
		self:onerror()(self, self, "add_socket", err, errno)
	end
end

local function sniff_socket(self, socket)
	local fd = socket:pollfd()
	local readable = {
		pollfd = function()
			return fd
		end;
		events = function()
			return "r"
		end;
	}
	local deadline = monotime() + self.connection_setup_timeout
	while true do
		local prefix, ended = core.peek(fd, PEEK)
		local verdict = starts_request(prefix, ended)
		if verdict == false then
			run_stream(self, new_raw_stream(self, socket))
			return
		elseif verdict or monotime() >= deadline then
			-- Past the deadline onstream's own setup timeout decides.
			hand_over(self, socket)
			return
		elseif prefix == "" then
			cqueues.poll(readable, deadline - monotime())
		else
			-- Some bytes wait, too few to tell: the socket stays readable until more come.
			cqueues.sleep(0.005)
		end
	end
end

-- Serves a connected cqueues socket; it is handed over (and closed here) once its first
-- bytes are known. Failures after this returns go to onerror ("add_socket").
function server_methods:add_socket(socket)
	local rs, err, errno = self:_get_core()
	if not rs then
		return nil, err, errno
	end
	self.cq:wrap(sniff_socket, self, socket)
	return true
end

-- Runs `onstream` for a stream (lua-http's add_stream), on the server's controller.
function server_methods:add_stream(stream)
	self.cq:wrap(run_stream, self, stream)
	return true
end

return {
	new = new;
	listen = listen;
	mt = server_mt;
}
