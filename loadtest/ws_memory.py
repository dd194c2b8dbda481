"""Memory per idle WebSocket subscriber and the connect ramp: open N sockets with a browser's
handshake (permessage-deflate offered), measure the server's RSS before and after, hold them
(answering pings), report KiB per connection and connects per second.

    .venv/bin/python -m loadtest.ws_memory --url ws://127.0.0.1:8000/api/v1/behavioral/stream --pid PID -n 5000

The client is lean on purpose, so it measures the server and not itself: plain non-blocking
sockets on epoll, one small state object per socket, a hand-written handshake and frame codec.
It reports the server's and its own CPU while opening, so a run shows which side was the limit.
Options:

- ``--procs P`` client processes (each holds at most 20,000 open files, DESIGN.md Facts);
- ``--sources K`` loopback source addresses 127.0.0.1..K (~28,000 ephemeral ports each). The
  default gives each address at most SOCKETS_PER_SOURCE sockets: runs back to back leave their
  sockets in TIME_WAIT for 60 s, and once an address's ports fill up, connecting from it slows
  down (a 15,000-socket ramp after a few earlier runs: p99 ~500 ms from one address, 30 ms from two);
- ``--rate R`` open-loop connects per second across all processes (default: as fast as
  ``--concurrency`` handshakes in flight per process allow), reports handshake latency;
- ``--pid`` one or more server processes (``--children`` adds their child processes, for
  ``pulse serve --workers N``); their RSS is summed.

Bounded: opens at most -n sockets, holds them --hold seconds, then closes everything and exits.
Refuses non-loopback targets.
"""

from __future__ import annotations

import argparse
import base64
import errno
import ipaddress
import json
import multiprocessing
import os
import pathlib
import selectors
import socket
import sys
import time
from multiprocessing.connection import Connection
from typing import Final
from urllib.parse import urlsplit

BROWSER_HEADERS: Final = [
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"),
    ("Origin", "http://localhost:3000"),
    ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
    ("Accept-Language", "en-US,en;q=0.9"),
    ("Cache-Control", "no-cache"),
    ("Pragma", "no-cache"),
    ("Accept-Encoding", "gzip, deflate, br, zstd"),
]
IP_BIND_ADDRESS_NO_PORT: Final = 24  # linux/in.h: pick the source port at connect(), per destination
OPEN_TIMEOUT_S: Final = 120.0
SOCKETS_PER_SOURCE: Final = 5_000

# socket states
CONNECTING, HANDSHAKE, SUBSCRIBING, OPEN = range(4)


