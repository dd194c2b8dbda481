"""Every user's consent in memory, and the consent stage of the ingest pipeline (issue 14).

``ConsentBook`` keeps, per project, the mask of granted categories (storage/consent_records.py) of
each subject that ever sent consent: memory is bounded by those users, not by traffic. Users without
a record have their project's default (``consentDefault`` of the project policy, "granted" unless
changed). The book is loaded at start and then reloaded incrementally, every RELOAD_S, with the
audit rows after the last id it saw: a change recorded on another node applies here within
RELOAD_S plus one read; a change recorded through this book applies here at once.

``gate`` is the pipeline's stage (actors/pipeline.py, before the commit). A request is one
project's: when that project has no consent records, its default is "granted" and the request
carries no Global Privacy Control, the stage costs one dict lookup for the whole request. Otherwise
each event's subject (its user id, else its session id) is looked up once, and:

- no ``analytics``: the event is not stored or processed; its answer says ``dropped`` (consent,
  analytics) and ``drops["consent_analytics"]`` counts it;
- no ``marketing``: stamped FLAG_NO_MARKETING (the session actor evaluates no trigger or workflow
  for it); no ``personalization``: FLAG_NO_PERSONALIZATION (no insight step); no ``advertising``:
  FLAG_NO_ADVERTISING. Each is counted as ``drops["consent_<category>"]`` (an event that lost a stage);
- ``Sec-GPC: 1`` on the request: FLAG_GPC | FLAG_NO_MARKETING | FLAG_NO_ADVERTISING on all its events.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from typing import Final

import trio

from protocol.privacy import (
    ADVERTISING,
    ANALYTICS,
    DROP_CONSENT,
    FLAG_CONSENT_STATED,
    FLAG_GPC,
    FLAG_NO_ADVERTISING,
    FLAG_NO_MARKETING,
    FLAG_NO_PERSONALIZATION,
    MARKETING,
    PERSONALIZATION,
    Dropped,
)
from protocol.record import Event
from storage.base import StoreError
from storage.consent_records import (
    ALL_GRANTED,
    CATEGORY_BITS,
    DENIED,
    NONE_GRANTED,
    ConsentChange,
    ConsentRow,
    ConsentStore,
)

log = logging.getLogger("pulse.privacy")

RELOAD_S: Final = 0.5  # how often the audit rows recorded on other nodes are read
CHANGES_PAGE: Final = 1000  # audit rows read per query of a reload
# How long after a change is recorded every healthy node applies it: the next reload of each
# (RELOAD_S) plus the time that reload takes. The deletion waits this out (wait_propagated).
PROPAGATION_S: Final = 3 * RELOAD_S
GPC_FLAGS: Final = FLAG_GPC | FLAG_NO_MARKETING | FLAG_NO_ADVERTISING
DELETION_SOURCE: Final = "deletion"
DELETION_TYPE: Final = "data_deletion"

_ANALYTICS: Final = CATEGORY_BITS[ANALYTICS]
_MARKETING: Final = CATEGORY_BITS[MARKETING]
_PERSONALIZATION: Final = CATEGORY_BITS[PERSONALIZATION]
_ADVERTISING: Final = CATEGORY_BITS[ADVERTISING]

DefaultOf = Callable[[str], str]  # project -> its consent default ("granted" | "denied")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_consent_id() -> str:
    return "consent_" + secrets.token_hex(8)


class ConsentBook:
    def __init__(self, store: ConsentStore, default_of: DefaultOf) -> None:
        self._store = store
        self._default_of = default_of
        self._masks: dict[str, dict[str, int]] = {}  # project -> subject -> granted mask
        self._last_id = 0  # every audit row up to this one is applied
        # Changes recorded here and applied at once, not yet reached by a reload: (project,
        # subject) -> their audit id. A reload must not put an older row of the same subject back.
        self._ahead: dict[tuple[str, str], int] = {}
        self._last_local = float("-inf")  # trio time of the last change recorded here
        self.reloads = 0
        self.reload_failures = 0

    # reading ------------------------------------------------------------------------------------
    def mask(self, project: str, subject: str | None) -> int:
        """The granted categories of ``subject`` in ``project`` (the project default without a record)."""
        masks = self._masks.get(project)
        if masks is not None and subject is not None:
            mask = masks.get(subject)
            if mask is not None:
                return mask
        return self.default_mask(project)

    def default_mask(self, project: str) -> int:
        return NONE_GRANTED if self._default_of(project) == DENIED else ALL_GRANTED

    def subjects(self) -> int:
        """How many subjects with a record this node holds."""
        return sum(len(masks) for masks in self._masks.values())

    # the pipeline stage -------------------------------------------------------------------------
    def gate(self, events: list[Event], gpc: bool, drops: Counter[str]) -> list[Dropped | None] | None:
        """Stamp the consent flags on one project's events and say which are not to be stored: one
        entry per event (a Dropped for those), or None when every event goes on."""
        project = events[0].project
        masks = self._masks.get(project)
        default = self.default_mask(project)
        if masks is None and default == ALL_GRANTED and not gpc:
            return None
        dropped: list[Dropped | None] | None = None
        base = GPC_FLAGS if gpc else 0
        for index, event in enumerate(events):
            if event.flags & FLAG_CONSENT_STATED:  # its request said what it may be used for
                event.flags |= base
                continue
            subject = event.user_id or event.session_id
            mask = default
            recorded = False
            if masks is not None and subject is not None:
                found = masks.get(subject)
                if found is not None:
                    mask, recorded = found, True
            if mask == ALL_GRANTED and not base:
                continue
            if not mask & _ANALYTICS:
                drops["consent_analytics"] += 1
                if dropped is None:
                    dropped = [None] * len(events)
                dropped[index] = Dropped(reason=DROP_CONSENT, category=ANALYTICS, detail=_why(subject, recorded))
                continue
            flags = base
            if not mask & _MARKETING:
                flags |= FLAG_NO_MARKETING
            if not mask & _PERSONALIZATION:
                flags |= FLAG_NO_PERSONALIZATION
                drops["consent_personalization"] += 1
            if not mask & _ADVERTISING:
                flags |= FLAG_NO_ADVERTISING
            if flags & FLAG_NO_MARKETING:
                drops["consent_marketing"] += 1
            if flags & FLAG_NO_ADVERTISING:
                drops["consent_advertising"] += 1
            event.flags |= flags
        return dropped

    # recording ----------------------------------------------------------------------------------
    async def record(self, row: ConsentRow) -> ConsentRow:
        """Store a consent change (StoreError if it could not be) and apply it on this node at once."""
        stored = await self._store.record_consent(row)
        if stored.id > self._last_id:  # else a reload applied it (and what came after) meanwhile
            self._set(stored.project, stored.user_id, stored.granted)
            key = (stored.project, stored.user_id)
            self._ahead[key] = max(self._ahead.get(key, 0), stored.id)
        self._last_local = trio.current_time()
        return stored

    async def suppress(self, project: str, user_id: str, deletion_id: str) -> ConsentRow:
        """Deny every category to ``user_id`` (the deletion of its data, ``deletion_id``): its later
        events are dropped until consent is granted again. Recorded in the audit trail like any change."""
        now = _now_ms()
        return await self.record(ConsentRow(
            project=project, user_id=user_id, consent_id=f"{new_consent_id()}_{deletion_id}"[:120],
            status=DENIED, granted=NONE_GRANTED, consent_type=DELETION_TYPE, consent_source=DELETION_SOURCE,
            consent_date=now, recorded_ms=now,
        ))  # fmt: skip

    async def wait_propagated(self) -> None:
        """Return when every healthy node has applied the changes recorded here so far: this node
        applied them at once, the others within PROPAGATION_S (their next reload)."""
        await trio.sleep_until(self._last_local + PROPAGATION_S)

    # loading ------------------------------------------------------------------------------------
    async def run(self, *, interval: float = RELOAD_S,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:  # fmt: skip
        """Load every current consent (a StoreError here fails the start), then reload the changes."""
        upto, current = await self._store.consent_snapshot()
        masks: dict[str, dict[str, int]] = {}
        for change in current:
            masks.setdefault(change.project, {})[change.user_id] = change.granted
        self._masks = masks
        self._last_id = upto
        await self._reload()  # the changes committed while the snapshot was read
        task_status.started()
        while True:
            await trio.sleep(interval)
            await self._reload()

    async def _reload(self) -> None:
        try:
            while True:
                changes = await self._store.consent_changes(self._last_id, CHANGES_PAGE)
                self._apply(changes)
                if len(changes) < CHANGES_PAGE:
                    break
        except StoreError as exc:  # keep what we have, try again next time
            self.reload_failures += 1
            log.warning("consent reload failed: %r", exc)
            return
        except Exception:  # a bug of ours: logged and counted; the server stays up and retries
            self.reload_failures += 1
            log.exception("consent reload failed")
            return
        self.reloads += 1

    def _apply(self, changes: list[ConsentChange]) -> None:
        ahead = self._ahead
        for change in changes:
            key = (change.project, change.user_id)
            if ahead:
                newer = ahead.get(key)
                if newer is not None:
                    if change.id < newer:
                        continue  # this node already applied a later change of the subject
                    del ahead[key]
            self._set(change.project, change.user_id, change.granted)
        if changes:
            self._last_id = changes[-1].id

    def _set(self, project: str, subject: str, mask: int) -> None:
        masks = self._masks.get(project)
        if masks is None:
            masks = self._masks[project] = {}
        masks[subject] = mask


def _why(subject: str | None, recorded: bool) -> str:
    if recorded:
        return f"no analytics consent recorded for {subject!r}"
    if subject is None:
        return "an event without user or session has the project's default consent: denied"
    return f"no consent recorded for {subject!r}, and the project's default is denied"
