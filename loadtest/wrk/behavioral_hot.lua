-- Single-event POST /api/v1/behavioral/events: seed 000's own example body, as is (one hot session).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"sessionId":"session_123","userId":"user_456","deviceType":"mobile","eventType":"page_view",' ..
  '"eventData":{"url":"/product/123","referrer":"https://google.com","timestamp":1703123456789,' ..
  '"viewport":{"width":375,"height":812},"performance":{"loadTime":1250,"renderTime":850,"interactionTime":200}},' ..
  '"elementContext":{"element":"button","elementId":"cta-primary","className":"btn-primary","text":"Get Started",' ..
  '"position":{"x":187,"y":400}},"interactionContext":{"interaction":"click","duration":150,"force":0.8,' ..
  '"previousElement":"input_email","nextElement":null}}'
