-- Makes `require "http.server"` give onstream's server: put this folder first on
-- LUA_PATH (scripts/lua-env prints it as ONSTREAM_SHIM). Everything else of lua-http
-- (client, headers, websocket) stays lua-http's.
return require "onstream.server"
