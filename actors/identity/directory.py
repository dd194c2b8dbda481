"""Every project's identity graph on this node, kept current with the store.

The store holds the links (storage/identity_records.py); each node keeps the graphs in memory for
two readers: the fan-out, which resolves an event's session to its linked user (``linked_users``:
project -> session -> user, the dict IngestPipeline._publish reads), and the identity routes.

Loaded at start, then every RELOAD_S the projects' identity versions are read (one small query)
and only the projects whose version moved are read again: so a link or unlink made on another node
reaches this node's streams within about a second, and one made here applies at once
(``refresh``). A project without links has no entry in ``linked_users``: the fan-out's cost for it
is one dict lookup per request.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import trio

from actors.identity.graph import IdentityGraph

log = logging.getLogger("pulse.identity")

RELOAD_S: Final = 1.0
STORE_TIMEOUT_S: Final = 5.0
_EMPTY: Final = IdentityGraph(0, [])


class IdentityDirectory:
    def __init__(self, store: Any, linked_users: dict[str, dict[str, str]] | None = None) -> None:
        self.store = store
        # project -> session -> user; shared with the ingest pipeline (replaced per project, never
        # changed in place, so a reader always sees one whole version)
        self.linked_users: dict[str, dict[str, str]] = {} if linked_users is None else linked_users
        self._graphs: dict[str, IdentityGraph] = {}
        self.reloads = 0
        self.reload_failures = 0

    async def run(self, *, interval: float = RELOAD_S, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load every project's links, then follow the other nodes' changes every ``interval`` s.
        A failed reload keeps what this node has and is retried at the next tick."""
        await self._reload_changed()
        task_status.started()
        while True:
            await trio.sleep(interval)
            await self._reload_changed()

    async def _reload_changed(self) -> None:
        try:
            with trio.fail_after(STORE_TIMEOUT_S):
                versions = await self.store.identity_versions()
                for project, version in versions.items():
                    if version != self.cached(project).version:
                        await self._load(project)
        except Exception as exc:  # StoreError, TooSlowError: keep what we have, try again next tick
            self.reload_failures += 1
            log.warning("identity reload failed: %r", exc)
            return
        self.reloads += 1

    def cached(self, project: str) -> IdentityGraph:
        """The project's graph as this node knows it (possibly a second old)."""
        return self._graphs.get(project, _EMPTY)

    async def refresh(self, project: str) -> IdentityGraph:
        """The project's graph as stored now (read again only if its version moved). Raises
        StoreError when the store cannot answer."""
        versions = await self.store.identity_versions()
        if versions.get(project, 0) != self.cached(project).version:
            await self._load(project)
        return self.cached(project)

    async def _load(self, project: str) -> None:
        rows = await self.store.identity_links(project)
        if rows.version < self.cached(project).version:
            return  # an older read finished after a newer one: keep the newer
        graph = IdentityGraph(rows.version, rows.links)
        self._graphs[project] = graph
        users = graph.linked_users()
        if users:
            self.linked_users[project] = users
        else:
            self.linked_users.pop(project, None)
