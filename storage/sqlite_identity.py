"""The SQLite backend's identity-graph statements (storage/identity_records.py has the SQL and
records). Writes run on the store's writer thread (``SqliteStore._write_with``), one transaction
each, so the compare-and-set of a link and its insert are one step; reads on the reader pool."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from storage import identity_records as r
from storage.identity_records import IdentityGraphRows, IdentityLink, LinkWrite
from storage.sqlite_transaction import transaction

_T = TypeVar("_T")


def _version(conn: sqlite3.Connection, project: str) -> int:
    row = conn.execute(r.SELECT_VERSION, (project,)).fetchone()
    return 0 if row is None else int(row[0])


def add_link(conn: sqlite3.Connection, link: IdentityLink, expected_version: int) -> LinkWrite:
    def work() -> LinkWrite:
        found = conn.execute(r.SELECT_PAIR, (link.project, *link.pair())).fetchone()
        if found is not None:
            return LinkWrite(existing=r.link_of(found), version=_version(conn, link.project))
        if expected_version == 0:
            moved = conn.execute(r.FIRST_VERSION, (link.project,)).rowcount
        else:
            moved = conn.execute(r.NEXT_VERSION, (link.project, expected_version)).rowcount
        if moved != 1:
            return LinkWrite(conflict=True, version=_version(conn, link.project))
        conn.execute(r.INSERT_LINK, r.insert_params(link))
        return LinkWrite(written=True, version=expected_version + 1)

    return transaction(conn, work)


def remove_link(conn: sqlite3.Connection, project: str, linking_id: str) -> IdentityLink | None:
    def work() -> IdentityLink | None:
        found = conn.execute(r.SELECT_LINK, (project, linking_id)).fetchone()
        if found is None:
            return None
        conn.execute(r.DELETE_LINK, (project, linking_id))
        conn.execute(r.BUMP_VERSION, (project,))
        return r.link_of(found)

    return transaction(conn, work)


def read_graph(conn: sqlite3.Connection, project: str) -> IdentityGraphRows:
    # one read transaction: the version and the links it counts
    conn.execute("BEGIN")
    try:
        version = _version(conn, project)
        links = [r.link_of(row) for row in conn.execute(r.SELECT_LINKS, (project,))]
    finally:
        conn.execute("COMMIT")
    return IdentityGraphRows(version=version, links=links)


class SqliteIdentityMethods:
    """SqliteStore's identity-graph methods."""

    if TYPE_CHECKING:
        async def _write_with(self, fn: Callable[..., _T], *args: Any) -> _T: ...
        async def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T: ...

    async def identity_versions(self) -> dict[str, int]:
        return await self._read(lambda conn: {str(p): int(v) for p, v in conn.execute(r.SELECT_VERSIONS)})

    async def identity_links(self, project: str) -> IdentityGraphRows:
        return await self._read(lambda conn: read_graph(conn, project))

    async def get_identity_link(self, project: str, linking_id: str) -> IdentityLink | None:
        def read(conn: sqlite3.Connection) -> IdentityLink | None:
            row = conn.execute(r.SELECT_LINK, (project, linking_id)).fetchone()
            return None if row is None else r.link_of(row)

        return await self._read(read)

    async def add_identity_link(self, link: IdentityLink, expected_version: int) -> LinkWrite:
        return await self._write_with(add_link, link, expected_version)

    async def remove_identity_link(self, project: str, linking_id: str) -> IdentityLink | None:
        return await self._write_with(remove_link, project, linking_id)
