"""Pulse's scenarios for locust (https://locust.io), for those who already drive HTTP APIs with it.

    pip install locust          # in your own environment: locust is not a Pulse dependency
    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 --users 200 --spawn-rate 20 --run-time 1m --headless

locust's HttpUser speaks HTTP only, so these users send what the built-in scenarios of
``pulse loadtest`` send over HTTP: a browser tracker's events and its sendBeacon on leaving
(seed 000), a backend service's batches and single events (seed 004), a dashboard's queries. The
WebSocket and SSE side (subscriptions, acks on the socket, end-to-end and cross-device latency)
needs ``pulse loadtest`` itself.

This is a locust user file, not a module of Pulse: nothing in Pulse or its tests imports it (it
would need locust). mypy checks it with locust's names as ``Any`` (ignore_missing_imports).
"""

from __future__ import annotations

import json
import random
import time
import uuid
from typing import Any

from locust import HttpUser, between, task

PAGES = ("/", "/pricing", "/product/123", "/product/456", "/docs/getting-started", "/checkout")
SERVICES = {
    "api-gateway": ("api-call", "auth-check"),
    "payment-service": ("payment-started", "payment-completed"),
    "user-service": ("user-login", "profile-update"),
}


class BrowserTracker(HttpUser):
    """A visitor's tracker: page views, clicks and scrolls (fetch), and a beacon when leaving."""

    weight = 8
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self._new_visit()

    def _new_visit(self) -> None:
        self.session_id = f"locust-{uuid.uuid4().hex[:12]}"
        self.device_type = random.choice(("desktop", "mobile", "tablet"))
        self.url = random.choice(PAGES)
        self._send("page_view", {"referrer": "https://google.com/"})

    def _event(self, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
        data.update(url=self.url, sentAtNs=time.time_ns())
        return {"eventType": event_type, "sessionId": self.session_id, "deviceType": self.device_type,
                "timestamp": int(time.time() * 1000), "eventData": data}

    def _send(self, event_type: str, data: dict[str, Any]) -> None:
        self.client.post("/api/v1/behavioral/events", json=self._event(event_type, data),
                         name=f"/api/v1/behavioral/events [{event_type}]")

    @task(3)
    def page_view(self) -> None:
        previous, self.url = self.url, random.choice(PAGES)
        self._send("page_view", {"referrer": previous})

    @task(6)
    def click(self) -> None:
        self._send("click", {"element": random.choice(("cta-primary", "nav-pricing", "add-to-cart"))})

    @task(4)
    def scroll(self) -> None:
        self._send("scroll", {"scrollDepth": round(random.random(), 2)})

    @task(1)
    def leave(self) -> None:
        """navigator.sendBeacon: a text/plain POST; then the next visitor arrives."""
        self.client.post("/api/v1/behavioral/events", data=json.dumps(self._event("exit", {})),
                         headers={"Content-Type": "text/plain;charset=UTF-8"}, name="/api/v1/behavioral/events [beacon]")
        self._new_visit()


class BackendService(HttpUser):
    """A service reporting its API calls: batches, and now and then one event with X-User-Id."""

    weight = 2
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        self.service = random.choice(list(SERVICES))

    def _payload(self) -> dict[str, Any]:
        return {"serviceName": self.service, "statusCode": 500 if random.random() < 0.01 else 200,
                "responseTimeMs": round(random.lognormvariate(4.0, 0.6), 1),
                "correlationId": uuid.uuid4().hex[:16], "metadata": {"sentAtNs": time.time_ns()}}

    @task(4)
    def batch(self) -> None:
        events = [{"eventName": random.choice(SERVICES[self.service]), "payload": self._payload()}
                  for _ in range(random.randint(10, 50))]
        with self.client.post("/api/events/track/batch", json={"events": events}, catch_response=True) as answer:
            if answer.status_code == 200 and answer.json().get("rejectedCount"):
                answer.failure(f"{answer.json()['rejectedCount']} events rejected")

    @task(1)
    def track(self) -> None:
        name = random.choice(SERVICES[self.service])
        self.client.post(f"/api/events/track/{name}", json=self._payload(), name="/api/events/track/[name]",
                         headers={"X-User-Id": f"user-{random.randrange(10_000)}"})


class DashboardReader(HttpUser):
    """A dashboard refreshing its figures (the live stream itself needs ``pulse loadtest``)."""

    weight = 1
    wait_time = between(5, 15)

    @task(2)
    def statistics(self) -> None:
        self.client.get("/api/events/statistics")

    @task(1)
    def recent(self) -> None:
        self.client.get("/api/events", params={"limit": 100}, name="/api/events?limit=100")

    @task(1)
    def services(self) -> None:
        self.client.get("/api/events/services")
