"""Merging policy confs as Kuma does: RFC 7396 merge patches, in precedence order (policies/_rules.py
builds the rules whose confs these merge)."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from appliance.model.proxy import Policy

Merge = Callable[[Iterable[dict[str, Any]]], dict[str, Any]]


def merge_patch(target: Any, patch: Any, append: bool = False) -> Any:
    """RFC 7396 JSON merge patch: objects merge key by key, anything else replaces, null deletes. With
    `append`, a list under a key starting with `append` (Kuma's `Append` fields) adds to the one there."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif append and key.startswith("append") and isinstance(value, list):
            result[key] = list(result.get(key) or []) + value
        else:
            result[key] = merge_patch(result.get(key), value, append)
    return result


def merge(confs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for conf in confs:
        result = merge_patch(result, conf)
    return result


def single_item_conf(policies: Sequence[Policy]) -> dict[str, Any]:
    """SingleItemRules for the whole proxy: the top-level `default` of the selecting policies (in precedence
    order) merged as Kuma merges confs, where `append*` lists (Kuma's `Append` fields) are concatenated."""
    result: dict[str, Any] = {}
    for policy in policies:
        result = merge_patch(result, policy.spec.get("default") or {}, append=True)
    return result
