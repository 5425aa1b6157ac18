"""What a dataplane token allows: its claims checked against the proxy that presents it.

As Kuma 2.14 (pkg/xds/auth/universal/authenticator.go) every claim is optional and only a claim the
token carries restricts: Name, Mesh, Tags (every tag the token names must be on the Dataplane, and
each of the Dataplane's values of that tag must be allowed), Workload (the `kuma.io/workload` label).
Type is checked too, which Kuma 2.14 does not: a token issued for an ingress or egress proxy
authenticates no sidecar (nothing a token says is accepted and then ignored).
"""
from __future__ import annotations

from typing import Any, Iterable

WORKLOAD_LABEL = "kuma.io/workload"


class TokenMismatch(Exception):
    """The token is valid but not for this proxy; the message is Kuma's."""


def dataplane_tags(content: dict[str, Any]) -> dict[str, set[str]]:
    """Every value of every tag on the Dataplane's inbounds and gateway (Kuma's TagSet)."""
    networking = content.get("networking") or {}
    tag_maps: list[dict[str, Any]] = [inbound.get("tags") or {} for inbound in networking.get("inbound") or []]
    tag_maps.append((networking.get("gateway") or {}).get("tags") or {})
    tags: dict[str, set[str]] = {}
    for tag_map in tag_maps:
        for tag, value in tag_map.items():
            tags.setdefault(tag, set()).add(str(value))
    return tags


def _go_quoted(values: Iterable[str]) -> str:
    """A []string as Go's %q prints it: ["a" "b"]."""
    return "[" + " ".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "]"


def check_dataplane(claims: dict[str, Any], mesh: str, name: str, content: dict[str, Any],
                    labels: dict[str, str], proxy_type: str = "dataplane") -> None:
    """Raise TokenMismatch when the token's claims do not allow this Dataplane."""
    if claims.get("Name") and claims["Name"] != name:
        raise TokenMismatch(f"proxy name from requestor: {name} is different than in token: {claims['Name']}")
    if claims.get("Mesh") and claims["Mesh"] != mesh:
        raise TokenMismatch(f"proxy mesh from requestor: {mesh} is different than in token: {claims['Mesh']}")
    if claims.get("Type") and claims["Type"] != proxy_type:
        raise TokenMismatch(f"proxy type from requestor: {proxy_type} is different than in token: {claims['Type']}")
    have = dataplane_tags(content)
    for tag, allowed in sorted((claims.get("Tags") or {}).items()):
        if tag not in have:
            raise TokenMismatch(f'dataplane has no tag "{tag}" required by the token')
        for value in sorted(have[tag]):
            if value not in allowed:
                raise TokenMismatch(f'dataplane contains tag "{tag}" with value "{value}" which is not allowed with '
                                    f'this token. Allowed values in token are {_go_quoted(sorted(set(allowed)))}')
    workload = claims.get("Workload") or ""
    if workload:
        if WORKLOAD_LABEL not in labels:
            raise TokenMismatch("dataplane has no workload label required by the token")
        if labels[WORKLOAD_LABEL] != workload:
            raise TokenMismatch(f'dataplane workload "{labels[WORKLOAD_LABEL]}" is not allowed with this token. '
                                f'Allowed workload in token is "{workload}"')
