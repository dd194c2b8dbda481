"""Pulse against what a user would build instead, per core, in one run (stdlib only).

    .venv/bin/python loadtest/sidebyside.py --rounds 3 --duration 10 --out /tmp/sidebyside.json
    .venv/bin/python loadtest/sidebyside.py --baseline-commit 19df3ba --rate 600

Servers (``--servers``, in this order within a round): ``pulse`` (this checkout, ``--edge pulse``),
``pulse-hypercorn`` (this checkout, ``--edge hypercorn``), ``pulse@SHA`` (``--baseline-commit``: that
commit cloned from this repository into a temp dir, run with the same venv python) and ``fastapi``
(loadtest/baselines/fastapi_sqlite.py in its own venv, created on demand). Each measurement starts
the server afresh on a free port with an empty temp data dir (Pulse: SQLite, ``--sync NORMAL``),
pins all its threads to ``--server-cpu`` (``taskset -a -p``, again after the warm-up: threads such
as the SQLite writer start lazily), runs a warm-up and then the measured ``wrk`` pinned to
``--client-cpu``, and stops the server (SIGINT, SIGKILL after 10 s). Rounds alternate the servers
(round 1: A B C D for each workload, round 2: again ...) so machine noise hits all alike.

Workloads (``--workloads``): ``hot`` (loadtest/wrk/behavioral_hot.lua, seed 000 single event on one
session, -c50), ``spread`` (track_one.lua, seed 004 single events over 500 sessions, -c50) and
``batch`` (batch100.lua, 100-event batches, -c8; events/s = req/s x 100). ``--rate N`` adds an
open-loop fixed-rate p99 check with loadtest/fixed_rate.py (seed 004 single events at N/s; needs
the Pulse venv's trio and h11), since plain wrk has no fixed-rate mode.

Reported per workload and server: median req/s (and events/s), median of the runs' p99 (wrk
--latency), the ratio to the ``fastapi`` baseline, and the server's CPU time during the measured run
(per event, and as % of the wall time: under ~95 % its core was shared, so req/s is understated); a
markdown table on stdout and JSON in ``--out``.
It measures throughput and latency only, not whether each server stored what it acknowledged.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WRK_DIR = REPO / "loadtest" / "wrk"
FASTAPI_APP = REPO / "loadtest" / "baselines" / "fastapi_sqlite.py"
BASELINE_VENV = Path("/tmp/pulse-baseline-venv")
BASELINE_PACKAGES = ["fastapi", "uvicorn[standard]"]


@dataclass(frozen=True)
class Workload:
    name: str
    script: str
    connections: int
    events_per_request: int
    what: str
    path: str = ""  # appended to the server's URL: for scripts that set wrk.body but no path


WORKLOADS = {
    "hot": Workload("hot", "behavioral_hot.lua", 50, 1, "single events, one hot session (seed 000)",
                    path="/api/v1/behavioral/events"),
    "spread": Workload("spread", "track_one.lua", 50, 1, "single events, 500 sessions (seed 004)"),
    "batch": Workload("batch", "batch100.lua", 8, 100, "100-event batches (seed 004)"),
}
FIXED_RATE = "fixed_rate"


@dataclass
class Server:
    name: str
    argv: list[str]  # "{port}" and "{data}" are filled in at each start
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)


class Running:
    def __init__(self, server: Server, log_dir: Path) -> None:
        self.server = server
        self.port = free_port()
        self.data = Path(tempfile.mkdtemp(prefix=f"sbs-{safe(server.name)}-", dir=log_dir))
        self.log_path = self.data / "server.log"
        argv = [a.replace("{port}", str(self.port)).replace("{data}", str(self.data / "db")) for a in server.argv]
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        # Own session: a Ctrl-C in the terminal reaches only this script, which stops the server itself.
        # PULSE_EDGE from this shell would change a server's default edge: only server.env sets it.
        env = {k: v for k, v in os.environ.items() if k != "PULSE_EDGE"} | server.env
        self.proc = subprocess.Popen(argv, cwd=server.cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.server.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/")
                conn.getresponse().read()  # any answer (even 404) means it serves HTTP
                conn.close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.server.name} did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def pin(self, cpu: str) -> None:
        """All threads of the server and of any child process onto ``cpu``."""
        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            subprocess.run(["taskset", "-a", "-pc", cpu, str(pid)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server and its children so far (all threads)."""
        total = 0
        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of proc(5))
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                print(f"  {self.server.name} not stopped by SIGINT (10 s, or interrupted): SIGKILL", file=sys.stderr)
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def log_tail(self, lines: int = 20) -> str:
        self.log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def cleanup(self) -> None:
        shutil.rmtree(self.data, ignore_errors=True)


def safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            children = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found += [child, *descendants(child)]
    return found


# --- wrk and its output ---------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def parse_wrk(out: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        result["rps"] = float(m[1])
    if m := re.search(r"(\d+) requests in ([\d.]+\w+)", out):
        result["requests"] = int(m[1])
    for pct in ("50", "75", "90", "99"):
        if m := re.search(rf"^\s+{pct}%\s+([\d.]+\w+)\s*$", out, re.M):
            result[f"p{pct}_ms"] = round(to_ms(m[1]), 3)
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    result["non_2xx"] = int(m[1]) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["socket_errors"] = sum(map(int, m.groups())) if m else 0
    if "rps" not in result or "p99_ms" not in result:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    return result


def run_wrk(workload: Workload, url: str, seconds: float, cpu: str) -> dict[str, Any]:
    argv = ["taskset", "-c", cpu, "wrk", "-t1", f"-c{workload.connections}", f"-d{seconds:g}s", "--latency",
            "-s", str(WRK_DIR / workload.script), url + workload.path]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    result = parse_wrk(done.stdout)
    result["eps"] = round(result["rps"] * workload.events_per_request, 1)
    return result


def run_fixed_rate(python: str, url: str, rate: float, seconds: float, cpu: str) -> dict[str, Any]:
    argv = ["taskset", "-c", cpu, python, "-m", "loadtest.fixed_rate", "--url", url, "--rate", f"{rate:g}",
            "--duration", f"{seconds:g}"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=seconds + 90, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"fixed_rate failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- the servers -----------------------------------------------------------------------------------


def ensure_baseline_venv() -> Path:
    python = BASELINE_VENV / "bin" / "python"
    probe = [str(python), "-c", "import fastapi, uvicorn, uvloop, httptools"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python
    print(f"creating {BASELINE_VENV} (pip install {' '.join(BASELINE_PACKAGES)}) ...", file=sys.stderr)
    subprocess.run(["python3", "-m", "venv", str(BASELINE_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    *BASELINE_PACKAGES], check=True)
    subprocess.run(probe, check=True)
    return python


def checkout_commit(sha: str, into: Path) -> Path:
    """``sha`` of this repository in a fresh clone under ``into`` (this checkout's git state untouched)."""
    target = into / f"pulse-{safe(sha)}"
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(REPO), str(target)], check=True)
    subprocess.run(["git", "-C", str(target), "checkout", "--quiet", "--detach", sha], check=True)
    return target


def pulse_server(name: str, python: str, cwd: Path, edge: str | None) -> Server:
    argv = [python, "-m", "server.cli", "serve", "--port", "{port}", "--data-dir", "{data}",
            "--sync", "NORMAL", "--log-level", "warning"]
    if edge:
        argv += ["--edge", edge]
    return Server(name, argv, cwd)


def build_servers(args: argparse.Namespace, tmp: Path) -> list[Server]:
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    servers: list[Server] = []
    for name in wanted:
        if name == "pulse":
            servers.append(pulse_server("pulse", args.python, REPO, "pulse"))
        elif name == "pulse-hypercorn":
            servers.append(pulse_server("pulse-hypercorn", args.python, REPO, "hypercorn"))
        elif name == "commit":
            if args.baseline_commit:
                tree = checkout_commit(args.baseline_commit, tmp)
                label = f"pulse@{args.baseline_commit[:10]}"
                servers.append(pulse_server(label, args.python, tree, args.baseline_edge))
        elif name == "fastapi":
            python = ensure_baseline_venv()
            servers.append(Server("fastapi", [str(python), str(FASTAPI_APP), "--port", "{port}",
                                              "--data-dir", "{data}", "--log-level", "warning"], REPO))
        else:
            raise SystemExit(f"unknown server {name!r} (pulse, pulse-hypercorn, commit, fastapi)")
    return servers


# --- the run ---------------------------------------------------------------------------------------


def measure(server: Server, workload: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    running = Running(server, tmp)
    try:
        running.wait_ready()
        running.pin(args.server_cpu)
        if workload == FIXED_RATE:
            warm = WORKLOADS["spread"]
            run_wrk(warm, running.url, args.warmup, args.client_cpu)
            running.pin(args.server_cpu)
            time.sleep(0.5)
            return run_fixed_rate(args.python, running.url, args.rate, args.duration, args.client_cpu)
        spec = WORKLOADS[workload]
        run_wrk(spec, running.url, args.warmup, args.client_cpu)
        running.pin(args.server_cpu)
        time.sleep(0.5)
        cpu, wall = running.cpu_seconds(), time.monotonic()
        result = run_wrk(spec, running.url, args.duration, args.client_cpu)
        cpu, wall = running.cpu_seconds() - cpu, time.monotonic() - wall
        # A server that got less than its core was sharing it: req/s then understates it, CPU per event less so.
        result["server_cpu_pct"] = round(100 * cpu / wall, 1)
        events = result["requests"] * spec.events_per_request
        result["cpu_us_per_event"] = round(1e6 * cpu / events, 1) if events else None
        return result
    finally:
        running.stop()
        if not args.keep_data:
            running.cleanup()


def summarize(runs: list[dict[str, Any]], servers: list[Server], workloads: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for workload in workloads:
        medians: dict[str, dict[str, Any]] = {}
        for server in servers:
            mine = [r["result"] for r in runs if r["server"] == server.name and r["workload"] == workload
                    and "result" in r]
            if not mine:
                continue
            row: dict[str, Any] = {"workload": workload, "server": server.name, "runs": len(mine),
                                   "p99_ms": statistics.median(r["p99_ms"] for r in mine)}
            if workload == FIXED_RATE:
                row["rate"] = mine[0]["rate"]
                row["p50_ms"] = statistics.median(r["p50_ms"] for r in mine)
                row["errors"] = sum(r["errors"] for r in mine)
            else:
                row["rps"] = statistics.median(r["rps"] for r in mine)
                row["eps"] = statistics.median(r["eps"] for r in mine)
                row["rps_runs"] = [r["rps"] for r in mine]
                row["server_cpu_pct"] = statistics.median(r["server_cpu_pct"] for r in mine)
                per_event = [r["cpu_us_per_event"] for r in mine if r.get("cpu_us_per_event")]
                row["cpu_us_per_event"] = statistics.median(per_event) if per_event else None
                row["errors"] = sum(r["non_2xx"] + r["socket_errors"] for r in mine)
            medians[server.name] = row
            rows.append(row)
        base = medians.get("fastapi")
        if base is None:
            continue
        for row in medians.values():
            if workload == FIXED_RATE:
                row["p99_ratio"] = round(row["p99_ms"] / base["p99_ms"], 2) if base["p99_ms"] else None
            else:
                row["ratio"] = round(row["rps"] / base["rps"], 2) if base["rps"] else None
                if row["cpu_us_per_event"] and base["cpu_us_per_event"]:  # > 1: less CPU per event than fastapi
                    row["cpu_ratio"] = round(base["cpu_us_per_event"] / row["cpu_us_per_event"], 2)
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [f"{args.rounds} round(s), {args.duration:g} s per run after a {args.warmup:g} s warm-up; server on "
             f"CPU {args.server_cpu}, load generator on CPU {args.client_cpu}; medians over rounds", "",
             "| workload | server | req/s | events/s | p99 ms | vs fastapi | server CPU % | CPU µs/event "
             "| vs fastapi (CPU) | errors | req/s per round |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in rows:
        if row["workload"] == FIXED_RATE:
            continue
        what = f"{row['workload']} (-c{WORKLOADS[row['workload']].connections})"
        ratio = f"{row['ratio']:.2f}x" if row.get("ratio") is not None else "-"
        cpu_ratio = f"{row['cpu_ratio']:.2f}x" if row.get("cpu_ratio") is not None else "-"
        per_event = f"{row['cpu_us_per_event']:.1f}" if row["cpu_us_per_event"] else "-"
        per_round = ", ".join(f"{v:,.0f}" for v in row["rps_runs"])
        lines.append(f"| {what} | {row['server']} | {row['rps']:,.0f} | {row['eps']:,.0f} | {row['p99_ms']:.1f} "
                     f"| {ratio} | {row['server_cpu_pct']:.0f} | {per_event} | {cpu_ratio} | {row['errors']} "
                     f"| {per_round} |")
    lines += ["", "vs fastapi: median req/s ÷ fastapi's. server CPU %: the server's CPU time (all threads) over the "
                  "measured run's wall time; well under 100 means it shared its core with something else and its "
                  "req/s is understated. vs fastapi (CPU): fastapi's CPU µs per event ÷ this server's (> 1: cheaper)."]
    if any(row["errors"] for row in rows if row["workload"] != FIXED_RATE):
        lines += ["", "**errors** (wrk's non-2xx answers and socket errors) are not zero: an error answered fast "
                      "inflates req/s, so those rows do not compare (server logs: --keep-data)."]
    fixed = [row for row in rows if row["workload"] == FIXED_RATE]
    if fixed:
        lines += ["", f"Fixed rate (loadtest/fixed_rate.py, seed 004 single events at {args.rate:g}/s, open loop):",
                  "", "| server | p50 ms | p99 ms | p99 vs fastapi | errors |", "| --- | ---: | ---: | ---: | ---: |"]
        for row in fixed:
            ratio = f"{row['p99_ratio']:.2f}x" if row.get("p99_ratio") is not None else "-"
            lines.append(f"| {row['server']} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {ratio} | {row['errors']} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=doc.split("\n\n", 2)[2] if doc.count("\n\n") >= 2 else None)
    p.add_argument("--servers", default="pulse,pulse-hypercorn,commit,fastapi",
                   help="comma-separated, in round order: pulse, pulse-hypercorn, commit (needs --baseline-commit), "
                        "fastapi (default: all)")
    p.add_argument("--baseline-commit", metavar="SHA", help="also run Pulse at this commit of this repository")
    p.add_argument("--baseline-edge", default=None,
                   help="--edge for the --baseline-commit server (default: none passed, for commits without --edge)")
    p.add_argument("--workloads", default="hot,spread,batch", help="comma-separated: hot, spread, batch")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up before each measured run")
    p.add_argument("--rate", type=float, default=None,
                   help="also a fixed-rate p99 check at this many single events/s (loadtest/fixed_rate.py)")
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--client-cpu", default="1")
    p.add_argument("--python", default=str(REPO / ".venv" / "bin" / "python"),
                   help="the Pulse venv's python (runs every Pulse server and fixed_rate.py)")
    p.add_argument("--out", default="sidebyside.json", help="JSON results (default ./sidebyside.json)")
    p.add_argument("--keep-data", action="store_true", help="keep each run's data dir and server log")
    args = p.parse_args(argv)
    if not 1 <= args.rounds <= 50 or not 0 < args.duration <= 600 or not 0 <= args.warmup <= 600:
        p.error("--rounds 1-50, --duration (0, 600], --warmup [0, 600]")
    if args.rate is not None and not 0 < args.rate <= 50_000:
        p.error("--rate must be in (0, 50000]")
    if "commit" in args.servers.split(",") and not args.baseline_commit:
        args.servers = ",".join(s for s in args.servers.split(",") if s != "commit")
    return args


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM, and SIGINT even when started in the background (where it is ignored), stop the servers.
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"error: {tool} not found (Debian: apt-get install wrk util-linux)", file=sys.stderr)
            return 2
    if not Path(args.python).exists():
        print(f"error: no Pulse python at {args.python} (make install, or --python)", file=sys.stderr)
        return 2
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for w in workloads:
        if w not in WORKLOADS:
            print(f"error: unknown workload {w!r} ({', '.join(WORKLOADS)})", file=sys.stderr)
            return 2
    if args.rate is not None:
        workloads.append(FIXED_RATE)
    tmp = Path(tempfile.mkdtemp(prefix="pulse-sidebyside-"))
    runs: list[dict[str, Any]] = []
    servers: list[Server] = []
    started = time.time()
    interrupted = False
    try:
        servers = build_servers(args, tmp)
        for round_no in range(1, args.rounds + 1):
            for workload in workloads:
                for server in servers:
                    record: dict[str, Any] = {"round": round_no, "workload": workload, "server": server.name,
                                              "load_before": round(os.getloadavg()[0], 2)}
                    try:
                        record["result"] = measure(server, workload, args, tmp)
                    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
                        record["error"] = str(exc)
                        print(f"  error: {exc}", file=sys.stderr)
                    runs.append(record)
                    shown = record.get("result", {})
                    bad = shown.get("non_2xx", 0) + shown.get("socket_errors", 0) + shown.get("errors", 0)
                    figure = (f"{shown['rps']:,.0f} req/s, p99 {shown['p99_ms']:.1f} ms" if "rps" in shown else
                              f"p99 {shown['p99_ms']:.1f} ms at {shown['rate']:g}/s" if shown else "failed")
                    print(f"round {round_no} {workload:10} {server.name:24} {figure}  "
                          f"(load before {record['load_before']}){f'  ERRORS: {bad}' if bad else ''}",
                          file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: reporting what was measured", file=sys.stderr)
    finally:
        if args.keep_data:
            print(f"data dirs and server logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    rows = summarize(runs, servers, workloads)
    table = markdown(rows, args)
    config = dict(vars(args))
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, check=False).stdout.strip())
    report = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)), "commit": commit,
              "dirty": dirty, "config": config, "summary": rows, "runs": runs, "table": table}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(table)
    print(f"\n(JSON: {args.out})")
    return 130 if interrupted else 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
