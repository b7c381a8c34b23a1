-- wrk script: DELETE /api/v1/logout, each request with its own pre-forged token.
-- usage: wrk ... -s logout.lua URL -- TOKEN_FILE THREADS  (the first word of each line)
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
    if i % n == id then tokens[#tokens + 1] = string.match(line, "^(%S+)") end
    i = i + 1
  end
end

function request()
  idx = idx + 1
  local token = tokens[idx] or "exhausted"
  return wrk.format("DELETE", "/api/v1/logout", { ["Authorization"] = "Bearer " .. token })
end

function response(status)
  if status == 204 then ok = ok + 1 else other = other + 1 end
end

function done()
  local total_ok, total_other, unused = 0, 0, 0
  for _, t in ipairs(threads) do
    total_ok = total_ok + t:get("ok")
    total_other = total_other + t:get("other")
  end
  io.write(string.format("logout statuses: %d x 204, %d other\n", total_ok, total_other))
end
