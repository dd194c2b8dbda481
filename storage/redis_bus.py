"""The Redis bus: lets several Pulse nodes behave as one server.

Three services over one Redis, all on trio (coredis runs natively through anyio):

- Fan-out with offsets. ``publish(channel, payload)`` appends the entry to a short-retention stream
  ``{prefix}stream:{channel}`` (XADD MAXLEN ~) and, in the same Lua script, publishes
  ``"<stream id> <payload>"`` on ``{prefix}bus:{channel}``. A script is atomic and Redis runs one
  at a time, so pub/sub order is stream order and every node, the publisher included, receives
  every entry with its stream id, in the same order. Pub/sub alone is lossy; the stream is what a
  reader resumes from (``read_since``, ``read_from``), and what this node reads to fill the gap a
  pub/sub disconnect leaves in every channel it has seen.
- Retention is bounded twice: ``stream_maxlen`` entries (approximately: MAXLEN ~) and
  ``stream_max_bytes`` of payload per stream (one entry is a whole request's messages, so a count
  alone lets a client of 4 MB batches fill Redis). Each entry carries the stream's byte offset at
  its end (field ``e``) and a small hash ``{prefix}streambytes:{channel}`` keeps the offset of the
  newest entry and (a lower bound of) the oldest entry's start. When the payload retained passes
  ``stream_max_bytes``, the publishing script removes the oldest entries (exact XTRIM MINID) down to
  15/16 of it, always keeping the newest entry: one trim per 1/16 of the bound appended.
- Membership and ownership (storage/membership.py): heartbeats into a sorted set, rendezvous hashing.
- Node RPC (storage/redis_rpc.py): request/reply to another node's handler.

Reconnection: the bus runs on one *link* (command client + pub/sub connection, storage/redis_link.py)
at a time. Any failure ends the link: ``connected`` goes false, ``last_error`` says why, queued
publications fail, waiting calls fail; then a new link is opened after a capped backoff, this node
re-registers, resubscribes, fills the gaps, and is connected again. The server never goes down for
Redis.

Grace: for ``link_grace_s`` after the link is lost (and never past the node TTL counted from this
node's last heartbeat, after which the other nodes may have dropped it), this node keeps the
membership it last saw instead of going alone, so it serves only its own keys and a short blip
changes no owner. A reconnect within the grace that finds the same membership changes nothing
(actors are kept). When the grace ends first, the node is alone (``live_nodes() == (self,)``) and
serves every key, as without a grace. A node that was alone says so when it is back (INCR of
``{prefix}ctl:solo``, checked by every node on each heartbeat): the others then treat what they
hold as stale (``on_absence`` callbacks), because it may have applied events to their keys.

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
DEFAULT_STREAM_MAX_BYTES: Final = 64 * 1024 * 1024  # payload bytes kept per stream
PURGE_PAGE: Final = 500  # stream entries read per XRANGE by purge()
PURGE_TIME_LIMIT_S: Final = 30.0

# KEYS[i] = stream of entry i, KEYS[n+i] = its byte-offset hash; ARGV[1] = maxlen, ARGV[2] = n,
# ARGV[3] = max payload bytes per stream, ARGV[3+i] = payload i, ARGV[3+n+i] = pub/sub channel of
# entry i. Returns the stream ids.
PUBLISH = LuaScript(
    "publish",
    """
local maxlen, n, maxbytes = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local keep = maxbytes - math.floor(maxbytes / 16)  -- a trim goes down to this: one per 1/16 appended
local STREAM_IDLE_TTL_MS = 600000  -- a project's stream that nobody writes to goes after 10 min
local function entry_end(fields)
  for j = 3, #fields, 2 do
    if fields[j] == 'e' then return tonumber(fields[j + 1]) end
  end
  return nil
