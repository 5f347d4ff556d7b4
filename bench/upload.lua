-- wrk script: POST one request body (read from BENCH_BODY) with the headers in BENCH_HEADERS
-- ("Name: value" lines), and check each answer: it contains BENCH_EXPECT, or the highest of
-- the first list of numbers in it is at index BENCH_ARGMAX.
local file = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
for name, value in string.gmatch(os.getenv("BENCH_HEADERS") or "", "([^:\n]+): ([^\n]*)") do
  wrk.headers[name] = value
end
local expected = os.getenv("BENCH_EXPECT") or ""
local argmax = tonumber(os.getenv("BENCH_ARGMAX") or "")

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  checked = 0
  wrong = 0
  ok = 0
  shed = 0
end

local function highest_index(body)
  local list = string.match(body, "%[%[([^%]]*)%]")
  if not list then return -1 end
  local best, best_index, index = nil, -1, 0
  for number in string.gmatch(list, "[^,%s]+") do
    local value = tonumber(number)
    if value and (best == nil or value > best) then
      best, best_index = value, index
    end
    index = index + 1
  end
  return best_index
end

function response(status, headers, body)
  if status == 503 then shed = shed + 1 end
  if status ~= 200 then return end
  ok = ok + 1
  if expected ~= "" then
    checked = checked + 1
    if not string.find(body, expected, 1, true) then wrong = wrong + 1 end
  elseif argmax then
    checked = checked + 1
    if highest_index(body) ~= argmax then wrong = wrong + 1 end
  end
end

function done(summary, latency, requests)
  local total_checked, total_wrong, total_ok, total_shed = 0, 0, 0, 0
  for _, thread in ipairs(threads) do
    total_checked = total_checked + thread:get("checked")
    total_wrong = total_wrong + thread:get("wrong")
    total_ok = total_ok + thread:get("ok")
    total_shed = total_shed + thread:get("shed")
  end
  io.write(string.format("BENCH_LABELS checked=%d wrong=%d\n", total_checked, total_wrong))
  io.write(string.format("BENCH_LATENCY p50=%d p99=%d\n",
    latency:percentile(50), latency:percentile(99)))
  io.write(string.format("BENCH_STATUS ok=%d shed=%d\n", total_ok, total_shed))
  io.write(string.format(
    "BENCH_SUMMARY requests=%d duration_us=%d errors_status=%d errors_connect=%d " ..
    "errors_read=%d errors_write=%d errors_timeout=%d\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout))
end
