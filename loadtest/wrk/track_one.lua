-- Single-event POST /api/events/track/{name}: 500 sessions, small AIEventPayload (seed 004 shape).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local counter = 0
request = function()
  counter = counter + 1
  local body = '{"serviceName":"user-service","sessionId":"s' .. (counter % 500) ..
    '","statusCode":200,"responseTimeMs":' .. (counter % 300) .. ',"metadata":{"feature":"authentication"}}'
  return wrk.format(nil, "/api/events/track/user-login", nil, body)
end
