"""GET /metrics against a real server: the Prometheus exposition parses, counters move with what
clients do, gauges follow open streams, drops show their reason, and reading needs what
/monitoring/performance needs (docs/metrics.md)."""

from __future__ import annotations

import gzip
import json
import pathlib
import re
from collections.abc import Callable

import httpx
import trio
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.server_process import ServerProcess
from tests.e2e.sse_client import SSEClient
from tests.e2e.ws_client import Client, Rejected
from tests.services.redis import RedisServer, redis_server  # noqa: F401

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
WAIT_S = 10.0  # deadline for a figure to reach its expected value (it normally does at once)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples_of(text: str) -> Samples:
    """Every sample of an exposition, keyed by its name and labels (node included)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(http: httpx.AsyncClient, headers: dict[str, str] | None = None) -> Samples:
    answer = await http.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == CONTENT_TYPE_PLAIN_0_0_4
    return samples_of(answer.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample named ``name`` whose labels include ``labels`` (0 when it does not exist yet:
    a counter that has not moved, e.g. a status never answered)."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
    return found[0] if found else 0.0


async def wait_for(http: httpx.AsyncClient, check: Callable[[Samples], bool]) -> Samples:
    """Scrape until ``check`` holds, within WAIT_S (then the last scrape is returned, to assert on)."""
    samples = await scrape(http)
    with trio.move_on_after(WAIT_S):
        while not check(samples):  # noqa: ASYNC110 (another process's figures: no event to wait on)
            await trio.sleep(0.05)
            samples = await scrape(http)
    return samples


async def node_id(http: httpx.AsyncClient) -> str:
    return str((await http.get("/api/v1/behavioral/health")).json()["details"]["node"])


async def test_counters_move_with_ingestion(server: ServerProcess, client: httpx.AsyncClient) -> None:
    node = await node_id(client)
    before = await scrape(client)
    posts = 5
    for i in range(posts):
        answer = await client.post("/api/v1/behavioral/events",
                                   json={"eventType": "scroll", "sessionId": "metrics-s1", "data": {"i": i}})
        assert answer.status_code < 300, answer.text
    malformed = await client.post("/api/events/track/login", content=b"{not json",
                                  headers={"content-type": "application/json"})
    assert malformed.status_code == 400
    after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("pulse_ingested_events_total", outcome="stored") == posts
    assert moved("pulse_ingested_events_total", outcome="rejected") == 1
    assert moved("pulse_drops_total", reason="rejected_event") == 1
    # one latency observation per ingest request (the malformed one never reached the pipeline)
    assert moved("pulse_ingest_duration_seconds_count") == posts
    assert moved("pulse_ingest_duration_seconds_sum") > 0
    assert moved("pulse_ingest_duration_seconds_bucket", le="30.0") == posts  # each well under 30 s
    assert moved("pulse_http_responses_total", status=str(answer.status_code)) >= posts
    assert moved("pulse_http_responses_total", status="400") >= 1
    assert value(after, "pulse_actors", kind="session") >= 1

    # the histogram is cumulative: non-decreasing buckets, the last (+Inf) equal to the count
    for histogram in ("pulse_ingest_duration_seconds", "pulse_http_response_duration_seconds"):
        buckets = sorted(
            (float(dict(labels)["le"]), v) for (name, labels), v in after.items() if name == f"{histogram}_bucket"
        )
        counts = [v for _, v in buckets]
        assert counts == sorted(counts)
        assert buckets[-1] == (float("inf"), value(after, f"{histogram}_count"))
    assert value(after, "pulse_http_response_duration_seconds_count") >= posts + 1

    # every series of Pulse's carries this node's id
    pulse_series = [labels for (name, labels) in after if name.startswith("pulse_")]
    assert pulse_series and all(("node", node) in labels for labels in pulse_series)
    assert value(after, "pulse_node_info", node=node, bus="local", storage="sqlite") == 1


async def test_open_streams_show_in_gauges(server: ServerProcess, client: httpx.AsyncClient) -> None:
    def streams(samples: Samples) -> tuple[float, float, float]:
        return (value(samples, "pulse_open_connections", transport="sse"),
                value(samples, "pulse_open_connections", transport="websocket"),
                value(samples, "pulse_stream_subscribers"))

    assert streams(await scrape(client)) == (0, 0, 0)
    async with SSEClient(f"{server.url}/api/events/stream") as sse:
        assert sse.status == 200
        ws = await Client.connect(server.url, "/api/events/ws")
        try:
            samples = await wait_for(client, lambda s: streams(s) == (1, 1, 2))
            assert streams(samples) == (1, 1, 2)
        finally:
            await ws.aclose()
    samples = await wait_for(client, lambda s: streams(s) == (0, 0, 0))
    assert streams(samples) == (0, 0, 0)


async def test_slow_subscriber_is_a_counted_drop(server: ServerProcess, client: httpx.AsyncClient) -> None:
    ws = await Client.connect(server.url, "/api/v1/behavioral/stream")
    try:
        await ws.send({"type": "connection"})  # the whole project
        assert (await ws.json())["type"] == "connection_ack"
        # one batch offered at once: 1,000 events + 100 sessions' metrics exceed the subscriber's
        # queue (1,024 frames), so it is evicted (tests/e2e/test_ws_lifecycle.py)
        events = [{"sessionId": f"slow-{i % 100}", "eventType": "click"} for i in range(1000)]
        answer = await client.post("/api/v1/behavioral/batch", json={"events": events})
        assert answer.status_code == 200, answer.text
        code, _ = await ws.until_closed()
        assert code == 3008
    finally:
        await ws.aclose()
    samples = await wait_for(client, lambda s: value(s, "pulse_open_connections", transport="websocket") == 0)
    assert value(samples, "pulse_drops_total", reason="slow_subscriber") == 1
    assert value(samples, "pulse_ingested_events_total", outcome="stored") == 1000
    assert value(samples, "pulse_actors", kind="session") == 100


async def test_refused_websocket_is_a_counted_drop(tmp_path: pathlib.Path) -> None:
    proc = ServerProcess(tmp_path / "data", extra=["--max-websockets", "1"]).start()
    try:
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as http:
            assert value(await scrape(http), "pulse_drops_total", reason="websocket_refused") == 0
            first = await Client.connect(proc.url, "/api/events/ws")
            try:
                try:
                    second = await Client.connect(proc.url, "/api/events/ws")
                except Rejected as refused:
                    assert refused.status == 503
                else:
                    await second.aclose()
                    raise AssertionError("a WebSocket past --max-websockets 1 was accepted")
                samples = await scrape(http)
                assert value(samples, "pulse_drops_total", reason="websocket_refused") == 1
                assert value(samples, "pulse_websockets_max") == 1
            finally:
                await first.aclose()
    finally:
        assert proc.stop() == 0, "".join(proc.output)


async def test_metrics_need_a_secret_key_off_loopback(keyed_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=keyed_server.url, timeout=10) as http:
        assert (await http.get("/metrics")).status_code == 401
        public = await http.get("/metrics", headers={"Authorization": f"Bearer {keyed_server.public_key}"})
        assert public.status_code == 403
        samples = await scrape(http, {"Authorization": f"Bearer {keyed_server.secret_key}"})
        assert value(samples, "pulse_http_responses_total", status="401") >= 1


async def test_openmetrics_and_gzip_when_asked(server: ServerProcess, client: httpx.AsyncClient) -> None:
    # what Prometheus sends: OpenMetrics preferred
    accept = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
    answer = await client.get("/metrics", headers={"Accept": accept})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    families = {family.name: family for family in parse_openmetrics(answer.text)}
    assert families["pulse_ingested_events"].type == "counter"
    assert families["pulse_ingest_duration_seconds"].type == "histogram"
    assert families["pulse_open_connections"].type == "gauge"

    async with client.stream("GET", "/metrics", headers={"Accept-Encoding": "gzip"}) as zipped:
        assert zipped.headers["content-encoding"] == "gzip"
        on_the_wire = b"".join([chunk async for chunk in zipped.aiter_raw()])
    assert value(samples_of(gzip.decompress(on_the_wire).decode()), "pulse_start_time_seconds") > 0


def family_names(samples: Samples) -> set[str]:
    """The metric names as documented: histograms without their _bucket/_sum/_count samples."""
    names = {name for name, _ in samples}
    histograms = {name.removesuffix("_bucket") for name in names if name.endswith("_bucket")}
    return {name for name in names
            if not any(name == f"{h}{suffix}" for h in histograms for suffix in ("_bucket", "_sum", "_count"))} | histograms


async def test_cluster_node_exports_its_bus(tmp_path: pathlib.Path, redis_server: RedisServer) -> None:  # noqa: F811
    """A node with Redis exports every metric there is: checked here against docs/metrics.md and
    the queries of docs/grafana-pulse.json."""
    proc = ServerProcess(tmp_path / "data", extra=["--redis-url", redis_server.url, "--node-id", "metrics-node-a"]).start()
    try:
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as http:
            answer = await http.post("/api/v1/behavioral/events", json={"eventType": "scroll", "sessionId": "s1"})
            assert answer.status_code < 300, answer.text  # live actors: pulse_actors has a sample
            samples = await wait_for(
                http, lambda s: value(s, "pulse_bus_connected") == 1 and value(s, "pulse_cluster_nodes") == 1
            )
            assert value(samples, "pulse_node_info", node="metrics-node-a", bus="redis") == 1
            assert value(samples, "pulse_bus_connected") == 1
            assert value(samples, "pulse_bus_live_nodes") == 1
            assert value(samples, "pulse_cluster_nodes") == 1
            assert ("pulse_bus_published_total", frozenset({("node", "metrics-node-a")})) in samples
            nodes = {dict(labels).get("node") for (name, labels) in samples if name.startswith("pulse_")}
            assert nodes == {"metrics-node-a"}
    finally:
        assert proc.stop() == 0, "".join(proc.output)

    exported = family_names(samples)
    documented = set(re.findall(r"`((?:pulse|process)_[a-z_]+)`", (DOCS / "metrics.md").read_text()))
    assert exported - documented == set(), "exported but not in docs/metrics.md"
    dashboard = json.loads((DOCS / "grafana-pulse.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    queried = {name for expr in queries for name in re.findall(r"\b((?:pulse|process)_[a-z_]+)", expr)}
    assert queried and queried - {name for name, _ in samples} == set(), "the dashboard queries metrics that do not exist"
    assert dashboard["__inputs"][0]["name"] == "DS_PROMETHEUS"
