--[[ onstream.headers: an ordered list of header fields with lua-http's `http.headers`
methods, used when lua-http is not installed. Fields keep their order and repeats; each has
a never-index flag (HPACK), on by default for credentials. ]]

local methods = {}
local mt = {
	__name = "onstream.headers";
	__index = methods;
}

local CREDENTIALS = {
	authorization = true;
	["proxy-authorization"] = true;
	cookie = true;
	["set-cookie"] = true;
}

local function new()
	return setmetatable({ _n = 0, _names = {}, _values = {}, _never = {} }, mt)
end

function mt:__len()
	return self._n
end

function methods:len()
	return self._n
end

function methods:clone()
	local c = new()
	for i = 1, self._n do
		c:append(self._names[i], self._values[i], self._never[i])
	end
	return c
end

function methods:append(name, value, never_index)
	name = tostring(name):lower()
	if never_index == nil then
		never_index = CREDENTIALS[name] or false
	end
	local i = self._n + 1
	self._n = i
	self._names[i], self._values[i], self._never[i] = name, tostring(value), never_index
end

function methods:each()
	local i = 0
	return function()
		i = i + 1
		if i <= self._n then
			return self._names[i], self._values[i], self._never[i]
		end
	end
end

function methods:has(name)
	for i = 1, self._n do
		if self._names[i] == name then
			return true
		end
	end
	return false
end

function methods:delete(name)
	local found = false
	local i = 1
	while i <= self._n do
		if self._names[i] == name then
			table.remove(self._names, i)
			table.remove(self._values, i)
			table.remove(self._never, i)
			self._n = self._n - 1
			found = true
		else
			i = i + 1
		end
	end
	return found
end

function methods:geti(i)
	if i >= 1 and i <= self._n then
		return self._names[i], self._values[i], self._never[i]
	end
end

function methods:get_as_sequence(name)
	local seq = { n = 0 }
	for i = 1, self._n do
		if self._names[i] == name then
			seq.n = seq.n + 1
			seq[seq.n] = self._values[i]
		end
	end
	return seq
end

function methods:get(name)
	local seq = self:get_as_sequence(name)
	return (table.unpack or unpack)(seq, 1, seq.n) -- luacheck: ignore 143
end

function methods:get_comma_separated(name)
	local seq = self:get_as_sequence(name)
	if seq.n == 0 then
		return nil
	end
	return table.concat(seq, ",", 1, seq.n)
end

function methods:modifyi(i, value, never_index)
	assert(i >= 1 and i <= self._n, "index out of range")
	self._values[i] = tostring(value)
	if never_index ~= nil then
		self._never[i] = never_index
	end
end

function methods:upsert(name, value, never_index)
	name = tostring(name):lower()
	for i = 1, self._n do
		if self._names[i] == name then
			self:delete(name)
			break
		end
	end
	self:append(name, value, never_index)
end

-- Pseudo-headers first, then by name; equal names keep their order.
function methods:sort()
	local idx = {}
	for i = 1, self._n do
		idx[i] = i
	end
	local names = self._names
	table.sort(idx, function(a, b)
		local pa, pb = names[a]:sub(1, 1) == ":", names[b]:sub(1, 1) == ":"
		if pa ~= pb then
			return pa
		end
		if names[a] ~= names[b] then
			return names[a] < names[b]
		end
		return a < b
	end)
	local n2, v2, f2 = {}, {}, {}
	for k, i in ipairs(idx) do
		n2[k], v2[k], f2[k] = self._names[i], self._values[i], self._never[i]
	end
	self._names, self._values, self._never = n2, v2, f2
end

function methods:dump(file, prefix)
	file = file or io.stderr
	prefix = prefix or ""
	for name, value in self:each() do
		assert(file:write(string.format("%s%s: %s\n", prefix, name, value)))
	end
	assert(file:flush())
end

return {
	new = new;
	methods = methods;
	mt = mt;
}
