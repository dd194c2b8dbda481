"""One transaction for several statements on the SQLite writer connection, which autocommits."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")


def transaction(conn: sqlite3.Connection, work: Callable[[], _T]) -> _T:
    """Run ``work()`` inside BEGIN IMMEDIATE ... COMMIT; roll back if it raises (anything)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result
