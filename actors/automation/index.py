"""The trigger definitions as the session actors see them: compiled, per project, by event type.

Each node keeps one ``TriggerIndex``. A change made on this node (the trigger routes) is applied
at once (``put`` / ``remove``); changes made on other nodes of a cluster arrive by the periodic
reload from the Store (``run``: every RELOAD_S seconds), so a trigger created anywhere fires
everywhere within RELOAD_S. Evaluation reads plain dicts: no lock, no await (the actors are
synchronous), and a reload swaps whole per-project dicts so an actor never sees half of one.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import msgspec
import trio

from actors.automation.abtest import CONTROL
from actors.automation.approval import FireLimits, Gate, gate_of
from actors.automation.conditions import Conditions, compile_conditions
from actors.automation.definition import Action, TriggerDef, schedule_bounds
from storage.trigger_records import TriggerRow

log = logging.getLogger("pulse.automation")

RELOAD_S: Final = 2.0
_DECODER: Final = msgspec.json.Decoder(TriggerDef)


class CompiledTrigger:
    """What evaluation needs of a definition, precomputed once."""

    __slots__ = ("definition", "trigger_id", "conditions", "personalization", "start_ms", "end_ms", "cooldown_ms",
                 "active", "test_id", "variant_names", "split", "variant_actions", "bounded", "gate")

    def __init__(self, definition: TriggerDef) -> None:
        self.definition = definition
        self.trigger_id = definition.trigger_id
        self.conditions: Conditions = compile_conditions(definition.conditions)
        self.personalization = {key: frozenset(values) for key, values in definition.personalization.items()}
        self.start_ms, self.end_ms = schedule_bounds(definition.schedule)
        self.bounded = self.start_ms is not None or self.end_ms is not None  # else always in schedule
        self.cooldown_ms = None if definition.cooldown_seconds is None else definition.cooldown_seconds * 1000
        self.active = definition.status == "active" and definition.schedule.active
        test = definition.ab_test
        self.test_id = test.test_id if test is not None else None
        self.variant_names = [v.name for v in test.variants] if test is not None else []
        self.split = list(test.traffic_split) if test is not None else []
        self.variant_actions: dict[str, list[Action]] = {v.name: v.actions for v in test.variants} if test else {}
        self.gate: Gate | None = gate_of(definition.approval)  # approval conditions, checked when it would fire

    def in_schedule(self, at_ms: int) -> bool:
        return (self.start_ms is None or at_ms >= self.start_ms) and (self.end_ms is None or at_ms < self.end_ms)

    def actions_for(self, variant: str) -> list[Action]:
        if not variant:
            return self.definition.actions
        return self.variant_actions.get(variant, []) if variant != CONTROL else []


def compile_row(row: TriggerRow) -> CompiledTrigger:
    return CompiledTrigger(_DECODER.decode(row.body))


class TriggerIndex:
    def __init__(self) -> None:
        # project -> event type (lowercase) -> the project's active triggers on it
        self._by_project: dict[str, dict[str, list[CompiledTrigger]]] = {}
        self._defs: dict[str, dict[str, CompiledTrigger]] = {}  # project -> trigger id -> compiled
        # Rules of other sources (workflows: actors/automation/workflow_rules.py) that listen to
        # every event type: project -> the active ones, and project -> rule id -> compiled (all).
        self._any_event: dict[str, list[CompiledTrigger]] = {}
        self._source_defs: dict[str, dict[str, CompiledTrigger]] = {}
        self.reloads = 0
        self.reload_failures = 0
        self.limits = FireLimits()  # this node's counts for approval conditions (actors/automation/approval.py)

    def for_event(self, project: str, event_type: str) -> list[CompiledTrigger]:
        by_type = self._by_project.get(project)
        found = by_type.get(event_type.lower(), []) if by_type else []
        any_event = self._any_event.get(project)
        if any_event:
            return found + any_event if found else any_event
        return found

    def has_project(self, project: str) -> bool:
        return project in self._by_project or project in self._any_event

    def get(self, project: str, trigger_id: str) -> CompiledTrigger | None:
        found = self._defs.get(project, {}).get(trigger_id)
        return found if found is not None else self._source_defs.get(project, {}).get(trigger_id)

    def count(self, project: str) -> int:
        return len(self._defs.get(project, {})) + len(self._source_defs.get(project, {}))

    def install_any_event(self, project: str, rules: dict[str, CompiledTrigger]) -> None:
        """Replace the project's rules of the other source (workflows): evaluated on every event
        next to the triggers, by the same engine (once per session, A/B variants, marks)."""
        active = sorted((r for r in rules.values() if r.active), key=lambda r: (r.definition.created, r.trigger_id))
        if rules:
            self._source_defs[project] = rules
        else:
            self._source_defs.pop(project, None)
        if active:
            self._any_event[project] = active
        else:
            self._any_event.pop(project, None)

    def put(self, definition: TriggerDef, project: str) -> None:
        defs = dict(self._defs.get(project, {}))
        defs[definition.trigger_id] = CompiledTrigger(definition)
        self._install(project, defs)

    def remove(self, project: str, trigger_id: str) -> None:
        defs = dict(self._defs.get(project, {}))
        defs.pop(trigger_id, None)
        self._install(project, defs)

    def replace_all(self, rows: list[TriggerRow]) -> None:
        """Install every project's definitions; a row whose ``updated_ms`` is the one compiled
        already is reused (a reload that finds nothing new compiles nothing)."""
        grouped: dict[str, dict[str, CompiledTrigger]] = {}
        for row in rows:
            known = self._defs.get(row.project, {}).get(row.trigger_id)
            if known is not None and known.definition.updated == row.updated_ms:
                grouped.setdefault(row.project, {})[row.trigger_id] = known
                continue
            try:
                grouped.setdefault(row.project, {})[row.trigger_id] = compile_row(row)
            except Exception as exc:  # a row this version cannot read must not hide the others
                log.warning("trigger %s/%s is unreadable and ignored: %r", row.project, row.trigger_id, exc)
        for project in set(self._defs) - set(grouped):
            self._install(project, {})
        for project, defs in grouped.items():
            current = self._defs.get(project, {})
            if defs.keys() != current.keys() or any(defs[k] is not current[k] for k in defs):
                self._install(project, defs)

    def _install(self, project: str, defs: dict[str, CompiledTrigger]) -> None:
        by_type: dict[str, list[CompiledTrigger]] = {}
        for trigger in sorted(defs.values(), key=lambda t: (t.definition.created, t.trigger_id)):
            if trigger.active:
                by_type.setdefault(trigger.conditions.event_type, []).append(trigger)
        if defs:
            self._defs[project] = defs
        else:
            self._defs.pop(project, None)
        if by_type:
            self._by_project[project] = by_type
        else:
            self._by_project.pop(project, None)

    async def run(self, store: Any, *, interval: float = RELOAD_S,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load every project's triggers, then reload them every ``interval`` seconds (the other
        nodes' changes). A failed reload keeps the previous index and is counted."""
        await self._reload(store)
        task_status.started()
        while True:
            await trio.sleep(interval)
            await self._reload(store)

    async def _reload(self, store: Any) -> None:
        try:
            rows = await store.list_triggers(None)
        except Exception as exc:  # StoreError: keep what we have, try again next time
            self.reload_failures += 1
            log.warning("trigger reload failed: %r", exc)
            return
        self.replace_all(rows)
        self.reloads += 1
