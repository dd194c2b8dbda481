"""The workflows tables (issue 13 item 3), for both backends: part of schema migration 3, which
storage/sqlite_schema.py and storage/postgres_schema.py assemble from this module and its siblings.

``workflows``: one automation workflow per row (project-scoped); ``body`` is its definition as JSON
(actors/automation/workflows.py WorkflowDef); ``status`` lives in its own column (the approval gate
changes it without touching the body): active, paused, pending_approval or rejected. ``approval``
is the approval that gates it (actors/automation/approval.py ApprovalGate as JSON: which request,
and once decided the decision and its conditions), NULL for a workflow never gated; it travels with
the status (set_workflow_status), and the session actors enforce its conditions when it would fire.

``workflow_actions``: one action of one workflow for one session, scheduled when the workflow
fired. ``id`` is deterministic (project, workflow, session, action index), so a firing recorded
twice (a retried ingest, a replay after a restart) schedules each action once. Status moves
scheduled (due at ``due_at``) -> running (claimed with a lease: ``lease_owner`` until
``lease_until``) -> done (``finished_at``, ``result``). A running row whose lease has expired (its
node died mid-action) is due again for any node; its end is stored only by the lease holder, so an
action is recorded done exactly once. Times are unix milliseconds.
"""

from __future__ import annotations

from typing import Final

_WORKFLOWS: Final = """
    CREATE TABLE workflows (
        project TEXT NOT NULL,
        workflow_id TEXT NOT NULL,
        status TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL,
        body TEXT NOT NULL,
        approval TEXT,
        PRIMARY KEY (project, workflow_id)
    )
"""
_ACTIONS: Final = """
    CREATE TABLE workflow_actions (
        id TEXT PRIMARY KEY,
        project TEXT NOT NULL,
        workflow_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        user_id TEXT,
        action_index INTEGER NOT NULL,
        action_type TEXT NOT NULL,
        variant TEXT NOT NULL,
        due_at BIGINT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_until BIGINT,
        created_at BIGINT NOT NULL,
        finished_at BIGINT,
        detail TEXT NOT NULL,
        result TEXT
    )
"""
# Claims scan the due rows: scheduled by due_at, running by lease_until (expired leases).
_INDEXES: Final = (
    "CREATE INDEX workflow_actions_due ON workflow_actions (due_at) WHERE status = 'scheduled'",
    "CREATE INDEX workflow_actions_leased ON workflow_actions (lease_until) WHERE status = 'running'",
    "CREATE INDEX workflow_actions_by_workflow ON workflow_actions (project, workflow_id, created_at)",
)

SQLITE_DDL: Final[tuple[str, ...]] = (_WORKFLOWS, _ACTIONS, *_INDEXES)
POSTGRES_DDL: Final[tuple[str, ...]] = (_WORKFLOWS, _ACTIONS, *_INDEXES)
