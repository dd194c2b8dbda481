"""The one door from trio to PostgreSQL: an asyncpg pool driven through trio-asyncio.

Nothing else in Pulse imports asyncpg or trio-asyncio for storage. A caller hands ``Database.run``
an asyncio-flavoured *unit of work* (``async def work(conn)``); the unit runs as ONE asyncio task:
acquire a connection, optionally open a transaction, run the work, commit, release. That is one
bridge crossing (~100 us each, see DESIGN "Facts") however many statements the work issues.

Cancellation is the dangerous part. Bridging ``pool.acquire()`` or ``conn.transaction()`` as
separate trio-side context managers leaks the connection "idle in transaction" when the trio scope
is cancelled: their ``__aexit__`` would run in a new asyncio task that is cancelled before it starts
(see ``shared/reference/asyncpg_on_trio.py``). Here acquire, rollback and release all live inside the
unit's own task, and they are shielded in the sense that matters: trio cancels a crossing by
cancelling its asyncio task ONCE (trio-asyncio then waits for the task to finish); the
``CancelledError`` interrupts the work, and the rollback and release that follow run to completion,
each under its own deadline (a connection that cannot be rolled back in time is terminated). So a
cancelled caller never leaks a connection and never leaves a transaction open, and the wait is
bounded even when the server has vanished.

Errors: everything asyncpg, the socket or a deadline raises becomes ``StoreUnavailable`` here, at
the boundary. asyncpg's pool reconnects on its own: after an outage the next unit gets a fresh
connection, so the same Database recovers without help.
"""

from __future__ import annotations

import trio_asyncio  # first: it must be imported before asyncpg (DESIGN.md, "Facts")

# isort: split
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeVar

import asyncpg
import trio

from storage.base import StoreUnavailable

CONNECT_TIMEOUT_S: Final = 2.0  # one connection attempt (refused connections fail at once)
ACQUIRE_TIMEOUT_S: Final = 3.0  # waiting for a free pooled connection, connecting included
ROLLBACK_TIMEOUT_S: Final = 1.0  # past it the connection is terminated instead
RELEASE_TIMEOUT_S: Final = 1.0  # the reset on release; past it the connection is terminated
IDLE_CONNECTION_LIFETIME_S: Final = 60.0
SERVER_SETTINGS: Final = {
    "application_name": "pulse",
    # JIT compilation costs tens of ms on the first run of a big plan: bad for short queries.
    "jit": "off",
    # Plan every execution for its parameters: a generic plan of an event filter would pick one
    # index for every value (events_labels for a name found in millions of rows, say).
    "plan_cache_mode": "force_custom_plan",
}

# asyncpg is untyped: a connection is whatever asyncpg hands the unit of work.
Connection = Any
_T = TypeVar("_T")
Work = Callable[[Connection], Awaitable[_T]]

log = logging.getLogger(__name__)

# What a lost, refused or overloaded server looks like from here.
_UNAVAILABLE: Final = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class Database:
    """A pool of asyncpg connections bound to the trio-asyncio loop it was opened in."""

    def __init__(self, pool: Any, loop: Any) -> None:
        self._pool = pool
        self._loop = loop

    @classmethod
    async def connect(cls, dsn: str, *, size: int) -> Database:
        """Open a pool of up to ``size`` connections. Must run inside ``trio_asyncio.open_loop()``;
        every later crossing uses that loop, whichever trio task makes it."""
        loop = trio_asyncio.current_loop.get()
        if loop is None:
            raise RuntimeError("the postgresql store must run inside trio_asyncio.open_loop()")
        if loop.get_exception_handler() is None:
            loop.set_exception_handler(_log_asyncio_error)
        try:
            pool = await trio_asyncio.aio_as_trio(_create_pool, loop=loop)(dsn, size)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot connect to postgresql: {exc!r}") from None
        return cls(pool, loop)

    async def run(
        self, work: Work[_T], *, time_limit_s: float, transaction: bool = False, read_only: bool = False
    ) -> _T:
        """Run ``work(conn)`` in one crossing; with ``transaction`` inside one transaction
        (``read_only``: a read-only repeatable-read snapshot). Raises StoreUnavailable when the
        server is unreachable or slower than ``time_limit_s``, or the work fails in PostgreSQL."""
        unit = _unit_in_transaction if transaction else _unit
        try:
            with trio.fail_after(time_limit_s):
                return await trio_asyncio.aio_as_trio(unit, loop=self._loop)(self._pool, work, read_only)
        except trio.TooSlowError:
            raise StoreUnavailable(f"postgresql did not answer within {time_limit_s!r} s") from None
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"postgresql failed: {exc!r}") from None

    async def close(self, time_limit_s: float) -> None:
        """Close every connection (waits for units in flight); terminate them past ``time_limit_s``.
        Call while the trio-asyncio loop is still running."""
        with trio.move_on_after(time_limit_s) as scope:
            scope.shield = True
            try:
                await trio_asyncio.aio_as_trio(self._pool.close, loop=self._loop)()
                return
            except _UNAVAILABLE:
                log.warning("closing the postgresql pool failed; terminating it", exc_info=True)
        self._pool.terminate()


