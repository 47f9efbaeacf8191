"""Upstream: the reference source of truth for catalog, customers, usage and credits."""
