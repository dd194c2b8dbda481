"""Folding a session's events into its journey lazily, in event-time order, whatever order they
arrive in.

Events of one session arrive out of order: concurrent requests commit in an order that is not
their timestamps' order, and several nodes forward to one owner. Folding each event as it arrives
would make the journey depend on arrival order, and re-folding on every late event costs the whole
journey. So the session keeps a log of its latest events (``JourneyEvent``, a few fields each),
ordered; events are folded into the journey only once SETTLE_WINDOW newer ones wait behind them
(late arrivals usually land in that unfolded window and cost a list insert), or when somebody reads
the journey (``settle``). A late event older than what is folded rewinds the journey to the
checkpoint taken before the action that opened its step and re-applies the log from there; without
a usable checkpoint (after a restart, or older than the kept log) the kept log is re-folded.

Each event is folded about once: insight work per event is one ``observe`` plus a list insert.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable
from typing import Final

import msgspec

from actors.insights.journey import END_EVENTS, Checkpoint, JourneyEvent, JourneyState, observe

SETTLE_WINDOW: Final = 32  # unfolded events kept for late arrivals (folded down to half when full)
FOLDED_KEPT: Final = 96  # folded events kept to rewind to
CHECKPOINTS_KEPT: Final = 8  # checkpoints kept, one every CHECKPOINT_EVERY actions
CHECKPOINT_EVERY: Final = 4  # a rewind re-applies at most this many more actions; checkpoints cost


def _order(event: JourneyEvent) -> tuple[int, int]:
    return (event.ts, event.seq)


class JourneyLog(msgspec.Struct, kw_only=True):
    """The persisted part (in the session's snapshot): the journey so far and the kept events,
    of which the first ``folded`` are in ``journey``."""

    journey: JourneyState = msgspec.field(default_factory=JourneyState)
    events: list[JourneyEvent] = msgspec.field(default_factory=list)
    folded: int = 0


class JourneyTracker:
    """The live side: adds events, settles, rewinds. ``on_finished`` is called with every journey
    that ends (an end event, or the gap before a later event); ``conversions`` gives the project's
    conversion events."""

    __slots__ = ("log", "checkpoints", "conversions", "on_finished")

    def __init__(self, log: JourneyLog, conversions: Callable[[], frozenset[str]],
                 on_finished: Callable[[JourneyState], None]) -> None:
        self.log = log
        self.checkpoints: list[Checkpoint] = []  # transient: a revived actor re-folds when needed
        self.conversions = conversions
        self.on_finished = on_finished

    @property
    def pending(self) -> int:
        return len(self.log.events) - self.log.folded

    def last_at(self) -> int:
        """The newest event time of the session's current events (folded or not)."""
        events = self.log.events
        return max(self.log.journey.last_at, events[-1].ts) if events else self.log.journey.last_at

    def add(self, item: JourneyEvent) -> None:
        log = self.log
        events = log.events
        if not events or _order(item) >= _order(events[-1]):
            events.append(item)
        else:
            at = bisect_right(events, _order(item), key=_order)
            events.insert(at, item)
            if at < log.folded:  # older than what is folded: rewind, the fold below re-applies
                log.folded += 1  # the insert shifted the folded part
                self._rewind(_order(item))
        if item.name in END_EVENTS:  # names are lower-cased when the event is made (session.py)
            self.settle()  # a journey that ends is handed over now, not a window later
        elif self.pending > SETTLE_WINDOW:
            self._fold(len(events) - SETTLE_WINDOW // 2)

    def settle(self) -> JourneyState:
        """Fold every waiting event; the journey as of the newest event."""
        if self.pending:
            self._fold(len(self.log.events))
        return self.log.journey

    def _fold(self, upto: int) -> None:
        log = self.log
        conversions = self.conversions()
        journey = log.journey
        for event in log.events[log.folded:upto]:
            if (event.page_view or event.name in conversions) and journey.pages_completed % CHECKPOINT_EVERY == 0:
                self.checkpoints.append(Checkpoint(_order(event), journey))
            journey, seen = observe(journey, event.name, event.ts, url=event.url, scroll=event.scroll,
                                    is_page_view=event.page_view, conversions=conversions)
            if seen.finished is not None:
                self.on_finished(seen.finished)
            if seen.ended_now:
                self.on_finished(journey)
        log.journey = journey
        log.folded = upto
        if len(self.checkpoints) > CHECKPOINTS_KEPT:
            del self.checkpoints[: len(self.checkpoints) - CHECKPOINTS_KEPT]
        if log.folded > FOLDED_KEPT:
            drop = log.folded - FOLDED_KEPT
            del log.events[:drop]
            log.folded -= drop

    def _rewind(self, order: tuple[int, int]) -> None:
        """Take the journey back to the checkpoint before ``order`` and mark everything after it
        as waiting (the caller folds again)."""
        log = self.log
        checkpoints = self.checkpoints
        i = bisect_right(checkpoints, order, key=lambda c: c.order) - 1
        if i >= 0 and checkpoints[i].usable(log.journey) and checkpoints[i].order >= _order(log.events[0]):
            checkpoint = checkpoints[i]
            del checkpoints[i:]  # folding again re-creates them
            checkpoint.restore()
            log.folded = bisect_left(log.events, checkpoint.order, key=_order)
            return
        checkpoints.clear()
        old = log.journey
        log.journey = JourneyState(user_id=old.user_id, device_type=old.device_type, persona=old.persona)
        log.folded = 0
