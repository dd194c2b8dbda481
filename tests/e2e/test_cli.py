"""The ``pulse project`` commands, and a server started on the data directory they wrote; ``pulse
serve``'s WebSocket compression modes as a browser's handshake sees them."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from wsproto.extensions import PerMessageDeflate

from server.edge import websocket as edge_websocket
from server.settings import COMPRESSION_MODES
from tests.e2e.server_process import ROOT, ServerProcess
from tests.e2e.ws_client import Client

LINE = re.compile(r"^(?P<name>\S+)\s+(?P<id>\S+)\s+public: (?P<public>pk_\S+)\s+secret: (?P<secret>sk_\S+)\s*$")


@dataclass
class Printed:
    name: str
    id: str
    public: str
    secret: str


def pulse(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)


def projects_in(output: str) -> dict[str, Printed]:
    found = {}
    for line in output.splitlines():
        match = LINE.match(line)
        if match:
            found[match["name"]] = Printed(match["name"], match["id"], match["public"], match["secret"])
    return found


def create(data_dir: pathlib.Path, name: str) -> Printed:
    done = pulse("project", "create", name, "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    printed = projects_in(done.stdout)
    assert list(printed) == [name], done.stdout
    return printed[name]


def test_create_prints_the_name_and_keys(tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "data"
    done = pulse("project", "create", "acme", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    assert "acme" in done.stdout
    public = re.search(r"\bpk_[A-Za-z0-9_-]{16,}", done.stdout)
    secret = re.search(r"\bsk_[A-Za-z0-9_-]{16,}", done.stdout)
    assert public and secret, done.stdout
    assert public.group(0)[3:] != secret.group(0)[3:]


def test_list_shows_created_projects_with_their_keys(tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "data"
    acme = create(data_dir, "acme")
    globex = create(data_dir, "globex")
    assert acme.id != globex.id
    assert len({acme.public, acme.secret, globex.public, globex.secret}) == 4

    done = pulse("project", "list", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    listed = projects_in(done.stdout)
    assert listed["acme"] == acme
    assert listed["globex"] == globex


def test_creating_the_same_name_again_fails(tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "data"
    first = create(data_dir, "acme")
    again = pulse("project", "create", "acme", "--data-dir", str(data_dir))
    assert again.returncode == 1
    assert "error" in again.stderr.lower()
    assert "pk_" not in again.stdout and "sk_" not in again.stdout
    listed = projects_in(pulse("project", "list", "--data-dir", str(data_dir)).stdout)
    assert [p for p in listed.values() if p.name == "acme"] == [first]


@pytest.fixture
def provisioned(tmp_path: pathlib.Path) -> Iterator[tuple[ServerProcess, Printed]]:
    """A project created with the CLI, then a keyed server (0.0.0.0) started on the same data dir."""
    data_dir = tmp_path / "data"
    project = create(data_dir, "acme")
    proc = ServerProcess(data_dir, host="0.0.0.0").start()
    try:
        yield proc, project
    finally:
        code = proc.stop()
    assert code == 0, "".join(proc.output)


async def test_server_accepts_the_created_projects_keys(provisioned: tuple[ServerProcess, Printed]) -> None:
    server, acme = provisioned
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        ingested = await http.post("/api/events/track/signup", json={"serviceName": "acme-web"},
                                   headers={"Authorization": f"Bearer {acme.public}"})
        assert ingested.status_code == 200, ingested.text
        forbidden = await http.get("/api/events", headers={"Authorization": f"Bearer {acme.public}"})
        assert forbidden.status_code == 403

        listing = await http.get("/api/events", headers={"X-API-Key": acme.secret})
        assert listing.status_code == 200, listing.text
        assert [e["id"] for e in listing.json()["events"]] == [ingested.json()["eventId"]]

        # the server's own default project is another project
        assert server.public_key != acme.public
        default = await http.get("/api/events", headers={"Authorization": f"Bearer {server.secret_key}"})
        assert default.status_code == 200
        assert default.json()["events"] == []

        # a project created while the server runs works at once
        beta = create(server.data_dir, "beta")
        ingested = await http.post("/api/events/track/signup", json={}, params={"key": beta.public})
        assert ingested.status_code == 200, ingested.text
        listing = await http.get("/api/events", params={"key": beta.secret})
        assert listing.status_code == 200, listing.text
        assert [e["id"] for e in listing.json()["events"]] == [ingested.json()["eventId"]]


@pytest.mark.parametrize("mode", COMPRESSION_MODES)
async def test_serve_ws_compression_modes_as_a_browser_offering_deflate_sees_them(tmp_path: pathlib.Path,
                                                                                    mode: str) -> None:
    assert set(COMPRESSION_MODES) == set(edge_websocket.COMPRESSION_MODES)  # the CLI offers each mode there is
    proc = ServerProcess(tmp_path / "data", extra=["--ws-compression", mode]).start()
    try:
        offer = PerMessageDeflate()  # what browsers offer: permessage-deflate; client_max_window_bits
        ws = await Client.connect(proc.url, "/api/v1/behavioral/stream", extensions=[offer])
        assert ws.accepted is not None
        if mode == "off":
            assert ws.accepted.extensions == []
        else:
            (deflate,) = ws.accepted.extensions
            assert isinstance(deflate, PerMessageDeflate)
            # no-context-takeover: the server keeps no zlib state between messages, nor may the client
            per_message = mode == "no-context-takeover"
            assert deflate.server_no_context_takeover is per_message
            assert deflate.client_no_context_takeover is per_message
        await ws.send({"type": "ping", "requestId": "p" * 300})  # compressed both ways when negotiated
        pong = await ws.json()
        assert pong["type"] == "pong" and pong["requestId"] == "p" * 300
        await ws.aclose()
    finally:
        assert proc.stop() == 0
