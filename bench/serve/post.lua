-- wrk script for bench/serve: every request POSTs the same multipart/form-data
-- body (one JPEG under the field "images"), read from $BENCH_BODY, with the
-- Content-Type (and its boundary) from $BENCH_CONTENT_TYPE.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
