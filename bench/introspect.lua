-- wrk script: POST /api/v1/token/introspect as a resource server (HTTP Basic),
-- asking about one valid access token, form-encoded as RFC 7662 wants.
-- usage: wrk ... -s introspect.lua URL -- BASE64_OF_ID:SECRET ACCESS_TOKEN
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  active, other = 0, 0
  -- A JWT is URL-safe base64 and dots: nothing to escape in the form.
  body = "token=" .. args[2] .. "&token_type_hint=access_token"
  headers = {
    ["Authorization"] = "Basic " .. args[1],
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }
end

function request()
  return wrk.format("POST", "/api/v1/token/introspect", headers, body)
end

-- Counts only answers that really say active: a benchmark of 401s or of
-- {"active":false} would measure the wrong thing.
function response(status, headers, body)
  if status == 200 and body:find('"active":true', 1, true) then
    active = active + 1
  else
    other = other + 1
  end
end

function done()
  local total_active, total_other = 0, 0
  for _, t in ipairs(threads) do
    total_active = total_active + t:get("active")
    total_other = total_other + t:get("other")
  end
  io.write(string.format("introspect statuses: %d x active, %d other\n", total_active, total_other))
end
