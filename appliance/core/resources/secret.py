"""Secret (mesh-scoped) and GlobalSecret: a base64 `data` field."""
from __future__ import annotations

from typing import Any

from appliance.core.validation import Violations

SHAPE: dict[str, Any] = {"type": "object", "properties": {"data": {"type": "string"}}}


def validate(content: dict[str, Any], out: Violations) -> None:
    if not content.get("data"):
        out.add("data", "cannot be empty")
