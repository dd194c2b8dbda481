"""Real services for tests (throwaway PostgreSQL, ...), importable from any test package."""
