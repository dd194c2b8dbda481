"""The PostgreSQL backend's webhook statements (storage/webhooks_schema.py): asyncio-flavoured units
of work for ``pg_bridge.Database.run``, and PostgresStore's webhook methods (a mixin).

Claims: ``UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``: concurrent claims from
several nodes skip the rows another claim holds, and a row whose claim committed is re-checked
(its lease is live, so it is not due): no two nodes ever lease the same row at once.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec

from storage.pg_bridge import Connection, transaction
from storage.sqlite_webhooks import DELIVERY_COLUMNS
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
_FIELDS: Final = DELIVERY_COLUMNS.replace(" ", "").split(",")
_HOOK_COLUMNS: Final = "id, project, url, events, secret, created_at, disabled_reason"
_CLAIM_SCAN: Final = 4  # due rows looked at per row wanted (the per-receiver bound skips some)

_INSERT_HOOK: Final = f"INSERT INTO webhooks ({_HOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
_INSERT_DELIVERIES: Final = """
INSERT INTO webhook_deliveries (id, webhook_id, project, kind, dedup_key, body, status, attempts, created_at,
                                retry_from, next_attempt_at)
SELECT id, webhook_id, project, kind, dedup_key, body, 'pending', 0, created_at, created_at, created_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::bigint[])
     AS r(id, webhook_id, project, kind, dedup_key, body, created_at)
ON CONFLICT DO NOTHING
RETURNING id
"""
_CLAIM: Final = f"""
WITH due AS (
    SELECT id, webhook_id, next_attempt_at FROM webhook_deliveries
    WHERE ((status = 'pending' AND next_attempt_at <= $1) OR (status = 'delivering' AND lease_until <= $1))
      AND webhook_id <> ALL($2::text[])
    ORDER BY next_attempt_at, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), ranked AS (
    SELECT id, next_attempt_at,
           row_number() OVER (PARTITION BY webhook_id ORDER BY next_attempt_at, id) AS rank
    FROM due
), chosen AS (
    SELECT id FROM ranked WHERE rank <= $4 ORDER BY next_attempt_at, id LIMIT $5
)
UPDATE webhook_deliveries d
SET status = 'delivering', lease_owner = $6, lease_until = $7, attempts = d.attempts + 1
FROM chosen WHERE d.id = chosen.id
RETURNING {", ".join("d." + f for f in _FIELDS)}
"""
_FINISH: Final = """
UPDATE webhook_deliveries
SET status = $1, next_attempt_at = $2, last_error = $3, last_status = $4, finished_at = $5,
    lease_owner = NULL, lease_until = NULL
WHERE id = $6 AND status = 'delivering' AND lease_owner = $7
"""
_KILL_OPEN: Final = """
UPDATE webhook_deliveries
SET status = 'dead', last_error = $1, finished_at = $2, lease_owner = NULL, lease_until = NULL
WHERE webhook_id = $3 AND status IN ('pending', 'delivering')
"""
_REPLAY: Final = """
UPDATE webhook_deliveries
SET status = 'pending', next_attempt_at = $1, retry_from = $1, finished_at = NULL, lease_owner = NULL,
    lease_until = NULL
