"""The Quart (quart-trio) app: read, admin and operations routes.

These run at human or dashboard rates, where Quart's conveniences are worth its per-request cost;
the hot ingest routes and the streams are plain ASGI handlers in front of it (server/app.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from quart import Response, request
from quart_trio import QuartTrio

from actors.runtime import ActorError
from protocol.errors import InvalidInput, error_body
from protocol.policy import view as policy_view
from server import (
    approval_routes,
    assets,
    identity_routes,
    insight_routes,
    integration_routes,
    queries,
    trigger_routes,
    workflow_routes,
)
from server.auth import Access, AuthError, authenticate, key_from, require_read
from server.context import Pulse
from server.health import health, performance
from server.json_body import json_object
from server.openapi import DOCS_HTML, document
from server.privacy import consent_routes, deletion_routes
from server.prometheus import exposition, registry_for
from server.webhooks import routes as webhook_routes
from storage.base import StoreError

log = logging.getLogger("pulse.http")
_json = msgspec.json.Encoder()
MAX_POLICY_BODY: Final = 16 * 1024  # PATCH /api/admin/projects/{id}/policy
LIVE_VIEW_TIMEOUT_S: Final = 5.0


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_json.encode(body), status=status, mimetype="application/json", headers=headers)


def create_read_app(pulse: Pulse) -> QuartTrio:
    app = QuartTrio("pulse")
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True

    async def access(read: bool = True) -> Access:
        query = {k: v for k, v in request.args.items()}
        headers = {k.lower(): v for k, v in request.headers.items()}
        granted = await authenticate(pulse.store, key_from(headers, query), open_access=pulse.settings.open_access)
        if read:
            require_read(granted)
        return granted

    def args() -> dict[str, str]:
        return {k: v for k, v in request.args.items()}

    @app.errorhandler(InvalidInput)
    async def invalid(err: InvalidInput) -> Response:
        return json_response(error_body(err), err.status)

    @app.errorhandler(AuthError)
    async def unauthorized(err: AuthError) -> Response:
        code = "unauthorized" if err.status == 401 else "forbidden"
        return json_response({"success": False, "error": {"code": code, "reason": err.reason}}, err.status)

    @app.errorhandler(StoreError)
    async def unavailable(err: StoreError) -> Response:
        body = {"success": False, "error": {"code": "storage_unavailable", "reason": str(err)}}
        return json_response(body, 503, headers={"Retry-After": "1"})

    @app.errorhandler(Exception)
    async def unexpected(err: Exception) -> Response:
        # a bug of ours: logged with its traceback, answered as JSON like every other error
        log.exception("unhandled error on %s %s", request.method, request.path)
        body = {"success": False, "error": {"code": "internal_error", "reason": "internal server error"}}
        return json_response(body, 500)

    @app.errorhandler(404)
    async def not_found(_: Exception) -> Response:
        return json_response({"success": False, "error": {"code": "not_found", "reason": f"no route {request.path!r}"}}, 404)

    @app.errorhandler(405)
    async def not_allowed(err: Exception) -> Response:
        # RFC 9110 15.5.6: a 405 lists the methods the resource answers. The router knows them
        # (GET routes answer HEAD too); OPTIONS is answered in front of Quart (CORS preflight).
        allowed = sorted({*(getattr(err, "valid_methods", None) or ()), "OPTIONS"})
        reason = f"method {request.method} not allowed on {request.path!r}; use {', '.join(allowed)}"
        body = {"success": False, "error": {"code": "method_not_allowed", "reason": reason}}
        return json_response(body, 405, headers={"Allow": ", ".join(allowed)})

    @app.get("/api/events")
    async def events() -> Response:
        """Up to 100,000 events, streamed past one page (server/event_listing.py)."""
        from server.event_listing import events_response

        granted = await access()
        return await events_response(pulse.store, granted.project.id, args())

    @app.get("/api/events/services")
    async def services() -> Response:
        granted = await access()
        return json_response(await queries.services(pulse.store, granted.project.id, args()))

    @app.get("/api/events/statistics")
    async def statistics() -> Response:
        granted = await access()
        return json_response(await queries.statistics(pulse.store, granted.project.id, args()))

    @app.get("/api/events/anomalies")
    async def anomalies_route() -> Response:
        """Anomalous minutes per service (docs/anomalies.md)."""
        from server.anomalies import anomalies

        granted = await access()
        return json_response(await anomalies(pulse.store, granted.project.id, args()))

    @app.get("/api/events/suggestions")
    async def suggestions() -> Response:
        granted = await access()
        return json_response(await queries.suggestions(pulse.store, granted.project.id, args(), pulse.suggestions))

    @app.get("/api/events/export")
    async def export() -> Response:
        """Seed 004's MLFeatureSet per event, streamed (docs/export.md)."""
        from server.export import export_response

        granted = await access()
        return await export_response(pulse.store, granted.project.id, args())

    @app.get("/api/v1/behavioral/health")
    async def health_route() -> Response:
        body = await health(pulse)
        return json_response(body, 503 if body["status"] == "unhealthy" else 200)

    @app.get("/api/v1/behavioral/monitoring/performance")
    async def performance_route() -> Response:
        await access()
        return json_response(await performance(pulse))

    scrape_registry = registry_for(pulse)

    @app.get("/metrics")
    async def metrics_route() -> Response:
        """The same figures for Prometheus (server/prometheus.py, docs/metrics.md); read like
        /monitoring/performance: no key on an open loopback bind, else a secret key as Bearer."""
        await access()
        body, headers = exposition(scrape_registry, request.headers.get("accept", ""),
                                   request.headers.get("accept-encoding", ""))
        return Response(body, status=200, headers=headers)

    user_insights = insight_routes.register(app, pulse, access, args, json_response)
    webhook_routes.register(app, pulse, access, json_response)  # /api/v1/behavioral/webhooks (docs/automation.md)
    trigger_routes.register(app, pulse, access, json_response)  # /api/v1/behavioral/triggers (docs/automation.md)
    approval_routes.register(app, pulse, access, json_response)  # /api/v1/behavioral/hitl (docs/automation.md)
    consent_routes.register(app, pulse, access, json_response)  # /api/v1/behavioral/consent (docs/privacy.md)
    integration_routes.register(app, pulse, access, json_response)  # /api/v1/behavioral/integration (docs/automation.md)
    workflow_routes.register(app, pulse, access, json_response)  # /api/v1/behavioral/automation/workflows
    identity_routes.register(app, pulse, access, json_response)  # /api/v1/behavioral/cross-device
    deletion_routes.register(app, pulse, access, json_response)  # /api/v1/behavioral/data (docs/privacy.md)

    @app.get("/api/v1/behavioral/sessions/<session_id>")
    async def session_state(session_id: str) -> Response:
        """A session's live state, from the actor that owns it (on whichever node that is)."""
        granted = await access()
        return await live_view(("session", granted.project.id, session_id), "event_count")

    @app.get("/api/v1/behavioral/users/<user_id>")
    async def user_state(user_id: str) -> Response:
        """A user's live state across devices, with the insights of its recent sessions."""
        granted = await access()
        return await live_view(("user", granted.project.id, user_id), "event_count",
                               extend=lambda view: user_insights(granted.project.id, view))

    async def live_view(key: tuple[str, str, str], count_field: str,
                        extend: Callable[[Any], Awaitable[dict[str, Any]]] | None = None) -> Response:
        if "\x00" in key[2]:  # no event can carry it (rejected at ingest): nothing to look up
            reason = f"no events for {key[0]} {key[2]!r}"
            return json_response({"success": False, "error": {"code": "not_found", "reason": reason}}, 404)
        try:
            view = await pulse.router.view(key, timeout=LIVE_VIEW_TIMEOUT_S)
        except ActorError as exc:
            body = {"success": False, "error": {"code": "live_state_unavailable", "reason": str(exc)}}
            return json_response(body, 503, headers={"Retry-After": "1"})
        if not getattr(view, count_field, 0):
            reason = f"no events for {key[0]} {key[2]!r}"
            return json_response({"success": False, "error": {"code": "not_found", "reason": reason}}, 404)
        if extend is not None:
            return json_response({**msgspec.to_builtins(view), "insights": await extend(view)})
        return json_response(view)

    async def admin() -> Access:
        """Project administration is for the server's owner: the default project's secret key
        (printed at start), not any project's secret key."""
        granted = await access()
        if granted.project.id != (await pulse.store.default_project()).id:
            raise AuthError(403, "managing projects needs the default project's secret key")
        return granted

    @app.get("/api/admin/projects")
    async def list_projects() -> Response:
        await admin()
        projects = await pulse.store.list_projects()
        return json_response({"projects": [_project(p) for p in projects]})

    @app.post("/api/admin/projects")
    async def create_project() -> Response:
        await admin()
        body = await request.get_data()
        try:
            name = msgspec.json.decode(body or b"{}", type=dict).get("name")
        except msgspec.DecodeError as exc:
            raise InvalidInput("$", f"malformed json: {exc}") from None
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise InvalidInput("$.name", "a project name of 1 to 100 characters is required")
        try:
            project = await pulse.store.create_project(name)
        except ValueError as exc:
            return json_response({"success": False, "error": {"code": "conflict", "field": "$.name", "reason": str(exc)}}, 409)
        return json_response(_project(project), 201)

    async def admin_project(project_id: str) -> str:
        await admin()
        if not any(p.id == project_id for p in await pulse.store.list_projects()):
            raise InvalidInput("projectId", f"no project {project_id!r}", status=404, code="not_found")
        return project_id

    @app.get("/api/admin/projects/<project_id>/policy")
    async def get_policy(project_id: str) -> Response:
        """A project's privacy and traffic policy (docs/privacy.md)."""
        project = await admin_project(project_id)
        return json_response(policy_view(pulse.policies.get(project)))

    @app.patch("/api/admin/projects/<project_id>/policy")
    async def patch_policy(project_id: str) -> Response:
        project = await admin_project(project_id)
        stored = await pulse.policies.patch(project, await json_object(MAX_POLICY_BODY), int(time.time() * 1000))
        return json_response(policy_view(stored))

    @app.get("/openapi.json")
    async def openapi() -> Response:
        return Response(document(), mimetype="application/json")

    @app.get("/docs")
    async def docs() -> Response:
        return Response(DOCS_HTML, mimetype="text/html")

    @app.get("/api/monitor.js")
    async def monitor_script() -> Response:
        """Seed 004's embeddable monitor (server/static/monitor.js)."""
        return assets.serve("monitor.js", assets.SCRIPT_CACHE)

    @app.get("/test-cors.html")
    async def cors_test_page() -> Response:
        return assets.serve("test-cors.html")

    @app.get("/dashboard")
    async def dashboard() -> Response:
        return assets.serve("dashboard/index.html")

    @app.get("/dashboard/")
    async def dashboard_slash() -> Response:
        return Response(b"", 301, headers={"Location": "/dashboard"})

    @app.get("/dashboard/<path:name>")
    async def dashboard_file(name: str) -> Response:
        return assets.serve("dashboard/" + name)

    @app.get("/")
    async def index() -> Response:
        if "text/html" in request.headers.get("accept", ""):  # a person in a browser: the dashboard
            return Response(b"", 302, headers={"Location": "/dashboard"})
        return json_response(
            {
                "name": "pulse",
                "dashboard": "/dashboard",
                "monitor": "/api/monitor.js",
                "docs": "/docs",
                "openapi": "/openapi.json",
                "health": "/api/v1/behavioral/health",
                "uptimeSeconds": round(time.time() - pulse.started_at, 3),
            }
        )

    return app


def _project(project: Any) -> dict[str, Any]:
    return {
        "id": project.id,
        "name": project.name,
        "publicKey": project.public_key,
        "secretKey": project.secret_key,
        "createdAt": project.created_at,
    }

