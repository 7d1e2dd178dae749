-- wrk: durable increments on one object (the URL names it), e.g.
--   wrk -t1 -c64 -d8s --latency -s loadtest/wrk/one.lua \
--       http://127.0.0.1:PORT/v1/objects/counter/o0/call/increment
wrk.method = "POST"
wrk.body = '{"by":1}'
wrk.headers["Content-Type"] = "application/json"
