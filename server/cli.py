"""The ``pulse`` command: ``pulse serve`` and ``pulse project create|list``."""

from __future__ import annotations

import argparse
import os
import pathlib
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

# Before anything loads numpy (the insight models): one BLAS thread, see actors/insights/mixture.py.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import trio  # noqa: E402

from loadtest import cli as loadtest_cli  # noqa: E402
from protocol.errors import InvalidInput  # noqa: E402
from protocol.policy import CONSENT_DEFAULTS, DEFAULT_POLICY, ProjectPolicy, patched  # noqa: E402
from server import logs  # noqa: E402
from server.privacy.client_ip import TrustedProxies  # noqa: E402
from server.settings import COMPRESSION_MODES, DEFAULT_PORT, EDGES, Settings  # noqa: E402
from storage.base import Store  # noqa: E402


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {port}")
    return port


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value!r}")
    return number


def _seconds(value: str) -> float:
    seconds = float(value)
    if not seconds >= 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {value!r}")
    return seconds


def _positive_seconds(value: str) -> float:
    seconds = _seconds(value)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {value!r}")
    return seconds


def _log_format(value: str) -> str:
    """Checked here rather than with ``choices``: argparse does not check a default against its
    choices, and the default may come from $PULSE_LOG_FORMAT."""
    if value not in logs.LOG_FORMATS:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(logs.LOG_FORMATS)}, got {value!r} "
                                         "(from --log-format or $PULSE_LOG_FORMAT)")
    return value


def _trusted_proxies(value: str) -> TrustedProxies:
    try:
        return TrustedProxies.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _rate(value: str) -> float | None:
    """A rate in requests per second, or "none"/"off" to remove the limit."""
    if value.strip().lower() in ("none", "off"):
        return None
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of requests per second or 'none', got {value!r}") from None
    if not rate > 0 or rate == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of requests per second > 0 or 'none', got {value!r}")
    return rate


def _days(value: str) -> int | None:
    if value.strip().lower() in ("none", "off"):
        return None
    return _positive_int(value)


def _on_off(value: str) -> bool:
    if value.lower() in ("on", "true", "yes", "1"):
        return True
    if value.lower() in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"must be on or off, got {value!r}")


# The policy options of `pulse project create` and `pulse project policy`: flag -> the admin
# route's field (protocol/policy.py checks the values the same way for both).
_POLICY_FLAGS = {
    "rate_limit": "rateLimit", "rate_limit_burst": "rateLimitBurst", "ip_rate_limit": "ipRateLimit",
    "retention_days": "retentionDays", "consent_default": "consentDefault", "adaptive_sampling": "adaptiveSampling",
}  # fmt: skip


def _policy_options(command: argparse.ArgumentParser) -> None:
    unset = argparse.SUPPRESS  # an option not given leaves the policy's value as it is
    command.add_argument("--rate-limit", type=_rate, default=unset, metavar="N",
                         help="requests per second per API key on the ingest routes ('none' removes it)")
    command.add_argument("--rate-limit-burst", type=_rate, default=unset, metavar="N",
                         help="requests a key may send at once (the token bucket's size; default max(1, rate))")
    command.add_argument("--ip-rate-limit", type=_rate, default=unset, metavar="N",
                         help="requests per second per client IP ('none' removes it)")
    command.add_argument("--retention-days", type=_days, default=unset, metavar="DAYS",
                         help="events older than this are removed by the retention job ('none': kept)")
    command.add_argument("--consent-default", choices=list(CONSENT_DEFAULTS), default=unset,
                         help="consent of a user with no consent record (default granted)")
    command.add_argument("--adaptive-sampling", type=_on_off, default=unset, metavar="{on,off}",
                         help="under overload, keep 1 in 10 low-value events (mouse_move, scroll, ...)")


