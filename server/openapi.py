"""The OpenAPI 3.1 document, generated from the msgspec wire types, and a self-contained /docs page.

Schemas come from msgspec.json.schema_components, so the document cannot drift from what the
decoders accept and the encoders emit. The /docs page renders it with no external assets.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from protocol import anomaly, behavioral, tracking

REF = "#/components/schemas/{name}"


def _ref(kind: type) -> dict[str, str]:
    return {"$ref": REF.format(name=kind.__name__)}


def _body(kind: type) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(kind)}}}


def _ok(kind: type | None, description: str = "OK") -> dict[str, Any]:
    if kind is None:
        return {"description": description}
    return {"description": description, "content": {"application/json": {"schema": _ref(kind)}}}


ERRORS = {
    "400": {"description": "invalid input: the body names the field path and the reason"},
    "401": {"description": "missing or unknown api key (non-loopback binds)"},
    "403": {"description": "a public write key used where the secret key is needed"},
    "413": {"description": "body, decompressed body or batch over its limit"},
    "415": {"description": "unsupported content type or encoding"},
    "503": {"description": "overloaded or storage unavailable; retry after Retry-After seconds"},
}


def _op(summary: str, ok: dict[str, Any], body: type | None = None, params: list[str] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": ok, **ERRORS}}
    if body is not None:
        op["requestBody"] = _body(body)
    if params:
        op["parameters"] = [{"name": p, "in": "query", "required": False, "schema": {"type": "string"}} for p in params]
    return op


@cache
def document() -> bytes:
    kinds = [
        tracking.AIEventPayload,
        tracking.BatchTrackEventRequest,
        tracking.BatchTrackEventItem,
        tracking.TrackEventResponse,
        tracking.BatchTrackEventResponse,
        tracking.EventsQueryResponse,
        tracking.ServicesResponse,
        tracking.EventStatistics,
        tracking.SuggestionsResponse,
        behavioral.BehavioralEvent,
        behavioral.BehavioralBatch,
        behavioral.BehavioralIngestResponse,
        behavioral.BehavioralBatchResponse,
        anomaly.AnomaliesResponse,
        anomaly.AnomalyMessage,
    ]
    _, components = msgspec.json.schema_components(kinds, ref_template=REF)
    event_path = {
        "name": "eventName",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    }
    track = _op("Track one event by name (seed 004)", _ok(tracking.TrackEventResponse), tracking.AIEventPayload)
    track["parameters"] = [event_path, {"name": "X-User-Id", "in": "header", "schema": {"type": "string"}}]
    paths: dict[str, Any] = {
        "/api/events/track/{eventName}": {"post": track},
        "/api/events/track/batch": {
            "post": _op("Track up to 1000 events", _ok(tracking.BatchTrackEventResponse), tracking.BatchTrackEventRequest)
        },
        "/api/events": {
            "get": _op(
                "Query stored events, newest first",
                _ok(tracking.EventsQueryResponse),
                params=["limit", "from", "to", "type", "serviceName", "userId", "sessionId", "correlationId", "eventName", "cursor"],
            )
        },
        "/api/events/services": {
            "get": _op("Per-service analytics", _ok(tracking.ServicesResponse), params=["from", "to", "serviceName"])
        },
        "/api/events/statistics": {
            "get": _op("Event statistics", _ok(tracking.EventStatistics), params=["from", "to", "limit"])
        },
        "/api/events/suggestions": {
            "get": _op("Suggestions", _ok(tracking.SuggestionsResponse), params=["eventName", "serviceName", "userId", "limit"])
        },
        "/api/events/export": {
            "get": _op(
                "ML feature export (seed 004 MLFeatureSet), one row per event, oldest first, streamed "
                "(chunked); format=ndjson (default), csv or parquet; the filters of GET /api/events; "
                "times in UTC; columns in docs/export.md",
                {
                    "description": "an attachment (Content-Disposition) in the requested format",
                    "content": {
                        "application/x-ndjson": {"schema": {"type": "string"}},
                        "text/csv": {"schema": {"type": "string"}},
                        "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                params=["format", "from", "to", "type", "serviceName", "userId", "sessionId", "correlationId", "eventName"],
            )
        },
        "/api/events/anomalies": {
            "get": _op("Anomalous minutes per service: response time, error rate, volume (docs/anomalies.md)",
                       _ok(anomaly.AnomaliesResponse), params=["from", "to", "serviceName"])
        },
        "/api/events/stream": {"get": _op("Server-Sent Events: event, stats, ping", _ok(None, "text/event-stream"))},
        "/api/v1/behavioral/events": {
            "post": _op("Ingest one behavioral event (seed 000)", _ok(behavioral.BehavioralIngestResponse), behavioral.BehavioralEvent)
        },
        "/api/v1/behavioral/batch": {
            "post": _op("Ingest up to 1000 behavioral events", _ok(behavioral.BehavioralBatchResponse), behavioral.BehavioralBatch)
        },
        "/api/v1/behavioral/stream": {
            "get": _op("Server-Sent Events of behavioral events", _ok(None, "text/event-stream"), params=["sessionId", "userId", "subscriptions", "key"])
        },
        "/api/v1/behavioral/health": {"get": _op("Component health", _ok(None))},
        "/api/v1/behavioral/monitoring/performance": {"get": _op("Measured performance figures", _ok(None))},
        "/api/admin/projects": {"get": _op("List projects (secret key)", _ok(None)), "post": _op("Create a project", _ok(None))},
    }
    doc = {
        "openapi": "3.1.0",
        "info": {
            "title": "Pulse",
            "version": "0.1.0",
            "description": (
                "Real-time behavioral tracking. WebSockets: /api/events/ws and /api/v1/behavioral/stream: JSON text "
                "frames, or MessagePack binary frames with the subprotocol pulse.msgpack; one message per frame. "
                "With the query parameter batch=1 (or true) the server may send the messages waiting for a "
                "socket as one frame {\"type\":\"batch\",\"messages\":[...]} (a MessagePack map with the same "
                "keys), in order, at most 256 messages or about 1 MiB; a message alone is sent as it is, and "
                "acks and errors may be inside a batch too. Any other batch value (but 0/false) refuses the "
                "handshake with 400."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
    return msgspec.json.encode(doc)


DOCS_HTML = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>Pulse API</title>
<style>body{font:14px/1.5 system-ui,sans-serif;margin:2rem;max-width:960px}code,pre{background:#f4f4f4;padding:2px 4px}
h2{margin-top:2rem;border-bottom:1px solid #ddd}.m{font-weight:bold;text-transform:uppercase;margin-right:.5rem}
details{margin:.5rem 0}pre{overflow:auto;padding:.5rem}</style></head>
<body><h1>Pulse API</h1><p>Generated from <a href="/openapi.json">/openapi.json</a>.</p><div id="ops"></div>
<script>
fetch('/openapi.json').then(r=>r.json()).then(doc=>{
  const root=document.getElementById('ops');
  for (const [path,ops] of Object.entries(doc.paths)) for (const [method,op] of Object.entries(ops)) {
    const d=document.createElement('details');
    const s=document.createElement('summary');
    s.innerHTML='<span class="m"></span><code></code> ';
    s.querySelector('.m').textContent=method; s.querySelector('code').textContent=path;
    s.append(op.summary||'');
    const pre=document.createElement('pre'); pre.textContent=JSON.stringify(op,null,2);
    d.append(s,pre); root.append(d);
  }
  const h=document.createElement('h2'); h.textContent='Schemas'; root.append(h);
  const pre=document.createElement('pre'); pre.textContent=JSON.stringify(doc.components.schemas,null,2); root.append(pre);
});
</script></body></html>"""
