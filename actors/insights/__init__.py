"""Insights: engagement, intent, patterns and the learned models (sans-IO), plus their services."""
