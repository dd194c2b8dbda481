"""``pulse serve --workers N``: N worker processes on one port, supervised by this parent.

Each worker is a full node (its own actors, hub and store connection) that joins the cluster over
Redis. They share the port with SO_REUSEPORT, so the kernel spreads connections evenly over them
(each process holds at most ~20,000 open files: 100k sockets need several workers). The parent
holds a bound, never-listening socket on the port so it stays reserved while workers restart.

The parent restarts a worker that dies (with a growing pause when one keeps crashing), forwards
SIGTERM/SIGINT to every worker and waits for them to drain, and kills what is left after the
deadline. Its exit code is 0 after a clean shutdown.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from typing import Final

import trio

from server.settings import Settings

log = logging.getLogger("pulse.supervisor")

WORKER_ENV: Final = "PULSE_WORKER_INDEX"  # set in a worker's environment: run the node, not a supervisor
STOP_TIMEOUT_S: Final = 15.0  # a worker drains within 10 s; after this it is killed
RESTART_PAUSE_S: Final = 0.5  # first pause before restarting a crashed worker ...
RESTART_PAUSE_MAX_S: Final = 10.0  # ... doubling per quick crash up to this
STABLE_AFTER_S: Final = 30.0  # a worker that ran this long resets the pause


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) a SO_REUSEPORT socket: resolves port 0 and keeps the port ours."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), port))
    return sock


class Supervisor:
    def __init__(self, settings: Settings, worker_argv: list[str]) -> None:
        self.settings = settings
        self.worker_argv = worker_argv  # `pulse serve ...` arguments, without the port
        self.port = settings.port
        self.stopping = False
        self.stop_requested = trio.Event()
        self.procs: dict[int, trio.Process] = {}
        self.restarts = 0
        self.unclean: dict[int, int | str] = {}  # worker index -> how it ended, if not with exit 0

    async def run(self) -> int:
        reserved = reserve_port(self.settings.host, self.settings.port)
        self.port = reserved.getsockname()[1]
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._watch_signals)  # before any worker exists
                print(
                    f"Pulse supervisor (pid {os.getpid()}): {self.settings.workers} workers on "
                    f"{self.settings.host}:{self.port}",
                    flush=True,
                )
                async with trio.open_nursery() as workers:
                    for index in range(self.settings.workers):
                        workers.start_soon(self._keep_running, index)
                nursery.cancel_scope.cancel()
        finally:
            reserved.close()
        if self.unclean:
            log.error("workers that did not stop cleanly: %s", self.unclean)
            return 1
        log.info("all workers stopped")
        return 0

    async def _watch_signals(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                if self.stopping:
                    continue  # a repeated signal: the workers are already draining
                log.info("received %s: stopping %d workers", signal.Signals(signum).name, len(self.procs))
                self.stopping = True
                self.stop_requested.set()
                for proc in list(self.procs.values()):
                    if proc.returncode is None:
                        proc.send_signal(signal.SIGTERM)

    async def _keep_running(self, index: int) -> None:
        pause = RESTART_PAUSE_S
        while not self.stopping:
            started = trio.current_time()
            code = await self._run_worker(index)
            if self.stopping:
                return
            self.restarts += 1
            if trio.current_time() - started >= STABLE_AFTER_S:
                pause = RESTART_PAUSE_S
            log.error("worker %d exited with %s: restarting in %.1f s", index, code, pause)
            print(f"Pulse supervisor: worker {index} exited with {code}; restarting", file=sys.stderr, flush=True)
            with trio.move_on_after(pause):
                await self.stop_requested.wait()
            pause = min(pause * 2, RESTART_PAUSE_MAX_S)

    async def _run_worker(self, index: int) -> int:
        env = {**os.environ, WORKER_ENV: str(index)}
        argv = [sys.executable, "-m", "server.cli", *self.worker_argv, "--port", str(self.port)]
        # A session of its own: Ctrl-C in a terminal reaches the supervisor only, which forwards
        # SIGTERM. (A worker whose supervisor dies, even by SIGKILL, notices and drains itself:
        # server.main watches its parent.)
        proc = await trio.lowlevel.open_process(argv, env=env, start_new_session=True)
        self.procs[index] = proc
        if self.stopping:  # the signal came while this worker was starting: it missed the broadcast
            proc.send_signal(signal.SIGTERM)
        try:
            with trio.CancelScope(shield=True):
                # a worker is never abandoned: on SIGTERM it drains; past the deadline it is killed
                while not self.stopping:
                    with trio.move_on_after(0.5):
                        return await proc.wait()
                with trio.move_on_after(STOP_TIMEOUT_S):
                    code = await proc.wait()
                    if code != 0:
                        self.unclean[index] = code
                    return code
                log.error("worker %d did not stop within %rs: killing it", index, STOP_TIMEOUT_S)
                proc.kill()
                self.unclean[index] = "killed after the stop deadline"
                return await proc.wait()
            return proc.returncode if proc.returncode is not None else -1  # not reached: for mypy
        finally:
            del self.procs[index]


def run_supervisor(settings: Settings, worker_argv: list[str]) -> int:
    return trio.run(Supervisor(settings, worker_argv).run)
