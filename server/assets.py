"""Files Pulse serves to browsers: the monitor script, the CORS test page and the dashboard.

Each file under server/static/ is read once (and again only when its mtime changes, so an edit shows
without a restart), kept with its gzip and a strong ETag, and answered with caching headers: a
revalidation with a matching ``If-None-Match`` is a 304 without a body.
"""

from __future__ import annotations

import gzip
import hashlib
import pathlib
from dataclasses import dataclass
from typing import Final

from quart import Response, request

STATIC_DIR: Final = pathlib.Path(__file__).resolve().parent / "static"
TYPES: Final = {
    ".js": "application/javascript; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
# The monitor is embedded in other sites' pages: cached for 5 minutes, then revalidated with its ETag
# (a 304 costs a few bytes), so a new version reaches every page within minutes. Pages revalidate
# every time.
SCRIPT_CACHE: Final = "public, max-age=300, must-revalidate"
PAGE_CACHE: Final = "no-cache"
GZIP_MIN_BYTES: Final = 1024


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    etag: str
    content_type: str
    mtime_ns: int


_cache: dict[pathlib.Path, Asset] = {}


def load(name: str) -> Asset | None:
    """The asset at ``name`` (a path relative to server/static/), or None when there is none."""
    path = (STATIC_DIR / name).resolve()
    if STATIC_DIR not in path.parents or not path.is_file():  # no escaping the directory
        return None
    mtime = path.stat().st_mtime_ns
    cached = _cache.get(path)
    if cached is not None and cached.mtime_ns == mtime:
        return cached
    body = path.read_bytes()
    kind = TYPES.get(path.suffix, "application/octet-stream")
    zipped = gzip.compress(body, 9, mtime=0) if len(body) >= GZIP_MIN_BYTES and not kind.startswith("image/png") else None
    asset = Asset(body, zipped, '"' + hashlib.sha256(body).hexdigest()[:32] + '"', kind, mtime)
    _cache[path] = asset
    return asset


def _matches(if_none_match: str, etag: str) -> bool:
    if if_none_match.strip() == "*":
        return True
    tags = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return etag in tags


def serve(name: str, cache_control: str = PAGE_CACHE) -> Response:
    """The answer to GET/HEAD of an asset: 200 (gzip when the client takes it), 304, or 404."""
    asset = load(name)
    if asset is None:
        return Response(b'{"success":false,"error":{"code":"not_found","reason":"no such file"}}', 404,
                        mimetype="application/json")
    headers = {"ETag": asset.etag, "Cache-Control": cache_control, "Vary": "Accept-Encoding"}
    if _matches(request.headers.get("if-none-match", ""), asset.etag):
        return Response(b"", 304, headers=headers)
    body = asset.body
    if asset.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    response = Response(body, 200, headers=headers, content_type=asset.content_type)
    return response
