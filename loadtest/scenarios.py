"""The built-in scenarios: who uses Pulse, and how.

- ``visitor``: a browsing visitor. A browser tracker holds one WebSocket to
  /api/v1/behavioral/stream, subscribed to its own session (seed 000 connection message), sends its
  page views, clicks and scrolls over it (acked one by one), and says goodbye with a sendBeacon
  POST (text/plain) when it leaves; the next visitor then takes its slot.
- ``cross_device``: one signed-in user on two devices (phone and laptop), each subscribed to the
  user's events. What one device does must reach the other within CROSS_DEVICE_DEADLINE_S, or it
  counts as the failure ``cross_device_missed``.
- ``backend``: a backend service reporting its API calls in batches (POST /api/events/track/batch,
  seed 004) and now and then one by one (POST /api/events/track/{name} with X-User-Id).
- ``dashboard``: a live dashboard of the whole project: loads the statistics, then follows every
  event, half of them on the WebSocket /api/events/ws (with ``?batch=1``: when busy the server
  sends several events per frame, which the channel unpacks) and half on the SSE stream
  /api/events/stream.
  Alone it sees nothing: mix it with the others (``--scenario backend=2,dashboard=1``).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any, Final

import msgspec
import trio

from loadtest import stats as names
from loadtest.channels import Channel, Incoming, WsChannel
from loadtest.scenario import DRAIN_S, StopUser, User, between, task

CROSS_DEVICE_DEADLINE_S: Final = 5.0
BEHAVIORAL_STREAM: Final = "/api/v1/behavioral/stream"
DASHBOARD_WS: Final = "/api/events/ws?batch=1"  # a dashboard takes batched frames (protocol/stream.py)

PAGES: Final = ("/", "/pricing", "/product/123", "/product/456", "/docs/getting-started", "/blog/launch",
                "/checkout", "/about")
REFERRERS: Final = ("https://google.com/", "https://news.ycombinator.com/", "", "https://twitter.com/")
DEVICES: Final = (("desktop", 1440, 900), ("mobile", 375, 812), ("tablet", 768, 1024))
ELEMENTS: Final = (("button", "cta-primary", "btn-primary", "Get Started"), ("a", "nav-pricing", "nav-link", "Pricing"),
                   ("button", "add-to-cart", "btn", "Add to cart"), ("input", "email", "field", ""))
SERVICES: Final = {
    "api-gateway": ("api-call", "auth-check", "rate-limited"),
    "payment-service": ("payment-started", "payment-completed", "refund-issued"),
    "user-service": ("user-login", "profile-update"),
    "search-service": ("search-query",),
    "notification-service": ("email-sent", "push-sent"),
}
ENDPOINTS: Final = ("/v1/orders", "/v1/users/me", "/v1/search", "/v1/payments", "/v1/cart")

_encode = msgspec.json.Encoder().encode


class _BatchAnswer(msgspec.Struct):
    rejectedCount: int = 0


_batch_answer = msgspec.json.Decoder(_BatchAnswer).decode


def _ms(ns: int) -> int:
    return ns // 1_000_000


class BrowsingVisitor(User):
    name = "visitor"
    sockets = 1
    wait_time = between(0.5, 2.0)

    async def on_start(self) -> None:
        env, rng = self.env, self.rng
        self.session_id = f"{env.run_id}-s{self.number}-{self.visit}"
        self.user_id = f"{env.run_id}-u{self.number}" if rng.random() < 0.3 else None  # a signed-in visitor
        self.device_type, width, height = rng.choice(DEVICES)
        self.viewport = {"width": width, "height": height}
        self.url = rng.choice(PAGES)
        self.page_shown = time.monotonic()
        self.seq = 0
        self.socket = await self.open_ws(BEHAVIORAL_STREAM, self.on_stream)
        connection: dict[str, Any] = {"type": "connection", "sessionId": self.session_id,
                                      "subscriptions": ["behavioral_events", "engagement_metrics"]}
        if self.user_id:
            connection["userId"] = self.user_id
        await self.socket.handshake(connection, "connection_ack")
        await self._page_view(rng.choice(REFERRERS))  # the tracker reports the landing page on load

    def _event(self, event_type: str, data: dict[str, Any], **context: Any) -> dict[str, Any]:
        self.seq += 1
        sent = time.time_ns()
        data["url"] = self.url
        data["sentAtNs"] = sent
        data["seq"] = self.seq
        event = {"eventType": event_type, "sessionId": self.session_id, "deviceType": self.device_type,
                 "timestamp": _ms(sent), "eventData": data, **context}
        if self.user_id:
            event["userId"] = self.user_id
        return event

    async def _send(self, event: dict[str, Any]) -> None:
        self.stats.count(names.SESSION_SENT)
        await self.socket.send_event(event)

    async def _page_view(self, referrer: str) -> None:
        self.page_shown = time.monotonic()
        load = self.rng.randint(300, 2500)
        await self._send(self._event("page_view", {
            "referrer": referrer, "viewport": self.viewport,
            "performance": {"loadTime": load, "renderTime": load * 2 // 3, "interactionTime": self.rng.randint(50, 400)},
        }))

    @task(3)
    async def page_view(self) -> None:
        previous, self.url = self.url, self.rng.choice(PAGES)
        await self._page_view(previous)

    @task(6)
    async def click(self) -> None:
        element, element_id, class_name, text = self.rng.choice(ELEMENTS)
        await self._send(self._event(
            "click", {},
            elementContext={"element": element, "elementId": element_id, "className": class_name, "text": text,
                            "position": {"x": self.rng.randint(0, self.viewport["width"]),
                                         "y": self.rng.randint(0, self.viewport["height"])}},
            interactionContext={"interaction": "click", "duration": self.rng.randint(60, 250)},
        ))

    @task(4)
    async def scroll(self) -> None:
        await self._send(self._event("scroll", {
            "scrollDepth": round(self.rng.random(), 2),
            "timeOnPage": int((time.monotonic() - self.page_shown) * 1000),
        }))

    @task(1)
    async def leave(self) -> None:
        """Closing the tab: the tracker's last event goes by navigator.sendBeacon (a text/plain POST
        that needs no answer), then the page and its socket are gone."""
        # Events whose ack is still on its way are stored all the same (the server finishes what a
        # closing socket sent), but this visitor will not see their acks or deliveries.
        self.stats.count("acks_unanswered_at_exit", len(self.socket.pending))
        event = self._event("exit", {"timeOnPage": int((time.monotonic() - self.page_shown) * 1000)})
        event["eventData"]["seq"] = 0  # not expected back: the socket closes right after
        await self.http(b"POST", "/api/v1/behavioral/events", _encode(event), histogram=names.ACK_BEACON,
                        content_type=b"text/plain;charset=UTF-8")
        self.stats.count(names.EVENTS)
        raise StopUser

    def on_stream(self, message: Incoming, now_ns: int) -> None:
        if message.type != "behavioral_event":
            return
        marks = message.marks
        if marks is not None and marks.seq and marks.sentAtNs:
            self.stats.count(names.SESSION_SEEN)
            self.stats.latency_ns(names.E2E_SESSION, now_ns - marks.sentAtNs)

    async def idle(self, until: float) -> None:
        self.socket.sweep()
        await self.socket.pump_until(until)

    async def on_stop(self) -> None:
        await self.socket.drain(trio.current_time() + DRAIN_S)


class _Device:
    def __init__(self, name: str, device_type: str, session_id: str) -> None:
        self.name = name
        self.device_type = device_type
        self.session_id = session_id
        self.channel: WsChannel | None = None


class CrossDeviceUser(User):
    name = "cross_device"
    sockets = 2
    wait_time = between(0.5, 2.0)

    async def on_start(self) -> None:
        self.user_id = f"{self.env.run_id}-x{self.number}-{self.visit}"
        self.seq = 0
        self.pending: dict[tuple[str, int], int] = {}  # (device, seq) -> time_ns sent, until the other device sees it
        self.devices = [_Device("a", "mobile", f"{self.user_id}-phone"), _Device("b", "desktop", f"{self.user_id}-laptop")]
        for device in self.devices:
            device.channel = await self.open_ws(BEHAVIORAL_STREAM, partial(self.on_stream, device.name))
            await device.channel.handshake({"type": "connection", "userId": self.user_id,
                                            "subscriptions": ["behavioral_events"]}, "connection_ack")
        # The user's own task reads the phone's socket while it thinks; the laptop's needs a reader.
        self.nursery.start_soon(self._read_quietly, self._channel(self.devices[1]))

    @staticmethod
    def _channel(device: _Device) -> WsChannel:
        assert device.channel is not None, "on_start opens every device's socket"
        return device.channel

    async def _read_quietly(self, channel: WsChannel) -> None:
        try:
            await channel.pump_forever()
        except Exception:
            if not channel.closing:
                raise

    async def _act(self, event_type: str, data: dict[str, Any]) -> None:
        device = self.rng.choice(self.devices)
        self.seq += 1
        sent = time.time_ns()
        data.update(sentAtNs=sent, device=device.name, seq=self.seq)
        self.pending[(device.name, self.seq)] = sent
        self.stats.count(names.CROSS_SENT)
        await self._channel(device).send_event({
            "eventType": event_type, "sessionId": device.session_id, "userId": self.user_id,
            "deviceType": device.device_type, "deviceId": f"{self.user_id}-{device.name}",
            "timestamp": _ms(sent), "eventData": data,
        })

    @task(2)
    async def page_view(self) -> None:
        await self._act("page_view", {"url": self.rng.choice(PAGES)})

    @task(3)
    async def click(self) -> None:
        await self._act("click", {"url": self.rng.choice(PAGES), "element": self.rng.choice(ELEMENTS)[1]})

    @task(2)
    async def scroll(self) -> None:
        await self._act("scroll", {"scrollDepth": round(self.rng.random(), 2)})

    def on_stream(self, device: str, message: Incoming, now_ns: int) -> None:
        if message.type != "behavioral_event":
            return
        marks = message.marks
        if marks is None or not marks.device or marks.device == device:
            return  # its own event (the subscription is the user's, both devices' events)
        sent = self.pending.pop((marks.device, marks.seq), None)
        if sent is not None:
            self.stats.count(names.CROSS_SEEN)
            self.stats.latency_ns(names.E2E_CROSS_DEVICE, now_ns - sent)

    def _sweep(self, *, at_stop: bool = False) -> None:
        for device in self.devices:
            self._channel(device).sweep()
        if not self.pending:
            return
        overdue = time.time_ns() - int(CROSS_DEVICE_DEADLINE_S * 1e9)
        for key, sent in list(self.pending.items()):
            if sent <= overdue:
                del self.pending[key]
                self.stats.fail("cross_device_missed")
        if at_stop and self.pending:
            self.stats.count(names.CROSS_UNCONFIRMED, len(self.pending))
            self.pending.clear()

    async def idle(self, until: float) -> None:
        self._sweep()
        await self._channel(self.devices[0]).pump_until(until)

    async def on_stop(self) -> None:
        """Give deliveries and acks on their way DRAIN_S to arrive (the laptop's reader keeps reading)."""
        phone = self._channel(self.devices[0])
        deadline = trio.current_time() + DRAIN_S
        while trio.current_time() < deadline and (self.pending or any(self._channel(d).pending for d in self.devices)):
            await phone.pump_until(min(deadline, trio.current_time() + 0.05))
        for device in self.devices:
            await self._channel(device).drain(trio.current_time())
        self._sweep(at_stop=True)


class BackendService(User):
    name = "backend"
    sockets = 0
    wait_time = between(0.5, 1.5)

    async def on_start(self) -> None:
        self.service = self.rng.choice(list(SERVICES))
        self.calls = 0

    def _payload(self) -> dict[str, Any]:
        rng = self.rng
        self.calls += 1
        roll = rng.random()
        status = 500 if roll < 0.01 else (404 if roll < 0.03 else 200)
        payload: dict[str, Any] = {
            "serviceName": self.service, "statusCode": status,
            "responseTimeMs": round(rng.lognormvariate(4.0, 0.6), 1),  # median ~55 ms, a long tail
            "correlationId": f"{self.env.run_id}-c{self.number}-{self.visit}-{self.calls}",
            "metadata": {"endpoint": rng.choice(ENDPOINTS), "sentAtNs": time.time_ns()},
        }
        if rng.random() < 0.5:
            payload["userId"] = f"{self.env.run_id}-u{rng.randrange(10_000)}"
        return payload

    @task(4)
    async def batch(self) -> None:
        count = self.rng.randint(10, 50)
        events = [{"eventName": self.rng.choice(SERVICES[self.service]), "payload": self._payload()} for _ in range(count)]
        body = _encode({"batchId": f"{self.env.run_id}-b{self.number}-{self.visit}-{self.calls}", "events": events})
        answer = await self.http(b"POST", "/api/events/track/batch", body, histogram=names.ACK_BATCH)
        self.stats.count(names.EVENTS, count)
        if answer:
            rejected = _batch_answer(answer).rejectedCount
            if rejected:
                self.stats.fail("rejected_events", rejected)

    @task(1)
    async def track(self) -> None:
        name = self.rng.choice(SERVICES[self.service])
        user = f"{self.env.run_id}-u{self.rng.randrange(10_000)}"
        await self.http(b"POST", f"/api/events/track/{name}", _encode(self._payload()), histogram=names.ACK_TRACK,
                        headers=((b"x-user-id", user.encode()),))
        self.stats.count(names.EVENTS)


class Dashboard(User):
    name = "dashboard"
    sockets = 1
    wait_time = between(10.0, 20.0)

    async def on_start(self) -> None:
        await self.refresh()
        if self.ordinal % 2 == 0:
            self.e2e = names.E2E_DASHBOARD_WS
            socket = await self.open_ws(DASHBOARD_WS, self.on_stream)
            await socket.handshake(None, "connected")
            self.channel: Channel = socket
        else:
            self.e2e = names.E2E_DASHBOARD_SSE
            self.channel = await self.open_sse("/api/events/stream", self.on_stream)

    @task(1)
    async def refresh(self) -> None:
        await self.http(b"GET", "/api/events/statistics", histogram=names.QUERY)

    def on_stream(self, message: Incoming, now_ns: int) -> None:
        if message.type != "event":
            return
        marks = message.marks
        if marks is not None and marks.sentAtNs:
            self.stats.latency_ns(self.e2e, now_ns - marks.sentAtNs)

    async def idle(self, until: float) -> None:
        await self.channel.pump_until(until)


BUILT_IN: Final[dict[str, type[User]]] = {cls.name: cls for cls in (BrowsingVisitor, CrossDeviceUser, BackendService, Dashboard)}
PRESETS: Final[dict[str, dict[str, int]]] = {
    "mixed": {"visitor": 8, "cross_device": 2, "backend": 2, "dashboard": 1},
}