def _policy_changes(args: argparse.Namespace) -> dict[str, object]:
    return {field: getattr(args, flag) for flag, field in _POLICY_FLAGS.items() if hasattr(args, flag)}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="pulse", description="Pulse: real-time behavioral tracking server")
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"), help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=int(os.environ.get("PORT", DEFAULT_PORT)), help="default $PORT or 8000")
    serve.add_argument("--data-dir", type=pathlib.Path, default=pathlib.Path(os.environ.get("PULSE_DATA_DIR", "data")))
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", type=_log_format, default=os.environ.get("PULSE_LOG_FORMAT", "text"),
                       metavar="{text,json}",
                       help="text (default) or json: one JSON object per log line on stderr, for log "
                            "shippers (default $PULSE_LOG_FORMAT)")
    serve.add_argument("--ws-compression", choices=list(COMPRESSION_MODES), default="off",
                       help="permessage-deflate for WebSockets, measured per idle socket (docs/performance.md): "
                            "off (default): never negotiated, ~12 KiB; "
                            "on: deflate with context takeover, best ratio, ~110 KiB (zlib state kept per socket); "
                            "no-context-takeover: deflate per message, ~12 KiB, but zlib set up on every frame "
                            "sent (CPU) and a lower ratio on small messages")
    serve.add_argument("--edge", choices=list(EDGES), default=os.environ.get("PULSE_EDGE", "pulse"),
                       help="pulse: Pulse's own connections, hot ingest served natively (default); "
                            "hypercorn: stock hypercorn.trio.serve for everything")
    serve.add_argument("--max-websockets", type=int, default=10_000, help="per process; more are refused with 503")
    serve.add_argument("--sync", choices=["FULL", "NORMAL"], default="FULL",
                       help="SQLite durability: FULL fsyncs every group commit (survives power loss)")
    serve.add_argument("--database-url", default=None,
                       help="postgresql://... : store in PostgreSQL instead of SQLite (default $PULSE_DATABASE_URL)")
    serve.add_argument("--redis-url", default=None,
                       help="redis://... : join a cluster of nodes over Redis (default $PULSE_REDIS_URL)")
    serve.add_argument("--workers", type=int, default=1,
                       help="processes on the same port, each a node (needs Redis and PostgreSQL when > 1)")
    serve.add_argument("--node-id", default=None, help="this node's name in the cluster (default host-pid-random)")
    serve.add_argument("--stream-retention", type=int, default=2_000,
                       help="entries kept per project in the Redis stream that subscribers resume from")
    serve.add_argument("--stream-retention-bytes", type=_positive_int, default=64 * 1024 * 1024,
                       help="payload bytes kept per project in that stream (default 64 MiB); the oldest "
                            "entries go first, the newest is always kept")
    serve.add_argument("--trusted-proxies", type=_trusted_proxies,
                       default=os.environ.get("PULSE_TRUSTED_PROXIES", ""), metavar="IPS",
                       help="comma list of IPs/CIDRs of reverse proxies whose X-Forwarded-For names the client "
                            "(default $PULSE_TRUSTED_PROXIES, or none: the socket's peer is the client)")
    serve.add_argument("--sampling-latency-ms", type=_seconds,
                       default=os.environ.get("PULSE_SAMPLING_LATENCY_MS", "250"), metavar="MS",
                       help="mean ingest latency over a second above which the node samples the low-value "
                            "events of projects with adaptive sampling on (default 250)")
    serve.add_argument("--redis-grace", type=_seconds, default=3.0,
                       help="seconds a node keeps cluster membership and its actors through a Redis outage "
                            "(default 3; bounded by the 3 s node TTL): a shorter blip rebuilds nothing")
    serve.add_argument("--retention-interval", type=_positive_seconds,
                       default=float(os.environ.get("PULSE_RETENTION_INTERVAL") or 3600.0),
                       help="seconds between runs of the retention job, which also runs at start and removes "
                            "events past their retention (default 3600; $PULSE_RETENTION_INTERVAL)")

    loadtest = commands.add_parser("loadtest", help="run a locust-style load test against a Pulse server")
    loadtest_cli.add_arguments(loadtest)

    project = commands.add_parser("project", help="manage projects and their keys")
    actions = project.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a project and print its keys")
    create.add_argument("name")
    create.add_argument("--data-dir", type=pathlib.Path, default=pathlib.Path(os.environ.get("PULSE_DATA_DIR", "data")))
    create.add_argument("--database-url", default=os.environ.get("PULSE_DATABASE_URL"))
    _policy_options(create)
    policy = actions.add_parser("policy", help="show or change a project's rate limits, retention and consent default")
    policy.add_argument("name", help="the project's name or id")
    policy.add_argument("--data-dir", type=pathlib.Path, default=pathlib.Path(os.environ.get("PULSE_DATA_DIR", "data")))
    policy.add_argument("--database-url", default=os.environ.get("PULSE_DATABASE_URL"))
    _policy_options(policy)
    listing = actions.add_parser("list", help="list projects and their keys")
    listing.add_argument("--data-dir", type=pathlib.Path, default=pathlib.Path(os.environ.get("PULSE_DATA_DIR", "data")))
    listing.add_argument("--database-url", default=os.environ.get("PULSE_DATABASE_URL"))
    return root


async def _with_store(args: argparse.Namespace, work: Callable[[Store], Awaitable[Any]]) -> Any:
    from server.main import backend_loop, make_store

    settings = Settings(data_dir=args.data_dir, database_url=args.database_url)
    async with backend_loop(settings):
        store = make_store(settings)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            try:
                return await work(store)
            finally:
                nursery.cancel_scope.cancel()


