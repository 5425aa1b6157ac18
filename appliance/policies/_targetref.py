"""The targetRef every policy shares: its schema and Kuma's rules for it.

The rules are pkg/core/resources/apis/mesh/validators.go (ValidateTargetRef, ValidateMatch), the
schema is api/common/v1alpha1 as kubebuilder renders it into every policy's rest.yaml.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from appliance.policies._common import (
    Errors, INT, STR, STR_MAP, arr, as_dict, as_list, as_str, dns1123_subdomain_errors, enum, join, key, obj,
)

MESH = "Mesh"
DATAPLANE = "Dataplane"
MESH_SUBSET = "MeshSubset"
MESH_GATEWAY = "MeshGateway"
MESH_SERVICE = "MeshService"
MESH_EXTERNAL_SERVICE = "MeshExternalService"
MESH_MULTI_ZONE_SERVICE = "MeshMultiZoneService"
MESH_SERVICE_SUBSET = "MeshServiceSubset"
MESH_HTTP_ROUTE = "MeshHTTPRoute"

_SCHEMA_KINDS = (MESH, MESH_SUBSET, MESH_GATEWAY, MESH_SERVICE, MESH_EXTERNAL_SERVICE,
                 MESH_MULTI_ZONE_SERVICE, MESH_SERVICE_SUBSET, MESH_HTTP_ROUTE, DATAPLANE)

_REF_PROPERTIES: dict[str, Any] = {
    "kind": enum(*_SCHEMA_KINDS),
    "labels": STR_MAP,
    "mesh": STR,
    "name": STR,
    "namespace": STR,
    "proxyTypes": arr(enum("Sidecar", "Gateway")),
    "sectionName": STR,
    "tags": STR_MAP,
}
TARGET_REF = obj(_REF_PROPERTIES, required=("kind",))
# common_api.BackendRef: a targetRef plus where and how much traffic goes.
BACKEND_REF = obj({**_REF_PROPERTIES, "port": INT,
                   "weight": {"type": "integer", "default": 1, "minimum": 0}}, required=("kind",))

# common_api.Match: selects inbound traffic by the client's identity or the SNI it sent.
MATCH = obj({
    "sni": obj({"type": enum("Exact"), "value": STR}, required=("type", "value")),
    "spiffeID": obj({"type": enum("Exact", "Prefix"), "value": STR}, required=("type", "value")),
})

_NAME_CHARACTERS = re.compile(r"[0-9a-z.\-_]*")
_TAG_NAME_CHARACTERS = re.compile(r"[a-zA-Z0-9.\-_:/]*")
_TAG_VALUE_CHARACTERS = re.compile(r"[a-zA-Z0-9.\-_:]*")
_SELECTOR_CHARACTERS = re.compile(r"[a-zA-Z0-9.\-_:/]*|\*")


def affects_inbounds(spec: dict[str, Any]) -> bool:
    """inbound.AffectsInbounds: a policy with `rules` or `from` may target a Dataplane's section."""
    return bool(as_list(spec.get("rules"))) or bool(as_list(spec.get("from")))


def includes_gateways(ref: Any) -> bool:
    """common_api.IncludesGateways: whether a top-level targetRef can select builtin gateways."""
    ref = as_dict(ref)
    kind, proxy_types = ref.get("kind"), as_list(ref.get("proxyTypes"))
    if kind in (MESH, MESH_SUBSET):
        return not proxy_types or "Gateway" in proxy_types
    return kind in (MESH_GATEWAY, MESH_HTTP_ROUTE)


def top_level_deprecations(ref: Any) -> list[str]:
    """validators.TopLevelTargetRefDeprecations: the kinds that Dataplane and to[] replace."""
    kind = as_dict(ref).get("kind") if ref is not None else None
    if kind in (MESH_SERVICE, MESH_SERVICE_SUBSET, MESH_SUBSET):
        return [f"{kind} value for 'targetRef.kind' is deprecated, use {DATAPLANE} with labels instead"]
    if kind == MESH_HTTP_ROUTE:
        return [f"{MESH_HTTP_ROUTE} value for 'targetRef.kind' is deprecated, "
                f"use {MESH_HTTP_ROUTE} in spec.to[].targetRef"]
    return []


