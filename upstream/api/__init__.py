"""Upstream's HTTP API (aiohttp)."""
