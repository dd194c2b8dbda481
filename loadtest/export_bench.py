"""Throughput and footprint of GET /api/events/export against a running server.

    .venv/bin/python -m loadtest.fill_store --data-dir /tmp/pulse-export-bench -n 200000
    .venv/bin/pulse serve --port 8131 --data-dir /tmp/pulse-export-bench --log-level warning &
    .venv/bin/python -m loadtest.export_bench --url http://127.0.0.1:8131 --pid $!

For each format: rows/s and MB/s of the whole download, the server's RSS (VmRSS, sampled every
250 ms when ``--pid`` is given) at the start, its peak, and at each quarter of the download (a
streamed export plateaus instead of climbing with the rows), and the latency of a health check
sent every 50 ms meanwhile (the trio loop staying responsive while pages are encoded).
"""

from __future__ import annotations

import argparse
import io
import pathlib
import time

import httpx
import trio

FORMATS = ("ndjson", "csv", "parquet")


def rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def nearest(samples: list[tuple[float, float]], at: float) -> float:
    """The RSS sampled closest to ``at`` seconds."""
    return min(samples, key=lambda sample: abs(sample[0] - at))[1]


def count_rows(fmt: str, body: bytes) -> int:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(io.BytesIO(body)).metadata.num_rows)
    lines = body.count(b"\n")
    return lines - 1 if fmt == "csv" else lines


async def bench(url: str, fmt: str, pid: int | None, query: str, probe_path: str) -> None:
    samples: list[tuple[float, float]] = []  # (elapsed s, RSS MiB)
    probes: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=None) as http, trio.open_nursery() as nursery:

        async def sample() -> None:
            while True:
                value = rss_mib(pid)
                if value is not None:
                    samples.append((time.perf_counter() - started, value))
                await trio.sleep(0.25)

        async def probe() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=10) as other:
                while True:
                    sent = time.perf_counter()
                    await other.get(probe_path)
                    probes.append((time.perf_counter() - sent) * 1000)
                    await trio.sleep(0.05)

        started = time.perf_counter()
        start_rss = rss_mib(pid)
        nursery.start_soon(sample)
        nursery.start_soon(probe)
        parts: list[bytes] = []
        chunks = 0
        async with http.stream("GET", f"/api/events/export?format={fmt}{query}") as answer:
            answer.raise_for_status()
            async for data in answer.aiter_raw():
                parts.append(data)
                chunks += 1
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    body = b"".join(parts)
    rows = count_rows(fmt, body)
    print(f"{fmt:8s} {rows} rows in {elapsed:.1f} s: {rows / elapsed:,.0f} rows/s, "
          f"{len(body) / elapsed / 2**20:.1f} MiB/s ({len(body) / 2**20:.1f} MiB)")
    if samples and start_rss is not None:
        quarters = [nearest(samples, elapsed * q / 4) for q in range(1, 5)]
        print(f"         server RSS MiB: start {start_rss:.0f}, at 1/4 2/4 3/4 4/4 of the download "
              f"{' '.join(f'{q:.0f}' for q in quarters)}, peak {max(v for _, v in samples):.0f}")
    if probes:
        probes.sort()
        print(f"         {probe_path} during the export: {len(probes)} probes, p50 {probes[len(probes) // 2]:.1f} ms, "
              f"p99 {probes[int(len(probes) * 0.99)]:.1f} ms, max {probes[-1]:.1f} ms")


async def main(url: str, formats: list[str], pid: int | None, query: str, probe_path: str) -> None:
    for fmt in formats:
        await bench(url, fmt, pid, query, probe_path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8131")
    parser.add_argument("--pid", type=int, help="the server's process id, to sample its RSS")
    parser.add_argument("--format", action="append", choices=FORMATS, help="default: all three")
    parser.add_argument("--query", default="", help="extra filters, e.g. '&serviceName=api-gateway'")
    parser.add_argument("--probe", default="/api/v1/behavioral/health", help="the path probed meanwhile")
    args = parser.parse_args()
    trio.run(main, args.url, args.format or list(FORMATS), args.pid, args.query, args.probe)
