"""The ``pulse`` command: ``pulse serve`` and ``pulse project create|list``."""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from server.settings import DEFAULT_PORT, Settings
from storage.sqlite import SqliteStore


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {port}")
    return port


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="pulse", description="Pulse: real-time behavioral tracking server")
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"), help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=int(os.environ.get("PORT", DEFAULT_PORT)), help="default $PORT or 8000")
    serve.add_argument("--data-dir", type=pathlib.Path, default=pathlib.Path(os.environ.get("PULSE_DATA_DIR", "data")))
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--ws-compression", choices=["off", "on"], default="off",
                       help="permessage-deflate for WebSockets (off: ~no memory per socket for zlib)")
    serve.add_argument("--max-websockets", type=int, default=10_000, help="per process; more are refused with 503")
    serve.add_argument("--sync", choices=["FULL", "NORMAL"], default="FULL",
                       help="SQLite durability: FULL fsyncs every group commit (survives power loss)")

    project = commands.add_parser("project", help="manage projects and their keys")
    actions = project.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a project and print its keys")
    create.add_argument("name")
    create.add_argument("--data-dir", type=pathlib.Path, default=pathlib.Path(os.environ.get("PULSE_DATA_DIR", "data")))
    listing = actions.add_parser("list", help="list projects and their keys")
    listing.add_argument("--data-dir", type=pathlib.Path, default=pathlib.Path(os.environ.get("PULSE_DATA_DIR", "data")))
    return root


async def _with_store(data_dir: pathlib.Path, work: Callable[[SqliteStore], Awaitable[Any]]) -> Any:
    store = SqliteStore(data_dir)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        try:
            return await work(store)
        finally:
            nursery.cancel_scope.cancel()


def _print_project(project: Any) -> None:
    print(f"{project.name}\t{project.id}\tpublic: {project.public_key}\tsecret: {project.secret_key}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "serve":
        from server.main import run_server

        logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        settings = Settings.from_env(
            host=args.host,
            port=args.port,
            data_dir=args.data_dir,
            log_level=args.log_level,
            ws_compression=args.ws_compression == "on",
            max_websockets=args.max_websockets,
            synchronous=args.sync,
        )
        trio.run(run_server, settings)
        return 0
    if args.action == "create":
        try:
            project = trio.run(_with_store, args.data_dir, lambda store: store.create_project(args.name))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        _print_project(project)
        return 0
    for project in trio.run(_with_store, args.data_dir, lambda store: store.list_projects()):
        _print_project(project)
    return 0


if __name__ == "__main__":
    sys.exit(main())
