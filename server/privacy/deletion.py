"""Erasing one user's data on request (issue 14 part 4; ``DELETE /api/v1/behavioral/data/{userId}``).

The order matters, so that nothing of the user survives or comes back:

1. **Record** the request (status ``processing``): the status routes see it at once, and a request
   interrupted by a crash stays visible as unfinished.
2. **Suppress** later events of the user (``pulse.consent.suppress``, the consent stage: the
   pipeline drops them until consent is granted again), then give the other nodes
   the consent stage's propagation bound (1.5 s) to see the suppression, so no event of the user is committed after step 4.
   On one node there is nothing to wait for. The suppression is a consent record like any other
   (source "deletion"): the audit trail keeps it, and a later grant lets the user's events in again.
3. **Evict** the live actors of the user and of every session that carried them, on every node,
   without saving their snapshots (``ActorRouter.forget``): a snapshot written after step 4 would
   bring the data back.
4. **Delete** (or pseudonymize) in the store: events, the per-user part of the aggregates,
   snapshots, queued automation and deliveries (storage/deletion_records.py). The actors are
   evicted again afterwards: a read in between may have activated one from the old data.
5. **Purge** the stream resume history: with Redis, the project stream's entries that carry the
   user or one of the sessions are deleted (XDEL); on one node a resume reads the store, which
   step 4 covered.

The counts answered are the store's, exact. A failure at any step marks the request ``failed``
with the reason; asking again is safe (every step is idempotent) and finishes the job.

Options (seed names): ``anonymizeOnly`` keeps the events and every aggregate and strips identity
instead; ``cascadeDelete`` (default true) also removes the anonymous events of the user's sessions
(false: only the events carrying the user id); ``retentionOverride`` is recorded but has no effect:
nothing in Pulse holds events back from an erasure (no legal hold exists; a privacy-compliant
event's ``retention`` is a maximum, enforced by the retention job, never a minimum).
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any, Final

import msgspec
import trio

from actors.fanout import StreamMessage
from protocol.normalize import iso_ms
from server.context import Pulse
from storage.deletion_records import COMPLETED, FAILED, PROCESSING, DeletionOptions, DeletionRecord, Removed

log = logging.getLogger("pulse.privacy")

FORGET_TIMEOUT_S: Final = 5.0
ERASE_TIME_LIMIT_S: Final = 120.0  # a user with 100k events takes seconds (loadtest/delete_user_bench.py)
_decode_entry = msgspec.msgpack.Decoder(list[StreamMessage]).decode


class DeletionCounters:
    """What this node's erasures did, for /monitoring/performance."""

    def __init__(self) -> None:
        self.requests = 0
        self.failed = 0
        self.events = 0
        self.actors_evicted = 0
        self.stream_entries_purged = 0
        self.links_removed = 0  # cross-device links that named an erased user or its sessions

    def view(self) -> dict[str, int]:
        return {"requests": self.requests, "failed": self.failed, "eventsRemoved": self.events,
                "actorsEvicted": self.actors_evicted, "streamEntriesPurged": self.stream_entries_purged,
                "linksRemoved": self.links_removed}  # fmt: skip


def new_deletion_id() -> str:
    return "del_" + secrets.token_hex(10)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int | None) -> str | None:
    return None if ms is None else iso_ms(ms)


