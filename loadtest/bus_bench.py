"""Redis bus benchmark: publish throughput, publish->receive latency, node RPC round trip.

    .venv/bin/python -m loadtest.bus_bench                       # both nodes in this process
    .venv/bin/python -m loadtest.bus_bench --remote-receiver     # node b in a child process
    .venv/bin/python -m loadtest.bus_bench --redis-url redis://127.0.0.1:6379/0

Two RedisBus nodes, "a" (publisher, caller) and "b" (receiver, RPC target). By default both run in
this process, on one thread, so every figure pays for both nodes' Python work; --remote-receiver
runs "b" in a child process, as on a real cluster. Without --redis-url a private redis-server is
started (persistence off) and stopped at the end.

- throughput: "a" publishes --entries entries of --payload bytes as fast as its queue takes them
  (queue full: it yields 1 ms and retries). Figures: entries/s that Redis confirmed to "a", and
  entries/s delivered to "b" (first publish to last delivery; CLOCK_MONOTONIC in both processes).
- latency: publish on "a" -> on_entry on "b", with entries paced at --idle-rate/s (idle: each
  entry travels alone) and then at --rate/s, --seconds each.
- rpc (after the others): a.call("b") to an echo handler: one call at a time, then --concurrency callers at once.

Keys go under a random prefix, deleted at the end. Everything runs under a deadline.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import coredis
import trio

from storage.redis_bus import BusUnavailable, RedisBus

DEADLINE_S = 300.0
REDIS_SERVER = "/usr/bin/redis-server"
STAMP = 20  # a payload starts with its publish time in ns (CLOCK_MONOTONIC), zero-padded


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def summary_us(samples: list[float]) -> str:
    return (
        f"p50 {pct(samples, 50):,.0f} us, p99 {pct(samples, 99):,.0f} us, "
        f"max {max(samples):,.0f} us (n={len(samples):,})"
    )


class Receiver:
    """Node b's side: counts throughput entries, times latency entries by phase, echoes calls."""

    def __init__(self, bus: RedisBus, entries: int) -> None:
        self.entries = entries
        self.count = 0
        self.last = 0.0  # perf_counter when the last throughput entry arrived
        self.all_arrived = trio.Event()
        self.latencies: dict[str, list[float]] = {}
        self.done = trio.Event()
        bus.on_entry(self.on_entry)
        bus.set_handler(self.echo)

    def on_entry(self, channel: str, stream_id: str, payload: bytes) -> None:
        if channel == "tp":
            self.count += 1
            if self.count == self.entries:
                self.last = time.perf_counter()
                self.all_arrived.set()
        elif channel.startswith("lat:"):
            elapsed_us = (time.perf_counter_ns() - int(payload[:STAMP])) / 1000
            self.latencies.setdefault(channel, []).append(elapsed_us)
        elif channel == "ctl":
            self.done.set()

    async def echo(self, payload: bytes) -> bytes:
        return payload


async def wait_for_two_nodes(bus: RedisBus) -> None:
    with trio.fail_after(10):
        while not (bus.connected and len(bus.live_nodes()) >= 2):  # noqa: ASYNC110 (no event for it)
            await trio.sleep(0.01)


async def publish_all(bus: RedisBus, channel: str, payload: bytes, count: int) -> None:
    for i in range(count):
        while True:
            try:
                await bus.publish(channel, payload)
                break
            except BusUnavailable:
                await trio.sleep(0.001)  # queue full: let the publisher drain it
        if i % 512 == 511:
            await trio.lowlevel.checkpoint()


async def throughput(a: RedisBus, entries: int, payload_size: int) -> float:
    """Publish ``entries`` on "a"; print the rate Redis confirmed; return the start (perf_counter)."""
    before = int(a.stats()["published"])
    started = time.perf_counter()
    await publish_all(a, "tp", b"x" * payload_size, entries)
    while a.stats()["published"] < before + entries:  # noqa: ASYNC110
        await trio.sleep(0.001)
    rate = entries / (time.perf_counter() - started)
    print(f"throughput, {entries:,} entries of {payload_size} B:")
    print(f"  confirmed by redis to a:  {rate:,.0f} entries/s ({rate * payload_size / 2**20:,.1f} MiB/s)")
    return started


async def paced(a: RedisBus, channel: str, rate: int, seconds: float, payload_size: int) -> None:
    filler = b"x" * max(0, payload_size - STAMP)
    interval, next_at = 1 / rate, trio.current_time()
    for _ in range(int(rate * seconds)):
        await a.publish(channel, b"%020d" % time.perf_counter_ns() + filler)
        next_at += interval
        await trio.sleep_until(next_at)


