-- GET /api/v1/users/user-K for K drawn at random from the seeded users (wrk ... -- USERS).
-- The floor is run with this same script (it answers any path), so that wrk does the same
-- work per request against both.
dofile("benches/http/report.lua")
local users = 10000
function init(args)
  if args[1] then users = tonumber(args[1]) end
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end
function request()
  return wrk.format("GET", "/api/v1/users/user-" .. math.random(0, users - 1))
end
