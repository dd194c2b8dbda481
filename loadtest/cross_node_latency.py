"""Cross-node delivery latency: ingest on node A, receive on a WebSocket subscriber on node B.

    .venv/bin/python -m loadtest.cross_node_latency --ingest http://127.0.0.1:8001 \\
        --subscribe http://127.0.0.1:8002 --rate 200 --duration 10

Events are POSTed to A at a fixed rate (open loop), each carrying its send time; a subscriber on
/api/events/ws of B timestamps each arrival. Latency = arrival - send, on one machine's clock.
Bounded in time and count; refuses non-loopback targets.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import time
from urllib.parse import urlsplit

import httpx
import trio
from trio_websocket import open_websocket_url


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))] if ordered else float("nan")


async def run(ingest: str, subscribe: str, rate: float, duration: float) -> dict[str, float]:
    latencies: list[float] = []
    sent = 0
    errors = 0
    total = int(rate * duration)
    ws_url = subscribe.replace("http://", "ws://") + "/api/events/ws"
    async with open_websocket_url(ws_url) as ws, httpx.AsyncClient(base_url=ingest, timeout=10) as http:
        await ws.send_message(json.dumps({"type": "filter", "eventName": "latency-probe"}))

        all_in = trio.Event()  # every probe either arrived or failed at ingest

        def check_done() -> None:
            if len(latencies) + errors >= total:
                all_in.set()

        async def receive() -> None:
            while True:
                message = json.loads(await ws.get_message())
                if message.get("type") == "event" and message["data"]["name"] == "latency-probe":
                    sent_ns = message["data"]["payload"]["metadata"]["sentNs"]
                    latencies.append((time.time_ns() - sent_ns) / 1e6)
                    check_done()

        async def post() -> None:
            nonlocal errors
            body = {"serviceName": "latency", "metadata": {"sentNs": time.time_ns()}}
            try:
                answer = await http.post("/api/events/track/latency-probe", json=body)
                errors += answer.status_code != 200
            except httpx.HTTPError:
                errors += 1
            check_done()

        with trio.move_on_after(duration + 10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)
                start = trio.current_time()
                for i in range(total):
                    await trio.sleep_until(start + i / rate)
                    sent += 1
                    nursery.start_soon(post)
                with trio.move_on_after(5):
                    await all_in.wait()
                nursery.cancel_scope.cancel()
    return {
        "sent": sent,
        "received": len(latencies),
        "errors": errors,
        "p50_ms": round(percentile(latencies, 50), 3),
        "p99_ms": round(percentile(latencies, 99), 3),
        "max_ms": round(max(latencies, default=float("nan")), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ingest", required=True, help="base URL of the node that receives the events")
    parser.add_argument("--subscribe", required=True, help="base URL of the node the subscriber is on")
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (at most 300)")
    args = parser.parse_args()
    if not (_loopback(args.ingest) and _loopback(args.subscribe)):
        print("error: targets must be loopback addresses", file=sys.stderr)
        return 2
    result = trio.run(run, args.ingest, args.subscribe, args.rate, min(args.duration, 300.0))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
