"""Open-loop fixed-rate load: single-event POSTs at a target rate, latency percentiles.

    .venv/bin/python -m loadtest.fixed_rate --url http://127.0.0.1:8000 --rate 600 --duration 10

Requests are scheduled at fixed times (not sent when the previous answer arrives), so a slow server
shows up as latency instead of as a lower rate (no coordinated omission: latency is measured from
the scheduled send time). Keep-alive connections over trio + h11. Bounded in time and count; refuses
non-loopback targets.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import time
from urllib.parse import urlsplit

import h11
import trio


class Connection:
    def __init__(self, stream: trio.SocketStream, host: str) -> None:
        self.stream = stream
        self.host = host
        self.conn = h11.Connection(h11.CLIENT)

    async def post(self, path: str, body: bytes) -> int:
        headers = [("host", self.host), ("content-type", "application/json"), ("content-length", str(len(body)))]
        data = self.conn.send(h11.Request(method="POST", target=path, headers=headers))
        data += self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        status = 0
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                self.conn.start_next_cycle()
                return status
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("server closed the connection")


async def run(url: str, rate: float, duration: float, connections: int) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    pool: trio.MemoryReceiveChannel[Connection]
    give, pool = trio.open_memory_channel[Connection](connections)
    for _ in range(connections):
        give.send_nowait(Connection(await trio.open_tcp_stream(host, port), f"{host}:{port}"))
    latencies: list[float] = []
    errors = 0
    total = int(rate * duration)
    start = trio.current_time() + 0.2

    async def one(n: int, scheduled: float) -> None:
        nonlocal errors
        conn = await pool.receive()  # waiting for a free connection counts as latency
        body = json.dumps({"serviceName": "bench", "sessionId": f"s{n % 500}", "statusCode": 200,
                           "responseTimeMs": n % 300}).encode()
        try:
            status = await conn.post("/api/events/track/bench", body)
            if status != 200:
                errors += 1
        except (ConnectionError, trio.BrokenResourceError, h11.ProtocolError):
            errors += 1
            conn = Connection(await trio.open_tcp_stream(host, port), f"{host}:{port}")
        latencies.append((trio.current_time() - scheduled) * 1000)
        give.send_nowait(conn)

    with trio.fail_after(duration + 30):
        async with trio.open_nursery() as nursery:
            for n in range(total):
                scheduled = start + n / rate
                await trio.sleep_until(scheduled)
                nursery.start_soon(one, n, scheduled)
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))], 2)

    return {"sent": total, "errors": errors, "rate": rate, "p50_ms": pct(50), "p95_ms": pct(95),
            "p99_ms": pct(99), "max_ms": round(latencies[-1], 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (at most 120)")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    host = urlsplit(args.url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        sys.exit(f"refusing non-loopback target {host!r}")
    started = time.perf_counter()
    result = trio.run(run, args.url, args.rate, min(args.duration, 120.0), args.connections)
    result["wall_s"] = round(time.perf_counter() - started, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