def validate_target_ref(
    ref: Any,
    path: str,
    supported: Sequence[str],
    *,
    gateway_listener_tags: bool = False,
    inbound: bool = False,
    allowed_invalid_names: Sequence[str] = (),
    unsupported_message: str = "",
) -> Errors:
    """mesh.ValidateTargetRef with its options; `path` is where the targetRef sits."""
    ref = as_dict(ref)
    kind = as_str(ref.get("kind"))
    if kind == "":
        return [(join(path, "kind"), "must be defined")]
    if kind not in supported:
        return [(join(path, "kind"), unsupported_message or f"value '{kind}' is not supported")]

    name, labels = as_str(ref.get("name")), ref.get("labels") or {}
    namespace, section = as_str(ref.get("namespace")), as_str(ref.get("sectionName"))
    out: Errors = []

    def disallow(*fields: str) -> None:
        for field in fields:
            if ref.get(field):
                out.append((join(path, field), f"must not be set with kind {kind}"))

    def name_characters() -> None:
        if name not in allowed_invalid_names and not _NAME_CHARACTERS.fullmatch(name):
            out.append((join(path, "name"),
                        "invalid characters: must consist of lower case alphanumeric characters, '-', '.' and '_'."))

    def name_or_labels(either: str) -> None:
        if not labels and not name:
            out.append((path, f"name or labels must be set when kind is {kind}"))
        if labels and (name or namespace):
            out.append((join(path, "labels"), either))

    def proxy_types() -> None:
        if ref.get("proxyTypes") == []:
            out.append((join(path, "proxyTypes"), "must be undefined or have at least one element"))

    if kind == MESH:
        if name:
            out.append((join(path, "name"), f"using name with kind {kind} is not yet supported"))
        disallow("mesh", "tags", "labels", "namespace", "sectionName")
        proxy_types()
    elif kind == DATAPLANE:
        disallow("tags", "mesh", "proxyTypes")
        if labels and (name or namespace):
            out.append((join(path, "labels"), "either labels or name and namespace must be specified"))
        if not inbound and section:
            out.append((join(path, "sectionName"), "can only be used with inbound policies"))
    elif kind == MESH_SUBSET:
        disallow("name", "mesh")
        out += tag_errors(join(path, "tags"), ref.get("tags"), selector=False)
        disallow("labels", "namespace", "sectionName")
        proxy_types()
    elif kind in (MESH_SERVICE, MESH_HTTP_ROUTE):
        name_characters()
        disallow("mesh", "tags", "proxyTypes")
        if kind == MESH_HTTP_ROUTE:
            disallow("sectionName")
        name_or_labels("either labels or name and namespace must be specified")
    elif kind in (MESH_SERVICE_SUBSET, MESH_GATEWAY):
        if not name:
            out.append((join(path, "name"), f"must be set when kind is {kind}"))
        name_characters()
        disallow("mesh", "proxyTypes")
        out += tag_errors(join(path, "tags"), ref.get("tags"), selector=True)
        if kind == MESH_GATEWAY and not gateway_listener_tags:
            disallow("tags")
        disallow("labels", "namespace", "sectionName")
    elif kind == MESH_EXTERNAL_SERVICE:
        name_characters()
        disallow("mesh", "tags", "proxyTypes")
        name_or_labels("either labels or name must be specified")
        disallow("sectionName")
    return out


def tag_errors(path: str, tags: Any, *, selector: bool) -> Errors:
    """mesh.ValidateTags (selector=False) and mesh.ValidateSelector (selector=True), keys sorted."""
    out: Errors = []
    tags = as_dict(tags)
    for name in sorted(tags):
        value = tags[name] if isinstance(tags[name], str) else ""
        if name == "":
            out.append((path, "tag name must be non-empty"))
        if not _TAG_NAME_CHARACTERS.fullmatch(name):
            out.append((key(path, name),
                        "tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores"))
        if value == "":
            out.append((key(path, name), "tag value must be non-empty"))
        if selector and not _SELECTOR_CHARACTERS.fullmatch(value):
            out.append((key(path, name), "tag value must consist of alphanumeric characters, dots, dashes, "
                                         'slashes and underscores or be "*"'))
        if not selector and not _TAG_VALUE_CHARACTERS.fullmatch(value):
            out.append((key(path, name),
                        "tag value must consist of alphanumeric characters, dots, dashes and underscores"))
    return out