def carries(user_id: str, sessions: set[str]) -> Any:
    """A predicate over a bus entry (a list of StreamMessage): does it carry the user or a session?"""

    def matches(payload: bytes) -> bool:
        try:
            entry = _decode_entry(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return False
        return any(m.user_id == user_id or (m.session_id is not None and m.session_id in sessions) for m in entry)

    return matches


async def erase(pulse: Pulse, project: str, user_id: str, options: DeletionOptions,
                counters: DeletionCounters) -> DeletionRecord:  # fmt: skip
    """Carry out one deletion request (the module doc's steps); the finished record."""
    store = pulse.store
    record = DeletionRecord(new_deletion_id(), project, user_id, PROCESSING, options, Removed(), _now_ms(), None)
    await store.begin_deletion(record)
    counters.requests += 1
    removed, error = Removed(), None
    try:
        # Shielded: an erasure the client stopped waiting for (or a shutdown) is still finished,
        # within a deadline; past it the request is recorded failed and asking again completes it.
        with trio.fail_after(ERASE_TIME_LIMIT_S, shield=True):
            removed = await _carry_out(pulse, record, counters)
    except Exception as exc:  # StoreError, BusUnavailable, TooSlowError: recorded, answered, safe to ask again
        error = f"{type(exc).__name__}: {exc}"
        counters.failed += 1
        log.warning("deletion %s of a user of %s failed: %s", record.deletion_id, project, error)
    status = FAILED if error else COMPLETED
    completed = _now_ms()
    with trio.move_on_after(10) as scope:
        scope.shield = True  # the store must learn how it ended even if the client went away
        await store.finish_deletion(project, record.deletion_id, status, removed, completed, error)
    log.info("deletion %s in %s: %s, %d events, %d sessions, %d profiles", record.deletion_id, project, status,
             removed.events, removed.sessions, removed.profiles)  # fmt: skip
    return msgspec.structs.replace(record, status=status, removed=removed, completed_ms=completed, error=error)


async def _carry_out(pulse: Pulse, record: DeletionRecord, counters: DeletionCounters) -> Removed:
    project, user_id, options = record.project, record.user_id, record.options
    consent = pulse.consent
    if consent is not None:
        await consent.suppress(project, user_id, record.deletion_id)
        if pulse.bus is not None:  # until the other nodes have read the suppression
            await consent.wait_propagated()
    linked = _linked_sessions(pulse, project, user_id)  # its other devices (actors/identity/)
    sessions = sorted(set(await pulse.store.user_sessions(project, user_id)).union(linked))
    keys = [("user", project, user_id), *(("session", project, s) for s in sessions)]
    counters.actors_evicted += await pulse.router.forget(keys, timeout=FORGET_TIMEOUT_S)
    salt = (await pulse.policies.salted(project)).salt if options.anonymize_only else ""
    removed = await pulse.store.delete_user_data(
        project, user_id, anonymize_only=options.anonymize_only, cascade=options.cascade_delete, salt=salt,
        linked_sessions=tuple(linked),
    )
    counters.links_removed += await _unlink(pulse, project, user_id, set(sessions))
    counters.events += removed.events
    counters.actors_evicted += await pulse.router.forget(keys, timeout=FORGET_TIMEOUT_S)
    if pulse.bus is not None:
        counters.stream_entries_purged += await pulse.bus.purge(project, carries(user_id, set(sessions)))
    return removed


def _linked_sessions(pulse: Pulse, project: str, user_id: str) -> list[str]:
    """The sessions linked to ``user_id`` across devices (this node's copy of the identity graph,
    reloaded every second) whose events carry no user id: the same person's data."""
    return [session for session, user in pulse.pipeline.linked_users.get(project, {}).items() if user == user_id]


async def _unlink(pulse: Pulse, project: str, user_id: str, sessions: set[str]) -> int:
    """Remove the identity links that name the user or one of its sessions: a link is itself
    personal data (which devices are one person's). Returns how many were removed."""
    removed = 0
    for link in (await pulse.store.identity_links(project)).links:
        named = user_id in (link.primary_user, link.secondary_user)
        if named or link.primary_session in sessions or link.secondary_session in sessions:
            if await pulse.store.remove_identity_link(project, link.linking_id) is not None:
                removed += 1
    if removed and pulse.identity is not None:
        await pulse.identity.refresh(project)  # this node's streams stop attributing them at once
    return removed


def record_view(record: DeletionRecord) -> dict[str, Any]:
    """The seed's deletion answer, with the request's options and times."""
    view: dict[str, Any] = {
        "deletionId": record.deletion_id,
        "userId": record.user_id,
        "status": record.status,
        "dataRemoved": {"events": record.removed.events, "sessions": record.removed.sessions,
                        "profiles": record.removed.profiles},  # fmt: skip
        "requestDate": iso(record.requested_ms),
        "completionDate": iso(record.completed_ms),
        "options": msgspec.to_builtins(record.options),
    }
    if record.options.anonymize_only:
        view["dataAnonymized"] = view.pop("dataRemoved")
        view["dataRemoved"] = {"events": 0, "sessions": 0, "profiles": record.removed.profiles}
    if record.error is not None:
        view["error"] = record.error
    return view
