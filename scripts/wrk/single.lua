-- One event's odds per request, cycling through the simulated market's 1,300 events.
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/api/events/" .. (100001 + n % 1300) .. "/odds")
end
