"""GET /api/events/export: seed 004's MLFeatureSet per event, streamed as NDJSON, CSV or Parquet.

The export walks the log oldest first, a page (MAX_PAGE events) at a time, with the filters of
GET /api/events (``storage.base.Store.query_events_ascending``): one page in memory, never the
range. Each page becomes feature rows (``protocol.features.FeatureExtractor``, whose per-session
state is bounded) and bytes, and goes out as one HTTP chunk (chunked transfer encoding, no
Content-Length: the total is not known until the scan ends).

The loop stays responsive: rows are computed and encoded on the trio thread in slices of
SLICE_EVENTS (a few ms each) with a checkpoint between slices, so every other request gets its turn
between two slices. (A worker thread per page was measured first: the page's ~20 ms of pure Python
held the GIL against the trio thread, and a health check sent meanwhile took 20-30 ms at p50 and
up to 300 ms instead of ~6 ms.) What releases the GIL runs in worker threads: the store's reads and
pyarrow's Parquet encoding and compression.

Parquet goes through pyarrow's ParquetWriter into a sink that is drained after every row group
(PARQUET_ROW_GROUP_EVENTS rows): the magic bytes go out first, one chunk per row group, and the
footer last, so the bytes held at once are one row group's, whatever the range.

A failure after the answer has started (the store goes away mid-export) cannot change the status
any more: the connection is closed without the final empty chunk, so the client sees a truncated
body as an error rather than a short file.
"""

from __future__ import annotations

import csv
import io
import logging
import operator
import time
from collections.abc import AsyncIterator, Callable
from functools import cache
from typing import TYPE_CHECKING, Any, Final

import msgspec
import trio
from quart import Response

from protocol.errors import InvalidInput
from protocol.features import COLUMN_NAMES, COLUMNS, FeatureExtractor, FeatureRow
from protocol.record import Event
from server.queries import event_filter
from storage.base import MAX_PAGE, Cursor, EventFilter, Store

if TYPE_CHECKING:
    import pyarrow as pa

PAGE_EVENTS: Final = MAX_PAGE  # events read from the store per step (and per NDJSON/CSV chunk)
SLICE_EVENTS: Final = 100  # rows computed and encoded between two checkpoints (~1-3 ms)
PARQUET_ROW_GROUP_EVENTS: Final = 10 * MAX_PAGE  # rows per Parquet row group (one chunk each)
DEFAULT_FORMAT: Final = "ndjson"
# Exports streaming at once in this process; one more is answered 503 with Retry-After. Each holds
# up to ~25 MB of running state (protocol.features: MAX_SESSIONS, MAX_CORRELATIONS) and a page.
MAX_CONCURRENT_EXPORTS: Final = 4
EXPORT_RETRY_AFTER_S: Final = 5

log = logging.getLogger("pulse.export")
_running = 0  # exports whose body is streaming in this process (a soft cap: see export_response)


class Format(msgspec.Struct, frozen=True):
    media_type: str
    extension: str


FORMATS: Final = {
    "ndjson": Format("application/x-ndjson", "ndjson"),
    "csv": Format("text/csv", "csv"),
    "parquet": Format("application/vnd.apache.parquet", "parquet"),
}


def export_format(query: dict[str, str]) -> str:
    value = query.get("format") or DEFAULT_FORMAT
    if value not in FORMATS:
        raise InvalidInput("format", f"expected one of {', '.join(FORMATS)}, got {value[:50]!r}")
    return value


