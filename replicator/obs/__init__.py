"""Observability: metrics, logging, HTTP endpoints."""
