-- wrk: durable increments spread over 100 objects, o0 … o99 in turn, e.g.
--   wrk -t1 -c64 -d8s --latency -s loadtest/wrk/many.lua http://127.0.0.1:PORT
wrk.method = "POST"
wrk.body = '{"by":1}'
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/v1/objects/counter/o" .. (n % 100) .. "/call/increment")
end
