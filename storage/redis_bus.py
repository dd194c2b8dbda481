"""The Redis bus: lets several Pulse nodes behave as one server.

Three services over one Redis, all on trio (coredis runs natively through anyio):

- Fan-out with offsets. ``publish(channel, payload)`` appends the entry to a short-retention stream
  ``{prefix}stream:{channel}`` (XADD MAXLEN ~) and, in the same Lua script, publishes
  ``"<stream id> <payload>"`` on ``{prefix}bus:{channel}``. A script is atomic and Redis runs one
  at a time, so pub/sub order is stream order and every node, the publisher included, receives
  every entry with its stream id, in the same order. Pub/sub alone is lossy; the stream is what a
  reader resumes from (``read_since``), and what this node reads to fill the gap a pub/sub
  disconnect leaves in every channel it has seen.
- Membership and ownership (storage/membership.py): heartbeats into a sorted set, rendezvous hashing.
- Node RPC (storage/redis_rpc.py): request/reply to another node's handler.

Reconnection: the bus runs on one *link* (command client + pub/sub connection, storage/redis_link.py)
at a time. Any failure ends the link: ``connected`` goes false, ``last_error`` says why, this node
is alone (``live_nodes() == (self,)``), queued publications fail, waiting calls fail; then a new
link is opened after a capped backoff, this node re-registers, resubscribes, fills the gaps, and
is connected again. The server never goes down for Redis.

Publication is pipelined: a publisher task takes up to ENTRIES_PER_ROUND_TRIP queued entries, in
script calls of up to ENTRIES_PER_SCRIPT entries each. One EVALSHA per entry pays coredis's
per-command cost (~20-40 us) on every entry: measured 26-43k entries/s of 1 KiB at one entry per
call against 70-115k at 64 (same pipelines, no subscribers, on a shared 2-core machine). Each
entry is still appended and published atomically and in order: a group is one script run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import trio
from coredis.exceptions import NoScriptError

from storage.membership import HEARTBEAT, Membership, MembershipCallback
from storage.redis_link import (
    CONNECTION_ERRORS,
    LINK_ERRORS,
    Backoff,
    Link,
    LinkLost,
    LuaScript,
    Redis,
    describe,
    open_client,
    open_link,
    sole_exception,
)
from storage.redis_rpc import Handler, NodeRpc, NodeUnreachable, RemoteError

__all__ = ["BusUnavailable", "NodeUnreachable", "RedisBus", "RemoteError", "StreamTrimmed"]

log = logging.getLogger("pulse.bus")

PUBLISH_QUEUE: Final = 10_000  # entries accepted but not yet sent; beyond this publish() refuses
ENTRIES_PER_ROUND_TRIP: Final = 1024
ENTRIES_PER_SCRIPT: Final = 64  # keeps one script call short: Redis runs nothing else meanwhile
PUBLISH_TIMEOUT_S: Final = 5.0  # one pipeline round trip; longer means the link is broken
READ_TIMEOUT_S: Final = 5.0
SETUP_TIMEOUT_S: Final = 3.0  # connect, handshake, load scripts, subscribe, register
DEREGISTER_TIMEOUT_S: Final = 1.0
RECONNECT_FIRST_S: Final = 0.05
RECONNECT_CAP_S: Final = 2.0
GAP_FILL_PAGE: Final = 1000
MAX_TRACKED_CHANNELS: Final = 10_000  # channels whose last delivered id is kept for gap filling

# KEYS[i] = stream of entry i; ARGV[1] = maxlen, ARGV[2] = n, ARGV[2+i] = payload i,
# ARGV[2+n+i] = pub/sub channel of entry i. Returns the stream ids.
PUBLISH = LuaScript(
    "publish",
    """
