"""Where the route policies (MeshHTTPRoute, MeshTCPRoute) send traffic: backendRefs as clusters.

A backendRef of kind MeshService is the service's own cluster; one of kind MeshServiceSubset is a cluster of
its own for the endpoints that carry its tags, named as Kuma names it (names.split_cluster). The generators
need the second kind before any proxy asks (their load assignments change with endpoints alone), so the
snapshot lists them all: `subset_clusters`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from appliance.model import names
from appliance.model.proxy import Policy

ROUTE_KINDS = ("MeshHTTPRoute", "MeshTCPRoute")


@dataclass(frozen=True)
class Backend:
    """Part or all of a service, and the share of traffic it gets."""
    service: str
    tags: tuple[tuple[str, str], ...]    # sorted; empty = the whole service
    weight: int

    @property
    def cluster(self) -> str:
        return names.split_cluster(self.service, dict(self.tags))


def backend(ref: dict[str, Any]) -> Backend | None:
    """A backendRef we can route to (MeshService, MeshServiceSubset); None for the kinds a Universal zone
    without MeshService resources has nothing behind (MeshExternalService, MeshMultiZoneService)."""
    kind = ref.get("kind")
    if kind not in ("MeshService", "MeshServiceSubset") or not ref.get("name"):
        return None
    tags = ref.get("tags") or {} if kind == "MeshServiceSubset" else {}
    weight = ref.get("weight")
    return Backend(str(ref["name"]), tuple(sorted((k, str(v)) for k, v in tags.items() if k != names.SERVICE_TAG)),
                   1 if weight is None else int(weight))


def _refs(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for item in spec.get("to") or []:
        for rule in item.get("rules") or []:
            conf = rule.get("default") or {}
            yield from conf.get("backendRefs") or []
            for found in conf.get("filters") or []:
                mirror = found.get("requestMirror") or {}
                if found.get("type") == "RequestMirror" and mirror.get("backendRef"):
                    yield mirror["backendRef"]


def subset_clusters(policies: dict[str, tuple[Policy, ...]]) -> dict[str, tuple[str, tuple[tuple[str, str], ...]]]:
    """Every part of a service that some route of the mesh sends to: cluster name -> (service, tags)."""
    out = {}
    for kind in ROUTE_KINDS:
        for policy in policies.get(kind, ()):
            for ref in _refs(policy.spec):
                found = backend(ref)
                if found is not None and found.tags:
                    out[found.cluster] = (found.service, found.tags)
    return out
