"""Which Pulse nodes are alive, and which node owns a key (rendezvous hashing over the live ones).

Membership is one Redis sorted set: member = node id, score = the Redis server's clock (ms) at the
node's last heartbeat. Using the server's clock (TIME inside the script) means nodes with skewed
clocks still agree on who is fresh. A node is live when its heartbeat is younger than the TTL.
A node that stops cleanly removes itself and says so on a control channel, so the others refresh
at once instead of waiting for the TTL; a node that joins says so too.

Ownership: every node computes owner(key) alone, from the live set it last saw. Rendezvous
(highest-random-weight) hashing gives each (node, key) pair a pseudo-random weight and picks the
heaviest node, so when a node leaves only its keys move, and when one joins it takes about 1/n of
the keys from the others. The weight is a keyed BLAKE2b of the key (the node's key is a digest of
its id), identical in every process (no PYTHONHASHSEED dependence).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

from storage.redis_link import LuaScript, Redis

log = logging.getLogger("pulse.bus")

# Stale members are removed from the set after this many TTLs: long enough that a node with a
# longer TTL than ours (misconfiguration) is not wiped, short enough that the set stays small.
STALE_AFTER_TTLS: Final = 10

# KEYS[1] = the membership set; ARGV = node id, ttl ms, stale ms. Returns the live node ids.
HEARTBEAT = LuaScript(
    "heartbeat",
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[3])))
return redis.call('ZRANGE', KEYS[1], now - tonumber(ARGV[2]), '+inf', 'BYSCORE')
""",
)

MembershipCallback = Callable[[tuple[str, ...]], None]


class Membership:
    """This node's view of the live nodes. Pure state: the bus feeds it heartbeat results."""

    def __init__(self, node_id: str, *, node_ttl_s: float, nodes_key: str, notice_channel: str) -> None:
        self.node_id = node_id
        self.node_ttl_s = node_ttl_s
        self.nodes_key = nodes_key
        self.notice_channel = notice_channel  # published to on join and leave
        self.changes = 0
        self._live: tuple[str, ...] = (node_id,)
        self._weights_keys: tuple[tuple[str, bytes], ...] = _hash_keys(self._live)
        self._callbacks: list[MembershipCallback] = []

    @property
    def live(self) -> tuple[str, ...]:
        return self._live

    def on_change(self, callback: MembershipCallback) -> None:
        self._callbacks.append(callback)

    def update(self, nodes: Iterable[str]) -> None:
        """Adopt a new live set (this node always in it); tell the callbacks if it changed."""
        live = tuple(sorted({self.node_id, *nodes}))
        if live == self._live:
            return
        self._live = live
        self._weights_keys = _hash_keys(live)
        self.changes += 1
        log.info("live nodes: %s", ", ".join(live))
        for callback in list(self._callbacks):
            try:
                callback(live)
            except Exception:  # a subscriber's bug must not stop membership (or the bus)
                log.exception("membership callback failed")

    def lose_redis(self) -> None:
        """Without Redis this node knows of no other node: it is alone."""
        self.update(())

    def owner(self, key: str) -> str:
        return rendezvous_owner(key, self._weights_keys)

    # Redis I/O -----------------------------------------------------------------------------------
    async def heartbeat(self, client: Redis) -> list[str]:
        """Refresh this node's entry; returns the live node ids as Redis sees them."""
        ttl_ms = max(1, round(self.node_ttl_s * 1000))
        raw = await HEARTBEAT.run(client, [self.nodes_key], [self.node_id, ttl_ms, ttl_ms * STALE_AFTER_TTLS])
        return [_text(node) for node in raw]

    async def announce(self, client: Redis) -> None:
        """Tell the other nodes to refresh now (this node joined or is leaving)."""
        await client.publish(self.notice_channel, self.node_id)

    async def leave(self, client: Redis) -> None:
        await client.zrem(self.nodes_key, [self.node_id])
        await self.announce(client)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _hash_keys(nodes: Iterable[str]) -> tuple[tuple[str, bytes], ...]:
    return tuple((node, hashlib.blake2b(node.encode(), digest_size=16).digest()) for node in nodes)


def rendezvous_owner(key: str, nodes: tuple[tuple[str, bytes], ...]) -> str:
    """The node with the highest weight for ``key``; ``nodes`` = (node id, its hash key) pairs."""
    data = key.encode()
    best_node = ""
    best_weight = b""
    for node, node_key in nodes:
        weight = hashlib.blake2b(data, digest_size=8, key=node_key).digest()
        if weight > best_weight or (weight == best_weight and node > best_node):
            best_node, best_weight = node, weight
    return best_node


def owner_of(key: str, nodes: Iterable[str]) -> str:
    """Rendezvous owner of ``key`` among ``nodes`` (for callers without a Membership)."""
    return rendezvous_owner(key, _hash_keys(nodes))