local maxlen, n = ARGV[1], tonumber(ARGV[2])
local ids = {}
local STREAM_IDLE_TTL_MS = 600000  -- a project's stream that nobody writes to goes after 10 min
for i = 1, n do
  local payload = ARGV[2 + i]
  local id = redis.call('XADD', KEYS[i], 'MAXLEN', '~', maxlen, '*', 'p', payload)
  redis.call('PEXPIRE', KEYS[i], STREAM_IDLE_TTL_MS)
  redis.call('PUBLISH', ARGV[2 + n + i], id .. ' ' .. payload)
  ids[i] = id
end
return ids
""",
)

# KEYS[1] = stream; ARGV[1] = exclusive start id, ARGV[2] = count. Returns {entries, first retained
# id, entries removed so far (-1: unknown before Redis 7), last generated id}, read atomically.
READ = LuaScript(
    "read_since",
    """
local info = redis.pcall('XINFO', 'STREAM', KEYS[1])
if info['err'] then return {{}, '', 0, ''} end
local length, added, first, last = 0, -1, '', ''
for i = 1, #info, 2 do
  local k = info[i]
  if k == 'length' then length = info[i + 1]
  elseif k == 'entries-added' then added = info[i + 1]
  elseif k == 'last-generated-id' then last = info[i + 1]
  elseif k == 'first-entry' and info[i + 1] then first = info[i + 1][1]
  end
