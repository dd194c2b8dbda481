"""The PostgreSQL backend's identity-graph statements (storage/identity_records.py has the SQL and
records). Each change is one transaction on a pooled connection: the compare-and-set of the
project's version serialises concurrent links of one project (a second UPDATE of the same row
waits for the first and then finds the version moved on)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from storage import identity_records as r
from storage.identity_records import IdentityGraphRows, IdentityLink, LinkWrite
from storage.pg_bridge import transaction
from storage.trigger_records import numbered

Connection = Any  # asyncpg.Connection
_T = TypeVar("_T")

INSERT_LINK: Final = numbered(r.INSERT_LINK)
SELECT_PAIR: Final = numbered(r.SELECT_PAIR)
SELECT_LINKS: Final = numbered(r.SELECT_LINKS)
SELECT_LINK: Final = numbered(r.SELECT_LINK)
DELETE_LINK: Final = numbered(r.DELETE_LINK)
SELECT_VERSION: Final = numbered(r.SELECT_VERSION)
FIRST_VERSION: Final = numbered(r.FIRST_VERSION)
NEXT_VERSION: Final = numbered(r.NEXT_VERSION)
BUMP_VERSION: Final = numbered(r.BUMP_VERSION)


def _changed(status: str) -> bool:
    """asyncpg's command tag: "UPDATE 1", "INSERT 0 1" — the last number is the rows touched."""
    return status.rsplit(" ", 1)[-1] != "0"


async def _version(conn: Connection, project: str) -> int:
    value = await conn.fetchval(SELECT_VERSION, project)
    return 0 if value is None else int(value)


async def add_link(conn: Connection, link: IdentityLink, expected_version: int) -> LinkWrite:
    async with transaction(conn):
        found = await conn.fetchrow(SELECT_PAIR, link.project, *link.pair())
        if found is not None:
            return LinkWrite(existing=r.link_of(tuple(found)), version=await _version(conn, link.project))
        if expected_version == 0:
            moved = _changed(await conn.execute(FIRST_VERSION, link.project))
        else:
            moved = _changed(await conn.execute(NEXT_VERSION, link.project, expected_version))
        if not moved:
            return LinkWrite(conflict=True, version=await _version(conn, link.project))
        await conn.execute(INSERT_LINK, *r.insert_params(link))
        return LinkWrite(written=True, version=expected_version + 1)


async def remove_link(conn: Connection, project: str, linking_id: str) -> IdentityLink | None:
    async with transaction(conn):
        found = await conn.fetchrow(SELECT_LINK, project, linking_id)
        if found is None:
            return None
        await conn.execute(DELETE_LINK, project, linking_id)
        await conn.execute(BUMP_VERSION, project)
        return r.link_of(tuple(found))


async def read_graph(conn: Connection, project: str) -> IdentityGraphRows:
    """Run in a read-only snapshot: the version and the links it counts."""
    version = await _version(conn, project)
    links = [r.link_of(tuple(row)) for row in await conn.fetch(SELECT_LINKS, project)]
    return IdentityGraphRows(version=version, links=links)


async def versions(conn: Connection) -> dict[str, int]:
    return {str(row[0]): int(row[1]) for row in await conn.fetch(r.SELECT_VERSIONS)}


async def get_link(conn: Connection, project: str, linking_id: str) -> IdentityLink | None:
    row = await conn.fetchrow(SELECT_LINK, project, linking_id)
    return None if row is None else r.link_of(tuple(row))


class PostgresIdentityMethods:
    """PostgresStore's identity-graph methods: each one crossing, committed when it returns."""

    if TYPE_CHECKING:
        def _require_running(self) -> None: ...
        async def _read(self, work: Callable[[Connection], Awaitable[_T]], *, time_limit_s: float = ...,
                        snapshot: bool = False) -> _T: ...

    async def _identity_write(self, work: Callable[[Connection], Awaitable[_T]]) -> _T:
        self._require_running()
        return await self._read(work)

    async def identity_versions(self) -> dict[str, int]:
        return await self._read(versions)

    async def identity_links(self, project: str) -> IdentityGraphRows:
        return await self._read(functools.partial(read_graph, project=project), snapshot=True)

    async def get_identity_link(self, project: str, linking_id: str) -> IdentityLink | None:
        return await self._read(functools.partial(get_link, project=project, linking_id=linking_id))

    async def add_identity_link(self, link: IdentityLink, expected_version: int) -> LinkWrite:
        return await self._identity_write(functools.partial(add_link, link=link, expected_version=expected_version))

    async def remove_identity_link(self, project: str, linking_id: str) -> IdentityLink | None:
        return await self._identity_write(functools.partial(remove_link, project=project, linking_id=linking_id))
