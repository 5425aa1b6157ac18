"""MeshTLS: the mTLS mode of inbounds and the TLS versions and ciphers of mesh traffic (Kuma v2.14.3)."""
from __future__ import annotations

from typing import Any

from appliance.policies import _tls
from appliance.policies._common import Errors, arr, as_dict, as_list, enum, index, join, obj
from appliance.policies._targetref import (
    DATAPLANE, MESH, MESH_SUBSET, TARGET_REF, affects_inbounds, top_level_deprecations, validate_target_ref,
)

KIND = "MeshTLS"
PATH = "meshtlses"
SHORT_NAME = "mtls"
TARGETS = {"is_target_ref": True, "has_to": False, "has_from": True, "has_rules": True, "is_from_as_rules": True}
# Kuma's `+kuma:policy:order`: after the routes (100, 200), before everything that edits inbound filter chains.
ORDER = 300
HAS_PLUGIN = True

STRICT, PERMISSIVE = "Strict", "Permissive"
_MODES = (STRICT, PERMISSIVE)   # Kuma's allModes, in the order its message lists them

_CONF = obj({
    "mode": enum(PERMISSIVE, STRICT),
    "tlsCiphers": _tls.CIPHERS_SCHEMA,
    "tlsVersion": _tls.VERSION_SCHEMA,
})
SPEC_SCHEMA: dict[str, Any] = obj({
    "from": arr(obj({"default": _CONF, "targetRef": TARGET_REF}, required=("targetRef",))),
    "rules": arr(obj({"default": _CONF})),
    "targetRef": TARGET_REF,
})

_TOP_KINDS = (MESH, MESH_SUBSET, DATAPLANE)


def validate(spec: dict[str, Any]) -> Errors:
    out: Errors = []
    froms, rules = as_list(spec.get("from")), as_list(spec.get("rules"))
    if spec.get("targetRef") is not None:
        out += validate_target_ref(spec["targetRef"], "spec.targetRef", _TOP_KINDS, inbound=affects_inbounds(spec))
    if rules and froms:
        out.append(("spec", "field 'from' must be empty when 'rules' is defined"))
    top_kind = as_dict(spec.get("targetRef")).get("kind") if spec.get("targetRef") is not None else MESH
    for i, rule in enumerate(rules):
        out += _validate_default(join(index("spec.rules", i), "default"), as_dict(rule).get("default"), top_kind)
    for i, item in enumerate(froms):
        path = index("spec.from", i)
        out += validate_target_ref(as_dict(item).get("targetRef"), join(path, "targetRef"), (MESH,))
        out += _validate_default(join(path, "default"), as_dict(item).get("default"), top_kind)
    return out


def _validate_default(path: str, conf: Any, top_kind: Any) -> Errors:
    conf = as_dict(conf)
    out: Errors = []
    if conf.get("mode") is not None and conf["mode"] not in _MODES:
        out.append((join(path, "mode"), _tls.must_be_one_of("mode", _MODES)))
    # Versions and ciphers are one setting for the whole mesh: outbounds take them from it too.
    ciphers = as_list(conf.get("tlsCiphers"))
    if ciphers and top_kind != MESH:
        out.append((join(path, "tlsCiphers"), "tlsCiphers can only be defined with top level targetRef kind: Mesh"))
    elif any(c not in _tls.CIPHERS for c in ciphers):
        out.append((join(path, "tlsCiphers"), _tls.must_be_one_of("tlsCiphers", _tls.CIPHERS)))
    if conf.get("tlsVersion") is not None:
        if top_kind != MESH:
            out.append((join(path, "tlsVersion"), "tlsVersion can only be defined with top level targetRef kind: Mesh"))
        else:
            out += _tls.validate_version(join(path, "tlsVersion"), conf["tlsVersion"])
    return out


def deprecations(spec: dict[str, Any]) -> list[str]:
    """Warnings Kuma returns with a successful create or update."""
    out = ["'from' field is deprecated, use 'rules' instead"] if as_list(spec.get("from")) else []
    return out + top_level_deprecations(spec.get("targetRef"))


def mesh_defaults(mesh: str) -> list[tuple[str, dict[str, Any]]]:
    return []
