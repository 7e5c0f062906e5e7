-- For LUA_INIT="@…/preload.lua": `require "http.server"` gives onstream's server even
-- where a copy of lua-http's own comes first on package.path (running lua-http's spec
-- from its source tree).
package.preload["http.server"] = function()
	return require "onstream.server"
end