end
local removed = -1
if added >= 0 then removed = added - length end
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
return {entries, first, removed, last}
""",
)

EntryCallback = Callable[[str, str, bytes], None]
PublishFailedCallback = Callable[[str, bytes], None]
StreamPosition = tuple[int, int]

_STREAM_ID = re.compile(r"\d+-\d+")


class BusUnavailable(Exception):
    """Redis is down (or the publish queue is full): deliver locally instead."""


class StreamTrimmed(Exception):
    """Entries after ``after_id`` are gone from the stream (trimmed, or Redis lost them)."""

    def __init__(self, channel: str, after_id: str, oldest_id: str) -> None:
        super().__init__(
            f"entries after {after_id!r} in channel {channel!r} are no longer retained "
            f"(oldest retained: {oldest_id or 'none'!r})"
        )
        self.channel = channel
        self.after_id = after_id
        self.oldest_id = oldest_id


def parse_stream_id(stream_id: str) -> StreamPosition:
    """``"1700000000000-3"`` -> (1700000000000, 3); ``"0"`` is the start of the stream."""
    if stream_id == "0":
        return (0, 0)
    if not _STREAM_ID.fullmatch(stream_id):
        raise ValueError(f"invalid stream id {stream_id!r} (expected 'milliseconds-sequence')")
    ms, _, seq = stream_id.partition("-")
    return (int(ms), int(seq))


def format_stream_id(position: StreamPosition) -> str:
    return f"{position[0]}-{position[1]}"


@contextlib.contextmanager
def within(seconds: float, what: str) -> Iterator[None]:
    """A deadline for one Redis operation of the link; past it the link is lost, and says why."""
    try:
        with trio.fail_after(seconds):
            yield
    except trio.TooSlowError:
        raise LinkLost(f"{what} took longer than {seconds:g} s") from None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class RedisBus:
    """One node's end of the bus. Construct (no I/O), register callbacks, then run() in a nursery:
    ``await nursery.start(bus.run)`` returns after the first connection attempt, connected or not.

    ``key_prefix`` namespaces every key and channel (several clusters on one Redis, tests).
    """

    def __init__(
        self,
        url: str,
        node_id: str,
        *,
        heartbeat_s: float = 1.0,
        node_ttl_s: float = 3.0,
        stream_maxlen: int = 100_000,
        key_prefix: str = "pulse:",
    ) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a redis url: {url!r} (expected redis://, rediss:// or unix://)")
        if not node_id:
            raise ValueError("node id must not be empty")
        if not 0 < heartbeat_s < node_ttl_s:
            raise ValueError(f"need 0 < heartbeat_s < node_ttl_s, got {heartbeat_s!r} and {node_ttl_s!r}")
        if stream_maxlen < 1:
            raise ValueError(f"stream_maxlen must be positive, got {stream_maxlen!r}")
        self.url = url
        self.node_id = node_id
        self.heartbeat_s = heartbeat_s
        self.node_ttl_s = node_ttl_s
        self.stream_maxlen = stream_maxlen
        self.connected = False
        self.last_error: str | None = "not started"

        self._stream_prefix = f"{key_prefix}stream:"
        self._bus_prefix = f"{key_prefix}bus:".encode()
        self._bus_pattern = _glob_escape(f"{key_prefix}bus:") + "*"
        self._rpc_prefix = f"{key_prefix}rpc:"
        self._rpc_channel = f"{self._rpc_prefix}{node_id}".encode()
        self._notice_channel = f"{key_prefix}ctl:members".encode()

        self._membership = Membership(
            node_id, node_ttl_s=node_ttl_s, nodes_key=f"{key_prefix}nodes",
            notice_channel=self._notice_channel.decode(),
        )  # fmt: skip
        self._rpc = NodeRpc(node_id, lambda node: self._rpc_prefix + node)
        self._outbox_in, self._outbox = trio.open_memory_channel[tuple[str, bytes]](PUBLISH_QUEUE)
        self._in_flight: list[tuple[str, bytes]] = []  # the batch the publisher is sending
        self._entry_callbacks: list[EntryCallback] = []
        self._publish_failed_callbacks: list[PublishFailedCallback] = []
        # the last stream id delivered per channel (first seen first), so a new link can fill
        # each channel's gap; and, right after a fill, the position it reached, so the pub/sub
        # messages buffered meanwhile are not delivered twice
        self._delivered: dict[str, str] = {}
        self._filled_to: dict[str, StreamPosition] = {}
        self._link: Link | None = None
        self._link_scope: trio.CancelScope | None = None
        self._link_error: str | None = None
        self._refresh = trio.Event()  # set when another node joins or leaves
        self._absence_callbacks: list[Callable[[], None]] = []
        self._task_status: trio.TaskStatus[None] | None = None
        self._links = 0
        self._stopping = False
        self._counters = dict.fromkeys(
            ("published", "publish_refused", "publish_failures", "publish_unconfirmed", "received",
             "duplicates_dropped", "gap_filled", "gaps_unfillable", "callback_errors", "bad_messages",
             "absences"), 0,
        )  # fmt: skip

    # --- membership ----------------------------------------------------------------------------
    def live_nodes(self) -> tuple[str, ...]:
        return self._membership.live

    def owner(self, key: str) -> str:
        return self._membership.owner(key)

    def on_membership_change(self, callback: MembershipCallback) -> None:
        self._membership.on_change(callback)

    # --- fan-out -------------------------------------------------------------------------------
    async def publish(self, channel: str, payload: bytes) -> None:
        """Queue an entry for every node; never waits. BusUnavailable when it cannot be queued."""
        if not self.connected:
            self._counters["publish_refused"] += 1
            raise BusUnavailable(f"redis is not connected: {self.last_error}")
        try:
            self._outbox_in.send_nowait((channel, payload))
        except trio.WouldBlock:
            self._counters["publish_refused"] += 1
            raise BusUnavailable(f"publish queue is full ({PUBLISH_QUEUE} entries)") from None

    def on_entry(self, callback: EntryCallback) -> None:
        self._entry_callbacks.append(callback)

    def on_publish_failed(self, callback: PublishFailedCallback) -> None:
        """callback(channel, payload) for each entry publish() accepted that never reached Redis
        (queued when the link broke, or refused by Redis): deliver it locally if it matters."""
        self._publish_failed_callbacks.append(callback)

    async def read_since(self, channel: str, after_id: str, *, limit: int) -> list[tuple[str, bytes]]:
        """Retained entries with id > after_id, oldest first, at most ``limit``.

        ``after_id`` "0" (or "0-0") reads from the oldest retained entry and never raises
        StreamTrimmed; any other id raises it when entries after it may have been trimmed.
        """
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit!r}")
        after = parse_stream_id(after_id)
        link = self._link
        if link is None or not self.connected:
            raise BusUnavailable(f"redis is not connected: {self.last_error}")
        try:
            with trio.fail_after(READ_TIMEOUT_S):
                return await self._read(link.commands, channel, after, limit)
        except trio.TooSlowError:
            raise BusUnavailable(f"redis did not answer within {READ_TIMEOUT_S} s") from None
        except LINK_ERRORS as exc:
            self._fail_link_if_broken(exc)
            raise BusUnavailable(f"reading from redis failed: {describe(exc)}") from None

    # --- node RPC ------------------------------------------------------------------------------
    def set_handler(self, handler: Handler) -> None:
        self._rpc.set_handler(handler)

    async def call(self, node: str, payload: bytes, *, timeout: float) -> bytes:  # noqa: ASYNC109
        """``node``'s handler's reply to ``payload``. NodeUnreachable, or RemoteError if it raised."""
        if node == self.node_id:
            return await self._rpc.call_local(payload, timeout)
        if not self.connected:
            self._rpc.counters["unreachable"] += 1
            raise NodeUnreachable(f"cannot reach node {node!r}: redis is not connected")
        if node not in self._membership.live:
            self._rpc.counters["unreachable"] += 1
            raise NodeUnreachable(f"node {node!r} is not live")
        return await self._rpc.call(node, payload, timeout)

    # --- health --------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "last_error": self.last_error,
            "reconnects": max(0, self._links - 1),
            "live_nodes": len(self._membership.live),
            "membership_changes": self._membership.changes,
            "publish_queue": self._outbox.statistics().current_buffer_used,
            **self._counters,
            **{f"rpc_{name}": value for name, value in self._rpc.counters.items()},
        }

    # --- running -------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect and stay connected until cancelled; started() after the first attempt."""
        self._task_status = task_status
        self._stopping = False
        backoff = Backoff(RECONNECT_FIRST_S, RECONNECT_CAP_S)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._rpc.serve_requests, nursery)
            try:
                while True:
                    links_before = self._links
                    try:
                        await self._run_link()
                    except Exception as exc:  # Redis failing (or a bug here) must never stop the node
                        if not isinstance(exc, (*LINK_ERRORS, LinkLost, trio.TooSlowError)):
                            log.exception("redis bus link failed unexpectedly")
                        reason = self._link_error or describe(exc)
                        log.debug("redis link attempt ended: %s", reason)
                        self._link_down(reason)
                    self._started()
                    if self._links > links_before:
                        backoff.reset()
                    await trio.sleep(backoff.next_delay())
            finally:
                self._stopping = True
                self._link_down("bus stopped")
                with trio.CancelScope(shield=True), trio.move_on_after(DEREGISTER_TIMEOUT_S):
                    await self._deregister()
                nursery.cancel_scope.cancel()

    def _started(self) -> None:
        if self._task_status is not None:
            self._task_status.started()
            self._task_status = None

    async def _run_link(self) -> None:
        self._link_error = None
        # One deadline for connecting (TCP, handshake) and setting up; lifted once set up. A Redis
        # that accepts connections but answers nothing (stopped process) costs one deadline.
        setup = trio.CancelScope(deadline=trio.current_time() + SETUP_TIMEOUT_S)
        try:
            with setup:
                await self._open_and_serve_link(setup)
        except Exception as exc:
            # coredis turns a cancellation during its handshake into ConnectionError
            if trio.current_time() >= setup.deadline:
                raise LinkLost(
                    f"redis did not complete the connection setup within {SETUP_TIMEOUT_S} s"
                ) from exc
            raise
        if setup.cancelled_caught:
            raise LinkLost(f"redis did not complete the connection setup within {SETUP_TIMEOUT_S} s")
        raise LinkLost(self._link_error or "redis link closed")

    async def _open_and_serve_link(self, setup: trio.CancelScope) -> None:
        async with open_link(self.url, client_name=f"pulse:{self.node_id}") as link:
            await link.load_scripts((PUBLISH, READ, HEARTBEAT))
            # subscribe before filling gaps: what is published from here on is buffered
            await link.subscription.subscribe(
                patterns=[self._bus_pattern],
                channels=[self._rpc_channel.decode(), self._notice_channel.decode()],
            )
            nodes = await self._membership.heartbeat(link.commands)
            await self._membership.announce(link.commands)
            setup.deadline = math.inf
            await self._fill_gaps(link.commands)
            async with trio.open_nursery() as nursery:
                self._link, self._link_scope = link, nursery.cancel_scope
                for task in (self._receive, self._publish_outbox, self._heartbeats, self._keepalive):
                    nursery.start_soon(self._guard, task, link)
                nursery.start_soon(self._guard, self._send_rpc_frames, link)
                self._link_up(nodes)

    async def _guard(self, task: Callable[[Link], Awaitable[None]], link: Link) -> None:
        """Run one of the link's tasks; its failure ends the link (and only the link)."""
        try:
            await task(link)
        except (*LINK_ERRORS, LinkLost, trio.TooSlowError) as exc:
            self._fail_link(describe(exc))
        except BaseExceptionGroup as group:  # coredis's task groups wrap what they raise
            sole = sole_exception(group)
            if sole is None:
                raise
            self._fail_link(describe(sole))
        except Exception as exc:
            log.exception("redis bus task failed")
            self._fail_link(describe(exc))
        else:
            self._fail_link("a bus task ended")

    def _link_up(self, nodes: list[str]) -> None:
        self._links += 1
        self.connected = True
        self.last_error = None
        log.info("redis link up (node %r)", self.node_id)
        self._membership.update(nodes)
        self._started()

    def _fail_link(self, reason: str) -> None:
        """End the current link now; run() opens a new one."""
        if self._link_error is None:
            self._link_error = reason
        if self._link_scope is not None:
            self._link_scope.cancel()
        self._link_down(reason)

    def _fail_link_if_broken(self, exc: BaseException) -> None:
        if isinstance(exc, CONNECTION_ERRORS):
            self._fail_link(describe(exc))

    def _link_down(self, reason: str) -> None:
        """No link: say why, be alone, and fail what was waiting on it."""
        if self.connected:
            log.log(logging.INFO if self._stopping else logging.WARNING, "redis link down: %s", reason)
        self.connected = False
        self.last_error = reason
        self._link = None
        self._link_scope = None
        self._membership.lose_redis()
        self._rpc.fail_pending(f"redis link lost: {reason}")
        self._rpc.drop_outgoing()
        # The batch being sent when the link broke may or may not have reached Redis. It is
        # reported as failed too, so this node's subscribers get it now: if it did reach Redis,
        # the gap fill may deliver it once more (at-least-once, the same event ids), never less.
        self._counters["publish_unconfirmed"] += len(self._in_flight)
        failed: list[tuple[str, bytes]] = list(self._in_flight)
        self._in_flight = []
        while True:
            try:
                failed.append(self._outbox.receive_nowait())
            except trio.WouldBlock:
                break
        self._publish_failed(failed)

    async def _deregister(self) -> None:
        if not self._links:
            return
        try:
            async with open_client(self.url, client_name=f"pulse:{self.node_id}:leave") as client:
                await self._membership.leave(client)
        except Exception as exc:  # Redis unreachable: the others drop this node after the TTL
            log.info("could not deregister node %r: %s", self.node_id, describe(exc))

    # --- the link's tasks ----------------------------------------------------------------------
    async def _receive(self, link: Link) -> None:
        rpc_channel, notice_channel = self._rpc_channel, self._notice_channel
        node = self.node_id.encode()
        async with contextlib.aclosing(link.subscription.messages()) as messages:
            async for message in messages:
                kind = message[0]
                if kind == b"pmessage":
                    self._on_bus_message(message[2], message[3])
                elif kind == b"message":
                    if message[1] == rpc_channel:
                        self._rpc.on_message(message[2])
                    elif message[1] == notice_channel and message[2] != node:
                        self._refresh.set()

    async def _publish_outbox(self, link: Link) -> None:
        while True:
            batch = [await self._outbox.receive()]
            while len(batch) < ENTRIES_PER_ROUND_TRIP:
                try:
                    batch.append(self._outbox.receive_nowait())
                except trio.WouldBlock:
                    break
            self._in_flight = batch
            with within(PUBLISH_TIMEOUT_S, f"publishing {len(batch)} entries"):
                await self._publish_batch(link.commands, batch)
            self._in_flight = []

    async def _publish_batch(self, commands: Redis, batch: list[tuple[str, bytes]]) -> None:
        chunks = [batch[i : i + ENTRIES_PER_SCRIPT] for i in range(0, len(batch), ENTRIES_PER_SCRIPT)]
        results = await self._run_publish_scripts(commands, chunks)
        again = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if again:  # Redis lost its script cache (restarted): NOSCRIPT means nothing ran, so run again
            await PUBLISH.load(commands)
            retried = await self._run_publish_scripts(commands, [chunks[i] for i in again])
            for i, result in zip(again, retried, strict=True):
                results[i] = result
        for chunk, result in zip(chunks, results, strict=True):
            if isinstance(result, CONNECTION_ERRORS):
                raise result  # the connection broke mid-pipeline: the link is gone
            if isinstance(result, Exception):
                log.warning("publishing %d entries failed: %s", len(chunk), describe(result))
                self._publish_failed(chunk)
            else:
                self._counters["published"] += len(chunk)

    async def _run_publish_scripts(
        self, commands: Redis, chunks: list[list[tuple[str, bytes]]]
    ) -> list[object]:
        maxlen, streams = self.stream_maxlen, self._stream_prefix
        bus = self._bus_prefix.decode()
        async with commands.pipeline(transaction=False, raise_on_error=False) as pipe:
            for chunk in chunks:
                keys = [streams + channel for channel, _ in chunk]
                args: list[int | str | bytes] = [maxlen, len(chunk)]
                args += [payload for _, payload in chunk]
                args += [bus + channel for channel, _ in chunk]
                pipe.evalsha(PUBLISH.sha, keys, args)
        return list(pipe.results or ())

    async def _heartbeats(self, link: Link) -> None:
        # A heartbeat slower than the TTL means Redis is not serving us (and the other nodes drop
        # this one anyway): reconnect. Not shorter: a busy CPU must not make the link flap.
        timeout = max(1.0, self.node_ttl_s)
        last_ok = trio.current_time()
        while True:
            with trio.move_on_after(self.heartbeat_s):
                await self._refresh.wait()
            self._refresh = trio.Event()
            if trio.current_time() - last_ok > self.node_ttl_s:
                # This process stood still (GC pause, SIGSTOP, starved CPU) for longer than the
                # TTL: the other nodes dropped it and took its keys. Say so before rejoining.
                self._counters["absences"] += 1
                log.warning("node %r missed its heartbeats for %.1f s: rejoining", self.node_id,
                            trio.current_time() - last_ok)
                self._notify_absent()
            with within(timeout, "a heartbeat"):
                nodes = await self._membership.heartbeat(link.commands)
            last_ok = trio.current_time()
            self._membership.update(nodes)

    def on_absence(self, callback: Callable[[], None]) -> None:
        """callback() when this node was (probably) dropped from the cluster while it still had
        its link: whatever it holds for keys it owned may have moved on elsewhere meanwhile."""
        self._absence_callbacks.append(callback)

    def _notify_absent(self) -> None:
        for callback in list(self._absence_callbacks):
            try:
                callback()
            except Exception:
                log.exception("absence callback failed")

    async def _keepalive(self, link: Link) -> None:
        """Ping on the pub/sub connection: a silent one (half-open TCP, stalled Redis) ends the link."""
        timeout = max(1.0, self.node_ttl_s)
        while True:
            await trio.sleep(self.heartbeat_s)
            with within(timeout, "a ping on the pub/sub connection"):
                await link.subscription.ping()

    async def _send_rpc_frames(self, link: Link) -> None:
        await self._rpc.send_frames(link.commands)

    # --- delivery ------------------------------------------------------------------------------
    def _on_bus_message(self, channel: bytes, data: bytes) -> None:
        stream_id, sep, payload = data.partition(b" ")
        if not sep or not channel.startswith(self._bus_prefix):
            self._counters["bad_messages"] += 1
            return
        try:
            self._deliver(channel[len(self._bus_prefix) :].decode(), stream_id.decode(), payload)
        except (UnicodeDecodeError, ValueError):
            self._counters["bad_messages"] += 1

    def _deliver(self, channel: str, stream_id: str, payload: bytes) -> None:
        filled_to = self._filled_to.get(channel)
        if filled_to is not None:  # only just after a gap fill: parse ids only then
            if parse_stream_id(stream_id) <= filled_to:
                self._counters["duplicates_dropped"] += 1  # delivered by the gap fill already
                return
            del self._filled_to[channel]
        delivered = self._delivered
        if channel not in delivered and len(delivered) >= MAX_TRACKED_CHANNELS:
            del delivered[next(iter(delivered))]  # the channel first seen longest ago
        delivered[channel] = stream_id
        self._counters["received"] += 1
        for callback in self._entry_callbacks:
            try:
                callback(channel, stream_id, payload)
            except Exception:  # one subscriber's bug must not stop delivery to the others
                self._counters["callback_errors"] += 1
                log.exception("bus entry callback failed (channel %r)", channel)

    async def _fill_gaps(self, commands: Redis) -> None:
        """Deliver what every channel seen so far received while this node was not subscribed."""
        self._filled_to.clear()
        for channel, last_id in list(self._delivered.items()):
            after = parse_stream_id(last_id)
            while True:
                with within(READ_TIMEOUT_S, f"reading channel {channel!r} to fill a gap"):
                    try:
                        page = await self._read(commands, channel, after, GAP_FILL_PAGE)
                    except StreamTrimmed as exc:
                        self._counters["gaps_unfillable"] += 1
                        log.warning("bus gap cannot be filled: %s", exc)
                        page = await self._read(commands, channel, (0, 0), GAP_FILL_PAGE)
                for stream_id, payload in page:
                    self._deliver(channel, stream_id, payload)
                self._counters["gap_filled"] += len(page)
                if len(page) < GAP_FILL_PAGE:
                    break
                after = parse_stream_id(page[-1][0])
            self._filled_to[channel] = parse_stream_id(self._delivered.get(channel, last_id))

    async def _read(
        self, commands: Redis, channel: str, after: StreamPosition, limit: int
    ) -> list[tuple[str, bytes]]:
        raw_entries, first, removed, last = await READ.run(
            commands, [self._stream_prefix + channel], [format_stream_id(after), limit]
        )
        if after != (0, 0) and removed != 0:  # entries were trimmed (or, before Redis 7, maybe)
            oldest = _text(first) or _text(last)  # last generated: everything was removed
            if oldest and after < parse_stream_id(oldest):
                raise StreamTrimmed(channel, format_stream_id(after), _text(first))
        return [(_text(stream_id), fields[1]) for stream_id, fields in raw_entries]

    def _publish_failed(self, entries: list[tuple[str, bytes]]) -> None:
        if not entries:
            return
        self._counters["publish_failures"] += len(entries)
        for channel, payload in entries:
            for callback in self._publish_failed_callbacks:
                try:
                    callback(channel, payload)
                except Exception:
                    self._counters["callback_errors"] += 1
                    log.exception("publish-failed callback failed (channel %r)", channel)