end
-- Remove the oldest entries of ``key`` that start before ``target`` (always keeping the newest
-- entry); returns the start offset of the oldest entry kept.
local function trim(key, target, total, head, newest_id, newest_start)
  local length = redis.call('XLEN', key)
  local average = math.max(1, (total - head) / math.max(1, length))
  local count = math.max(1, math.min(256, math.floor(1048576 / average)))  -- ~1 MiB read per page
  local start = '-'
  while true do
    local page = redis.call('XRANGE', key, start, '+', 'COUNT', count)
    if #page == 0 then break end
    for _, entry in ipairs(page) do
      if entry[1] == newest_id then break end
      local e = entry_end(entry[2])
      -- an entry without an offset (written before offsets existed) counts as the oldest
      if e ~= nil and e - #entry[2][2] >= target then
        redis.call('XTRIM', key, 'MINID', entry[1])
        return e - #entry[2][2]
      end
    end
    start = '(' .. page[#page][1]
  end
  redis.call('XTRIM', key, 'MINID', newest_id)
  return newest_start
end
local state = {}
local ids = {}
for i = 1, n do
  local key, payload = KEYS[i], ARGV[3 + i]
  local st = state[key]
  if st == nil then
    local m = redis.call('HMGET', KEYS[n + i], 'e', 'h')
    local total, head = tonumber(m[1]), tonumber(m[2]) or 0
    if total == nil then  -- no offsets yet (or the hash was lost): continue from the newest entry
      total, head = 0, 0
      local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
      if newest[1] then total = entry_end(newest[1][2]) or 0 end
    end
    st = {total, head, KEYS[n + i]}
    state[key] = st
  end
  local start = st[1]
  st[1] = start + #payload
  local id = redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'p', payload, 'e', st[1])
  redis.call('PEXPIRE', key, STREAM_IDLE_TTL_MS)
  redis.call('PUBLISH', ARGV[3 + n + i], id .. ' ' .. payload)
  ids[i] = id
  if st[1] - st[2] > maxbytes then
    st[2] = trim(key, st[1] - keep, st[1], st[2], id, start)
  end
end
for _, st in pairs(state) do
  redis.call('HSET', st[3], 'e', st[1], 'h', st[2])
  redis.call('PEXPIRE', st[3], STREAM_IDLE_TTL_MS)
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

# KEYS[1] = stream; ARGV[1] = anchor id, ARGV[2] = entries after the anchor at most, ARGV[3] = their
# payload bytes at most (0: no bound; the first entry after the anchor always comes), ARGV[4] = 1 to
# return the anchor's fields too. Returns {entries, anchor first, ''} when the anchor is still in
# the stream (then nothing after it can have been trimmed), else {{}, oldest retained id or ''}.
READ_FROM = LuaScript(
    "read_from",
    """
local page = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', tonumber(ARGV[2]) + 1)
if #page == 0 or page[1][1] ~= ARGV[1] then
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  if oldest[1] then return {{}, oldest[1][1]} end
  return {{}, ''}
end
local cap = tonumber(ARGV[3])
if cap > 0 then
  local size = 0
  for i = 2, #page do
    size = size + #page[i][2][2]
    if size > cap and i > 2 then
      for k = #page, i, -1 do page[k] = nil end
      break
    end
  end
end
if ARGV[4] ~= '1' then page[1][2] = {} end
return {page, ''}
""",
)

EntryCallback = Callable[[str, str, bytes], None]
PublishFailedCallback = Callable[[str, bytes], None]
LinkCallback = Callable[[bool], None]
StreamPosition = tuple[int, int]

_STREAM_ID = re.compile(r"\d+-\d+")


class BusUnavailable(Exception):
    """Redis is down (or the publish queue is full): deliver locally instead."""


class StreamTrimmed(Exception):
    """Entries after ``after_id`` are gone from the stream (trimmed, or Redis lost them).
    ``oldest_id`` is the oldest entry still retained ("" when the stream is gone)."""

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


