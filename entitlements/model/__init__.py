"""The canonical entitlement-state model and change events.

Upstream computes them, Redis stores them, the sidecar reads them.
"""
