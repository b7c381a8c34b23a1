-- wrk script: POST /api/v1/token/refresh, each request with the refresh token
-- of its own pre-made session (every request is a durable rotation).
-- usage: wrk ... -s refresh.lua URL -- PAIRS_FILE THREADS   (lines: "ACCESS REFRESH")
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  tokens, idx, ok, other = {}, 0, 0, 0
  local n = tonumber(args[2])
  local i = 0
  for line in io.lines(args[1]) do
    if i % n == id then
      local _, _, refresh = string.find(line, " (.+)$")
      tokens[#tokens + 1] = refresh
    end
    i = i + 1
  end
end

function request()
  idx = idx + 1
  local token = tokens[idx] or "exhausted"
  return wrk.format("POST", "/api/v1/token/refresh", { ["Content-Type"] = "application/json" },
    '{"refresh_token":"' .. token .. '"}')
end

function response(status)
  if status == 200 then ok = ok + 1 else other = other + 1 end
end

function done()
  local total_ok, total_other = 0, 0
  for _, t in ipairs(threads) do
    total_ok = total_ok + t:get("ok")
    total_other = total_other + t:get("other")
  end
  io.write(string.format("refresh statuses: %d x 200, %d other\n", total_ok, total_other))
end
