"""The pipeline's resume watermark: streams never advertise a resume point past an unpublished event."""

from __future__ import annotations

from typing import Any, cast

from actors.pipeline import IngestPipeline


def pipeline() -> IngestPipeline:
    nothing = cast(Any, None)
    return IngestPipeline(nothing, nothing, nothing, nothing, nothing)


def test_watermark_stays_below_the_lowest_append_in_flight() -> None:
    p = pipeline()
    p.start_from(10)  # history before this process started
    assert p.resume_floor() == 10
    p._begin(11, 11)
    p._begin(12, 13)
    p._begin(14, 15)
    p._finish(14)  # a later batch finished first
    assert p.resume_floor() == 10
    p._finish(11)
    assert p.resume_floor() == 11  # 12..13 still on their way
    p._finish(12)
    assert p.resume_floor() == 15


def test_watermark_passes_gaps_in_seqs() -> None:
    """PostgreSQL's sequence leaves holes (duplicates, failed groups, other nodes): a hole is not
    an event on its way, so the watermark must not wait for it."""
    p = pipeline()
    p.start_from(10)
    p._begin(15, 20)
    p._finish(15)
    assert p.resume_floor() == 20
    p._begin(40, 40)
    p._begin(41, 45)
    p._finish(41)
    assert p.resume_floor() == 39
    p._finish(40)
    assert p.resume_floor() == 45
