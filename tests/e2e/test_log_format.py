"""``--log-format json`` (and $PULSE_LOG_FORMAT): every log line of a real server is one JSON object
with ts, level, logger and message; the start banner stays plain text on stdout for people (and for
ServerProcess, which reads the URL and keys from it)."""

from __future__ import annotations

import io
import json
import logging
import pathlib
import subprocess
import sys
from datetime import datetime
from typing import Any

import httpx

from server.logs import JsonFormatter
from tests.e2e.server_process import ROOT, ServerProcess

BANNER_LINES = 7  # server/main.py banner(): the "Pulse listening on" line and six indented ones


def split_output(lines: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """The banner's lines and the log records (every other line, which must be JSON)."""
    banner, records = [], []
    for line in lines:
        if line.startswith("Pulse listening on ") or (banner and len(banner) < BANNER_LINES and line.startswith("  ")):
            banner.append(line)
        else:
            records.append(json.loads(line))  # a line that is not JSON fails the test here
    return banner, records


def assert_record_shape(record: dict[str, Any]) -> None:
    assert {"ts", "level", "logger", "message"} <= record.keys(), record
    assert record["ts"].endswith("Z")
    stamp = datetime.fromisoformat(record["ts"].replace("Z", "+00:00"))
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert record["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


async def test_server_logs_json_lines(tmp_path: pathlib.Path) -> None:
    # --log-level info after the fixture's warning: the shutdown lines are INFO records
    proc = ServerProcess(tmp_path / "data", extra=["--log-format", "json", "--log-level", "info"]).start()
    async with httpx.AsyncClient(base_url=proc.url, timeout=10) as http:
        assert (await http.get("/api/v1/behavioral/health")).status_code == 200
    assert proc.stop() == 0, "".join(proc.output)
    banner, records = split_output([line.rstrip("\n") for line in proc.output])
    assert len(banner) == BANNER_LINES and proc.secret_key.startswith("sk_")
    for record in records:
        assert_record_shape(record)
    messages = [(r["logger"], r["message"]) for r in records]
    assert ("pulse", "received SIGTERM: shutting down") in messages
    assert ("pulse", "pulse stopped") in messages


async def test_log_format_from_the_environment(tmp_path: pathlib.Path) -> None:
    proc = ServerProcess(tmp_path / "data", extra=["--log-level", "info"], env={"PULSE_LOG_FORMAT": "json"}).start()
    assert proc.stop() == 0, "".join(proc.output)
    _, records = split_output([line.rstrip("\n") for line in proc.output])
    assert [r["message"] for r in records][-1] == "pulse stopped"


def test_unknown_log_format_is_refused() -> None:
    run = subprocess.run([sys.executable, "-m", "server.cli", "serve", "--port", "0", "--log-format", "xml"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "--log-format: must be one of text, json, got 'xml'" in run.stderr


def test_formatter_keeps_exception_and_extra_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("pulse.test_log_format")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            logger.exception("could not %s", "store", extra={"project": "prj_1", "count": 3, "path": pathlib.Path("/x")})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1  # the traceback's newlines are escaped inside the one line
    record = json.loads(lines[0])
    assert_record_shape(record)
    assert (record["level"], record["logger"], record["message"]) == ("ERROR", "pulse.test_log_format", "could not store")
    assert "Traceback" in record["exception"] and "ValueError: bad\nvalue" in record["exception"]
    assert (record["project"], record["count"], record["path"]) == ("prj_1", 3, "/x")
    assert "args" not in record and "exc_info" not in record  # the record's own attributes are not extras


def test_hypercorn_errors_come_out_once_in_pulse_format() -> None:
    """hypercorn would give its error logger a text handler of its own; the line must come out
    once, as Pulse's JSON (server/main.py hands hypercorn its logger, which it then uses as is)."""
    script = (
        "import trio\n"
        "from server import logs\n"
        "from server.main import hypercorn_config\n"
        "from server.settings import Settings\n"
        "logs.configure('info', 'json')\n"
        "config = hypercorn_config(Settings())\n"
        "from functools import partial\n"
        "trio.run(partial(config.log.error, 'Error in ASGI Framework', exc_info=RuntimeError('boom')))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    record = json.loads(lines[0])
    assert_record_shape(record)
    assert (record["logger"], record["message"]) == ("hypercorn.error", "Error in ASGI Framework")
    assert "RuntimeError: boom" in record["exception"]