def rss_kib(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def total_rss(pids: list[int]) -> int:
    return sum(rss_kib(pid) for pid in pids)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used."""
    ticks = 0
    for pid in pids:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return ticks / os.sysconf("SC_CLK_TCK")


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One masked frame, as a client must send it (RFC 6455 5.3)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    if n:
        key = (mask * (n // 4 + 1))[:n]
        payload = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return header + mask + payload


def parse_frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """Complete server frames (unmasked) at the start of ``buf``, removed from it: (opcode, payload)."""
    frames = []
    while len(buf) >= 2:
        n = buf[1] & 0x7F
        at = 2
        if n == 126:
            if len(buf) < 4:
                break
            n, at = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, at = int.from_bytes(buf[2:10], "big"), 10
        if len(buf) < at + n:
            break
        frames.append((buf[0] & 0x0F, bytes(buf[at:at + n])))
        del buf[:at + n]
    return frames


class Sock:
    __slots__ = ("sock", "state", "buf", "index", "started")

    def __init__(self, sock: socket.socket, index: int, started: float) -> None:
        self.sock = sock
        self.state = CONNECTING
        self.buf = bytearray()
        self.index = index
        self.started = started


def run_client(ident: int, host: str, port: int, path: str, n: int, rate: float, concurrency: int,
               sources: list[str], pipe: Connection) -> None:
    """One client process: open ``n`` sockets (paced at ``rate``/s if > 0), report, hold until told."""
    sel = selectors.DefaultSelector()
    socks: dict[int, Sock] = {}
    latencies: list[float] = []
    counts = {"refused": 0, "closed": 0, "pings": 0, "deflate": 0, "errors": 0}
    started_n = opened = 0
    request_tail = "".join(f"{k}: {v}\r\n" for k, v in BROWSER_HEADERS)
    host_header = f"{host}:{port}"
    in_flight = 0
    pipe.send(("ready", ident))
    pipe.recv()  # go
    t0 = time.perf_counter()
    cpu0 = sum(os.times()[:2])
    reported = False
    stop = False

    def fail(s: Sock, what: str) -> None:
        nonlocal in_flight
        counts[what] += 1
        if s.state != OPEN:
            in_flight -= 1
        sel.unregister(s.sock)
        del socks[s.sock.fileno()]
        s.sock.close()

    while not stop:
        now = time.perf_counter()
        # start new connections: paced (open loop) or as fast as the in-flight cap allows
        due = n if rate <= 0 else min(n, int((now - t0) * rate) + 1)
        while started_n < due and in_flight < concurrency:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            source = sources[started_n % len(sources)]
            if source != "127.0.0.1":
                s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((source, 0))
            err = s.connect_ex((host, port))
            if err not in (0, errno.EINPROGRESS):
                s.close()
                counts["errors"] += 1
                started_n += 1
                continue
            st = Sock(s, ident * 10_000_000 + started_n, time.perf_counter())
            socks[s.fileno()] = st
            sel.register(s, selectors.EVENT_WRITE, st)
            started_n += 1
            in_flight += 1
        if not reported and opened + counts["refused"] + counts["errors"] + counts["closed"] >= n:
            elapsed = time.perf_counter() - t0
            counts["cpu_ms"] = int(1000 * (sum(os.times()[:2]) - cpu0))
            pipe.send(("opened", ident, opened, elapsed, sorted(latencies), dict(counts)))
            reported = True
        timeout = 0.0 if (started_n < n and in_flight < concurrency and rate <= 0) else 0.005
        for key, _events in sel.select(timeout):
            st = key.data
            s = st.sock
            try:
                if st.state == CONNECTING:
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        fail(st, "errors")
                        continue
                    key_b64 = base64.b64encode(os.urandom(16)).decode()
                    s.send((f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\n"
                            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key_b64}\r\nSec-WebSocket-Version: 13\r\n"
                            f"{request_tail}\r\n").encode())
                    st.state = HANDSHAKE
                    sel.modify(s, selectors.EVENT_READ, st)
                    continue
                data = s.recv(65536)
                if not data:
                    fail(st, "closed")
                    continue
                st.buf += data
                if st.state == HANDSHAKE:
                    end = st.buf.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    head = bytes(st.buf[:end]).lower()
                    del st.buf[:end + 4]
                    if not head.startswith(b"http/1.1 101"):
                        fail(st, "refused")
                        continue
                    if b"sec-websocket-extensions" in head:
                        counts["deflate"] += 1
                    body = json.dumps({"type": "connection", "sessionId": f"mem-{st.index}"}).encode()
                    s.send(client_frame(0x1, body))
                    st.state = SUBSCRIBING
                for opcode, payload in parse_frames(st.buf):
                    if opcode == 0x9:
                        counts["pings"] += 1
                        s.send(client_frame(0xA, payload))
                    elif opcode == 0x8:
                        fail(st, "closed")
                        break
                    elif st.state == SUBSCRIBING and opcode in (0x1, 0x2):
                        st.state = OPEN  # connection_ack: the server has set the subscription up
                        in_flight -= 1
                        opened += 1
                        latencies.append(time.perf_counter() - st.started)
            except OSError:
                fail(st, "errors")
        if reported and pipe.poll():
            message = pipe.recv()
            if message == "stop":
                stop = True
            elif message == "stats":
                pipe.send(("stats", ident, len(socks), dict(counts)))
    for st in socks.values():
        st.sock.close()
    pipe.send(("done", ident, dict(counts)))


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="ws://127.0.0.1:8000/api/v1/behavioral/stream")
    parser.add_argument("--pid", type=int, nargs="+", required=True, help="the server process(es) to measure")
    parser.add_argument("--children", action="store_true", help="also measure the child processes of --pid (workers)")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--hold", type=float, default=5.0, help="seconds to hold the sockets after they are all open")
    parser.add_argument("--concurrency", type=int, default=200, help="handshakes in flight per client process")
    parser.add_argument("--rate", type=float, default=0.0, help="connects/s over all processes (0: as fast as possible)")
    parser.add_argument("--procs", type=int, default=1, help="client processes")
    parser.add_argument("--sources", type=int, default=0,
                        help=f"loopback source addresses 127.0.0.1..K (default: one per {SOCKETS_PER_SOURCE:,} sockets)")
    args = parser.parse_args()
    parts = urlsplit(args.url)
    host = parts.hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        sys.exit(f"refusing non-loopback target {host!r}")
    if args.n / args.procs > 19_000:
        sys.exit(f"{args.n} sockets need --procs {args.n // 19_000 + 1} or more (20,000 open files per process)")
    if args.sources <= 0:
        args.sources = max(1, -(-args.n // SOCKETS_PER_SOURCE))
    if args.n / args.sources > 27_000:
        sys.exit(f"{args.n} sockets need --sources {args.n // 27_000 + 1} or more (ephemeral ports per address)")
    pids = list(args.pid)
    if args.children:
        pids += [c for p in args.pid for c in children_of(p)]
    ip = socket.gethostbyname(host)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    sources = [f"127.0.0.{i + 1}" for i in range(args.sources)] if ip.startswith("127.") else [ip]
    ctx = multiprocessing.get_context("fork")
    pipes, procs = [], []
    for i in range(args.procs):
        share = args.n // args.procs + (1 if i < args.n % args.procs else 0)
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=run_client, args=(i, ip, parts.port or 80, path, share, args.rate / args.procs,
                                                    args.concurrency, sources, theirs), daemon=True)
        proc.start()
        pipes.append(ours)
        procs.append(proc)
    for p in pipes:
        p.recv()  # ready
    before = total_rss(pids)
    cpu_before = cpu_seconds(pids)
    for p in pipes:
        p.send("go")
    opened, ramp = 0, 0.0
    latencies: list[float] = []
    counts: dict[str, int] = {}
    for p in pipes:
        if not p.poll(OPEN_TIMEOUT_S):
            sys.exit("client process did not finish opening in time")
        _, _, got, elapsed, lat, cnt = p.recv()
        opened += got
        latencies += lat
        ramp = max(ramp, elapsed)
        for k, v in cnt.items():
            counts[k] = counts.get(k, 0) + v
    cpu = cpu_seconds(pids) - cpu_before
    latencies.sort()
    time.sleep(2)  # let the server settle
    after = total_rss(pids)
    print(f"sockets: {opened}/{args.n} opened in {ramp:.2f}s ({opened / ramp:.0f}/s)  "
          f"handshake+ack p50 {percentile(latencies, 0.5) * 1000:.1f} ms, p99 {percentile(latencies, 0.99) * 1000:.1f} ms, "
          f"max {percentile(latencies, 1.0) * 1000:.0f} ms")
    if opened:
        client_cpu = counts.get("cpu_ms", 0) / 1000
        print(f"server CPU while opening: {cpu:.2f} s ({100 * cpu / ramp:.0f}% of a core), "
              f"{1e6 * cpu / opened:.0f} us per socket; client processes {client_cpu:.2f} s "
              f"({100 * client_cpu / ramp:.0f}% of a core)")
    print(f"refused {counts.get('refused', 0)}, errors {counts.get('errors', 0)}, closed {counts.get('closed', 0)}, "
          f"deflate negotiated on {counts.get('deflate', 0)}")
    if opened:
        print(f"server RSS: {before} KiB -> {after} KiB  = {(after - before) / opened:.1f} KiB per idle subscriber")
    time.sleep(args.hold)
    closed = pings = 0
    for p in pipes:
        p.send("stop")
    for p in pipes:
        while True:
            message = p.recv()
            if message[0] == "done":
                closed += message[2]["closed"]
                pings += message[2]["pings"]
                break
    for proc in procs:
        proc.join(10)
    print(f"held {args.hold:.0f}s: pings answered {pings}, closed by the server {closed}, "
          f"server RSS at the end {total_rss(pids)} KiB")


if __name__ == "__main__":
    main()
