"""Mesh: global-scoped, flat body (mtls, logging, metrics, tracing, routing, ...)."""
from __future__ import annotations

from typing import Any

from appliance.core.resources.meta import dns1035_warning
from appliance.core.validation import Violations

SHAPE: dict[str, Any] = {"type": "object"}


def validate(content: dict[str, Any], out: Violations) -> None:
    mtls = content.get("mtls") or {}
    backends = mtls.get("backends") or []
    enabled = mtls.get("enabledBackend", "")
    if enabled and enabled not in [b.get("name") for b in backends if isinstance(b, dict)]:
        out.add("mtls.enabledBackend", "has to be set to one of the backends in the mesh")


def warnings(name: str) -> list[str]:
    return dns1035_warning("Mesh", name)
