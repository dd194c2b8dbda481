"""A project's stream is bounded in payload bytes as well as in entries, against a real Redis; and
a resume anchored on an entry knows whether anything after it was trimmed."""

from __future__ import annotations

import pytest

from storage.redis_bus import RedisBus, StreamTrimmed
from tests.bus.conftest import Recorder, make_bus, redis_client, running

KIB = 1024


async def retained(bus: RedisBus, channel: str) -> list[tuple[str, bytes]]:
    """Every entry the stream keeps, oldest first."""
    return await bus.read_since(channel, "0", limit=100_000)


async def test_retention_is_bounded_by_bytes_keeping_the_newest_entries(redis_url: str) -> None:
    async with running() as nodes:
        bus = await nodes.start(make_bus(redis_url, "a", stream_maxlen=100_000, stream_max_bytes=64 * KIB))
        got = Recorder(bus)
        payloads = [b"%04d" % i + b"." * (4 * KIB - 4) for i in range(200)]  # 800 KiB in 4 KiB entries
        for payload in payloads:
            await bus.publish("big", payload)
        await got.wait_for(200)
        assert got.payloads() == payloads  # every entry was delivered live, whatever is kept

        kept = await retained(bus, "big")
        size = sum(len(p) for _, p in kept)
        assert size <= 64 * KIB
        assert size >= 64 * KIB - 64 * KIB // 16 - 4 * KIB  # trimmed to 15/16 at most, not emptied
        assert [p for _, p in kept] == payloads[-len(kept):]  # the newest, in order, none missing


async def test_an_entry_bigger_than_the_bound_is_kept_alone(redis_url: str) -> None:
    async with running() as nodes:
        bus = await nodes.start(make_bus(redis_url, "a", stream_max_bytes=10 * KIB))
        got = Recorder(bus)
        for i in range(5):
            await bus.publish("ch", b"small %d" % i)
        huge = b"h" * (50 * KIB)
        await bus.publish("ch", huge)
        await got.wait_for(6)
        assert await retained(bus, "ch") == [(got.entries[-1][1], huge)]
        await bus.publish("ch", b"after")
        await got.wait_for(7)
        assert [p for _, p in await retained(bus, "ch")] == [b"after"]  # the huge one went first


async def test_the_bound_holds_for_entries_of_every_size_from_every_node(redis_url: str) -> None:
    async with running() as nodes:
        buses = [await nodes.start(make_bus(redis_url, name, stream_max_bytes=32 * KIB)) for name in ("a", "b")]
        got = Recorder(buses[0])
        sent = 0
        for i in range(300):
            size = 7 * KIB if i % 25 == 0 else 100 + (i * 37) % 900
            await buses[i % 2].publish("mixed", b"%d:" % i + b"m" * size)
            sent += 1
        await got.wait_for(sent)
        kept = await retained(buses[1], "mixed")
        assert sum(len(p) for _, p in kept) <= 32 * KIB
        assert [p for _, p in kept] == got.payloads()[-len(kept):]
        # ... and the count bound still applies on its own
        async with redis_client(redis_url) as client:
            assert await client.xlen("pulse:stream:mixed") == len(kept)


async def test_a_resume_anchored_on_a_trimmed_entry_is_told_so(redis_url: str) -> None:
    async with running() as nodes:
        bus = await nodes.start(make_bus(redis_url, "a", stream_max_bytes=8 * KIB))
        got = Recorder(bus)
        for i in range(40):
            await bus.publish("ch", b"%02d" % i + b"r" * 1000)
        await got.wait_for(40)
        kept = await retained(bus, "ch")
        oldest = kept[0][0]

        # anchored on a retained entry: it comes first, then what follows (bounded pages)
        page = await bus.read_from("ch", kept[1][0], limit=3)
        assert page == kept[1:5]
        page = await bus.read_from("ch", kept[1][0], limit=100, max_bytes=2500, with_anchor=False)
        assert page[0] == (kept[1][0], b"")  # the anchor, without its payload
        assert page[1:] == kept[2:4]  # 2 x ~1 KB fit in 2500 bytes, a third does not
        assert await bus.read_from("ch", kept[-1][0], limit=10) == [kept[-1]]  # caught up

        # anchored on an entry the stream no longer keeps: entries after it may be gone too
        with pytest.raises(StreamTrimmed) as trimmed:
            await bus.read_from("ch", got.entries[0][1], limit=10)
        assert trimmed.value.oldest_id == oldest
        # a stream Redis no longer has at all
        async with redis_client(redis_url) as client:
            await client.delete(["pulse:stream:ch"])
        with pytest.raises(StreamTrimmed) as gone:
            await bus.read_from("ch", kept[-1][0], limit=10)
        assert gone.value.oldest_id == ""


async def test_entries_written_before_byte_offsets_count_as_the_oldest(redis_url: str) -> None:
    """A stream written by an older node (entries without offsets) is brought under the bound."""
    async with redis_client(redis_url) as client:
        for i in range(20):
            await client.xadd("pulse:stream:old", {"p": b"o" * 1000 + b"%d" % i})
    async with running() as nodes:
        bus = await nodes.start(make_bus(redis_url, "a", stream_max_bytes=8 * KIB))
        got = Recorder(bus)
        for i in range(12):
            await bus.publish("old", b"%02d" % i + b"n" * 1000)
        await got.wait_for(12)
        kept = await retained(bus, "old")
        assert sum(len(p) for _, p in kept) <= 8 * KIB
        assert [p for _, p in kept] == got.payloads()[-len(kept):]
