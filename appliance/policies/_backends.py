"""Where the route policies (MeshHTTPRoute, MeshTCPRoute) send traffic: backendRefs as clusters.

A backendRef of kind MeshService is the service's own cluster; one of kind MeshServiceSubset is a cluster of
its own for the endpoints that carry its tags, named as Kuma names it (names.split_cluster). The generators
need the second kind before any proxy asks (their load assignments change with endpoints alone), so the
snapshot lists them all: `subset_clusters`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from appliance.model import names
from appliance.model.proxy import Policy
from appliance.policies import _envoy

if TYPE_CHECKING:   # policies import nothing of core/, which model/destinations reads from
    from appliance.model.destinations import Destination

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


def backend(ref: dict[str, Any], destinations: Mapping[str, Destination] | None = None) -> Backend | None:
    """A backendRef we can route to (MeshService, MeshServiceSubset); None for the kinds a Universal zone
    without MeshService resources has nothing behind (MeshExternalService, MeshMultiZoneService).
    A MeshService with a `port` (or `sectionName`) that names a port of a MeshService resource is that port's
    cluster (resolve.BackendRef), else the kuma.io/service's."""
    kind = ref.get("kind")
    if kind not in ("MeshService", "MeshServiceSubset") or not ref.get("name"):
        return None
    tags = ref.get("tags") or {} if kind == "MeshServiceSubset" else {}
    weight = 1 if ref.get("weight") is None else int(ref["weight"])
    if kind == "MeshService" and destinations and (ref.get("port") or ref.get("sectionName")):
        for destination in destinations.values():
            if destination.service == ref["name"] and (destination.port == int(ref.get("port") or 0)
                                                       or destination.section == ref.get("sectionName")):
                return Backend(destination.name, (), weight)
    return Backend(str(ref["name"]), tuple(sorted((k, str(v)) for k, v in tags.items() if k != names.SERVICE_TAG)),
                   weight)


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


def subset_cluster(base: cluster_pb2.Cluster, found: Backend, mesh: str) -> cluster_pb2.Cluster:
    """The cluster of part of a service: the service's own, renamed, asking the server by its tags (SNI)."""
    cluster = cluster_pb2.Cluster()
    cluster.CopyFrom(base)
    cluster.name = found.cluster
    alt = names.sanitize_metric(cluster.name)
    if alt != cluster.name:
        cluster.alt_stat_name = alt
    else:
        cluster.ClearField("alt_stat_name")
    if cluster.transport_socket.name == _envoy.TLS_TRANSPORT_SOCKET and cluster.type == cluster_pb2.Cluster.EDS:
        context = tls_pb2.UpstreamTlsContext()
        cluster.transport_socket.typed_config.Unpack(context)
        context.sni = names.sni(found.service, mesh, dict(found.tags))
        cluster.transport_socket.typed_config.CopyFrom(_envoy.pack(context))
    return cluster


def add_clusters(resources: _envoy.Resources, backends: Iterable[Backend], mesh: str) -> None:
    """The clusters of the parts of services that `backends` name, made from the services' own (which the
    generator added: `Matched.backend_services`)."""
    clusters = resources.setdefault(_envoy.CLUSTER, {})
    for found in backends:
        base = clusters.get(found.service)
        if found.cluster not in clusters and isinstance(base, cluster_pb2.Cluster):
            clusters[found.cluster] = subset_cluster(base, found, mesh)
