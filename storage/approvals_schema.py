"""The approvals tables (issue 13), for both backends: part of schema migration 3, which
storage/sqlite_schema.py and storage/postgres_schema.py assemble from this module and its siblings."""

from __future__ import annotations

from typing import Final

SQLITE_DDL: Final[tuple[str, ...]] = ()
POSTGRES_DDL: Final[tuple[str, ...]] = ()