def _log_asyncio_error(loop: Any, context: dict[str, Any]) -> None:
    """Log what asyncio reports about tasks and futures nobody awaits.

    trio-asyncio's default handler re-raises it into the loop's nursery, which takes the whole
    server down. asyncpg leaves such futures behind in an outage: a connection attempt abandoned at
    its deadline whose handshake future later fails ("unexpected connection_lost() call").
    """
    log.warning("asyncio: %s", context.get("message", "error"), exc_info=context.get("exception"))


# The asyncio side: everything below runs inside the unit's own asyncio task --------------------------
async def _create_pool(dsn: str, size: int) -> Any:
    # No connection floor (min_size=0): asyncpg would keep reconnecting in the background during an
    # outage and log a traceback for every attempt. The first unit of work connects (fail-fast at
    # start) and idle connections close after IDLE_CONNECTION_LIFETIME_S.
    return await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=size,
        timeout=CONNECT_TIMEOUT_S,
        max_inactive_connection_lifetime=IDLE_CONNECTION_LIFETIME_S,
        server_settings=SERVER_SETTINGS,
        reset=_keep_session,
    )


async def _keep_session(conn: Connection) -> None:
    """Release without asyncpg's default reset query (``pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL``): a round trip on every release, a third of a short read's cost. Pulse
    keeps no session state on pooled connections: transactions are rolled back by asyncpg before
    this is called, settings are ``SET LOCAL``, and the one session-level advisory lock (migrations)
    is unlocked by its own unit, which terminates its connection if it cannot."""


@contextlib.asynccontextmanager
async def _acquired(pool: Any) -> AsyncIterator[Connection]:
    conn = await pool.acquire(timeout=ACQUIRE_TIMEOUT_S)
    try:
        yield conn
    finally:
        # asyncpg shields the release itself; it resets the session (ROLLBACK included) within the
        # timeout or terminates the connection, and the pool opens a new one when needed.
        await pool.release(conn, timeout=RELEASE_TIMEOUT_S)


async def _unit(pool: Any, work: Work[_T], read_only: bool) -> _T:
    async with _acquired(pool) as conn:
        return await work(conn)


async def _unit_in_transaction(pool: Any, work: Work[_T], read_only: bool) -> _T:
    async with _acquired(pool) as conn, transaction(conn, read_only=read_only):
        return await work(conn)


@contextlib.asynccontextmanager
async def transaction(conn: Connection, *, read_only: bool = False) -> AsyncIterator[None]:
    """An asyncio-side transaction for units of work that need more than one (use inside work).

    Rolled back on any exception, cancellation included, within ROLLBACK_TIMEOUT_S; a connection
    that cannot roll back in time (a vanished server) is terminated, which ends the transaction too.
    """
    if read_only:
        tx = conn.transaction(isolation="repeatable_read", readonly=True)
    else:
        tx = conn.transaction()
    await tx.start()
    try:
        yield
    except BaseException:
        try:
            await asyncio.wait_for(tx.rollback(), ROLLBACK_TIMEOUT_S)
        except (Exception, asyncio.CancelledError):
            # A lost connection is already back in the pool as closed: nothing left to terminate.
            with contextlib.suppress(asyncpg.InterfaceError):
                conn.terminate()
        raise
    await tx.commit()
