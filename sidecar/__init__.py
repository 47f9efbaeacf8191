"""Entitlement sidecar: answers "may this customer use this feature?" over localhost gRPC."""

__version__ = "0.1.0"
