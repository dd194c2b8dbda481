"""Runs spread over worker processes: each worker runs its share of the users (runner.py) and streams
its stats to the parent, which merges them and prints the progress.

    parent                                   worker (python -m loadtest.multiproc)
    Start(config) --------- stdin ---------> set up (open-files limit, imports)
                  <-------- stdout --------- Ready
    Go (to all at once) ------------------->  spawn users ... every second:
                  <------------------------- Interval(delta)
    Stop (Ctrl-C) ------------------------->  stop early (stdin closing means the same)
                  <------------------------- Interval(last delta), Done

Frames are msgpack, each preceded by its length (4 bytes, big-endian): a delta carries binary HDR
histograms, so "one message per line" would not do. A worker's stdout carries only frames: its fd 1
points at stderr, so a stray print cannot corrupt the pipe. Workers ignore SIGINT: Ctrl-C reaches
the whole process group, and it is the parent that decides how they stop.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from functools import partial
from typing import Final

import msgspec
import trio

from loadtest.plan import raise_open_files_limit
from loadtest.report import Monitor
from loadtest.runner import RunConfig, Runner
from loadtest.scenario import CLOSE_S, DRAIN_S
from loadtest.stats import Delta

READY_TIMEOUT_S: Final = 30.0  # a worker's start-up: interpreter, imports, open-files limit
WRITE_TIMEOUT_S: Final = 10.0
FRAME_MARGIN_S: Final = 5.0  # past a worker's own hard stop, for its last frames to arrive
EXIT_MARGIN_S: Final = 10.0  # and then for it to exit, before the parent kills it
TICK_LAG_S: Final = 0.3
MAX_FRAME: Final = 64 * 1024 * 1024


class Start(msgspec.Struct, tag="start"):
    config: RunConfig


class Go(msgspec.Struct, tag="go"):
    pass


class Stop(msgspec.Struct, tag="stop"):
    pass


class Ready(msgspec.Struct, tag="ready"):
    pass


class Interval(msgspec.Struct, tag="interval"):
    delta: Delta


class Done(msgspec.Struct, tag="done"):
    pass


Frame = Start | Go | Stop | Ready | Interval | Done
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Frame)


def encode_frame(frame: Frame) -> bytes:
    body = _encoder.encode(frame)
    return len(body).to_bytes(4, "big") + body


class FrameReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def next(self) -> Frame | None:
        """The next frame, or None when the other side closed the pipe."""
        while True:
            if len(self.buffer) >= 4:
                size = int.from_bytes(self.buffer[:4], "big")
                if size > MAX_FRAME:
                    raise ValueError(f"frame of {size} bytes is over the {MAX_FRAME} limit: the pipe is corrupt")
                if len(self.buffer) >= 4 + size:
                    body = bytes(self.buffer[4 : 4 + size])
                    del self.buffer[: 4 + size]
                    return _decoder.decode(body)
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.buffer += data


async def send_frame(stream: trio.abc.SendStream, frame: Frame) -> None:
    # Shielded: a frame cut in half by a cancellation would corrupt every frame after it.
    with trio.CancelScope(shield=True), trio.fail_after(WRITE_TIMEOUT_S):
        await stream.send_all(encode_frame(frame))


# -- parent -----------------------------------------------------------------------------------------


class Workers:
    """The parent's side: start the workers, merge what they report, stop them."""

    def __init__(self, config: RunConfig, monitor: Monitor) -> None:
        self.config = config
        self.monitor = monitor
        self.processes: list[trio.Process] = []
        self.problems: list[str] = []  # workers that failed, for the report's failures

    async def run(self) -> float:
        """Run every worker to its end; returns the elapsed seconds from Go to the last Done."""
        config = self.config
        follow_for = config.duration + DRAIN_S + CLOSE_S + 1 + FRAME_MARGIN_S
        elapsed = 0.0
        with trio.CancelScope() as everything:  # past its deadline, run_process kills what is left
            async with trio.open_nursery() as nursery:
                for worker in range(config.processes):
                    process: trio.Process = await nursery.start(partial(
                        trio.run_process, [sys.executable, "-m", "loadtest.multiproc"],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, check=False,
                    ))
                    self.processes.append(process)
                    assert process.stdin is not None
                    await send_frame(process.stdin, Start(config=msgspec.structs.replace(config, worker=worker)))
                readers = [FrameReader(p.stdout) for p in self.processes if p.stdout is not None]
                with trio.fail_after(READY_TIMEOUT_S):
                    for worker, reader in enumerate(readers):
                        if not isinstance(await reader.next(), Ready):
                            raise RuntimeError(f"worker {worker} did not start (see its errors above)")
                for process in self.processes:
                    assert process.stdin is not None
                    await send_frame(process.stdin, Go())
                started = trio.current_time()
                everything.deadline = started + follow_for + EXIT_MARGIN_S
                with trio.move_on_after(follow_for):
                    async with trio.open_nursery() as following:
                        following.start_soon(self._tick, started)
                        async with trio.open_nursery() as reading:
                            for worker, reader in enumerate(readers):
                                reading.start_soon(self._follow, worker, reader)
                        following.cancel_scope.cancel()
                elapsed = trio.current_time() - started
                self.monitor.tick(elapsed)
                for process in self.processes:
                    if process.stdin is not None:
                        await process.stdin.aclose()  # a worker not done yet stops when its stdin closes
        for worker, process in enumerate(self.processes):
            if process.returncode != 0:
                self.problems.append(f"worker {worker} exited with code {process.returncode}")
        return elapsed

    async def _follow(self, worker: int, reader: FrameReader) -> None:
        while True:
            frame = await reader.next()
            if frame is None or isinstance(frame, Done):
                return
            if isinstance(frame, Interval):
                self.monitor.add(frame.delta, worker)

    async def _tick(self, started: float) -> None:
        # A little after each whole second, when the workers' deltas for that second are in.
        for second in itertools.count(1):
            await trio.sleep_until(started + second + TICK_LAG_S)
            self.monitor.tick(trio.current_time() - started)

    async def stop(self) -> None:
        for process in self.processes:
            if process.stdin is not None:
                try:
                    await send_frame(process.stdin, Stop())
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # that worker is gone already


# -- worker -----------------------------------------------------------------------------------------


async def _watch_parent(inbound: FrameReader, runner: Runner) -> None:
    """Stop early on Stop, or when the parent is gone (its end of stdin closed)."""
    while True:
        frame = await inbound.next()
        if frame is None or isinstance(frame, Stop):
            runner.stop()
            return


async def _work(in_fd: int, out_fd: int) -> int:
    inbound = FrameReader(trio.lowlevel.FdStream(in_fd))
    outbound = trio.lowlevel.FdStream(out_fd)
    with trio.fail_after(READY_TIMEOUT_S):
        start = await inbound.next()
    if not isinstance(start, Start):
        return 2
    runner = Runner(start.config, on_interval=lambda delta: send_frame(outbound, Interval(delta=delta)))
    await send_frame(outbound, Ready())
    with trio.fail_after(READY_TIMEOUT_S):
        go = await inbound.next()
    if not isinstance(go, Go):
        return 0  # stopped before it started
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_parent, inbound, runner)
        await runner.run()
        nursery.cancel_scope.cancel()
    await send_frame(outbound, Done())
    return 0


def worker_main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out_fd, in_fd = os.dup(1), os.dup(0)
    os.dup2(2, 1)
    raise_open_files_limit()
    return trio.run(_work, in_fd, out_fd)


if __name__ == "__main__":
    sys.exit(worker_main())