async def export_response(store: Store, project: str, query: dict[str, str]) -> Response:
    """Check the parameters and read the first page before answering, so a bad parameter is a 400
    and an unavailable store a 503; the rest streams."""
    fmt = export_format(query)
    flt = event_filter(project, query)
    if _running >= MAX_CONCURRENT_EXPORTS:
        # Counted while a body streams, so two requests arriving together may both pass: the cap
        # is a bound on memory, not an exact count.
        reason = f"{_running} exports are running; at most {MAX_CONCURRENT_EXPORTS} at once"
        body = msgspec.json.encode({"success": False, "error": {"code": "too_many_exports", "reason": reason}})
        headers = {"Retry-After": str(EXPORT_RETRY_AFTER_S)}
        return Response(body, status=503, mimetype="application/json", headers=headers)
    first = await store.query_events_ascending(flt, limit=PAGE_EVENTS, after=None)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kind = FORMATS[fmt]
    headers = {
        "Content-Disposition": f'attachment; filename="pulse-events-{stamp}.{kind.extension}"',
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    response = Response(_stream(store, flt, _ENCODERS[fmt](), first), mimetype=kind.media_type, headers=headers)
    response.timeout = None  # Quart's RESPONSE_TIMEOUT (60 s) would cut a long export short, silently
    return response


async def _stream(store: Store, flt: EventFilter, encoder: _Encoder, page: list[Event]) -> AsyncIterator[bytes]:
    global _running
    _running += 1
    started, rows = time.perf_counter(), 0
    try:
        if head := await encoder.start():
            yield head
        while True:
            parts = []
            for at in range(0, len(page), SLICE_EVENTS):
                parts.append(encoder.encode(page[at : at + SLICE_EVENTS]))
                await trio.lowlevel.checkpoint()
            rows += len(page)
            parts.append(await encoder.flush(final=False))
            if chunk := b"".join(parts):
                yield chunk
            if len(page) < PAGE_EVENTS:
                break
            after = Cursor(page[-1].timestamp, page[-1].seq)
            page = await store.query_events_ascending(flt, limit=PAGE_EVENTS, after=after)
        if tail := await encoder.flush(final=True):
            yield tail
        encoder.features.log_evictions()
        log.info("exported %d events in %.2f s", rows, time.perf_counter() - started)
    finally:
        _running -= 1


class _Encoder:
    """Turns the events of one export into bytes: ``encode`` a slice at a time (sync, bounded
    work), ``flush`` what is due after each page and at the end."""

    def __init__(self) -> None:
        self.features = _Features()

    async def start(self) -> bytes:
        return b""

    def encode(self, events: list[Event]) -> bytes:
        raise NotImplementedError

    async def flush(self, *, final: bool) -> bytes:
        return b""


class _Features(FeatureExtractor):
    def log_evictions(self) -> None:
        if self.evictions != type(self.evictions)():
            log.info("export outgrew its running state (keys evicted and started over): %s", self.evictions)


_json: Final = msgspec.json.Encoder()


class _NdjsonEncoder(_Encoder):
    def encode(self, events: list[Event]) -> bytes:
        return _json.encode_lines(self.features.rows(events))


_BOOL_COLUMNS: Final = tuple(i for i, c in enumerate(COLUMNS) if c.kind == "bool")
_row_values: Final[Callable[[FeatureRow], tuple[object, ...]]] = operator.attrgetter(*COLUMN_NAMES)


class _CsvEncoder(_Encoder):
    """RFC 4180 (CRLF line ends); null is an empty field, booleans are ``true``/``false``."""

    async def start(self) -> bytes:
        return self._lines([COLUMN_NAMES])

    def encode(self, events: list[Event]) -> bytes:
        lines = []
        for row in self.features.rows(events):
            values = list(_row_values(row))
            for i in _BOOL_COLUMNS:
                values[i] = "true" if values[i] else "false"
            lines.append(values)
        return self._lines(lines)

    @staticmethod
    def _lines(rows: list[list[object]] | list[tuple[str, ...]]) -> bytes:
        out = io.StringIO()
        csv.writer(out).writerows(rows)
        return out.getvalue().encode()


@cache
def parquet_schema() -> pa.Schema:
    """The Arrow schema of the Parquet export. pyarrow is imported on the first Parquet export, in
    a worker thread: importing it costs ~0.5 s and ~60 MB that a server which never exports
    Parquet does not pay."""
    import pyarrow as pa

    types = {
        "str": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("ms", tz="UTC"),
    }
    return pa.schema(
        [pa.field(c.name, types[c.kind], nullable=c.nullable) for c in COLUMNS],
        metadata={"source": "pulse GET /api/events/export (seed 004 MLFeatureSet), times in UTC"},
    )


_TIMESTAMP_INDEX: Final = COLUMN_NAMES.index("timestamp")


class _DrainedSink:
    """A write-only file for ParquetWriter whose bytes are taken out after each row group."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def drain(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


def _open_parquet_writer(sink: _DrainedSink) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.ParquetWriter(pa.PythonFile(sink, mode="w"), parquet_schema())


class _ParquetEncoder(_Encoder):
    def __init__(self) -> None:
        super().__init__()
        self._sink = _DrainedSink()
        self._writer: Any = None  # pyarrow.parquet.ParquetWriter, once started
        self._rows: list[tuple[object, ...]] = []
        self._stamps: list[int] = []

    async def start(self) -> bytes:
        self._writer = await trio.to_thread.run_sync(_open_parquet_writer, self._sink)
        return self._sink.drain()

    def encode(self, events: list[Event]) -> bytes:
        self._rows += map(_row_values, self.features.rows(events))
        self._stamps += [e.timestamp for e in events]
        return b""

    async def flush(self, *, final: bool) -> bytes:
        """A row group when one is full (or, at the end, whatever is left), then the footer."""
        import pyarrow as pa

        head = b""
        if len(self._rows) >= PARQUET_ROW_GROUP_EVENTS or (final and self._rows):
            rows, self._rows = self._rows, []
            stamps, self._stamps = self._stamps, []
            schema = parquet_schema()
            arrays = []
            for i, field in enumerate(schema):  # a column at a time: a few ms each
                values = stamps if i == _TIMESTAMP_INDEX else [row[i] for row in rows]
                arrays.append(pa.array(values, type=field.type))
                await trio.lowlevel.checkpoint()
            table = pa.Table.from_arrays(arrays, schema=schema)
            del rows, stamps, arrays
            await trio.to_thread.run_sync(self._writer.write_table, table)  # encodes and compresses
            head = self._sink.drain()
        if final:
            await trio.to_thread.run_sync(self._writer.close)  # the footer
            return head + self._sink.drain()
        return head


_ENCODERS: Final[dict[str, Callable[[], _Encoder]]] = {
    "ndjson": _NdjsonEncoder,
    "csv": _CsvEncoder,
    "parquet": _ParquetEncoder,
}
