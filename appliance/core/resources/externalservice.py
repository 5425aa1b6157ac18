"""ExternalService: mesh-scoped, flat body (networking.address, tls, tags)."""
from __future__ import annotations

from typing import Any

from appliance.core.validation import Violations, key

SHAPE: dict[str, Any] = {"type": "object"}


def validate(content: dict[str, Any], out: Violations) -> None:
    tags = content.get("tags") or {}
    if "kuma.io/service" not in tags:
        out.add(key("tags", "kuma.io/service"), "tag has to exist")
