"""RFC 6902 JSON Patch with the options Kuma applies it with (evanphx/json-patch ApplyOptions):
negative array indices count from the end, removing a missing path does nothing, and `add` creates
the objects missing on its path."""
from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    pass


def _pointer(path: str) -> list[str]:
    if path in ("", "/"):
        return [] if path == "" else [""]
    if not path.startswith("/"):
        raise PatchError(f'JSON pointer must be empty or start with a "/": {path!r}')
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(key: str, size: int, adding: bool = False) -> int:
    if adding and key == "-":
        return size
    try:
        i = int(key)
    except ValueError:
        raise PatchError(f"array index {key!r} is not a number") from None
    limit = size + 1 if adding else size
    if i < 0:
        i += limit
    if not 0 <= i < limit:
        raise PatchError(f"array index {key} out of bounds")
    return i


def _parent(doc: Any, parts: list[str], create: bool) -> tuple[Any, str] | None:
    node = doc
    for n, key in enumerate(parts[:-1]):
        if isinstance(node, dict):
            if key not in node:
                if not create:
                    return None
                node[key] = [] if parts[n + 1] in ("-", "0") else {}
            node = node[key]
        elif isinstance(node, list):
            if create and key == "-":
                node.append({})
                node = node[-1]
                continue
            try:
                node = node[_index(key, len(node))]
            except PatchError:
                if not create:
                    return None
                raise
        else:
            if not create:
                return None
            raise PatchError(f"cannot walk into {key!r}: not an object or array")
    return node, parts[-1]


def _get(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    found = _parent(doc, parts, create=False)
    if found is None:
        raise PatchError(f"path {path} does not exist")
    node, key = found
    if isinstance(node, dict) and key in node:
        return node[key]
    if isinstance(node, list):
        return node[_index(key, len(node))]
    raise PatchError(f"path {path} does not exist")


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    node, key = _parent(doc, parts, create=True)  # type: ignore[misc]
    if isinstance(node, dict):
        node[key] = value
    elif isinstance(node, list):
        node.insert(_index(key, len(node), adding=True), value)
    else:
        raise PatchError(f"cannot add at {path}: the parent is not an object or array")
    return doc


def _remove(doc: Any, path: str, missing_ok: bool) -> Any:
    parts = _pointer(path)
    found = _parent(doc, parts, create=False) if parts else None
    if found is not None:
        node, key = found
        if isinstance(node, dict) and key in node:
            del node[key]
            return doc
        if isinstance(node, list):
            try:
                del node[_index(key, len(node))]
                return doc
            except PatchError:
                pass
    if not missing_ok:
        raise PatchError(f"path {path} does not exist")
    return doc


def apply(document: Any, operations: list[dict[str, Any]]) -> Any:
    """The patched copy of `document` (PatchError when an operation cannot apply)."""
    doc = copy.deepcopy(document)
    for operation in operations:
        op, path = operation.get("op"), operation.get("path") or ""
        if op == "add":
            doc = _add(doc, path, copy.deepcopy(operation.get("value")))
        elif op == "remove":
            doc = _remove(doc, path, missing_ok=True)
        elif op == "replace":
            _get(doc, path)   # replace needs an existing target
            doc = _add(_remove(doc, path, missing_ok=False), path, copy.deepcopy(operation.get("value"))) \
                if _pointer(path) else copy.deepcopy(operation.get("value"))
        elif op in ("move", "copy"):
            source = operation.get("from") or ""
            value = copy.deepcopy(_get(doc, source))
            if op == "move":
                doc = _remove(doc, source, missing_ok=False)
            doc = _add(doc, path, value)
        else:
            raise PatchError(f"unsupported operation {op!r}")
    return doc
