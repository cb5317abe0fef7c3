-- Durable commands: POST /api/v1/commands, a CreateUser of a new user each. Ids are unique
-- per run (wrk ... -- RUN_TAG), wrk thread and request: run.py checks that every one of them
-- was created (201), so a repeated id would fail the run.
dofile("benches/http/report.lua")
local counter = 0
local n = 0
local prefix = "run"
function setup(thread)
  n = n + 1
  thread:set("tid", "t" .. n)
end
function init(args)
  if args[1] then prefix = args[1] end
end
function request()
  counter = counter + 1
  return wrk.format("POST", "/api/v1/commands", {["Content-Type"] = "application/json"},
    '{"type":"CreateUser","payload":{"id":"' .. prefix .. "-" .. tid .. '-' .. counter ..
    '","name":"N"}}')
end
