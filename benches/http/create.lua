local counter = 0
local n = 0
function setup(thread)
  n = n + 1
  thread:set("tid", "t" .. n .. "-" .. math.random(1, 1000000000))
end
function request()
  counter = counter + 1
  return wrk.format("POST", "/api/v1/commands", {["Content-Type"] = "application/json"},
    '{"type":"CreateUser","payload":{"id":"' .. tid .. '-' .. counter .. '","name":"N"}}')
end
