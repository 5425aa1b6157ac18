"""A MeshHTTPRoute rule's identity: api.HashMatches, the SHA-256 of its matches as Go's encoding/json writes them.

Envoy routes are named by it, and policies that configure routes (MeshTimeout, MeshRetry,
MeshLoadBalancingStrategy entries of kind MeshHTTPRoute) find their routes by it.
"""
from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

Conf = dict[str, Any]


def _go_json(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text


def match_fields(match: Conf) -> Conf:
    """A match in the field order and with the omissions of Kuma's Go struct."""
    out: Conf = {}
    if match.get("path") is not None:
        out["path"] = {"value": match["path"].get("value", ""), "type": match["path"].get("type", "")}
    if match.get("method") is not None:
        out["method"] = match["method"]
    if match.get("queryParams") is not None:
        out["queryParams"] = [{"type": q.get("type", ""), "name": q.get("name", ""), "value": q.get("value", "")}
                              for q in match["queryParams"]]
    if match.get("headers") is not None:
        headers = []
        for header in match["headers"]:
            entry: Conf = {"type": header["type"]} if header.get("type") is not None else {}
            entry["name"] = header.get("name", "")
            if header.get("value"):
                entry["value"] = header["value"]
            headers.append(entry)
        out["headers"] = headers
    return out


def hash_matches(matches: list[Conf]) -> str:
    text = _go_json([match_fields(m) for m in matches])
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
