"""Dataplane: mesh-scoped, flat body (networking.address, inbound, outbound, admin, ...)."""
from __future__ import annotations

from typing import Any

from appliance.core.validation import Violations, key

SHAPE: dict[str, Any] = {"type": "object"}


def validate(content: dict[str, Any], out: Violations) -> None:
    networking = content.get("networking")
    if not networking:
        out.add("networking", "must be defined")
        return
    for i, inbound in enumerate(networking.get("inbound") or []):
        tags = inbound.get("tags") or {}
        if tags and "kuma.io/service" not in tags:
            out.add(key(f"networking.inbound[{i}].tags", "kuma.io/service"), "tag has to exist")
