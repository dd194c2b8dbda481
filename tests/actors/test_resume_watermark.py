"""The pipeline's resume watermark: streams never advertise a resume point past an unpublished event."""

from __future__ import annotations

from typing import Any, cast

from actors.pipeline import IngestPipeline


def pipeline() -> IngestPipeline:
    nothing = cast(Any, None)
    return IngestPipeline(nothing, nothing, nothing, nothing, nothing)


def test_watermark_waits_for_gaps_and_jumps_when_they_close() -> None:
    p = pipeline()
    p.start_from(10)  # history before this process started
    p._finish(14, 15)  # a later batch finished first
    assert p.resume_floor() == 10
    p._finish(11, 11)
    assert p.resume_floor() == 11  # 12..13 still on their way
    p._finish(12, 13)
    assert p.resume_floor() == 15
    p._finish(16, 20)
    assert p.resume_floor() == 20
