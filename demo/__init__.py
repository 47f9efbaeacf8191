"""The embedded demo: upstream and a sidecar composed in one process (`entitlement-demo`).

The only package that imports two services; nothing imports it.
"""
