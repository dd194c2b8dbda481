"""One owner per actor across the cluster: route each actor message to the node that owns its key.

Ownership is rendezvous hashing over the live nodes (the bus keeps membership). A batch for a key
owned here goes to the local ActorSystem; a batch for a key owned elsewhere is forwarded over the
bus and the request is answered after the owner has processed it. When the owner does not answer
(it died; membership notices after its heartbeat TTL), the batch is re-routed to the new owner,
which activates the actor from its snapshot plus the log. Re-delivery is safe: a projection applies
each seq once (see ProjectionActor's skip rule).

When membership changes, actors whose keys moved away are retired (snapshot saved; the new owner
replays from it). Without Redis every node owns every key it sees: that state may diverge from the
other nodes', so snapshots are off meanwhile, and when Redis returns every actor is retired without
saving and rebuilt from the log, which is the source of truth.

A blip is not an outage: for the bus's grace (``--redis-grace``) after losing Redis a node keeps
the membership it knew, so it serves only its own keys (a batch for another owner waits and is
routed again, as when an owner does not answer). Snapshots stop at once (nobody can confirm this
node still owns its keys). A reconnect within the grace that finds the same nodes keeps every
actor; the bus tells the router (``on_absence``) when what it holds may be stale anyway: it was
without a heartbeat longer than the TTL, or another node served keys alone meanwhile.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import msgspec
import trio

from actors.projection import ApplyEvents, GetView
from actors.runtime import ActorCrashed, ActorError, ActorKey, ActorSystem, AskTimeout, SystemClosed
from protocol.record import Event

log = logging.getLogger("pulse.cluster")

REROUTE_PAUSE_S: Final = 0.25  # after an unreachable owner, wait this long for membership to move
CALL_TIMEOUT_S: Final = 2.0  # one forward attempt; a live owner answers in milliseconds


class ClusterBus(Protocol):
    """What routing needs from the bus (storage.redis_bus.RedisBus)."""

    node_id: str
    connected: bool

    def live_nodes(self) -> tuple[str, ...]: ...
    def owner(self, key: str) -> str: ...
    def on_membership_change(self, callback: Callable[[tuple[str, ...]], None]) -> None: ...
    def on_absence(self, callback: Callable[[], None]) -> None: ...
    def on_link_change(self, callback: Callable[[bool], None]) -> None: ...
    def set_handler(self, handler: Callable[[bytes], Awaitable[bytes]]) -> None: ...
    async def call(self, node: str, payload: bytes, *, timeout: float) -> bytes: ...  # noqa: ASYNC109


OP_APPLY: Final = "apply"  # ApplyEvents: the reply is the actor's summary
OP_VIEW: Final = "view"  # GetView: the reply is the actor's full view
# Stop the actor without saving its snapshot (its data is being erased); the reply is true when the
# node had an activation of the key. Sent to EVERY live node, not only the owner: during an
# ownership move the previous owner may still hold a retiring activation that would save it.
OP_FORGET: Final = "forget"
FORGET_TIMEOUT_S: Final = 5.0  # per node: the activations it holds finish what they were doing


class ForwardItem(msgspec.Struct, array_like=True):
    kind: str
    project: str
    ident: str
    events: list[Event]
    op: str = OP_APPLY
    steps: bool = False  # ApplyEvents.steps


class ForwardRequest(msgspec.Struct):
    items: list[ForwardItem]
    timeout: float


class ForwardReply(msgspec.Struct):
    replies: list[msgspec.Raw]  # the actor's reply as JSON (null when it failed)
    errors: list[str | None]
    moved: list[bool] = []  # not handled: the key is not this node's (any more), route it again


_encode = msgspec.json.Encoder().encode
_NULL: Final = msgspec.Raw(b"null")
_decode_request = msgspec.json.Decoder(ForwardRequest).decode
_decode_reply = msgspec.json.Decoder(ForwardReply).decode


def key_name(key: ActorKey) -> str:
    kind, project, ident = key
    return f"{kind}\x1f{project}\x1f{ident}"


class ActorRouter:
    """ask_many over the cluster. Without a bus it is the local ActorSystem, unchanged."""

    def __init__(self, actors: ActorSystem, bus: ClusterBus | None, reply_types: dict[tuple[str, str], type]) -> None:
        """``reply_types`` maps (actor kind, OP_APPLY | OP_VIEW) to the type of the actor's reply."""
        self.actors = actors
        self.bus = bus
        self._reply_decoders: dict[tuple[str, str], msgspec.json.Decoder[Any]] = {
            k: msgspec.json.Decoder(t) for k, t in reply_types.items()
        }
        self.forwarded = 0  # batches sent to another owner
        self.served = 0  # batches handled here for another node
        self.reroutes = 0  # forwards re-sent after an owner did not answer
        self.rebuilds = 0  # times every actor of this node was retired unsaved (rebuilt from the log)
        self.actors_rebuilt = 0  # actors retired by those
        self._nodes: tuple[str, ...] = ()
        self._alone = bus is None or not bus.connected  # every key is owned here, maybe not only here
        if bus is not None:
            self._nodes = bus.live_nodes()
            bus.set_handler(self._serve)
            bus.on_membership_change(self._membership_changed)
            bus.on_absence(self._was_absent)
            bus.on_link_change(self._link_changed)
            actors.snapshots_enabled = bus.connected

    def owns(self, key: ActorKey) -> bool:
        return self.bus is None or self.bus.owner(key_name(key)) == self.bus.node_id

    # membership -----------------------------------------------------------------------------------
    def _membership_changed(self, nodes: tuple[str, ...]) -> None:
        bus = self.bus
        assert bus is not None
        was_alone, self._nodes = self._alone, nodes
        self._alone = not bus.connected
        if self._alone:
            # Redis is gone: keep serving every key locally, but stop writing snapshots (another
            # node may be doing the same for some of these keys).
            self.actors.snapshots_enabled = False
            log.warning("bus unavailable: actors run locally without snapshots until it returns")
            return
        if was_alone:
            retired = self._rebuild_all()
            log.warning("bus back with nodes %s: %d actors rebuilt from the log", nodes, retired)
        else:
            retired = self.actors.retire_where(lambda key: not self.owns(key), save=True)
            if retired:
                log.info("membership now %s: %d actors handed over", nodes, retired)
        self.actors.snapshots_enabled = True

    def _was_absent(self) -> None:
        """This node stood still past its heartbeat TTL: the others took its keys and applied
        events to fresh actors meanwhile. What it holds is stale: rebuild from the log, unsaved."""
        retired = self._rebuild_all()
        log.warning("this node was absent from the cluster: %d actors rebuilt from the log", retired)

    def _link_changed(self, connected: bool) -> None:
        """Redis lost: no snapshots until it is back (within the grace the membership stays, so
        ``_membership_changed`` is not called). Back, and not alone: snapshots again."""
        if not connected:
            self.actors.snapshots_enabled = False
        elif not self._alone:
            self.actors.snapshots_enabled = True

    def _rebuild_all(self) -> int:
        retired = self.actors.retire_where(lambda key: True, save=False)
        self.rebuilds += 1
        self.actors_rebuilt += retired
        return retired

    # asking ---------------------------------------------------------------------------------------
    async def ask_many(self, requests: list[tuple[ActorKey, Any]], *, timeout: float) -> list[Any]:  # noqa: ASYNC109
        """Replies in request order; an ActorError takes the place of a failed reply."""
        if self.bus is None:
            return await self.actors.ask_many(requests, timeout=timeout, return_exceptions=True)
        replies: list[Any] = [None] * len(requests)
        pending = list(range(len(requests)))
        with trio.move_on_after(timeout):
            while pending:
                pending = await self._route_once(requests, pending, replies, timeout)
                if pending:
                    self.reroutes += 1
                    await trio.sleep(REROUTE_PAUSE_S)
        for i in pending:
            replies[i] = AskTimeout(requests[i][0])
        return replies

    async def _route_once(
        self, requests: list[tuple[ActorKey, Any]], pending: list[int], replies: list[Any], timeout: float  # noqa: ASYNC109
    ) -> list[int]:
        """Send every pending request to its current owner; return the ones whose owner did not answer."""
        assert self.bus is not None
        by_owner: dict[str, list[int]] = defaultdict(list)
        for i in pending:
            by_owner[self.bus.owner(key_name(requests[i][0]))].append(i)
        unanswered: list[int] = []

        async def local(indexes: list[int]) -> None:
            answers = await self.actors.ask_many([requests[i] for i in indexes], timeout=timeout, return_exceptions=True)
            for i, answer in zip(indexes, answers, strict=True):
                replies[i] = answer

        async def remote(node: str, indexes: list[int]) -> None:
            unanswered.extend(await self._forward(node, requests, indexes, replies, timeout))

        async with trio.open_nursery() as nursery:
            for node, indexes in by_owner.items():
                if node == self.bus.node_id:
                    nursery.start_soon(local, indexes)
                else:
                    nursery.start_soon(remote, node, indexes)
        return unanswered

    async def _forward(
        self, node: str, requests: list[tuple[ActorKey, Any]], indexes: list[int], replies: list[Any], timeout: float  # noqa: ASYNC109
    ) -> list[int]:
        """Forward ``indexes`` to ``node``; fills ``replies`` and returns the indexes to route again."""
        assert self.bus is not None
        items = []
        for i in indexes:
            (kind, project, ident), msg = requests[i]
            if isinstance(msg, ApplyEvents):
                items.append(ForwardItem(kind, project, ident, msg.events, OP_APPLY, msg.steps))
            elif isinstance(msg, GetView):
                items.append(ForwardItem(kind, project, ident, [], OP_VIEW))
            else:
                raise TypeError(f"{type(msg).__name__!r} messages cannot be forwarded")
        payload = _encode(ForwardRequest(items=items, timeout=timeout))
        self.forwarded += 1
        try:
            raw = await self.bus.call(node, payload, timeout=min(timeout, CALL_TIMEOUT_S))
        except Exception as exc:  # NodeUnreachable, BusUnavailable, RemoteError: try the next owner
            log.warning("forward to %s failed (%s): re-routing %d actor batches", node, exc, len(indexes))
            return indexes
        try:
            reply = _decode_reply(raw)
            moved = reply.moved or [False] * len(items)
            decoded = [
                None if error is not None or elsewhere else self._reply_decoders[(item.kind, item.op)].decode(answer)
                for item, answer, error, elsewhere in zip(items, reply.replies, reply.errors, moved, strict=True)
            ]
        except (msgspec.DecodeError, ValueError) as exc:  # a node of another version, or a bug
            log.error("unreadable forward reply from %s: %s", node, exc)
            decoded, reply = [None] * len(items), ForwardReply(replies=[], errors=[f"unreadable reply: {exc}"] * len(items))
            moved = [False] * len(items)
        again: list[int] = []
        for i, value, error, elsewhere in zip(indexes, decoded, reply.errors, moved, strict=True):
            if elsewhere:
                again.append(i)
            else:
                replies[i] = ActorCrashed(requests[i][0], f"failed on node {node}: {error}") if value is None else value
        return again

    async def _serve(self, payload: bytes) -> bytes:
        """The owner's side of a forward: apply every item here and answer with the replies."""
        request = _decode_request(payload)
        self.served += 1
        if request.items and all(item.op == OP_FORGET for item in request.items):
            forgotten = await self._forget_here([(i.kind, i.project, i.ident) for i in request.items], request.timeout)
            flags = [msgspec.Raw(b"true" if f else b"false") for f in forgotten]
            return _encode(ForwardReply(replies=flags, errors=[None] * len(flags), moved=[False] * len(flags)))
        requests: list[tuple[ActorKey, Any]] = []
        mine: list[int] = []
        moved = [True] * len(request.items)
        for i, item in enumerate(request.items):
            key = (item.kind, item.project, item.ident)
            # Only the owner applies: a sender with an older view of membership routes again
            # (otherwise two nodes would each keep a partial actor for the key).
            if self.owns(key) and not self.actors.closing:
                mine.append(i)
                moved[i] = False
                requests.append((key, GetView() if item.op == OP_VIEW else ApplyEvents(events=item.events, steps=item.steps)))
        if mine:
            answers = await self.actors.ask_many(requests, timeout=max(0.1, request.timeout - 0.5), return_exceptions=True)
        else:
            answers = []
        replies: list[msgspec.Raw] = [_NULL] * len(request.items)
        errors: list[str | None] = [None] * len(request.items)
        for i, answer in zip(mine, answers, strict=True):
            if isinstance(answer, SystemClosed):  # draining: its next owner takes it
                moved[i] = True
            elif isinstance(answer, ActorError):
                errors[i] = str(answer)
            else:
                replies[i] = msgspec.Raw(_encode(answer))
        return _encode(ForwardReply(replies=replies, errors=errors, moved=moved))

    async def forget(self, keys: list[ActorKey], *, timeout: float = FORGET_TIMEOUT_S) -> int:  # noqa: ASYNC109
        """Stop the actors of ``keys`` on every live node without saving them (OP_FORGET); returns
        how many activations were stopped. A node that does not answer within ``timeout`` is
        logged and skipped: it either died (its actors with it) or holds keys it will rebuild from
        the log, which the caller erases next."""
        if not keys:
            return 0
        forgotten = sum(await self._forget_here(keys, timeout))
        if self.bus is None or not self.bus.connected:
            return forgotten
        payload = _encode(ForwardRequest(items=[ForwardItem(k, p, i, [], OP_FORGET) for k, p, i in keys],
                                         timeout=timeout))  # fmt: skip
        counts: list[int] = []

        async def ask(node: str) -> None:
            assert self.bus is not None
            try:
                reply = _decode_reply(await self.bus.call(node, payload, timeout=timeout + 1.0))
            except Exception as exc:  # NodeUnreachable, BusUnavailable, RemoteError, a bad reply
                log.warning("forget on %s failed (%s): %d actors may stay until it rebuilds", node, exc, len(keys))
                return
            counts.append(sum(bytes(r) == b"true" for r in reply.replies))

        async with trio.open_nursery() as nursery:
            for node in self.bus.live_nodes():
                if node != self.bus.node_id:
                    nursery.start_soon(ask, node)
        return forgotten + sum(counts)

    async def _forget_here(self, keys: list[ActorKey], timeout: float) -> list[bool]:  # noqa: ASYNC109
        found = [False] * len(keys)

        async def one(i: int) -> None:
            found[i] = await self.actors.forget(keys[i], timeout=timeout)

        async with trio.open_nursery() as nursery:
            for i in range(len(keys)):
                nursery.start_soon(one, i)
        return found

    async def view(self, key: ActorKey, *, timeout: float) -> Any:  # noqa: ASYNC109
        """The actor's current view, from its owner. Raises the ActorError that took its place."""
        (reply,) = await self.ask_many([(key, GetView())], timeout=timeout)
        if isinstance(reply, ActorError):
            raise reply
        return reply

    def stats(self) -> dict[str, Any]:
        return {
            "nodes": list(self._nodes),
            "forwarded": self.forwarded,
            "served": self.served,
            "reroutes": self.reroutes,
            "alone": self._alone,
            "rebuilds": self.rebuilds,
            "actorsRebuilt": self.actors_rebuilt,
        }