async def rpc(a: RedisBus, samples: int, concurrency: int) -> None:
    rtts: list[float] = []
    for i in range(samples):
        t0 = time.perf_counter_ns()
        await a.call("b", b"%d" % i, timeout=5)
        rtts.append((time.perf_counter_ns() - t0) / 1000)
    print(f"call() round trip, one at a time: {summary_us(rtts)}")
    calls = 0

    async def caller() -> None:
        nonlocal calls
        while True:
            await a.call("b", b"ping", timeout=5)
            calls += 1

    with trio.move_on_after(2):
        async with trio.open_nursery() as callers:
            for _ in range(concurrency):
                callers.start_soon(caller)
    print(f"call() with {concurrency} concurrent callers: {calls / 2:,.0f} calls/s")


async def bench(url: str, args: argparse.Namespace) -> None:
    prefix = f"pulse-bench-{secrets.token_hex(3)}:"
    a = RedisBus(url, "a", key_prefix=prefix, stream_maxlen=args.entries)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        child: trio.Process | None = None
        local: Receiver | None = None
        if args.remote_receiver:
            command = [sys.executable, "-m", "loadtest.bus_bench", "--receiver", url, "--prefix", prefix,
                       "--entries", str(args.entries)]  # fmt: skip
            child = await nursery.start(_run_child, command)
            assert child.stdout is not None
            lines = LineReader(child.stdout)
        else:
            b = RedisBus(url, "b", key_prefix=prefix, stream_maxlen=args.entries)
            local = Receiver(b, args.entries)
            await nursery.start(b.run)
        await wait_for_two_nodes(a)

        started = await throughput(a, args.entries, args.payload)
        if local is not None:
            with trio.fail_after(60):
                await local.all_arrived.wait()
            last = local.last
        else:
            last = float(json.loads(await lines.next_line())["last"])
        where = "another process" if child else "the same process"
        print(f"  delivered to b ({where}):  {args.entries / (last - started):,.0f} entries/s")

        await paced(a, "lat:idle", args.idle_rate, args.seconds, args.payload)
        await paced(a, "lat:loaded", args.rate, args.seconds, args.payload)
        await rpc(a, args.samples, args.concurrency)  # while b still runs
        await a.publish("ctl", b"done")
        if local is not None:
            with trio.fail_after(30):
                await local.done.wait()
            latencies = local.latencies
        else:
            latencies = json.loads(await lines.next_line())["latencies"]
        print(f"latency a->b at {args.idle_rate:,} entries/s (idle): {summary_us(latencies['lat:idle'])}")
        print(f"latency a->b at {args.rate:,} entries/s:        {summary_us(latencies['lat:loaded'])}")
        print(f"stats a: {json.dumps(a.stats())}")
        async with coredis.Redis.from_url(url) as client:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(keys)
        nursery.cancel_scope.cancel()


async def _run_child(command: list[str], task_status: trio.TaskStatus[trio.Process]) -> None:
    await trio.run_process(command, stdout=subprocess.PIPE, check=False, task_status=task_status)


class LineReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def next_line(self) -> bytes:
        with trio.fail_after(60):
            while b"\n" not in self._buffer:
                chunk = await self._stream.receive_some()
                if not chunk:
                    raise RuntimeError("the receiver process exited")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line


async def receive_only(url: str, prefix: str, entries: int) -> None:
    """--receiver: node "b" in its own process; prints its report when "a" says it is done."""
    bus = RedisBus(url, "b", key_prefix=prefix, stream_maxlen=entries)
    receiver = Receiver(bus, entries)
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        with trio.fail_after(DEADLINE_S):
            await receiver.all_arrived.wait()
            print(json.dumps({"last": receiver.last}), flush=True)
            await receiver.done.wait()
        print(json.dumps({"latencies": receiver.latencies}), flush=True)
        nursery.cancel_scope.cancel()


def start_private_redis() -> tuple[str, subprocess.Popen[bytes], pathlib.Path]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = pathlib.Path(tempfile.mkdtemp(prefix="pulse-bench-redis-"))
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(root)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.01)
    return f"redis://127.0.0.1:{port}/0", proc, root


async def bounded_bench(url: str, args: argparse.Namespace) -> None:
    with trio.fail_after(DEADLINE_S):
        await bench(url, args)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-url", help="an existing Redis (default: start a private redis-server)")
    parser.add_argument("--entries", type=int, default=100_000, help="throughput entries")
    parser.add_argument("--payload", type=int, default=1024, help="bytes per entry")
    parser.add_argument("--idle-rate", type=int, default=500, help="entries/s for the idle latency run")
    parser.add_argument("--rate", type=int, default=5000, help="entries/s for the loaded latency run")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each latency run")
    parser.add_argument("--samples", type=int, default=5000, help="sequential calls")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent callers")
    parser.add_argument("--remote-receiver", action="store_true", help="run node b in a child process")
    parser.add_argument("--receiver", help=argparse.SUPPRESS)  # internal: run as node b
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        trio.run(receive_only, args.receiver, args.prefix, args.entries)
        return
    proc = root = None
    url = args.redis_url
    if url is None:
        url, proc, root = start_private_redis()
    try:
        trio.run(bounded_bench, url, args)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