def _payload(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _int(value: Any) -> int:
    """A counter read from Redis (None when the key does not exist)."""
    return 0 if value is None else int(value)


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
        stream_max_bytes: int = DEFAULT_STREAM_MAX_BYTES,
        link_grace_s: float = 0.0,
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
        if stream_max_bytes < 1:
            raise ValueError(f"stream_max_bytes must be positive, got {stream_max_bytes!r}")
        if not link_grace_s >= 0:
            raise ValueError(f"link_grace_s must not be negative, got {link_grace_s!r}")
        self.url = url
        self.node_id = node_id
        self.heartbeat_s = heartbeat_s
        self.node_ttl_s = node_ttl_s
        self.stream_maxlen = stream_maxlen
        self.stream_max_bytes = stream_max_bytes
        self.link_grace_s = link_grace_s
        self.connected = False
        self.last_error: str | None = "not started"

        self._stream_prefix = f"{key_prefix}stream:"
        self._bytes_prefix = f"{key_prefix}streambytes:"
        self._solo_key = f"{key_prefix}ctl:solo"
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
        # grace: when the link went down (trio time), which outage that was, and the last heartbeat
        self._link_callbacks: list[LinkCallback] = []
        self._up = trio.Event()  # set while connected
        self._outage = trio.Event()  # set when a connected link is lost (the grace timer waits on it)
        self._outages = 0
        self._down_since = 0.0
        self._last_beat: float | None = None
        self._alone = True  # serving every key (no link, and no grace left)
        self._was_alone = False  # alone since the last link: the others must hear of it
        self._solo_seen: int | None = None  # the cluster's count of solo periods, as last read
        self._counters = dict.fromkeys(
            ("published", "publish_refused", "publish_failures", "publish_unconfirmed", "received",
             "duplicates_dropped", "gap_filled", "gaps_unfillable", "callback_errors", "bad_messages",
             "absences", "outages_within_grace", "solo_periods_seen"), 0,
        )  # fmt: skip

    # --- membership ----------------------------------------------------------------------------
    def live_nodes(self) -> tuple[str, ...]:
        return self._membership.live

    def owner(self, key: str) -> str:
        return self._membership.owner(key)

    def on_membership_change(self, callback: MembershipCallback) -> None:
        self._membership.on_change(callback)

    def on_link_change(self, callback: LinkCallback) -> None:
        """callback(False) when the link to Redis is lost, callback(True) when a new one is up
        (after membership was updated from its first heartbeat)."""
        self._link_callbacks.append(callback)

    async def wait_connected(self) -> None:
        """Return once the bus is connected (at once if it is); the caller bounds the wait."""
        while not self.connected:
            await self._up.wait()

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
        link = self._connected_link()
        with self._reading():
            return await self._read(link.commands, channel, after, limit)

    async def read_from(
        self, channel: str, anchor_id: str, *, limit: int, max_bytes: int = 0, with_anchor: bool = True
    ) -> list[tuple[str, bytes]]:
        """The entry ``anchor_id`` and the retained entries after it, oldest first: at most ``limit``
        after it, and (with ``max_bytes``) at most that many payload bytes after it, but always the
        first one. Resuming from an entry a reader has seen is exact this way: StreamTrimmed when the
        anchor is no longer in the stream (trimmed, expired, or lost by Redis), because entries after
        it may then be gone too; while it is there, nothing after it was removed. Without
        ``with_anchor`` the anchor comes with an empty payload (a reader that has all of it).
        """
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit!r}")
        if parse_stream_id(anchor_id) == (0, 0):
            raise ValueError("the anchor must be an entry id, not the start of the stream")
        link = self._connected_link()
        with self._reading():
            raw, oldest = await READ_FROM.run(
                link.commands, [self._stream_prefix + channel],
                [anchor_id, limit, max(0, max_bytes), 1 if with_anchor else 0],
            )  # fmt: skip
        if not raw:
            raise StreamTrimmed(channel, anchor_id, _text(oldest))
        return [(_text(stream_id), fields[1] if fields else b"") for stream_id, fields in raw]

    async def purge(self, channel: str, matches: Callable[[bytes], bool], *, page: int = PURGE_PAGE,
                    time_limit_s: float = PURGE_TIME_LIMIT_S) -> int:  # fmt: skip
        """XDEL every retained entry of ``channel``'s stream whose payload ``matches`` (a data
        deletion: the entries that carry an erased user), reading the stream in pages of ``page``
        with XRANGE. Returns how many were deleted; BusUnavailable when Redis is down or the whole
        scan takes longer than ``time_limit_s`` (the stream is bounded by stream_maxlen and
        stream_max_bytes, so it is not expected to). Entries appended meanwhile are scanned too."""
        link = self._connected_link()
        key = self._stream_prefix + channel
        deleted, start = 0, "-"
        try:
            with trio.fail_after(time_limit_s):
                while True:
                    entries = await link.commands.xrange(key, start, "+", count=page)
                    doomed = [e.identifier for e in entries if matches(_payload(e.field_values.get(b"p", b"")))]
                    if doomed:
                        deleted += await link.commands.xdel(key, doomed)
                    if len(entries) < page:
                        return deleted
                    start = "(" + _text(entries[-1].identifier)
        except trio.TooSlowError:
            raise BusUnavailable(f"purging {channel!r} took longer than {time_limit_s} s") from None
        except LINK_ERRORS as exc:
            self._fail_link_if_broken(exc)
            raise BusUnavailable(f"purging {channel!r} failed: {describe(exc)}") from None

    def _connected_link(self) -> Link:
        link = self._link
        if link is None or not self.connected:
            raise BusUnavailable(f"redis is not connected: {self.last_error}")
        return link

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """One read's deadline, and its failures as BusUnavailable (a broken connection ends the link)."""
        try:
            with trio.fail_after(READ_TIMEOUT_S):
                yield
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
            "alone": self._alone,
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
            nursery.start_soon(self._end_graces)
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
            await link.load_scripts((PUBLISH, READ, READ_FROM, HEARTBEAT))
            # subscribe before filling gaps: what is published from here on is buffered
            await link.subscription.subscribe(
                patterns=[self._bus_pattern],
                channels=[self._rpc_channel.decode(), self._notice_channel.decode()],
            )
            previous_beat = self._last_beat
            nodes = await self._membership.heartbeat(link.commands)
            beat = trio.current_time()
            # Was this node alone since its last link? Then say so (the others' actors may be
            # stale); otherwise see whether another node was.
            told = self._was_alone
            solo = await (link.commands.incr if told else link.commands.get)(self._solo_key)
            await self._membership.announce(link.commands)
            setup.deadline = math.inf
            await self._fill_gaps(link.commands)
            async with trio.open_nursery() as nursery:
                self._link, self._link_scope = link, nursery.cancel_scope
                for task in (self._receive, self._publish_outbox, self._heartbeats, self._keepalive):
                    nursery.start_soon(self._guard, task, link)
                nursery.start_soon(self._guard, self._send_rpc_frames, link)
                self._link_up(nodes, previous_beat, beat, _int(solo), told)

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

    def _link_up(self, nodes: list[str], previous_beat: float | None, beat: float, solo: int, told: bool) -> None:
        self._links += 1
        self.connected = True
        self.last_error = None
        log.info("redis link up (node %r)", self.node_id)
        self._last_beat = beat
        if not self._alone and self._links > 1:
            # Back within the grace: the membership kept meanwhile stands, unless this node may have
            # been dropped by the others (no heartbeat for longer than the TTL) or another node
            # served keys alone meanwhile. Either way what this node holds may be stale: say so
            # before any handover below saves it.
            self._counters["outages_within_grace"] += 1
            if previous_beat is None or beat - previous_beat > self.node_ttl_s:
                self._counters["absences"] += 1
                log.warning("node %r was without redis for longer than its ttl: rejoining", self.node_id)
                self._notify_absent()
            elif self._solo_seen is not None and solo != self._solo_seen:
                self._counters["solo_periods_seen"] += 1
                log.warning("another node served keys without redis meanwhile: actors are stale")
                self._notify_absent()
        self._solo_seen = solo
        self._alone = False
        if told:  # else the grace ended during the setup: the next heartbeat tells the others
            self._was_alone = False
        self._membership.update(nodes)
        self._up.set()
        self._notify_link(True)
        self._started()

    def _notify_link(self, connected: bool) -> None:
        for callback in list(self._link_callbacks):
            try:
                callback(connected)
            except Exception:
                log.exception("link callback failed")

    def _go_alone(self) -> None:
        """No link and no grace left: this node knows of no other node and serves every key."""
        if not self._alone and not self._stopping and self.link_grace_s > 0:
            log.warning("redis unreachable past the grace: node %r serves every key alone", self.node_id)
        self._alone = True
        self._was_alone = True
        self._membership.lose_redis()

    async def _end_graces(self) -> None:
        """After each lost link: keep the membership for the grace, then go alone if still down.
        The grace never outlasts the TTL since the last heartbeat: past it the others may have
        dropped this node, and a reconnect rebuilds anyway."""
        while True:
            await self._outage.wait()
            self._outage = trio.Event()
            outage = self._outages
            deadline = self._down_since + self.link_grace_s
            if self._last_beat is not None:
                deadline = min(deadline, self._last_beat + self.node_ttl_s)
            await trio.sleep_until(deadline)
            if not self.connected and self._outages == outage:
                self._go_alone()

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
        """No link: say why, fail what was waiting on it, and be alone (after the grace)."""
        was_connected = self.connected
        if was_connected:
            log.log(logging.INFO if self._stopping else logging.WARNING, "redis link down: %s", reason)
        self.connected = False
        self.last_error = reason
        self._link = None
        self._link_scope = None
        if self._up.is_set():
            self._up = trio.Event()
        if self._stopping or self.link_grace_s <= 0 or self._last_beat is None:
            self._go_alone()
        elif was_connected:
            self._outages += 1
            self._down_since = trio.current_time()
            self._outage.set()
        if was_connected:
            self._notify_link(False)
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
        maxlen, streams, offsets = self.stream_maxlen, self._stream_prefix, self._bytes_prefix
        bus = self._bus_prefix.decode()
        async with commands.pipeline(transaction=False, raise_on_error=False) as pipe:
            for chunk in chunks:
                keys = [streams + channel for channel, _ in chunk]
                keys += [offsets + channel for channel, _ in chunk]
                args: list[int | str | bytes] = [maxlen, len(chunk), self.stream_max_bytes]
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
                if self._was_alone:
                    self._solo_seen = _int(await link.commands.incr(self._solo_key))
                    self._was_alone = False
                    await self._membership.announce(link.commands)
                solo = _int(await link.commands.get(self._solo_key))
            last_ok = self._last_beat = trio.current_time()
            if solo != self._solo_seen:
                # another node was alone (without Redis) and is back: it may have applied events
                # to keys this node owns
                self._solo_seen = solo
                self._counters["solo_periods_seen"] += 1
                log.warning("another node served keys without redis: actors are rebuilt from the log")
                self._notify_absent()
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
