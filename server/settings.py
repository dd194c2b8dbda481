"""Server settings from the command line and the environment, resolved once at start."""

from __future__ import annotations

import ipaddress
import os
import pathlib
from dataclasses import dataclass, field
from typing import Final

from server.privacy.client_ip import TrustedProxies

DEFAULT_PORT: Final = 8000
CORS_ALLOW_HEADERS: Final = (
    "Content-Type, Authorization, X-Requested-With, X-Monitor-Request, X-User-Id, X-Session-Id, "
    "X-Correlation-Id, X-API-Key, Content-Encoding, Last-Event-ID, Accept, Origin, User-Agent, Referer"
)
CORS_ALLOW_METHODS: Final = "GET, POST, PUT, DELETE, OPTIONS, PATCH"
# --ws-compression (server/edge/websocket.py): "off" never negotiates permessage-deflate; "on"
# accepts it with context takeover (zlib state kept per socket: 110.7 KiB per idle socket against
# ~12 KiB off, docs/performance.md); "no-context-takeover" accepts it but requires
# server_no_context_takeover and client_no_context_takeover, so no zlib state outlives a message
# (~11.9 KiB per idle socket) at the price of setting zlib up for every frame sent.
COMPRESSION_MODES: Final = ("off", "on", "no-context-takeover")
# --edge: "pulse" serves hot ingest requests natively and everything else through hypercorn's
# protocol classes on Pulse's own connections (server/edge/); "hypercorn" is stock
# hypercorn.trio.serve for everything, for comparison and as a fallback.
EDGES: Final = ("pulse", "hypercorn")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: pathlib.Path = pathlib.Path("data")
    log_level: str = "info"
    log_format: str = "text"  # --log-format / $PULSE_LOG_FORMAT: "text" or "json" (server/logs.py)
    # "*" or a list of exact origins (seed 004: ALLOWED_ORIGINS=https://a.com,https://b.com)
    allowed_origins: list[str] = field(default_factory=lambda: ["*"])
    max_websockets: int = 10_000  # per process; the open-files cap is 20,000
    ws_ping_interval: float = 25.0
    ws_ping_timeout: float = 20.0
    sse_ping_interval: float = 15.0
    sse_stats_interval: float = 5.0
    idle_ttl: float = 300.0  # actors passivate after this long without a message
    synchronous: str = "FULL"  # SQLite: FULL = every acknowledged commit is fsynced
    # permessage-deflate (COMPRESSION_MODES): "on" costs ~100 KiB of zlib state per socket
    ws_compression: str = "off"
    edge: str = "pulse"  # EDGES
    database_url: str | None = None  # postgresql://... : PostgreSQL instead of the embedded SQLite
    redis_url: str | None = None  # redis://... : the bus between nodes (required for workers > 1)
    node_id: str | None = None  # this node's name in the cluster (default: host-pid-random)
    workers: int = 1  # processes serving the same port (the parent supervises them)
    supervisor_pid: int | None = None  # set in a worker: the parent it must not outlive
    worker_index: int | None = None  # set in a worker: 0..workers-1
    # Entries kept per project in the Redis stream that reconnecting subscribers resume from. An
    # entry is one request's messages (one event or a whole batch), so memory is about
    # entries x request size: 2,000 single events ~ 2 MB, 2,000 100-event batches ~ 220 MB.
    stream_retention: int = 2_000
    # ... and payload bytes kept per project stream: a bound that holds whatever the request size
    # (one client sending 4 MB batches would otherwise fill Redis within the entry count).
    stream_retention_bytes: int = 64 * 1024 * 1024
    # Seconds a node keeps the cluster's membership after losing Redis: a reconnect within it that
    # finds the same nodes keeps every actor (a longer outage: the node serves every key alone and
    # every actor is rebuilt from the log when Redis returns). Never longer than the node TTL (3 s)
    # after the node's last heartbeat, past which the other nodes may have taken its keys.
    redis_grace: float = 3.0
    # --trusted-proxies / $PULSE_TRUSTED_PROXIES: whose X-Forwarded-For names the client (server/privacy/client_ip.py)
    trusted_proxies: TrustedProxies = field(default_factory=TrustedProxies)
    # --sampling-latency-ms / $PULSE_SAMPLING_LATENCY_MS: mean ingest latency over a second above
    # which the node counts as overloaded for adaptive sampling (actors/privacy/sampling.py)
    sampling_latency_ms: float = 250.0
    # Seconds between two runs of the retention job (server/privacy/retention.py); it also runs at start.
    retention_interval: float = 3600.0

    @property
    def storage_name(self) -> str:
        return "postgresql" if self.database_url else "sqlite"

    def cluster_problem(self) -> str | None:
        """Why this configuration cannot run as several nodes, or None when it can."""
        if self.workers <= 1:
            return None
        missing = []
        if not self.redis_url:
            missing.append("--redis-url (or PULSE_REDIS_URL): workers find each other and share streams through Redis")
        if not self.database_url:
            missing.append(
                "--database-url (or PULSE_DATABASE_URL): the embedded SQLite store belongs to one process; "
                "several workers share PostgreSQL"
            )
        if not missing:
            return None
        return f"--workers {self.workers} needs " + " and ".join(missing)

    @property
    def open_access(self) -> bool:
        """On a loopback bind, requests without a (known) key act on the default project."""
        return is_loopback(self.host)

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        settings = cls(**overrides)  # type: ignore[arg-type]
        for name, attr in (
            ("PULSE_SSE_PING_INTERVAL", "sse_ping_interval"),
            ("PULSE_SSE_STATS_INTERVAL", "sse_stats_interval"),
            ("PULSE_WS_PING_INTERVAL", "ws_ping_interval"),
            ("PULSE_WS_PING_TIMEOUT", "ws_ping_timeout"),
        ):
            if os.environ.get(name):
                setattr(settings, attr, float(os.environ[name]))
        if "retention_interval" not in overrides and os.environ.get("PULSE_RETENTION_INTERVAL"):
            settings.retention_interval = float(os.environ["PULSE_RETENTION_INTERVAL"])
        for name, attr in (("PULSE_DATABASE_URL", "database_url"), ("PULSE_REDIS_URL", "redis_url")):
            if getattr(settings, attr) is None and os.environ.get(name):
                setattr(settings, attr, os.environ[name])
        origins = os.environ.get("ALLOWED_ORIGINS")
        if origins:
            settings.allowed_origins = [o.strip() for o in origins.split(",") if o.strip()]
        return settings
