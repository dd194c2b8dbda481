# mypy: ignore-errors
"""The FastAPI app a user would write in an afternoon instead of Pulse: the comparison baseline.

FastAPI on uvicorn (uvloop + httptools), SQLite in WAL mode with synchronous=NORMAL, one commit per
request, serving the ingest routes and bodies of loadtest/wrk/*.lua:

    POST /api/events/track/{eventName}   one event (seed 004: AIEventPayload)
    POST /api/events/track/batch         {"events": [{"eventName", "payload"}, ...]}: one transaction
    POST /api/v1/behavioral/events       one event (seed 000)
    POST /api/v1/behavioral/batch        {"events": [...]}: one transaction

Bodies are validated by pydantic models (the fields the app reads, extra fields allowed and kept),
each event is one row (id, name, session, user, timestamp, JSON payload), the answer is a small JSON
(the event id; for a batch the count). Endpoints are ``async def`` on one connection: a WAL commit with
synchronous=NORMAL writes the WAL without an fsync (tens of µs), the usual way such an app is written;
sync endpoints would add a thread-pool hop per request on the same core. The id is an INTEGER PRIMARY
KEY, as in FastAPI's SQL tutorial, and there is no secondary index: an afternoon's app has none yet
(Pulse maintains the indexes its query endpoints need; each one here would cost ~10 µs per event).

Not a Pulse dependency: loadtest/sidebyside.py creates its own venv (fastapi, uvicorn[standard]).

    /tmp/pulse-baseline-venv/bin/python loadtest/baselines/fastapi_sqlite.py --port 8200 --data-dir /tmp/fa
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import time
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    session_id TEXT,
    user_id TEXT,
    ts INTEGER NOT NULL,
    payload TEXT NOT NULL
);
"""
INSERT = "INSERT INTO events (name, session_id, user_id, ts, payload) VALUES (?, ?, ?, ?, ?)"


class TrackPayload(BaseModel):  # seed 004's AIEventPayload, the fields we read
    model_config = ConfigDict(extra="allow")
    serviceName: str | None = None
    sessionId: str | None = None
    userId: str | None = None
    statusCode: int | None = Field(default=None, ge=0, le=999)
    responseTimeMs: float | None = Field(default=None, ge=0)
    metadata: dict[str, Any] | None = None


class TrackBatchItem(BaseModel):
    eventName: str = Field(min_length=1, max_length=200)
    payload: TrackPayload = Field(default_factory=TrackPayload)


class TrackBatch(BaseModel):
    events: list[TrackBatchItem] = Field(max_length=1000)
    batchId: str | None = None


class BehavioralEvent(BaseModel):  # seed 000
    model_config = ConfigDict(extra="allow")
    eventType: str = Field(min_length=1, max_length=200)
    sessionId: str | None = None
    userId: str | None = None
    deviceType: str | None = None
    eventData: dict[str, Any] | None = None
    timestamp: float | None = None


class BehavioralBatch(BaseModel):
    events: list[BehavioralEvent] = Field(max_length=1000)
    batchId: str | None = None


db: sqlite3.Connection


@asynccontextmanager
async def lifespan(app: FastAPI):
    global db
    db = sqlite3.connect(os.path.join(app.state.data_dir, "events.db"))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    yield
    db.close()


app = FastAPI(lifespan=lifespan)
app.state.data_dir = "."


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def track_row(name: str, payload: TrackPayload) -> tuple:
    return (name, payload.sessionId, payload.userId, now_ms(), payload.model_dump_json())


def behavioral_row(event: BehavioralEvent) -> tuple:
    ts = int(event.timestamp) if event.timestamp is not None else now_ms()
    return (event.eventType, event.sessionId, event.userId, ts, event.model_dump_json())


def store_one(row: tuple) -> int:
    with db:  # one transaction, committed on exit
        return db.execute(INSERT, row).lastrowid


def store_many(rows: list[tuple]) -> int:
    with db:
        db.executemany(INSERT, rows)
    return len(rows)


# Declared before /api/events/track/{eventName}, which would otherwise take "batch" as a name.
@app.post("/api/events/track/batch")
async def track_batch(batch: TrackBatch):
    stored = store_many([track_row(item.eventName, item.payload) for item in batch.events])
    return {"success": True, "stored": stored, "batchId": batch.batchId}


@app.post("/api/events/track/{eventName}")
async def track_one(eventName: str, payload: TrackPayload):
    return {"success": True, "eventId": store_one(track_row(eventName, payload))}


@app.post("/api/v1/behavioral/batch")
async def behavioral_batch(batch: BehavioralBatch):
    stored = store_many([behavioral_row(event) for event in batch.events])
    return {"success": True, "stored": stored, "batchId": batch.batchId}


@app.post("/api/v1/behavioral/events")
async def behavioral_one(event: BehavioralEvent):
    return {"success": True, "eventId": store_one(behavioral_row(event))}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--data-dir", default=".")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    os.makedirs(args.data_dir, exist_ok=True)
    app.state.data_dir = args.data_dir
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http="httptools",
                log_level=args.log_level, access_log=False)
