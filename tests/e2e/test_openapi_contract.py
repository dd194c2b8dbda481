"""/openapi.json tells the truth: schemathesis, every check, against a running Pulse.

schemathesis generates requests from the document (valid ones, which must be accepted, and invalid
ones, which must be refused), and checks every answer against it: status codes, content types,
headers, bodies, 405s with Allow, no server error. Its CLI runs as a child process against a real
``pulse serve`` (ServerProcess), with a fixed seed and a bounded number of examples per operation,
so a run is repeatable and takes well under a minute and a half here.

The triggers and webhooks the run creates listen to event types of their own (a prefix the hooks
add, tests/e2e/openapi_hooks.py): on the shrunk name "0" they would fire for every event the ingest
operations send, and the run would take minutes.

Left out of the run: GET /api/events/stream and GET /api/v1/behavioral/stream. They are Server-Sent
Event streams that never end, and their first message comes after up to 5 s, so each generated case
would hold its connection until the request timeout. Their parameters' refusals and their 405s are
tested in tests/e2e/test_method_not_allowed.py and tests/e2e/test_streams.py.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
from typing import Final

import httpx

from tests.e2e.server_process import ROOT, ServerProcess

SCHEMATHESIS: Final = pathlib.Path(sys.executable).parent / "schemathesis"
CONFIG: Final = ROOT / "tests" / "e2e" / "schemathesis.toml"  # hooks, and the per-operation notes
SEED: Final = 1
MAX_EXAMPLES: Final = 3  # per operation and phase; the coverage phase enumerates its cases anyway
NOT_RUN: Final = r"stream$"  # the two endless SSE routes (see above)
RUN_TIMEOUT_S: Final = 300.0  # a deadline for a hung run, not a measure of speed
GENERATED: Final = re.compile(r"(\d+) generated")
SELECTED: Final = re.compile(r"Selected: (\d+)/(\d+)")


def schemathesis(location: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(SCHEMATHESIS), "--config-file", str(CONFIG), "--no-color", "run", location,
        "--checks", "all", "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES),
        "--generation-database", "none", "--request-timeout", "10", "--exclude-path-regex", NOT_RUN, *args,
    ]
    # the hooks module (tests.e2e.openapi_hooks) is imported from the repository's root
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          check=False)


def generated(run: subprocess.CompletedProcess[str]) -> int:
    match = GENERATED.search(run.stdout)
    assert match, run.stdout + run.stderr
    return int(match.group(1))


def test_schemathesis_finds_no_disagreement(server: ServerProcess) -> None:
    run = schemathesis(f"{server.url}/openapi.json")
    assert run.returncode == 0, run.stdout + run.stderr
    selected = SELECTED.search(run.stdout)
    assert selected, run.stdout
    operations, total = int(selected.group(1)), int(selected.group(2))
    assert operations == total - 2, run.stdout  # all but the two streams
    assert f"Tested: {operations}" in run.stdout, run.stdout  # every selected operation ran
    assert generated(run) >= 10 * operations, run.stdout


def test_a_document_that_lies_is_caught(server: ServerProcess, tmp_path: pathlib.Path) -> None:
    """The run above can fail: the same document with one bound widened beyond what the server
    accepts makes schemathesis report valid-looking requests refused."""
    doc = httpx.get(f"{server.url}/openapi.json").json()
    [limit] = [p for p in doc["paths"]["/api/events/suggestions"]["get"]["parameters"] if p["name"] == "limit"]
    limit["schema"]["maximum"] += 1000
    lying = tmp_path / "openapi.json"
    lying.write_text(json.dumps(doc))
    run = schemathesis(str(lying), "--url", server.url, "--include-path", "/api/events/suggestions")
    assert run.returncode != 0, run.stdout
    assert "ST202 Schema-valid request rejected" in run.stdout, run.stdout
    assert "limit: must be between" in run.stdout, run.stdout
