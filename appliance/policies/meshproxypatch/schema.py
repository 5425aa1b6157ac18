"""MeshProxyPatch: add, remove or patch generated Envoy resources (Kuma v2.14.3).

Only admins may write one (ADMIN_WRITES): a patch can make Envoy read or write any file on the proxy's
host (access logs, file data sources, `path` fields) or send traffic anywhere, which no other policy
field allows a user to do.
"""
from __future__ import annotations

from typing import Any

from appliance.policies._common import STR, STR_MAP, Errors, arr, as_dict, as_list, enum, index, join, obj
from appliance.policies._targetref import (
    DATAPLANE, MESH, MESH_GATEWAY, MESH_SERVICE, MESH_SERVICE_SUBSET, MESH_SUBSET, TARGET_REF,
    top_level_deprecations, validate_target_ref,
)

KIND = "MeshProxyPatch"
PATH = "meshproxypatches"
SHORT_NAME = "mpp"
TARGETS = {"is_target_ref": True, "has_to": False, "has_from": False, "has_rules": False, "is_from_as_rules": False}
# Kuma's `+kuma:policy:order=9999`: after every other plugin, on what they built.
ORDER = 9999
HAS_PLUGIN = True
# Creating, changing or deleting one is for admins only; reading is open.
ADMIN_WRITES = True

ADD, REMOVE, PATCH = "Add", "Remove", "Patch"
ADD_FIRST, ADD_LAST, ADD_BEFORE, ADD_AFTER = "AddFirst", "AddLast", "AddBefore", "AddAfter"
_RESOURCE_OPS = (ADD, REMOVE, PATCH)
_FILTER_OPS = (REMOVE, PATCH, ADD_FIRST, ADD_BEFORE, ADD_AFTER, ADD_LAST)
# The order Kuma's "invalid operation" messages list them in.
_RESOURCE_OPS_LISTED = (ADD, PATCH, REMOVE)
_FILTER_OPS_LISTED = (ADD_FIRST, ADD_LAST, ADD_BEFORE, ADD_AFTER, PATCH, REMOVE)

# common_api.JsonPatchBlock; `value` is any JSON (x-kubernetes-preserve-unknown-fields).
_JSON_PATCH = obj({"from": STR, "op": enum("add", "remove", "replace", "move", "copy"), "path": STR, "value": {}},
                  required=("op", "path"))


def _mod(match: dict[str, Any], operations: tuple[str, ...], required: tuple[str, ...] = ("operation",)
         ) -> dict[str, Any]:
    return obj({"jsonPatches": arr(_JSON_PATCH), "match": obj(match), "operation": enum(*operations),
                "value": STR}, required=required)


_FILTER_MATCH = {"listenerName": STR, "listenerTags": STR_MAP, "name": STR, "origin": STR}
MODIFICATION_SCHEMA: dict[str, Any] = obj({
    "cluster": _mod({"name": STR, "origin": STR}, _RESOURCE_OPS),
    "httpFilter": _mod(_FILTER_MATCH, _FILTER_OPS),
    "listener": _mod({"name": STR, "origin": STR, "tags": STR_MAP}, _RESOURCE_OPS),
    "networkFilter": _mod(_FILTER_MATCH, _FILTER_OPS),
    "virtualHost": _mod({"name": STR, "origin": STR, "routeConfigurationName": STR}, _RESOURCE_OPS,
                        required=("match", "operation")),
})
SPEC_SCHEMA: dict[str, Any] = obj({
    "default": obj({"appendModifications": arr(MODIFICATION_SCHEMA)}),
    "targetRef": TARGET_REF,
}, required=("default",))

KINDS = ("cluster", "listener", "virtualHost", "networkFilter", "httpFilter")
_TOP_KINDS = (MESH, MESH_SUBSET, MESH_SERVICE, MESH_SERVICE_SUBSET, MESH_GATEWAY, DATAPLANE)
NAME_BEFORE = "must be defined. You need to pick a filter before which this one will be added"
NAME_AFTER = "must be defined. You need to pick a filter after which this one will be added"


