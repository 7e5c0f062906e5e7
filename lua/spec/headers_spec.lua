-- onstream.headers: the header list used when lua-http is not installed, with the methods
-- of lua-http's http.headers that handlers and lua-http's websocket call.

local new_headers = require "onstream.headers".new

describe("onstream.headers", function()
	it("keeps order and repeats, lower-cases names, and iterates with each()", function()
		local h = new_headers()
		h:append(":status", "200")
		h:append("Set-Cookie", "a=1")
		h:append("set-cookie", "b=2")
		h:append("X-Thing", 42)
		local seen = {}
		for name, value, never_index in h:each() do
			seen[#seen + 1] = { name, value, never_index }
		end
		assert.same({
			{ ":status", "200", false },
			{ "set-cookie", "a=1", true },
			{ "set-cookie", "b=2", true },
			{ "x-thing", "42", false },
		}, seen)
		assert.same(4, h:len())
	end)

	it("answers get, get_as_sequence, get_comma_separated and has", function()
		local h = new_headers()
		h:append("accept", "a")
		h:append("accept", "b")
		assert.same({ "a", "b" }, { h:get("accept") })
		assert.same({ n = 2, "a", "b" }, h:get_as_sequence("accept"))
		assert.same("a,b", h:get_comma_separated("accept"))
		assert.is_nil(h:get_comma_separated("missing"))
		assert.truthy(h:has("accept"))
		assert.falsy(h:has("missing"))
	end)

	it("deletes, upserts, modifies by index and clones independently", function()
		local h = new_headers()
		h:append("a", "1")
		h:append("b", "2")
		h:append("a", "3")
		local copy = h:clone()
		assert.truthy(h:delete("a"))
		assert.falsy(h:delete("a"))
		h:upsert("b", "two")
		h:modifyi(1, "TWO")
		assert.same({ "b", "TWO", false }, { h:geti(1) })
		assert.same(1, h:len())
		assert.same(3, copy:len())
	end)

	it("sorts pseudo-headers first and keeps equal names in order", function()
		local h = new_headers()
		h:append("b", "1")
		h:append(":status", "200")
		h:append("a", "x")
		h:append("b", "2")
		h:sort()
		local names = {}
		for name, value in h:each() do
			names[#names + 1] = name .. "=" .. value
		end
		assert.same({ ":status=200", "a=x", "b=1", "b=2" }, names)
	end)
end)
