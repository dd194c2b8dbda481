"""The loadtest tests run against a real server: the end-to-end suite's fixture, reused as is."""

from tests.e2e.conftest import server

__all__ = ["server"]
