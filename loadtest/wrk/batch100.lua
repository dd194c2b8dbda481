-- POST /api/events/track/batch with 100 events per request over 40 sessions (seed 004 shape).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local counter = 0
request = function()
  counter = counter + 1
  local events = {}
  for i = 1, 100 do
    events[i] = '{"eventName":"page-view","payload":{"serviceName":"web-analytics","sessionId":"s' ..
      ((counter * 7 + i) % 40) .. '","statusCode":200,"responseTimeMs":' .. i .. ',"metadata":{"page":"/p/' .. i .. '"}}}'
  end
  return wrk.format(nil, "/api/events/track/batch", nil, '{"batchId":"b' .. counter .. '","events":[' .. table.concat(events, ",") .. ']}')
end
