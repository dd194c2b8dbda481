"""The running server's parts, built once at start and handed to every handler."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from actors.automation.index import TriggerIndex
from actors.cluster import ActorRouter
from actors.fanout import Fanout
from actors.hub import Hub
from actors.identity.directory import IdentityDirectory
from actors.insights.service import InsightService
from actors.metrics import Metrics
from actors.pipeline import IngestPipeline
from actors.privacy.consent import ConsentBook
from actors.privacy.sampling import AdaptiveSampler
from actors.runtime import ActorSystem
from server.auth import Access, authenticate, key_from
from server.cors import Cors
from server.http import HotRequest
from server.privacy.policies import PolicyBook
from server.privacy.rate_limit import RateLimiter
from server.settings import Settings
from server.suggestions import SuggestionCache
from server.webhooks.service import WebhookService
from server.workflow_scheduler import WorkflowScheduler
from storage.base import Store

if TYPE_CHECKING:  # these import this module
    from server.privacy.deletion import DeletionCounters
    from server.privacy.retention import RetentionJob


@dataclass
class Pulse:
    settings: Settings
    store: Store
    actors: ActorSystem
    hub: Hub
    metrics: Metrics
    pipeline: IngestPipeline
    cors: Cors
    node_id: str
    bus: Any  # storage.redis_bus.RedisBus, or None on one node
    router: ActorRouter
    fanout: Fanout
    insights: InsightService
    webhooks: WebhookService  # signed webhook deliveries: webhooks.notify(project, kind, data, dedup_key)
    triggers: TriggerIndex  # every project's triggers as the session actors evaluate them (actors/automation/)
    policies: PolicyBook  # every project's privacy and traffic policy, in memory (server/privacy/policies.py)
    # every user's consent, in memory, and the pipeline's consent stage (actors/privacy/consent.py)
    consent: ConsentBook | None = None
    # automation workflows: their rules (workflows.rules) and durable delayed actions (server/workflow_scheduler.py)
    workflows: WorkflowScheduler | None = None
    started_at: float = field(default_factory=time.time)
    draining: bool = False  # set at shutdown: new sockets are refused, open ones told to reconnect
    shutdown: trio.Event = field(default_factory=trio.Event)  # streams close (1001 / end) when set
    suggestions: SuggestionCache | None = None  # per-project suggestion cache (server/suggestions.py)
    # SSE resumes that may scan the stored log at once, per project (server/sse.py)
    replay_slots: dict[str, trio.CapacityLimiter] = field(default_factory=dict)
    identity: IdentityDirectory | None = None  # the projects' identity graphs (actors/identity/directory.py)
    # the ingest routes' per-key and per-IP token buckets (server/privacy/rate_limit.py)
    limits: RateLimiter = field(default_factory=RateLimiter)
    # adaptive sampling of low-value events under overload (actors/privacy/sampling.py)
    sampler: AdaptiveSampler = field(default_factory=AdaptiveSampler)
    deletions: DeletionCounters | None = None  # this node's data erasures (server/privacy/deletion.py)
    retention: RetentionJob | None = None  # the retention job (server/privacy/retention.py)

    def begin_shutdown(self) -> None:
        self.draining = True
        self.shutdown.set()

    async def access(self, req: HotRequest) -> Access:
        return await authenticate(self.store, key_from(req.headers, req.query), open_access=self.settings.open_access)
