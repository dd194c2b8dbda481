"""The SQLite backend's project-policy statements (storage/policy_records.py has the SQL)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from protocol.policy import ProjectPolicy
from storage import policy_records as p

_T = TypeVar("_T")


def put_policy(conn: sqlite3.Connection, project: str, policy: ProjectPolicy, now_ms: int) -> ProjectPolicy:
    row = conn.execute(p.SELECT_POLICY, (project,)).fetchone()
    stored = p.merged(row[0] if row else None, policy)
    conn.execute(p.UPSERT_POLICY, p.policy_params(project, stored, now_ms))
    return stored


class SqlitePolicyMethods:
    """SqliteStore's project-policy methods."""

    if TYPE_CHECKING:
        async def _write_with(self, fn: Callable[..., _T], *args: Any) -> _T: ...
        async def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T: ...

    async def project_policies(self) -> dict[str, ProjectPolicy]:
        return await self._read(lambda conn: p.policies_from_rows(conn.execute(p.SELECT_POLICIES).fetchall()))

    async def put_project_policy(self, project: str, policy: ProjectPolicy, now_ms: int) -> ProjectPolicy:
        return await self._write_with(put_policy, project, policy, now_ms)
