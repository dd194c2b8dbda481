"""The load generator's parts that need no server: mixes, plans, stats across processes, scenarios."""

from __future__ import annotations

import argparse
import math
from collections import Counter

import pytest
import trio.testing

from loadtest import stats as names
from loadtest.cli import add_arguments, duration, make_config
from loadtest.multiproc import FrameReader, Interval, encode_frame
from loadtest.plan import TargetRefused, parse_target, plan_run, ports_per_address
from loadtest.runner import assign, parse_mix
from loadtest.scenario import User, between, task
from loadtest.scenarios import BUILT_IN
from loadtest.stats import Stats, Totals


def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_a_mix_gives_each_scenario_its_share_interleaved() -> None:
    slots = assign({"visitor": 8, "backend": 1, "dashboard": 1}, 100)
    assert Counter(slots) == {"visitor": 80, "backend": 10, "dashboard": 10}
    assert set(slots[:10]) == {"visitor", "backend", "dashboard"}  # a ramp brings every scenario up together
    assert Counter(assign({"visitor": 1, "backend": 1, "dashboard": 1}, 4)).total() == 4


def test_mix_specs_presets_and_bad_names() -> None:
    assert parse_mix("visitor") == {"visitor": 1}
    assert parse_mix("visitor=3, cross_device=1") == {"visitor": 3, "cross_device": 1}
    assert set(parse_mix("mixed")) == set(BUILT_IN)
    with pytest.raises(ValueError, match="unknown scenario 'visitors'"):
        parse_mix("visitors")
    with pytest.raises(ValueError, match="weight must be an integer"):
        parse_mix("visitor=many")
    with pytest.raises(ValueError, match="cannot load scenario"):
        parse_mix("no.such.module:Shopper")


def test_durations() -> None:
    assert duration("20") == 20 and duration("20s") == 20 and duration("5m") == 300 and duration("1h") == 3600
    for bad in ("0", "-3", "soon", "2d", "48h"):
        with pytest.raises(argparse.ArgumentTypeError):
            duration(bad)


def test_a_target_that_is_not_loopback_is_refused_unless_allowed() -> None:
    with pytest.raises(TargetRefused, match=r"'192\.0\.2\.10' is not a loopback address .* --allow-remote"):
        parse_target("http://192.0.2.10:8000")
    assert not parse_target("http://192.0.2.10:8000", allow_remote=True).loopback
    local = parse_target("http://localhost:8123/")
    assert local.loopback and local.ip == "127.0.0.1" and local.port == 8123 and local.url == "http://localhost:8123"
    with pytest.raises(TargetRefused, match="TLS is not supported"):
        parse_target("https://127.0.0.1:8443")
    with pytest.raises(TargetRefused, match="not a loopback"):
        make_config(args("--host", "http://192.0.2.10:8000"))


def test_processes_and_source_addresses_follow_the_socket_count() -> None:
    target = parse_target("http://127.0.0.1:8000")
    small = plan_run(target, 500, 64, open_files=20_000)
    assert small.processes == 1 and small.source_addresses == []  # one address: the kernel chooses
    big = plan_run(target, 100_000, 64, open_files=20_000)
    assert big.sockets_per_process == 19_000
    assert big.processes == math.ceil(100_000 / (19_000 - 64))
    wanted = math.ceil((100_000 + big.processes * 64) / ports_per_address())
    assert big.source_addresses == [f"127.0.0.{n}" for n in range(1, wanted + 1)]
    assert plan_run(target, 10, 4, min_processes=3, source_addresses=2, open_files=20_000).processes == 3
    with pytest.raises(TargetRefused, match="source addresses"):
        plan_run(parse_target("http://192.0.2.10:80", allow_remote=True), 10, 4, source_addresses=2)


def test_make_config_plans_from_the_scenarios_sockets() -> None:
    config, scenarios = make_config(args("--scenario", "cross_device=1,backend=1", "--users", "10", "--duration", "2"))
    assert scenarios == {"cross_device": 5, "backend": 5}
    assert config.processes == 1 and config.spawn_rate == 2.0 and config.duration == 2.0
    with pytest.raises(ValueError, match="--users"):
        make_config(args("--users", "0"))


async def test_stats_merge_across_processes_through_the_pipe_format() -> None:
    workers = []
    for base in (1_000, 50_000):  # two processes' latencies: 1-2 ms and 50-100 ms
        stats = Stats()
        for n in range(100):
            stats.latency_ns(names.ACK_WS, (base + n * base // 100) * 1000)
        stats.count(names.REQUESTS, 100)
        stats.fail("http_503")
        workers.append(stats.take(users=7))
    assert Stats().take().histograms == {}  # nothing recorded, nothing sent
    send, receive = trio.testing.memory_stream_pair()
    for delta in workers:
        await send.send_all(encode_frame(Interval(delta=delta)))
    reader = FrameReader(receive)
    totals = Totals()
    for _ in workers:
        frame = await reader.next()
        assert isinstance(frame, Interval)
        totals.add(frame.delta)
    assert totals.counts[names.REQUESTS] == 200 and totals.failures == {"http_503": 2}
    summary = totals.summaries()[names.ACK_WS]
    assert summary.count == 200
    assert 1.0 <= summary.p50 <= 2.1 and 50 <= summary.p99 <= 100.1 and summary.max == pytest.approx(99.5, rel=0.01)


def test_tasks_are_picked_by_weight_and_inherited() -> None:
    class Reader(User):
        name = "reader"
        wait_time = between(1, 2)

        @task(3)
        async def read(self) -> None: ...

        @task
        async def write(self) -> None: ...

    class Editor(Reader):
        @task(2)
        async def write(self) -> None: ...

    assert Counter(fn.__name__ for fn in Reader.tasks) == {"read": 3, "write": 1}
    assert Counter(fn.__qualname__.split(".")[-2] + "." + fn.__name__ for fn in Editor.tasks) == {
        "Reader.read": 3, "Editor.write": 2}
    with pytest.raises(ValueError):
        task(0)
