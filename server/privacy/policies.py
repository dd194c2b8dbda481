"""Every project's policy (protocol/policy.py) in memory, for the ingest path and the jobs.

``get`` is a dict lookup: rate limits, consent defaults and sampling are read on every request and
must never wait for the database. Policies are loaded at start and reloaded every RELOAD_S (the
changes made on other nodes); a change made here applies here at once.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import trio

from protocol.policy import DEFAULT_POLICY, ProjectPolicy, patched, with_salt

log = logging.getLogger("pulse.privacy")

RELOAD_S: Final = 1.0


class PolicyBook:
    def __init__(self, store: Any) -> None:
        self._store = store
        self._policies: dict[str, ProjectPolicy] = {}
        self.reloads = 0
        self.reload_failures = 0

    def get(self, project: str) -> ProjectPolicy:
        return self._policies.get(project, DEFAULT_POLICY)

    async def salted(self, project: str) -> ProjectPolicy:
        """The project's policy with its salt, storing the policy (and a new salt) on first need."""
        policy = self.get(project)
        if policy.salt:
            return policy
        return await self._put(project, with_salt(policy))

    async def patch(self, project: str, changes: dict[str, Any], now_ms: int) -> ProjectPolicy:
        """Apply a PATCH body's changes (InvalidInput for a bad field) and store the result."""
        return await self._put(project, patched(self.get(project), changes), now_ms)

    async def _put(self, project: str, policy: ProjectPolicy, now_ms: int | None = None) -> ProjectPolicy:
        stored: ProjectPolicy = await self._store.put_project_policy(
            project, policy, now_ms if now_ms is not None else time.time_ns() // 1_000_000
        )
        self._policies = {**self._policies, project: stored}
        return stored

    async def run(self, *, interval: float = RELOAD_S,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:  # fmt: skip
        await self._reload()
        task_status.started()
        while True:
            await trio.sleep(interval)
            await self._reload()

    async def _reload(self) -> None:
        try:
            policies = await self._store.project_policies()
        except Exception as exc:  # StoreError: keep what we have, try again next time
            self.reload_failures += 1
            log.warning("policy reload failed: %r", exc)
            return
        self._policies = policies  # one swap: a reader sees the old dict or the new one
        self.reloads += 1
