-- wrk script: POST one upload body (read from BENCH_BODY) and check each answer's label.
local file = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
local expected = os.getenv("BENCH_EXPECT") or ""

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  checked = 0
  wrong = 0
end

function response(status, headers, body)
  if status == 200 and expected ~= "" then
    checked = checked + 1
    if not string.find(body, expected, 1, true) then
      wrong = wrong + 1
    end
  end
end

function done(summary, latency, requests)
  local total_checked, total_wrong = 0, 0
  for _, thread in ipairs(threads) do
    total_checked = total_checked + thread:get("checked")
    total_wrong = total_wrong + thread:get("wrong")
  end
  io.write(string.format("BENCH_LABELS checked=%d wrong=%d\n", total_checked, total_wrong))
  io.write(string.format("BENCH_LATENCY p50=%d p99=%d\n",
    latency:percentile(50), latency:percentile(99)))
  io.write(string.format(
    "BENCH_SUMMARY requests=%d duration_us=%d errors_status=%d errors_connect=%d " ..
    "errors_read=%d errors_write=%d errors_timeout=%d\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout))
end
