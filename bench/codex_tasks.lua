-- wrk script for bench/codex_tasks.py: POST a binary proompteng.froussard.v1.CodexTask per request.
--
-- Arguments (after `--`): MODE TAG PREFIX_HEX [POOL]
--   MODE        "unique": every request carries a new delivery id "bench-TAG-THREAD-COUNTER";
--               "issues": the same, and every request is about a new issue: field 6 (issue_number) is
--               appended again with a fresh number (for a non-repeated field the last value wins);
--               "replay": requests cycle over the POOL ids "bench-replay-0" .. "bench-replay-(POOL-1)"
--   PREFIX_HEX  the serialised task without its delivery id (fields 1-14), as hex; field 15 (tag byte
--               0x7a, one length byte, the id) is appended here, which is valid because it is the highest
--               field number in the message
-- At the end, one line "WRKJSON {...}" carries the figures (latencies in microseconds).

local next_thread = 0

function setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
end

local function from_hex(text)
  return (text:gsub("..", function(pair) return string.char(tonumber(pair, 16)) end))
end

local mode, tag, prefix, pool, counter, cached
local headers = { ["Content-Type"] = "application/x-protobuf" }

local function varint(value)
  local out = {}
  while value >= 128 do
    out[#out + 1] = string.char(value % 128 + 128)
    value = math.floor(value / 128)
  end
  out[#out + 1] = string.char(value)
  return table.concat(out)
end

local function body_for(id, issue)
  assert(#id < 128, "delivery id too long for a one-byte length")
  local extra = issue and ("\48" .. varint(issue)) or ""
  return prefix .. extra .. "\122" .. string.char(#id) .. id
end

function init(args)
  mode = args[1] or "unique"
  tag = args[2] or "run"
  prefix = from_hex(args[3] or "")
  pool = tonumber(args[4] or "0") or 0
  counter = 0
  if mode == "replay" then
    assert(pool > 0, "replay needs a pool size")
    cached = {}
    for index = 0, pool - 1 do
      cached[index + 1] = wrk.format("POST", "/codex/tasks", headers, body_for("bench-replay-" .. index))
    end
  end
end

function request()
  counter = counter + 1
  if mode == "replay" then
    return cached[(counter + thread_id) % pool + 1]
  end
  local id = "bench-" .. tag .. "-" .. thread_id .. "-" .. counter
  local issue = nil
  if mode == "issues" then
    -- distinct per run (first byte of the tag), thread and request
    issue = string.byte(tag, 1) * 10000000 + thread_id * 1000000 + counter
  end
  return wrk.format("POST", "/codex/tasks", headers, body_for(id, issue))
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,'
      .. '"status_errors":%d,"timeout_errors":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,'
      .. '"mean_us":%.1f}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write, errors.status,
    errors.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean
  ))
end