def validate(spec: dict[str, Any]) -> Errors:
    out: Errors = []
    if spec.get("targetRef") is not None:
        out += validate_target_ref(spec["targetRef"], "spec.targetRef", _TOP_KINDS)
    path = "spec.default.appendModifications"
    modifications = as_list(as_dict(spec.get("default")).get("appendModifications"))
    if not modifications:
        out.append((path, "must not be empty"))
    for i, modification in enumerate(modifications):
        mod_path = index(path, i)
        present = [kind for kind in KINDS if as_dict(modification).get(kind) is not None]
        if len(present) != 1:
            out.append((mod_path, "exactly one modification can be defined at a time. "
                                  f"Currently, {len(present)} modifications are defined"))
            continue
        kind = present[0]
        out += _validate_mod(kind, join(mod_path, kind), as_dict(modification[kind]))
        out += _private_keys(join(mod_path, kind), as_dict(modification[kind]))
    return out


_NO_PRIVATE_KEY = ("must not hold a private key: every user may read this policy and the config views of the "
                   "proxies it patches; have Envoy read the key from a file on the proxy's host (filename)")


def _private_keys(path: str, mod: dict[str, Any]) -> Errors:
    """Secrets stay secret: a private key inline in a patch would be in API answers anyone can read."""
    from appliance.policies.meshproxypatch import _values

    out: Errors = []
    if isinstance(mod.get("value"), str) and _values.holds_private_key(mod["value"]):
        out.append((join(path, "value"), _NO_PRIVATE_KEY))
    for i, patch in enumerate(as_list(mod.get("jsonPatches"))):
        patch = as_dict(patch)
        last = str(patch.get("path") or "").rsplit("/", 1)[-1]
        if _values.holds_private_key({"": patch.get("value")}, "") or \
                _values.holds_private_key(patch.get("value") if isinstance(patch.get("value"), dict) else None, last):
            out.append((join(index(join(path, "jsonPatches"), i), "value"), _NO_PRIVATE_KEY))
    return out


def _operations_message(operations: tuple[str, ...]) -> str:
    return "invalid operation. Available operations: " + ", ".join(f'"{op}"' for op in operations)


def _validate_mod(kind: str, path: str, mod: dict[str, Any]) -> Errors:
    from appliance.policies.meshproxypatch import _values   # the Envoy types: loaded only when needed

    out: Errors = []
    operation, match, value = mod.get("operation"), mod.get("match"), mod.get("value")
    name_set = as_dict(match).get("name") is not None
    if kind in ("cluster", "listener", "virtualHost"):
        if operation == ADD:
            if kind == "virtualHost":
                if name_set:
                    out.append((join(path, "match.name"), "must not be defined"))
            elif match is not None:
                out.append((join(path, "match"), "must not be defined"))
            out += _value(kind, join(path, "value"), value, _values.check_added)
        elif operation == PATCH:
            out += _patch(kind, path, value, mod.get("jsonPatches"))
        elif operation == REMOVE:
            if value is not None:
                out.append((join(path, "value"), "must not be defined"))
        else:
            out.append((join(path, "operation"), _operations_message(_RESOURCE_OPS_LISTED)))
        return out
    if operation in (ADD_FIRST, ADD_LAST, ADD_BEFORE, ADD_AFTER):
        if operation == ADD_BEFORE and not name_set:
            out.append((join(path, "match.name"), NAME_BEFORE))
        if operation == ADD_AFTER and not name_set:
            out.append((join(path, "match.name"), NAME_AFTER))
        out += _value(kind, join(path, "value"), value, _values.check_added)
    elif operation == PATCH:
        if not name_set:
            out.append((join(path, "match.name"), "must be defined"))
        out += _patch(kind, path, value, mod.get("jsonPatches"))
    elif operation == REMOVE:
        if value is not None:
            out.append((join(path, "value"), "must not be defined"))
    else:
        out.append((join(path, "operation"), _operations_message(_FILTER_OPS_LISTED)))
    return out


