-- wrk script: HTTP/1.1 pipelining, <depth> requests per write (default 16).
-- usage: wrk -s bench/pipeline.lua <url> -- [depth]
-- wrk counts every response, so Requests/sec counts requests, not batches.
local batch

init = function(args)
	local depth = tonumber(args[1]) or 16
	local reqs = {}
	for i = 1, depth do
		reqs[i] = wrk.format(nil, "/")
	end
	batch = table.concat(reqs)
end

request = function()
	return batch
end
