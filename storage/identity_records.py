"""The records the Store keeps for the cross-device identity graph (issue 14 part 1); tables in
storage/identity_schema.py. The SQL is written with ``?`` placeholders (SQLite) and numbered for
PostgreSQL by ``storage.trigger_records.numbered``. Times are unix milliseconds.

A link is written with compare-and-set on the project's identity version: the caller reads the
project's links (``identity_links``), checks its merge guards against them, and writes with the
version it read; if another link or unlink got in between, the write is refused (``conflict``) and
the caller checks again. So two concurrent links can never together break a guard that each one
alone respects (an anonymous device linked to two users at once).
"""

from __future__ import annotations

from typing import Final, Protocol

import msgspec


class IdentityLink(msgspec.Struct, frozen=True, kw_only=True):
    project: str
    linking_id: str
    primary_session: str
    secondary_session: str
    primary_user: str | None  # the userId the primary session's events carried when linked (None: anonymous)
    secondary_user: str | None
    primary_device: str  # the events' deviceId, else the session id
    secondary_device: str
    method: str  # the client's linkingMethod
    confidence: float | None  # the client's confidence
    evidence: str  # the client's evidence list, JSON
    created_ms: int

    def pair(self) -> tuple[str, str]:
        """The two sessions in sorted order: a link's identity whichever way round it was asked."""
        return pair_of(self.primary_session, self.secondary_session)


def pair_of(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


class LinkWrite(msgspec.Struct, frozen=True, kw_only=True):
    """What ``add_identity_link`` did: wrote it (``version`` is the project's new version), found
    the same pair linked already (``existing``, nothing written), or found the version moved on
    (``conflict``: nothing written; read the links again and re-check)."""

    written: bool = False
    existing: IdentityLink | None = None
    conflict: bool = False
    version: int = 0


class IdentityGraphRows(msgspec.Struct, frozen=True, kw_only=True):
    version: int  # 0: the project never had a link
    links: list[IdentityLink]  # oldest first


_COLUMNS: Final = ("project, linking_id, primary_session, secondary_session, primary_user, secondary_user,"
                   " primary_device, secondary_device, method, confidence, evidence, created_ms")
INSERT_LINK: Final = (f"INSERT INTO identity_links (session_lo, session_hi, {_COLUMNS})"
                      " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
SELECT_PAIR: Final = f"SELECT {_COLUMNS} FROM identity_links WHERE project = ? AND session_lo = ? AND session_hi = ?"
SELECT_LINKS: Final = f"SELECT {_COLUMNS} FROM identity_links WHERE project = ? ORDER BY created_ms, linking_id"
SELECT_LINK: Final = f"SELECT {_COLUMNS} FROM identity_links WHERE project = ? AND linking_id = ?"
DELETE_LINK: Final = "DELETE FROM identity_links WHERE project = ? AND linking_id = ?"
SELECT_VERSION: Final = "SELECT version FROM identity_versions WHERE project = ?"
SELECT_VERSIONS: Final = "SELECT project, version FROM identity_versions"
# compare and set: the first link of a project creates its row, later ones move it on by one
FIRST_VERSION: Final = "INSERT INTO identity_versions (project, version) VALUES (?, 1) ON CONFLICT (project) DO NOTHING"
NEXT_VERSION: Final = "UPDATE identity_versions SET version = version + 1 WHERE project = ? AND version = ?"
BUMP_VERSION: Final = ("INSERT INTO identity_versions (project, version) VALUES (?, 1)"
                       " ON CONFLICT (project) DO UPDATE SET version = identity_versions.version + 1")


def link_of(row: tuple[object, ...]) -> IdentityLink:
    names = _COLUMNS.replace(" ", "").split(",")
    return IdentityLink(**dict(zip(names, row, strict=True)))  # type: ignore[arg-type]


def insert_params(link: IdentityLink) -> tuple[object, ...]:
    return (*link.pair(), *msgspec.structs.astuple(link))


class IdentityStore(Protocol):
    """The Store's identity-graph methods (part of storage.base.Store; both backends)."""

    async def identity_versions(self) -> dict[str, int]:
        """Every project that ever had a link -> its identity version (bumped by each change)."""

    async def identity_links(self, project: str) -> IdentityGraphRows:
        """The project's links, oldest first, and the version they are (read together)."""

    async def get_identity_link(self, project: str, linking_id: str) -> IdentityLink | None: ...

    async def add_identity_link(self, link: IdentityLink, expected_version: int) -> LinkWrite:
        """Store ``link`` unless its pair of sessions is linked already (then ``existing``: the
        stored link) or the project's version is no longer ``expected_version`` (``conflict``).
        Committed when this returns."""

    async def remove_identity_link(self, project: str, linking_id: str) -> IdentityLink | None:
        """Delete the link and move the project's version on; the deleted link, or None when the
        project has no such link. Committed when this returns."""
