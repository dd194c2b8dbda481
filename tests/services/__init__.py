"""Real services for tests (throwaway PostgreSQL, Redis), importable from any test package.

A test that needs a service this machine does not have is skipped with the reason, or, when
``PULSE_REQUIRE_SERVICES=1`` (CI sets it: ``.ci/run``), fails with it: a CI run never passes with the
PostgreSQL, Redis or cluster tests silently skipped.
"""

from __future__ import annotations

import os
from typing import Final, NoReturn

import pytest

REQUIRE_ENV: Final = "PULSE_REQUIRE_SERVICES"


def services_required() -> bool:
    """True when a missing service must fail the test run (``PULSE_REQUIRE_SERVICES`` set, not 0)."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def service_unavailable(reason: str) -> NoReturn:
    """Skip the test for ``reason``, or fail it when services are required."""
    if services_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set: this run requires every service)", pytrace=False)
    pytest.skip(reason)
