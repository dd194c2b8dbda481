"""Pulse's Python SDK: a batching event client and ASGI middleware (see README)."""
