"""The identity-graph tables (issue 14, cross-device identity), for both backends: part of schema
migration 4, which storage/sqlite_schema.py and storage/postgres_schema.py assemble from this
module and its siblings.

- ``identity_links``: one link between two sessions of a project (seed 000
  ``POST /cross-device/link``). A link is an edge of the project's identity graph; deleting the row
  undoes it completely (nothing else is rewritten: stored events keep the userId they were sent
  with). ``session_lo``/``session_hi`` are the two session ids in sorted order, so a pair is one
  link whichever way round it is asked for (the unique index makes a second row impossible).
  ``primary_user``/``secondary_user`` are the userIds the two sessions' events carried when they
  were linked (NULL: anonymous); ``primary_device``/``secondary_device`` their device ids (the
  events' deviceId, else the session id). ``evidence`` is the client's list as JSON.
- ``identity_versions``: per project, a counter bumped by every link and unlink. Nodes compare it
  every second to reload a project's links only when they changed, and a new link is written only
  if the version is still the one its merge guards were checked against (compare and set).
"""

from __future__ import annotations

from typing import Final

_LINKS: Final = """
    CREATE TABLE identity_links (
        project TEXT NOT NULL,
        linking_id TEXT NOT NULL,
        session_lo TEXT NOT NULL,
        session_hi TEXT NOT NULL,
        primary_session TEXT NOT NULL,
        secondary_session TEXT NOT NULL,
        primary_user TEXT,
        secondary_user TEXT,
        primary_device TEXT NOT NULL,
        secondary_device TEXT NOT NULL,
        method TEXT NOT NULL,
        confidence DOUBLE PRECISION,
        evidence TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        PRIMARY KEY (project, linking_id)
    )
"""
_LINK_PAIR: Final = "CREATE UNIQUE INDEX identity_links_pair ON identity_links (project, session_lo, session_hi)"
_VERSIONS: Final = """
    CREATE TABLE identity_versions (
        project TEXT PRIMARY KEY,
        version BIGINT NOT NULL
    )
"""

SQLITE_DDL: Final[tuple[str, ...]] = (_LINKS, _LINK_PAIR, _VERSIONS)
POSTGRES_DDL: Final[tuple[str, ...]] = (_LINKS, _LINK_PAIR, _VERSIONS)
