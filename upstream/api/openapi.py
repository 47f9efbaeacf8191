"""The OpenAPI 3 document served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "upstream", "version": "1"},
    "paths": {},
}
