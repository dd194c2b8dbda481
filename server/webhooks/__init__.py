"""Durable, signed webhooks (Standard Webhooks): registry, signing, delivery scheduler, routes.

``notify`` is the entry point for the rest of Pulse (triggers, workflows):
``pulse.webhooks.notify(project_id, kind, data, dedup_key)`` never blocks its caller.
"""