def _print_project(project: Any) -> None:
    print(f"{project.name}\t{project.id}\tpublic: {project.public_key}\tsecret: {project.secret_key}")


def _serve(args: argparse.Namespace, argv: list[str]) -> int:
    from server.main import run_server
    from server.supervisor import WORKER_ENV, run_supervisor

    logs.configure(args.log_level, args.log_format)
    if args.workers < 1:
        print(f"error: --workers must be at least 1, got {args.workers}", file=sys.stderr)
        return 2
    settings = Settings.from_env(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        log_level=args.log_level,
        log_format=args.log_format,
        ws_compression=args.ws_compression,
        edge=args.edge,
        max_websockets=args.max_websockets,
        synchronous=args.sync,
        database_url=args.database_url,
        redis_url=args.redis_url,
        node_id=args.node_id,
        workers=args.workers,
        stream_retention=args.stream_retention,
        stream_retention_bytes=args.stream_retention_bytes,
        redis_grace=args.redis_grace,
        trusted_proxies=args.trusted_proxies,
        sampling_latency_ms=args.sampling_latency_ms,
        retention_interval=args.retention_interval,
    )
    problem = settings.cluster_problem()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    worker = os.environ.get(WORKER_ENV)
    if settings.workers > 1 and worker is None:
        return run_supervisor(settings, _without_port(argv))
    if worker is not None:  # every worker is its own node: never two with one id
        base = settings.node_id or socket.gethostname()
        settings.node_id = f"{base}-w{worker}-{os.getpid()}"
        settings.supervisor_pid = os.getppid()
        settings.worker_index = int(worker)
    trio.run(run_server, settings)
    return 0


def _without_port(argv: list[str]) -> list[str]:
    """The worker's arguments: the parent's, minus --port (the parent passes the resolved one)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--port":
            skip = True
        elif not arg.startswith("--port="):
            out.append(arg)
    return out


def _print_policy(policy: ProjectPolicy) -> None:
    def shown(value: object) -> str:
        return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    print(f"  rate limit: {shown(policy.rate_limit)}/s per key (burst {shown(policy.burst()) if policy.rate_limit else 'none'})"
          f", {shown(policy.ip_rate_limit)}/s per client ip; retention days: {shown(policy.retention_days)}; "
          f"consent default: {policy.consent_default}; adaptive sampling: {'on' if policy.adaptive_sampling else 'off'}")


async def _put_policy(store: Store, project_id: str, changes: dict[str, object]) -> ProjectPolicy:
    """The project's policy with ``changes`` (admin route field names), stored; InvalidInput as for the route."""
    current = (await store.project_policies()).get(project_id, DEFAULT_POLICY)
    if not changes:
        return current
    return await store.put_project_policy(project_id, patched(current, changes),
                                          time.time_ns() // 1_000_000)


async def _create_project(store: Store, args: argparse.Namespace) -> tuple[Any, ProjectPolicy | None]:
    changes = _policy_changes(args)
    patched(DEFAULT_POLICY, changes)  # refuse a bad value before creating
    project = await store.create_project(args.name)
    return project, (await _put_policy(store, project.id, changes) if changes else None)


async def _change_policy(store: Store, args: argparse.Namespace) -> tuple[Any, ProjectPolicy]:
    projects = [p for p in await store.list_projects() if args.name in (p.name, p.id)]
    if not projects:
        raise ValueError(f"no project named {args.name!r}")
    if len(projects) > 1:
        raise ValueError(f"{len(projects)} projects are named {args.name!r}: give the project's id")
    return projects[0], await _put_policy(store, projects[0].id, _policy_changes(args))


def _flag_of(err: InvalidInput) -> str:
    field = err.field.removeprefix("$.")
    names = {value: flag for flag, value in _POLICY_FLAGS.items()}
    return "--" + names.get(field, field).replace("_", "-")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args, argv if argv is not None else sys.argv[1:])
    if args.command == "loadtest":
        return loadtest_cli.run(args)
    if args.action in ("create", "policy"):
        work = _create_project if args.action == "create" else _change_policy
        try:
            project, policy = trio.run(_with_store, args, lambda store: work(store, args))
        except InvalidInput as err:
            print(f"error: {_flag_of(err)}: {err.reason}", file=sys.stderr)
            return 2
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        _print_project(project)
        if policy is not None:
            _print_policy(policy)
        return 0
    for project in trio.run(_with_store, args, lambda store: store.list_projects()):
        _print_project(project)
    return 0


if __name__ == "__main__":
    sys.exit(main())
