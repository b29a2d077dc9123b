-- Bulk reads of 200 consecutive ids, cycling through the simulated market's 1,300 events.
local n = 0
request = function()
  n = n + 1
  local first = 100001 + (n * 200) % 1100
  local ids = {}
  for i = 0, 199 do ids[#ids + 1] = first + i end
  return wrk.format("GET", "/api/events/odds?ids=" .. table.concat(ids, ","))
end