def validate_backend_ref(ref: Any, path: str) -> Errors:
    """validators.ValidateBackendRef: a MeshMultiZoneService has no single port to fall back on."""
    ref = as_dict(ref)
    if ref.get("kind") == MESH_MULTI_ZONE_SERVICE and ref.get("port") is None:
        return [(join(path, "port"), "must be defined with kind MeshMultiZoneService")]
    return []


def validate_match(match: Any, path: str) -> Errors:
    """mesh.ValidateMatch: a well-formed SPIFFE ID and an SNI that is a DNS name."""
    match = as_dict(match)
    out: Errors = []
    spiffe = match.get("spiffeID")
    if spiffe is not None:
        problem = spiffe_id_error(as_str(as_dict(spiffe).get("value")))
        if problem:
            out.append((join(path, "spiffeID"), f"must be a valid Spiffe ID: {problem}"))
    sni = match.get("sni")
    if sni is not None:
        sni = as_dict(sni)
        sni_type = as_str(sni.get("type"))
        if sni_type == "":
            out.append((join(path, "sni.type"), "must be set"))
        elif sni_type != "Exact":
            out.append((join(path, "sni.type"), f'unrecognized type "{sni_type}", supported values are: Exact'))
        value = as_str(sni.get("value"))
        if value == "":
            out.append((join(path, "sni.value"), "must be set"))
        else:
            out += [(join(path, "sni.value"), problem) for problem in dns1123_subdomain_errors(value)]
    return out


_TRUST_DOMAIN = re.compile(r"[a-z0-9.\-_]")
_PATH_SEGMENT = re.compile(r"[a-zA-Z0-9.\-_]")


def spiffe_id_error(value: str) -> str:
    """go-spiffe's spiffeid.FromString, reduced to its error text ("" when the ID is valid)."""
    scheme = "spiffe://"
    if value == "":
        return "cannot be empty"
    if not value.startswith(scheme):
        return "scheme is missing or invalid"
    rest = value[len(scheme):]
    domain, slash, id_path = rest.partition("/")
    if any(not _TRUST_DOMAIN.fullmatch(c) for c in domain):
        return "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores"
    if domain == "":
        return "trust domain is missing"
    if not slash:
        return ""
    segments = id_path.split("/")
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "":
            return "path cannot have a trailing slash" if last else "path cannot contain empty segments"
        if segment in (".", ".."):
            return "path cannot contain dot segments"
        if any(not _PATH_SEGMENT.fullmatch(c) for c in segment):
            return "path segment characters are limited to letters, numbers, dots, dashes, and underscores"
    return ""


def validate_rule_matches(matches: list[Any], match_path: Callable[[int], str]) -> tuple[Errors, bool]:
    """A rule's `matches[]`: each needs a spiffeID or an SNI, spiffeID with type Exact or Prefix.

    Returns the errors and whether any match is by spiffeID. `match_path(i)` is where match i is
    reported: Kuma's policies disagree on it, and we keep each one's paths.
    """
    out: Errors = []
    has_spiffe_id = False
    for i, match in enumerate(matches):
        path, match = match_path(i), as_dict(match)
        out += validate_match(match, path)
        if match.get("spiffeID") is None and match.get("sni") is None:
            out.append((path, "must specify at least one of 'spiffeID' or 'sni'"))
            continue
        if match.get("spiffeID") is not None:
            has_spiffe_id = True
            kind = as_dict(match["spiffeID"]).get("type") or ""
            if kind == "":
                out.append((join(path, "spiffeID.type"), "must be set"))
            elif kind not in ("Exact", "Prefix"):
                out.append((join(path, "spiffeID.type"),
                            f'unrecognized type "{kind}", supported values are: Exact, Prefix'))
    return out, has_spiffe_id
