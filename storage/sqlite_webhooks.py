"""The SQLite backend's webhook statements (storage/webhooks_schema.py). Each function takes the
connection it runs on: SqliteStore runs the writes on its writer thread (in queue order with the
appends, each statement autocommitted) and the reads on its read pool."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec

from storage.webhook_records import (
    DEAD,
    DELIVERED,
    Claim,
    Delivery,
    NewDelivery,
    Outcome,
    QueueDepth,
    Webhook,
)

_T = TypeVar("_T")

_HOOK_COLUMNS: Final = "id, project, url, events, secret, created_at, disabled_reason"
DELIVERY_COLUMNS: Final = (
    "id, webhook_id, project, kind, dedup_key, body, status, attempts, created_at, retry_from, next_attempt_at,"
    " lease_owner, lease_until, last_error, last_status, finished_at"
)
_INSERT_HOOK: Final = f"INSERT INTO webhooks ({_HOOK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
_SELECT_HOOKS: Final = f"SELECT {_HOOK_COLUMNS} FROM webhooks WHERE project = ? ORDER BY created_at, id"
_SELECT_ALL_HOOKS: Final = f"SELECT {_HOOK_COLUMNS} FROM webhooks ORDER BY created_at, id"
_INSERT_DELIVERY: Final = (
    "INSERT INTO webhook_deliveries (id, webhook_id, project, kind, dedup_key, body, status, attempts, created_at,"
    " retry_from, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?) ON CONFLICT DO NOTHING"
)
# Due rows, at most ``per_webhook`` per receiver (ranked by due time), oldest due first. One
# statement: the claim is atomic, and SQLite has one writer, so no two claims ever overlap.
_CLAIM: Final = f"""
UPDATE webhook_deliveries
SET status = 'delivering', lease_owner = :owner, lease_until = :until, attempts = attempts + 1
WHERE id IN (
    SELECT id FROM (
        SELECT id, next_attempt_at,
               row_number() OVER (PARTITION BY webhook_id ORDER BY next_attempt_at, id) AS rank
        FROM webhook_deliveries
        WHERE ((status = 'pending' AND next_attempt_at <= :now) OR (status = 'delivering' AND lease_until <= :now))
          AND webhook_id NOT IN (SELECT value FROM json_each(:exclude))
    )
    WHERE rank <= :per_webhook ORDER BY next_attempt_at, id LIMIT :limit
)
RETURNING {DELIVERY_COLUMNS}
"""
_FINISH: Final = """
UPDATE webhook_deliveries
SET status = ?, next_attempt_at = ?, last_error = ?, last_status = ?, finished_at = ?,
    lease_owner = NULL, lease_until = NULL
WHERE id = ? AND status = 'delivering' AND lease_owner = ?
"""
_DISABLE_HOOK: Final = "UPDATE webhooks SET disabled_reason = ? WHERE id = ?"
_KILL_OPEN: Final = """
UPDATE webhook_deliveries
SET status = 'dead', last_error = ?, finished_at = ?, lease_owner = NULL, lease_until = NULL
WHERE webhook_id = ? AND status IN ('pending', 'delivering')
"""
_REPLAY: Final = """
UPDATE webhook_deliveries
SET status = 'pending', next_attempt_at = ?, retry_from = ?, finished_at = NULL, lease_owner = NULL,
    lease_until = NULL