def _value(kind: str, path: str, value: Any, check: Any) -> Errors:
    if value is None:
        return [(path, "must be defined")]
    problem = check(kind, value)
    return [(path, f"native Envoy resource is not valid: {problem}")] if problem else []


def _patch(kind: str, path: str, value: Any, json_patches: Any) -> Errors:
    from appliance.policies.meshproxypatch import _values

    patches = as_list(json_patches)
    field = path.rsplit(".", 1)[-1]
    if value is not None:
        if patches:
            return [(path, f"{field} must have only one type defined: value, jsonPatches")]
        problem = _values.check_patch(kind, value)
        return [(join(path, "value"), f"native Envoy resource is not valid: {problem}")] if problem else []
    if patches:
        return _json_patches(join(path, "jsonPatches"), patches)
    return [(path, f"{field} must have exactly one defined: value, jsonPatches")]


def _json_patches(path: str, patches: list[Any]) -> Errors:
    """jsonpatch validators.ValidateJsonPatchBlock."""
    out: Errors = []
    for i, patch in enumerate(patches):
        patch, item = as_dict(patch), index(path, i)
        op = patch.get("op")
        if op not in ("add", "remove", "replace", "move", "copy"):
            out.append((join(item, "op"), '"op" must be one of ["add", "remove", "replace", "move", "copy"]'))
        if op in ("move", "copy"):
            if patch.get("from") is None:
                out.append((join(item, "from"), '"from" must not be empty when "op" is one of ["move", "copy"]'))
        elif patch.get("from") is not None:
            out.append((join(item, "from"), '"from" is allowed only when "op" is one of ["move", "copy"]'))
        if op in ("add", "replace"):
            if "value" not in patch:
                out.append((join(item, "value"),
                            '"value" must not be empty when "op" is one of ["add", "replace"]'))
        elif "value" in patch:
            out.append((join(item, "value"), '"value" is allowed only when "op" is one of ["add", "replace"]'))
        if patch.get("path") is None:
            out.append((join(item, "path"), "must be defined"))
        elif patch["path"] in ("", "/") and op == "remove":
            out.append((join(item, "path"), "root path cannot be removed"))
    return out


def deprecations(spec: dict[str, Any]) -> list[str]:
    """Warnings Kuma returns with a successful create or update, and ours for what a value sets that no
    Envoy field takes (Kuma drops it without a word: nothing accepted may silently do nothing)."""
    from appliance.policies.meshproxypatch import _values

    out = top_level_deprecations(spec.get("targetRef"))
    path = "spec.default.appendModifications"
    for i, modification in enumerate(as_list(as_dict(spec.get("default")).get("appendModifications"))):
        for kind in KINDS:
            value = as_dict(as_dict(modification).get(kind)).get("value")
            if isinstance(value, str) and (ignored := _values.ignored_field(kind, value)):
                out.append(f"'{join(index(path, i), kind)}.value' sets a field Envoy does not have, which is "
                           f"ignored: {ignored}")
    return out


def mesh_defaults(mesh: str) -> list[tuple[str, dict[str, Any]]]:
    return []


def not_applied(spec: dict[str, Any]) -> list[str]:
    """Our `warnings`: a builtin gateway's routes reach Envoy by RDS, and virtualHost modifications edit only
    route configurations inline in a listener (as in Kuma): on a policy for gateways they change nothing."""
    top = as_dict(spec.get("targetRef"))
    for_gateways = top.get("kind") == "MeshGateway" or (
        top.get("kind") in ("Mesh", "MeshSubset") and as_list(top.get("proxyTypes")) == ["Gateway"])
    if not for_gateways:
        return []
    path = "spec.default.appendModifications"
    return [f"'{index(path, i)}.virtualHost' is stored but changes nothing on builtin gateway proxies: their routes "
            "are sent by RDS, and virtualHost modifications edit only route configurations inline in a listener "
            "(as in Kuma)"
            for i, modification in enumerate(as_list(as_dict(spec.get("default")).get("appendModifications")))
            if as_dict(modification).get("virtualHost") is not None]
