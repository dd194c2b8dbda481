"""Pulse's HTTP/WebSocket edge: its own connections around hypercorn's protocol classes, with a
native path for the hot ingest routes (server/edge/server.py), or stock hypercorn (stock.py)."""
