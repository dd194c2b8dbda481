"""The files Pulse serves to browsers, over HTTP: GET /api/monitor.js and GET /test-cors.html.

The monitor is embedded by other sites: it must come with its JavaScript type, a cache lifetime,
an ETag that revalidates to a bodiless 304, gzip when asked for, and CORS headers.
"""

from __future__ import annotations

import gzip
import pathlib

import httpx

from server.assets import SCRIPT_CACHE
from tests.e2e.server_process import ServerProcess

MONITOR = pathlib.Path(__file__).resolve().parents[2] / "server" / "static" / "monitor.js"


async def test_monitor_script_type_cache_and_etag(client: httpx.AsyncClient) -> None:
    answer = await client.get("/api/monitor.js", headers={"Accept-Encoding": "identity"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/javascript; charset=utf-8"
    assert answer.headers["cache-control"] == SCRIPT_CACHE
    assert "content-encoding" not in answer.headers
    assert answer.content == MONITOR.read_bytes()  # the file as written: no build step
    etag = answer.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10

    again = await client.get("/api/monitor.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert again.headers["cache-control"] == SCRIPT_CACHE

    weak_or_listed = await client.get("/api/monitor.js", headers={"If-None-Match": f'"other", W/{etag}'})
    assert weak_or_listed.status_code == 304

    stale = await client.get("/api/monitor.js", headers={"If-None-Match": '"not-the-current-version"'})
    assert stale.status_code == 200 and stale.content == answer.content


async def test_monitor_script_gzip(client: httpx.AsyncClient) -> None:
    # read the raw bytes: httpx would inflate them silently
    async with client.stream("GET", "/api/monitor.js", headers={"Accept-Encoding": "gzip"}) as answer:
        raw = b"".join([chunk async for chunk in answer.aiter_raw()])
    assert answer.status_code == 200
    assert answer.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in answer.headers["vary"].lower()
    assert gzip.decompress(raw) == MONITOR.read_bytes()
    assert len(raw) < MONITOR.stat().st_size / 2


async def test_monitor_script_head(client: httpx.AsyncClient) -> None:
    get = await client.get("/api/monitor.js", headers={"Accept-Encoding": "identity"})
    head = await client.head("/api/monitor.js", headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200
    assert head.content == b""
    for name in ("content-type", "etag", "cache-control"):
        assert head.headers[name] == get.headers[name]
    assert int(head.headers["content-length"]) == len(get.content)


async def test_assets_carry_cors_headers(client: httpx.AsyncClient) -> None:
    for path in ("/api/monitor.js", "/test-cors.html"):
        answer = await client.get(path, headers={"Origin": "http://shop.example"})
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "*"


async def test_cors_test_page(client: httpx.AsyncClient) -> None:
    answer = await client.get("/test-cors.html")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.headers["cache-control"] == "no-cache"
    page = answer.text
    for element in ('id="api-url"', 'id="api-key"', 'id="test-single"', 'id="test-batch"', 'id="test-retrieve"',
                    'id="test-stream"', 'id="run-all"'):
        assert element in page
    again = await client.get("/test-cors.html", headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304


async def test_assets_need_no_key_on_a_server_that_needs_keys(keyed_server: ServerProcess) -> None:
    """A <script> tag cannot send a key: the monitor and the test page are public."""
    async with httpx.AsyncClient(base_url=keyed_server.url, timeout=10) as http:
        for path in ("/api/monitor.js", "/test-cors.html"):
            answer = await http.get(path)
            assert answer.status_code == 200, f"{path}: {answer.status_code}"
        assert (await http.get("/api/events")).status_code == 401  # reading still needs one
