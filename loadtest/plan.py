"""Where a run goes and how it is spread: the target, the loopback rule, processes, source addresses.

Two limits decide the spread. Open files: a process may hold at most ``OPEN_FILES_CAP`` (20,000 on
the reference machine), so a run that needs more sockets is split over several processes. Ports:
every connection from one source address to the server's one address and port takes an ephemeral
port (``/proc/sys/net/ipv4/ip_local_port_range``, ~28,000), so past that the sockets are spread over
several loopback source addresses (127.0.0.1, 127.0.0.2, ...: all of 127/8 is local on Linux).
"""

from __future__ import annotations

import ipaddress
import math
import pathlib
import resource
import socket
from typing import Final
from urllib.parse import urlsplit

import msgspec

OPEN_FILES_CAP: Final = 20_000  # per process (DESIGN.md Facts); more processes past this
RESERVED_FILES: Final = 1_000  # for everything but the users' sockets: pipes, the interpreter's files
PORT_MARGIN: Final = 1_000  # ephemeral ports left per source address for the rest of the machine
PORT_RANGE_FILE: Final = pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_PORT_RANGE: Final = (32768, 60999)
MAX_SOURCE_ADDRESSES: Final = 254


class TargetRefused(Exception):
    """The target is not acceptable (not loopback without --allow-remote, unsupported scheme...)."""


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """The server under test. ``ip`` is resolved once, so no connection waits for a DNS lookup."""

    url: str  # as given, without a trailing slash
    host: str  # for the Host header
    ip: str
    port: int
    loopback: bool
    key: str | None = None  # API key: Authorization header on HTTP, ?key= on WebSocket and SSE

    @property
    def host_header(self) -> str:
        return self.host if self.port == 80 else f"{self.host}:{self.port}"


def parse_target(url: str, *, allow_remote: bool = False, key: str | None = None) -> Target:
    """Resolve ``url`` and refuse it unless every address it resolves to is loopback (or allowed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "ws"):
        raise TargetRefused(f"unsupported target {url!r}: use http://HOST:PORT (TLS is not supported)")
    if not parts.hostname:
        raise TargetRefused(f"target {url!r} has no host")
    if parts.path not in ("", "/"):
        raise TargetRefused(f"target {url!r} has a path; give the server's base URL (http://HOST:PORT)")
    port = parts.port or 80
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TargetRefused(f"cannot resolve target host {parts.hostname!r}: {exc.strerror}") from None
    addresses = sorted({str(info[4][0]) for info in infos}, key=lambda a: (":" in a, a))  # IPv4 first
    loopback = all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)
    if not loopback and not allow_remote:
        raise TargetRefused(
            f"refusing to load-test {url!r}: {parts.hostname!r} is not a loopback address "
            f"(resolves to {', '.join(addresses)}); pass --allow-remote to target it deliberately"
        )
    base = f"http://{parts.netloc}"
    return Target(url=base, host=parts.hostname, ip=addresses[0], port=port, loopback=loopback, key=key)


def raise_open_files_limit() -> int:
    """Raise this process's soft open-files limit to its hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, OPEN_FILES_CAP)
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass  # keep the soft limit we have; the budget below shrinks with it
    return soft


def sockets_per_process(open_files: int) -> int:
    """How many sockets one process may hold for its users."""
    return max(100, min(open_files, OPEN_FILES_CAP) - RESERVED_FILES)


def ports_per_address() -> int:
    """Ephemeral ports one source address can use towards one server address and port."""
    try:
        low, high = (int(x) for x in PORT_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        low, high = DEFAULT_PORT_RANGE
    return max(1000, high - low + 1 - PORT_MARGIN)


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    processes: int
    source_addresses: list[str]  # empty: let the kernel choose (one address is enough)
    sockets: int  # sockets the users hold at most, all processes together
    sockets_per_process: int  # the budget each process was planned with


def plan_run(target: Target, user_sockets: int, http_connections: int, *, min_processes: int = 1,
             source_addresses: int | None = None, open_files: int | None = None) -> Plan:
    """Processes = ceil(sockets / per-process budget), at least ``min_processes``; source addresses =
    ceil(sockets / ports per address), or ``source_addresses`` when given."""
    budget = sockets_per_process(open_files if open_files is not None else raise_open_files_limit())
    room = max(1, budget - http_connections)
    processes = max(min_processes, math.ceil(user_sockets / room), 1)
    sockets = user_sockets + processes * http_connections
    wanted = source_addresses if source_addresses is not None else math.ceil(sockets / ports_per_address())
    wanted = max(1, min(wanted, MAX_SOURCE_ADDRESSES))
    if wanted > 1 and not (target.loopback and "." in target.ip):
        raise TargetRefused(
            f"{sockets} sockets need {wanted} source addresses, which are only available towards an "
            f"IPv4 loopback target (target resolves to {target.ip}); use fewer users"
        )
    # One address: let the kernel choose (no bind). Several: 127.0.0.1 .. 127.0.0.N, round robin.
    addresses = [f"127.0.0.{n}" for n in range(1, wanted + 1)] if wanted > 1 or source_addresses else []
    return Plan(processes=processes, source_addresses=addresses, sockets=sockets, sockets_per_process=budget)
