"""Fan-out across nodes: every node gets every entry, in one order, with stream ids; resume by offset."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing

from storage.redis_bus import BusUnavailable, StreamTrimmed, parse_stream_id
from tests.bus.conftest import WAIT_S, Recorder, make_bus, redis_client, running, wait_until
from tests.services import service_unavailable
from tests.services.redis import REDIS_URL_ENV, RedisServer


async def test_every_node_receives_every_entry_in_the_same_order(redis_url: str) -> None:
    async with running() as nodes:
        buses = [await nodes.start(make_bus(redis_url, name)) for name in ("a", "b", "c")]
        recorders = [Recorder(bus) for bus in buses]
        sent = 0
        for round_ in range(40):
            for bus in buses:  # every node publishes, on two channels, interleaved
                await bus.publish(f"ch{round_ % 2}", f"{bus.node_id}-{round_}".encode())
                sent += 1
            if round_ % 10 == 0:
                await trio.lowlevel.checkpoint()  # let the publishers send some of it
        for recorder in recorders:
            await recorder.wait_for(sent)

        first = recorders[0].entries
        assert len(first) == sent
        for recorder in recorders[1:]:
            assert recorder.entries == first  # same entries, same order, same stream ids
        for channel in ("ch0", "ch1"):
            ids = [parse_stream_id(sid) for c, sid, _ in first if c == channel]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
            # each node's entries on a channel keep the order it published them in
            for bus in buses:
                mine = [p for p in recorders[0].payloads(channel) if p.startswith(bus.node_id.encode())]
                assert mine == sorted(mine, key=lambda p: int(p.split(b"-")[1]))
        assert all(bus.stats()["published"] == 40 for bus in buses)


async def test_stream_ids_match_read_since(redis_url: str) -> None:
    async with running() as nodes:
        bus = await nodes.start(make_bus(redis_url, "a"))
        recorder = Recorder(bus)
        for i in range(5):
            await bus.publish("orders", b"x%d" % i)
        await recorder.wait_for(5)
        stored = await bus.read_since("orders", "0", limit=100)
        assert stored == [(sid, payload) for _, sid, payload in recorder.entries]


async def test_read_since_resumes_without_a_gap(redis_url: str) -> None:
    async with running() as nodes:
        bus = await nodes.start(make_bus(redis_url, "a"))
        recorder = Recorder(bus)
        for i in range(50):
            await bus.publish("ch", b"%d" % i)
        await recorder.wait_for(50)

        # a subscriber that saw up to entry 19 resumes from its id, page by page
        last_seen = recorder.entries[19][1]
        resumed: list[bytes] = []
        after = last_seen
        while page := await bus.read_since("ch", after, limit=7):
            resumed += [payload for _, payload in page]
            after = page[-1][0]
        assert resumed == [b"%d" % i for i in range(20, 50)]
        assert await bus.read_since("ch", recorder.entries[-1][1], limit=10) == []
        assert await bus.read_since("no-such-channel", last_seen, limit=10) == []
        with pytest.raises(ValueError, match="invalid stream id"):
            await bus.read_since("ch", "yesterday", limit=10)


async def test_read_since_a_trimmed_position_says_so(redis_url: str) -> None:
    async with running() as nodes:
        bus = await nodes.start(make_bus(redis_url, "a", stream_maxlen=10))
        recorder = Recorder(bus)
        for i in range(600):  # MAXLEN ~ trims whole stream nodes (100 entries): publish several
            await bus.publish("ch", b"%d" % i)
        await recorder.wait_for(600)

        retained = await bus.read_since("ch", "0", limit=1000)  # "0" = from the oldest retained
        assert 10 <= len(retained) < 600
        assert [p for _, p in retained] == [b"%d" % i for i in range(600 - len(retained), 600)]
        with pytest.raises(StreamTrimmed) as trimmed:
            await bus.read_since("ch", recorder.entries[0][1], limit=10)
        assert trimmed.value.oldest_id == retained[0][0]
        # a position that is still retained resumes normally
        assert await bus.read_since("ch", retained[0][0], limit=1000) == retained[1:]


async def test_publish_never_waits_and_refuses_when_the_queue_is_full(redis_server: RedisServer) -> None:
    if not redis_server.restartable:
        service_unavailable(f"needs a private redis server ({REDIS_URL_ENV} cannot be paused)")
    async with running() as nodes:
        bus = await nodes.start(make_bus(redis_server.url, "a"))
        redis_server.pause()  # the publisher's pipeline waits; the queue behind it fills
        try:
            # publish() never waits: the loop's only checkpoints are its own
            with trio.fail_after(WAIT_S), pytest.raises(BusUnavailable, match="queue is full"):  # noqa: PT012
                for i in range(20_000):
                    await bus.publish("ch", b"%d" % i)
                    if i % 1000 == 0:
                        await trio.testing.wait_all_tasks_blocked()  # the publisher took a batch
            assert bus.stats()["publish_refused"] == 1
        finally:
            redis_server.resume()


async def test_a_pubsub_disconnect_leaves_no_gap(redis_url: str) -> None:
    """Kill one node's pub/sub connection while another publishes: it reconnects and reads the
    missed entries from the streams, in order, without duplicates."""
    async with running() as nodes:
        publisher = await nodes.start(make_bus(redis_url, "pub"))
        reader = await nodes.start(make_bus(redis_url, "reader"))
        got = Recorder(reader)
        total = 0

        async def publish(count: int) -> None:
            nonlocal total
            for _ in range(count):
                await publisher.publish(f"ch{total % 3}", b"%d" % total)
                total += 1
                if total % 50 == 0:
                    await trio.sleep(0.001)

        await publish(300)
        await got.wait_for(300)
        async with redis_client(redis_url) as client:
            for info in await client.client_list():
                if info.get("name") == "pulse:reader:sub":
                    await client.client_kill(identifier=int(info["id"]))
        await wait_until(lambda: not reader.connected)
        await publish(300)  # while the reader is reconnecting
        await wait_until(lambda: reader.connected)
        await publish(300)
        await got.wait_for(900)
        # a marker after them on every channel is the next entry there: no duplicate in between
        for channel in ("ch0", "ch1", "ch2"):
            await publisher.publish(channel, b"marker")
        await got.wait_for(903)

        stats = reader.stats()
        assert stats["reconnects"] == 1
        assert stats["gap_filled"] > 0  # the middle batch came from the streams, not pub/sub
        for channel in ("ch0", "ch1", "ch2"):
            expected = [b"%d" % i for i in range(900) if i % 3 == int(channel[-1])]
            assert got.payloads(channel) == [*expected, b"marker"]
        assert len(got.entries) == 903


async def test_a_node_back_from_a_pause_fills_its_gap_from_the_streams(redis_url: str) -> None:
    async with running() as nodes:
        publisher = await nodes.start(make_bus(redis_url, "pub"))
        reader = make_bus(redis_url, "reader")
        got = Recorder(reader)
        await nodes.start(reader)
        for i in range(5):
            await publisher.publish("ch", b"%d" % i)
        await got.wait_for(5)

        await nodes.stop("reader")
        for i in range(5, 50):  # missed by the reader: it is not subscribed
            await publisher.publish("ch", b"%d" % i)
        await publisher.publish("other", b"never seen before")  # a channel it never saw: not filled
        await wait_until(lambda: publisher.stats()["published"] == 51)

        await nodes.start(reader)  # the same bus object runs again
        await publisher.publish("ch", b"50")
        await got.wait_for(51)
        # a marker on each channel is the next entry there: no duplicate on "ch", and the entry
        # "other" had before the reader first saw it never comes (it would precede the marker)
        await publisher.publish("ch", b"51")
        await publisher.publish("other", b"marker")
        await got.wait_for(53)
        assert got.payloads("ch") == [b"%d" % i for i in range(52)]
        assert got.payloads("other") == [b"marker"]
        assert len(got.entries) == 53
        assert reader.stats()["gap_filled"] == 45


async def test_a_gap_older_than_retention_is_counted_and_the_rest_delivered(redis_url: str) -> None:
    async with running() as nodes:
        publisher = await nodes.start(make_bus(redis_url, "pub", stream_maxlen=10))
        reader = make_bus(redis_url, "reader")
        got = Recorder(reader)
        await nodes.start(reader)
        await publisher.publish("ch", b"0")
        await got.wait_for(1)

        await nodes.stop("reader")
        for i in range(1, 600):
            await publisher.publish("ch", b"%d" % i)
        await wait_until(lambda: publisher.stats()["published"] == 600)
        retained = await publisher.read_since("ch", "0", limit=1000)

        await nodes.start(reader)
        await got.wait_for(1 + len(retained))
        assert reader.stats()["gaps_unfillable"] == 1
        assert got.payloads() == [b"0"] + [payload for _, payload in retained]
