"""The entitlement model and its formats: what the sidecar, upstream and the persistent cache share.

The canonical state model and its JSON, change events, usage-period math, the Redis layout
(keys, hash writes, stream entries, scripts, packing, the store), the settings toolkit, logging,
the HTTP side port and the command line. It imports nothing of the three services; each of them
imports it (tests/test_layering.py keeps it so).
"""
