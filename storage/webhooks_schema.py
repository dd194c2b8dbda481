"""The webhooks tables (issue 13), for both backends: part of schema migration 3, which
storage/sqlite_schema.py and storage/postgres_schema.py assemble from this module and its siblings.

``webhooks``: one registered receiver per row (project-scoped). ``events`` is a JSON list of the
kinds it wants (``trigger_fired``, ``workflow_action``, or event type names); ``disabled_reason``
is set when the receiver answered 410 Gone (it then gets nothing more).

``webhook_deliveries``: one message to one receiver. ``id`` is the Standard Webhooks
``webhook-id`` (the same on every attempt: the receiver's idempotency key). ``body`` is the exact
JSON that is signed and sent. (webhook_id, dedup_key) is unique: a notification recorded twice (a
retried ingest, two nodes) is one delivery. Status moves pending -> delivering (claimed with a
lease: ``lease_owner`` until ``lease_until``) -> delivered | pending (retry at
``next_attempt_at``) | dead (retry window spent; replay puts it back to pending). A delivering row
whose lease has expired (its node died mid-attempt) is due again. Times are unix milliseconds.
"""

from __future__ import annotations

from typing import Final

_WEBHOOKS: Final = """
    CREATE TABLE webhooks (
        id TEXT PRIMARY KEY,
        project TEXT NOT NULL,
        url TEXT NOT NULL,
        events TEXT NOT NULL,
        secret TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        disabled_reason TEXT
    )
"""
_WEBHOOKS_PROJECT: Final = "CREATE INDEX webhooks_project ON webhooks (project, created_at)"


def _deliveries(body_type: str) -> str:
    return f"""
    CREATE TABLE webhook_deliveries (
        id TEXT PRIMARY KEY,
        webhook_id TEXT NOT NULL,
        project TEXT NOT NULL,
        kind TEXT NOT NULL,
        dedup_key TEXT NOT NULL,
        body {body_type} NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL,
        retry_from BIGINT NOT NULL,
        next_attempt_at BIGINT NOT NULL,
        lease_owner TEXT,
        lease_until BIGINT,
        last_error TEXT,
        last_status INTEGER,
        finished_at BIGINT,
        UNIQUE (webhook_id, dedup_key)
    )
    """


# Claims scan the due rows: pending by next_attempt_at, delivering by lease_until (expired leases).
_DUE_INDEXES: Final = (
    "CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (next_attempt_at) WHERE status = 'pending'",
    "CREATE INDEX webhook_deliveries_leased ON webhook_deliveries (lease_until) WHERE status = 'delivering'",
    "CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (webhook_id, status, created_at)",
)

SQLITE_DDL: Final[tuple[str, ...]] = (_WEBHOOKS, _WEBHOOKS_PROJECT, _deliveries("BLOB"), *_DUE_INDEXES)
POSTGRES_DDL: Final[tuple[str, ...]] = (_WEBHOOKS, _WEBHOOKS_PROJECT, _deliveries("BYTEA"), *_DUE_INDEXES)