WHERE project = ? AND webhook_id = ? AND status = 'dead'
"""
_SELECT_DELIVERIES: Final = (
    f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE project = ? AND webhook_id = ? AND status = ?"
    " ORDER BY created_at DESC, id DESC LIMIT ?"
)
_SELECT_DELIVERY: Final = f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE project = ? AND id = ?"
_DEPTH: Final = """
SELECT (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'),
       (SELECT count(*) FROM webhook_deliveries WHERE status = 'delivering'),
       (SELECT count(*) FROM webhook_deliveries WHERE status = 'dead')
"""
_PRUNE: Final = "DELETE FROM webhook_deliveries WHERE status = 'delivered' AND finished_at < ?"


def _hook(row: tuple[object, ...]) -> Webhook:
    hook_id, project, url, events, secret, created_at, disabled = row
    return Webhook(id=str(hook_id), project=str(project), url=str(url),
                   events=tuple(msgspec.json.decode(str(events), type=list[str])), secret=str(secret),
                   created_at=int(created_at), disabled_reason=None if disabled is None else str(disabled))  # type: ignore[call-overload]


def delivery(row: tuple[object, ...]) -> Delivery:
    return Delivery(**dict(zip(DELIVERY_COLUMNS.replace(" ", "").split(","), row, strict=True)))  # type: ignore[arg-type]


def create_webhook(conn: sqlite3.Connection, hook: Webhook) -> None:
    conn.execute(_INSERT_HOOK, (hook.id, hook.project, hook.url, msgspec.json.encode(list(hook.events)).decode(),
                                hook.secret, hook.created_at, hook.disabled_reason))


def list_webhooks(conn: sqlite3.Connection, project: str | None) -> list[Webhook]:
    rows = conn.execute(_SELECT_ALL_HOOKS) if project is None else conn.execute(_SELECT_HOOKS, (project,))
    return [_hook(row) for row in rows]


def delete_webhook(conn: sqlite3.Connection, project: str, webhook_id: str) -> bool:
    conn.execute("BEGIN IMMEDIATE")
    try:
        deleted = conn.execute("DELETE FROM webhooks WHERE project = ? AND id = ?", (project, webhook_id)).rowcount
        if deleted:
            conn.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?", (webhook_id,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return bool(deleted)


def disable_webhook(conn: sqlite3.Connection, webhook_id: str, reason: str, now_ms: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_DISABLE_HOOK, (reason, webhook_id))
        conn.execute(_KILL_OPEN, (reason, now_ms, webhook_id))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def record_deliveries(conn: sqlite3.Connection, rows: list[NewDelivery]) -> int:
    """Insert the deliveries (one transaction); a (webhook, dedup_key) recorded before is skipped.
    Returns how many were new."""
    before = conn.total_changes
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(_INSERT_DELIVERY, [
            (r.id, r.webhook_id, r.project, r.kind, r.dedup_key, r.body, r.created_at, r.created_at, r.created_at)
            for r in rows
        ])
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return conn.total_changes - before


def claim_rows(conn: sqlite3.Connection, c: Claim) -> list[Delivery]:
    params = {"owner": c.owner, "until": c.now_ms + c.lease_ms, "now": c.now_ms, "per_webhook": c.per_webhook,
              "limit": c.limit, "exclude": msgspec.json.encode(list(c.exclude)).decode()}
    return [delivery(row) for row in conn.execute(_CLAIM, params).fetchall()]


def finish(conn: sqlite3.Connection, o: Outcome) -> bool:
    finished = o.now_ms if o.status in (DELIVERED, DEAD) else None
    cursor = conn.execute(_FINISH, (o.status, o.next_attempt_at, o.error, o.http_status, finished, o.id, o.owner))
    return cursor.rowcount == 1


def replay(conn: sqlite3.Connection, project: str, webhook_id: str, delivery_id: str | None, now_ms: int) -> int:
    if delivery_id is None:
        return conn.execute(_REPLAY, (now_ms, now_ms, project, webhook_id)).rowcount
    return conn.execute(_REPLAY + " AND id = ?", (now_ms, now_ms, project, webhook_id, delivery_id)).rowcount


def list_deliveries(conn: sqlite3.Connection, project: str, webhook_id: str, status: str, limit: int) -> list[Delivery]:
    return [delivery(row) for row in conn.execute(_SELECT_DELIVERIES, (project, webhook_id, status, limit))]


def get_delivery(conn: sqlite3.Connection, project: str, delivery_id: str) -> Delivery | None:
    row = conn.execute(_SELECT_DELIVERY, (project, delivery_id)).fetchone()
    return None if row is None else delivery(row)


def queue_depth(conn: sqlite3.Connection) -> QueueDepth:
    pending, delivering, dead = conn.execute(_DEPTH).fetchone()
    return QueueDepth(int(pending), int(delivering), int(dead))


def prune(conn: sqlite3.Connection, before_ms: int) -> int:
    return conn.execute(_PRUNE, (before_ms,)).rowcount


class SqliteWebhookMethods:
    """SqliteStore's webhook methods: writes on the writer thread (queue order with the appends),
    reads on the read pool."""

    if TYPE_CHECKING:
        async def _write_with(self, fn: Callable[..., _T], *args: Any) -> _T: ...
        async def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T: ...

    async def create_webhook(self, hook: Webhook) -> None:
        await self._write_with(create_webhook, hook)

    async def list_webhooks(self, project: str | None) -> list[Webhook]:
        return await self._read(lambda conn: list_webhooks(conn, project))

    async def delete_webhook(self, project: str, webhook_id: str) -> bool:
        return await self._write_with(delete_webhook, project, webhook_id)

    async def disable_webhook(self, webhook_id: str, reason: str, now_ms: int) -> None:
        await self._write_with(disable_webhook, webhook_id, reason, now_ms)

    async def record_deliveries(self, rows: list[NewDelivery]) -> int:
        return await self._write_with(record_deliveries, rows)

    async def claim_deliveries(self, claim: Claim) -> list[Delivery]:
        # A write (it leases), on the one writer: trivially exclusive on one node, and the lease
        # is still written so that a restart knows which rows were mid-attempt.
        return await self._write_with(claim_rows, claim)

    async def finish_delivery(self, outcome: Outcome) -> bool:
        return await self._write_with(finish, outcome)

    async def replay_deliveries(self, project: str, webhook_id: str, delivery_id: str | None, now_ms: int) -> int:
        return await self._write_with(replay, project, webhook_id, delivery_id, now_ms)

    async def list_deliveries(self, project: str, webhook_id: str, status: str, limit: int) -> list[Delivery]:
        return await self._read(lambda conn: list_deliveries(conn, project, webhook_id, status, limit))

    async def get_delivery(self, project: str, delivery_id: str) -> Delivery | None:
        return await self._read(lambda conn: get_delivery(conn, project, delivery_id))

    async def webhook_queue_depth(self) -> QueueDepth:
        return await self._read(queue_depth)

    async def prune_deliveries(self, before_ms: int) -> int:
        return await self._write_with(prune, before_ms)
