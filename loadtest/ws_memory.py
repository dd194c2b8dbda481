"""Memory per idle WebSocket subscriber: open N sockets with a browser's handshake, measure the
server's RSS before and after, hold them, report KiB per connection.

    .venv/bin/python -m loadtest.ws_memory --url ws://127.0.0.1:8000/api/v1/behavioral/stream --pid PID -n 5000

Bounded: opens at most --n sockets, holds them --hold seconds, then closes everything and exits.
Refuses non-loopback targets.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import pathlib
import sys
import time
from urllib.parse import urlsplit

import trio
from trio_websocket import open_websocket_url

BROWSER_HEADERS: list[tuple[bytes, bytes]] = [(k.encode(), v.encode()) for k, v in [
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"),
    ("Origin", "http://localhost:3000"),
    ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
    ("Accept-Language", "en-US,en;q=0.9"),
    ("Cache-Control", "no-cache"),
]]


def rss_kib(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def hold(url: str, opened: list[int], ready: trio.Event, stop: trio.Event, n: int,
               limiter: trio.CapacityLimiter) -> None:
    """Connect (at most ``limiter`` handshakes at once), subscribe, then stay idle until stopped."""
    await limiter.acquire()
    try:
        async with open_websocket_url(url, extra_headers=BROWSER_HEADERS) as ws:
            await ws.send_message(json.dumps({"type": "connection", "sessionId": f"mem-{len(opened)}"}))
            await ws.get_message()  # connection_ack: the server has set the subscription up
            limiter.release()
            opened.append(1)
            if len(opened) == n:
                ready.set()
            await stop.wait()
    finally:
        if limiter.statistics().borrowers and trio.lowlevel.current_task() in limiter.statistics().borrowers:
            limiter.release()


async def main(url: str, pid: int, n: int, hold_s: float, concurrency: int) -> None:
    before = rss_kib(pid)
    opened: list[int] = []
    ready, stop = trio.Event(), trio.Event()
    limiter = trio.CapacityLimiter(concurrency)
    started = time.perf_counter()

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(hold, url, opened, ready, stop, n, limiter)
        with trio.fail_after(120):
            await ready.wait()
        ramp = time.perf_counter() - started
        await trio.sleep(2)  # let the server settle
        after = rss_kib(pid)
        print(f"sockets: {n}  opened in {ramp:.1f}s ({n / ramp:.0f}/s)")
        print(f"server RSS: {before} KiB -> {after} KiB  = {(after - before) / n:.1f} KiB per idle subscriber")
        await trio.sleep(hold_s)
        stop.set()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="ws://127.0.0.1:8000/api/v1/behavioral/stream")
    parser.add_argument("--pid", type=int, required=True, help="the server process to measure")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--hold", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    host = urlsplit(args.url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        sys.exit(f"refusing non-loopback target {host!r}")
    trio.run(main, args.url, args.pid, args.n, args.hold, args.concurrency)