WHERE project = $2 AND webhook_id = $3 AND status = 'dead' AND ($4::text IS NULL OR id = $4)
"""
_SELECT_DELIVERIES: Final = (
    f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE project = $1 AND webhook_id = $2 AND status = $3"
    " ORDER BY created_at DESC, id DESC LIMIT $4"
)
_DEPTH: Final = """
SELECT (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'),
       (SELECT count(*) FROM webhook_deliveries WHERE status = 'delivering'),
       (SELECT count(*) FROM webhook_deliveries WHERE status = 'dead')
"""


def _hook(row: Any) -> Webhook:
    return Webhook(id=row[0], project=row[1], url=row[2], events=tuple(msgspec.json.decode(row[3], type=list[str])),
                   secret=row[4], created_at=row[5], disabled_reason=row[6])


def _delivery(row: Any) -> Delivery:
    values = dict(zip(_FIELDS, row, strict=True))
    values["body"] = bytes(values["body"])
    return Delivery(**values)


def _rowcount(status: str) -> int:
    """The row count of an asyncpg command status ("UPDATE 3", "DELETE 0")."""
    return int(status.rsplit(" ", 1)[-1])


async def create_webhook(conn: Connection, hook: Webhook) -> None:
    await conn.execute(_INSERT_HOOK, hook.id, hook.project, hook.url, msgspec.json.encode(list(hook.events)).decode(),
                       hook.secret, hook.created_at, hook.disabled_reason)


async def list_webhooks(conn: Connection, project: str | None) -> list[Webhook]:
    if project is None:
        rows = await conn.fetch(f"SELECT {_HOOK_COLUMNS} FROM webhooks ORDER BY created_at, id")
    else:
        rows = await conn.fetch(f"SELECT {_HOOK_COLUMNS} FROM webhooks WHERE project = $1 ORDER BY created_at, id",
                                project)
    return [_hook(row) for row in rows]


async def delete_webhook(conn: Connection, project: str, webhook_id: str) -> bool:
    async with transaction(conn):
        deleted = _rowcount(await conn.execute("DELETE FROM webhooks WHERE project = $1 AND id = $2", project,
                                               webhook_id))
        if deleted:
            await conn.execute("DELETE FROM webhook_deliveries WHERE webhook_id = $1", webhook_id)
    return bool(deleted)


async def disable_webhook(conn: Connection, webhook_id: str, reason: str, now_ms: int) -> None:
    async with transaction(conn):
        await conn.execute("UPDATE webhooks SET disabled_reason = $1 WHERE id = $2", reason, webhook_id)
        await conn.execute(_KILL_OPEN, reason, now_ms, webhook_id)


async def record_deliveries(conn: Connection, rows: list[NewDelivery]) -> int:
    columns = [[getattr(r, f) for r in rows] for f in ("id", "webhook_id", "project", "kind", "dedup_key", "body",
                                                        "created_at")]
    return len(await conn.fetch(_INSERT_DELIVERIES, *columns))


async def _claim(conn: Connection, c: Claim) -> list[Delivery]:
    rows = await conn.fetch(_CLAIM, c.now_ms, list(c.exclude), c.limit * _CLAIM_SCAN, c.per_webhook, c.limit,
                            c.owner, c.now_ms + c.lease_ms)
    return sorted((_delivery(row) for row in rows), key=lambda d: (d.next_attempt_at, d.id))


async def finish(conn: Connection, o: Outcome) -> bool:
    finished = o.now_ms if o.status in (DELIVERED, DEAD) else None
    status = await conn.execute(_FINISH, o.status, o.next_attempt_at, o.error, o.http_status, finished, o.id, o.owner)
    return _rowcount(status) == 1


async def replay(conn: Connection, project: str, webhook_id: str, delivery_id: str | None, now_ms: int) -> int:
    return _rowcount(await conn.execute(_REPLAY, now_ms, project, webhook_id, delivery_id))


async def list_deliveries(conn: Connection, project: str, webhook_id: str, status: str, limit: int) -> list[Delivery]:
    return [_delivery(row) for row in await conn.fetch(_SELECT_DELIVERIES, project, webhook_id, status, limit)]


async def get_delivery(conn: Connection, project: str, delivery_id: str) -> Delivery | None:
    row = await conn.fetchrow(f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE project = $1 AND id = $2",
                              project, delivery_id)
    return None if row is None else _delivery(row)


async def queue_depth(conn: Connection) -> QueueDepth:
    row = await conn.fetchrow(_DEPTH)
    return QueueDepth(int(row[0]), int(row[1]), int(row[2]))


async def prune(conn: Connection, before_ms: int) -> int:
    status = await conn.execute("DELETE FROM webhook_deliveries WHERE status = 'delivered' AND finished_at < $1",
                                before_ms)
    return _rowcount(status)


class PostgresWebhookMethods:
    """PostgresStore's webhook methods: each one crossing, each statement (or short transaction)
    committed when it returns."""

    if TYPE_CHECKING:
        def _require_running(self) -> None: ...
        async def _read(self, work: Callable[[Connection], Awaitable[_T]], *, time_limit_s: float = ...,
                        snapshot: bool = False) -> _T: ...

    async def _webhook_write(self, work: Callable[[Connection], Awaitable[_T]]) -> _T:
        self._require_running()
        return await self._read(work)

    async def create_webhook(self, hook: Webhook) -> None:
        await self._webhook_write(functools.partial(create_webhook, hook=hook))

    async def list_webhooks(self, project: str | None) -> list[Webhook]:
        return await self._read(functools.partial(list_webhooks, project=project))

    async def delete_webhook(self, project: str, webhook_id: str) -> bool:
        return await self._webhook_write(functools.partial(delete_webhook, project=project, webhook_id=webhook_id))

    async def disable_webhook(self, webhook_id: str, reason: str, now_ms: int) -> None:
        await self._webhook_write(functools.partial(disable_webhook, webhook_id=webhook_id, reason=reason, now_ms=now_ms))

    async def record_deliveries(self, rows: list[NewDelivery]) -> int:
        return await self._webhook_write(functools.partial(record_deliveries, rows=rows))

    async def claim_deliveries(self, claim: Claim) -> list[Delivery]:
        return await self._webhook_write(functools.partial(_claim, c=claim))

    async def finish_delivery(self, outcome: Outcome) -> bool:
        return await self._webhook_write(functools.partial(finish, o=outcome))

    async def replay_deliveries(self, project: str, webhook_id: str, delivery_id: str | None, now_ms: int) -> int:
        return await self._webhook_write(functools.partial(replay, project=project, webhook_id=webhook_id,
                                                   delivery_id=delivery_id, now_ms=now_ms))

    async def list_deliveries(self, project: str, webhook_id: str, status: str, limit: int) -> list[Delivery]:
        return await self._read(functools.partial(list_deliveries, project=project, webhook_id=webhook_id,
                                                  status=status, limit=limit))

    async def get_delivery(self, project: str, delivery_id: str) -> Delivery | None:
        return await self._read(functools.partial(get_delivery, project=project, delivery_id=delivery_id))

    async def webhook_queue_depth(self) -> QueueDepth:
        return await self._read(queue_depth)

    async def prune_deliveries(self, before_ms: int) -> int:
        return await self._webhook_write(functools.partial(prune, before_ms=before_ms))
