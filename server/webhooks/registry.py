"""This node's copy of the registered webhooks, for lookups on the ingest path that cost a dict get.

Refreshed from the Store every REFRESH_S (webhooks registered on another node of a cluster are seen
within that time) and at once after this node changes one.
"""

from __future__ import annotations

from typing import Final

from storage.webhook_records import Webhook

TRIGGER_FIRED: Final = "trigger_fired"
WORKFLOW_ACTION: Final = "workflow_action"
KINDS: Final = frozenset({TRIGGER_FIRED, WORKFLOW_ACTION})  # the rest of ``events`` are event type names
REFRESH_S: Final = 5.0


class Registry:
    def __init__(self) -> None:
        self._by_id: dict[str, Webhook] = {}
        self._by_kind: dict[tuple[str, str], list[Webhook]] = {}  # (project, kind) -> enabled hooks
        # project -> the event type names some enabled webhook wants (the pipeline's per-event test)
        self.event_types: dict[str, frozenset[str]] = {}

    def replace(self, hooks: list[Webhook]) -> None:
        by_kind: dict[tuple[str, str], list[Webhook]] = {}
        types: dict[str, set[str]] = {}
        for hook in hooks:
            if hook.disabled_reason is not None:
                continue
            for kind in hook.events:
                by_kind.setdefault((hook.project, kind), []).append(hook)
                if kind not in KINDS:
                    types.setdefault(hook.project, set()).add(kind)
        self._by_id = {hook.id: hook for hook in hooks}
        self._by_kind = by_kind
        self.event_types = {project: frozenset(names) for project, names in types.items()}

    def subscribed(self, project: str, kind: str) -> list[Webhook]:
        return self._by_kind.get((project, kind), [])

    def get(self, webhook_id: str) -> Webhook | None:
        return self._by_id.get(webhook_id)

    def __len__(self) -> int:
        return len(self._by_id)
