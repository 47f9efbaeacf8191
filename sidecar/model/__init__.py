"""Canonical entitlement-state model shared by upstream, Redis and the sidecar."""
