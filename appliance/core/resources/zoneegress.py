"""ZoneEgress: global-scoped, flat body (zone, networking.address/port/admin)."""
from __future__ import annotations

from typing import Any

from appliance.core.validation import Violations

SHAPE: dict[str, Any] = {"type": "object"}


def validate(content: dict[str, Any], out: Violations) -> None:
    networking = content.get("networking")
    if not networking:
        out.add("networking", "must be defined")
