"""Project policies in the Store (issue 14; table in storage/policy_schema.py). The SQL is written
with ``?`` placeholders (SQLite) and numbered for PostgreSQL by ``storage.trigger_records.numbered``.

A policy's salt is written once: a later write keeps the stored salt, so identifiers hashed on any
node, before or after a policy change, stay comparable."""

from __future__ import annotations

from typing import Final, Protocol

import msgspec

from protocol.policy import ProjectPolicy, from_json, to_json, with_salt

SELECT_POLICIES: Final = "SELECT project, policy FROM project_policies"
SELECT_POLICY: Final = "SELECT policy FROM project_policies WHERE project = ?"
INSERT_POLICY: Final = (
    "INSERT INTO project_policies (project, policy, updated_ms) VALUES (?, ?, ?) ON CONFLICT (project) DO NOTHING"
)
UPSERT_POLICY: Final = (
    "INSERT INTO project_policies (project, policy, updated_ms) VALUES (?, ?, ?)"
    " ON CONFLICT (project) DO UPDATE SET policy = excluded.policy, updated_ms = excluded.updated_ms"
)


def merged(stored: str | None, policy: ProjectPolicy) -> ProjectPolicy:
    """What to store for ``policy`` when ``stored`` (JSON or None) is in the table: its salt wins."""
    if stored is not None:
        salt = from_json(stored).salt
        if salt:
            return msgspec.structs.replace(policy, salt=salt)
    return with_salt(policy)


def policies_from_rows(rows: list[tuple[str, str]]) -> dict[str, ProjectPolicy]:
    return {project: from_json(text) for project, text in rows}


def policy_params(project: str, policy: ProjectPolicy, now_ms: int) -> tuple[str, str, int]:
    return project, to_json(policy), now_ms


class PolicyStore(Protocol):
    async def project_policies(self) -> dict[str, ProjectPolicy]:
        """Every stored policy by project id (projects without one have the defaults)."""

    async def put_project_policy(self, project: str, policy: ProjectPolicy, now_ms: int) -> ProjectPolicy:
        """Store ``policy`` for ``project`` (keeping a stored salt, or giving it one) and return
        what was stored; committed when this returns."""
