"""The PostgreSQL backend's project-policy statements (storage/policy_records.py has the SQL)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from protocol.policy import ProjectPolicy, with_salt
from storage import policy_records as p
from storage.trigger_records import numbered

Connection = Any  # asyncpg.Connection
_T = TypeVar("_T")

SELECT_POLICIES: Final = p.SELECT_POLICIES
SELECT_POLICY_FOR_UPDATE: Final = numbered(p.SELECT_POLICY) + " FOR UPDATE"
UPSERT_POLICY: Final = numbered(p.UPSERT_POLICY)
INSERT_POLICY: Final = numbered(p.INSERT_POLICY)


async def project_policies(conn: Connection) -> dict[str, ProjectPolicy]:
    return p.policies_from_rows([(r[0], r[1]) for r in await conn.fetch(SELECT_POLICIES)])


async def put_policy(conn: Connection, project: str, policy: ProjectPolicy, now_ms: int) -> ProjectPolicy:
    async with conn.transaction():
        stored_text = await conn.fetchval(SELECT_POLICY_FOR_UPDATE, project)
        if stored_text is None:
            # A project's first policy, maybe given by two nodes at once: the first committed salt
            # wins (the loser's insert waits for it and does nothing; the re-read then sees it).
            await conn.execute(INSERT_POLICY, *p.policy_params(project, with_salt(policy), now_ms))
            stored_text = await conn.fetchval(SELECT_POLICY_FOR_UPDATE, project)
        stored = p.merged(stored_text, policy)
        await conn.execute(UPSERT_POLICY, *p.policy_params(project, stored, now_ms))
        return stored


class PostgresPolicyMethods:
    """PostgresStore's project-policy methods: each one crossing, committed when it returns."""

    if TYPE_CHECKING:
        def _require_running(self) -> None: ...
        async def _read(self, work: Callable[[Connection], Awaitable[_T]], *, time_limit_s: float = ...,
                        snapshot: bool = False) -> _T: ...

    async def project_policies(self) -> dict[str, ProjectPolicy]:
        return await self._read(project_policies)

    async def put_project_policy(self, project: str, policy: ProjectPolicy, now_ms: int) -> ProjectPolicy:
        self._require_running()
        return await self._read(functools.partial(put_policy, project=project, policy=policy, now_ms=now_ms))
