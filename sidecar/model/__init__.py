"""The sidecar's request model: usage reports, raw events and what upstream acknowledges."""
