"""Monitoring assignments (Kuma 2.14's MADS, pkg/mads): which proxies Prometheus should scrape, and how.

Pure: from meshes at one revision (MeshSnapshot + their Proxies) to assignments, as Kuma's snapshot
generator decides them:
- once any MeshMetric has a Prometheus backend, only MeshMetric counts: a proxy is listed for the client
  whose `clientId` its merged MeshMetric names (no clientId: Kuma's default client), with no labels (kuma-dp
  puts them on the metrics);
- otherwise every proxy of a mesh with Mesh.metrics enabled, with its tags as labels (mads.DataplaneLabels).
`http_sd` turns them into Prometheus' generic HTTP service discovery, with the labels kuma_sd would give.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from appliance.model.proxy import MeshSnapshot, Proxy
from appliance.policies.meshmetric import plugin as meshmetric
from appliance.policies.meshmetric.labels import dataplane_labels, sanitize_label_name
from appliance.policies.meshmetric.schema import DEFAULT_PATH, DEFAULT_PORT

ASSIGNMENT_TYPE = "type.googleapis.com/kuma.observability.v1.MonitoringAssignment"
DEFAULT_CLIENT = "_kuma-default-client"


@dataclass(frozen=True)
class Target:
    name: str
    scheme: str
    address: str
    metrics_path: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Assignment:
    mesh: str
    service: str
    targets: tuple[Target, ...]

    @property
    def resource_name(self) -> str:
        """mads.DataplaneAssignmentName"""
        return f"/meshes/{self.mesh}/dataplanes/{self.targets[0].name}"


Mesh = tuple[MeshSnapshot, list[Proxy]]


def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _service(proxy: Proxy) -> str:
    """IdentifyingName: the first inbound's service (a builtin gateway's own)."""
    return proxy.tag_sets[0].get("kuma.io/service", "") if proxy.tag_sets else ""


def _scheme(tls: dict[str, Any] | None) -> str:
    return "https" if (tls or {}).get("mode") in ("ProvidedTLS", "providedTLS") else "http"


def clients_with_meshmetric(meshes: Iterable[Mesh]) -> set[str]:
    """getMeshesWithMeshMetrics: the clients any MeshMetric's Prometheus backend names."""
    out = set()
    for snapshot, _ in meshes:
        for policy in snapshot.policies.get(meshmetric.KIND, ()):
            for backend in meshmetric.prometheus_backends(policy.spec.get("default") or {}):
                out.add(backend.get("clientId") or DEFAULT_CLIENT)
    return out


def assignments(meshes: list[Mesh], client_id: str = DEFAULT_CLIENT) -> list[Assignment]:
    """The assignments of a Prometheus client; a client no backend names gets the default client's (Kuma's
    FallBackNodeHash), as does every client while only Mesh.metrics is in use."""
    clients = clients_with_meshmetric(meshes)
    if client_id not in clients:
        client_id = DEFAULT_CLIENT
    out = []
    if clients:
        for snapshot, proxies in meshes:
            for proxy in proxies:
                conf = meshmetric.merged_conf(snapshot, proxy)
                for backend in meshmetric.prometheus_backends(conf):
                    if (backend.get("clientId") or DEFAULT_CLIENT) != client_id:
                        continue
                    target = Target(proxy.name, _scheme(backend.get("tls")),
                                    _host_port(proxy.address, int(backend.get("port") or DEFAULT_PORT)),
                                    backend.get("path") or DEFAULT_PATH)
                    out.append(Assignment(proxy.mesh, _service(proxy), (target,)))
        return sorted(out, key=lambda a: a.resource_name)
    for snapshot, proxies in meshes:
        for proxy in proxies:
            conf = meshmetric.legacy_conf(snapshot, proxy)
            if conf is None:
                continue
            labels = dataplane_labels(proxy.tag_sets)
            target = Target(proxy.name, _scheme(conf.get("tls")),
                            _host_port(proxy.address, int(conf.get("port") or DEFAULT_PORT)),
                            conf.get("path") or DEFAULT_PATH, labels)
            out.append(Assignment(proxy.mesh, _service(proxy), (target,)))
    return sorted(out, key=lambda a: a.resource_name)


def resource_json(assignment: Assignment) -> dict[str, Any]:
    """The MonitoringAssignment in an Any, as protojson with proto field names (Kuma's OrigName)."""
    return {"@type": ASSIGNMENT_TYPE, "mesh": assignment.mesh, "service": assignment.service, "targets": [
        {"name": t.name, "scheme": t.scheme, "address": t.address, "metrics_path": t.metrics_path,
         "labels": dict(sorted(t.labels.items()))} for t in assignment.targets]}


def version(found: list[Assignment]) -> str:
    body = json.dumps([resource_json(a) for a in found], sort_keys=True).encode()
    return hashlib.sha256(body).hexdigest()[:16]


def http_sd(found: list[Assignment]) -> list[dict[str, Any]]:
    """Prometheus' HTTP SD: one target group per target, labelled as kuma_sd labels its targets."""
    groups = []
    for a in found:
        for t in a.targets:
            labels = {"__meta_kuma_mesh": a.mesh, "__meta_kuma_service": a.service,
                      "__meta_kuma_dataplane": t.name, "__scheme__": t.scheme, "__metrics_path__": t.metrics_path}
            labels.update({f"__meta_kuma_label_{sanitize_label_name(k)}": v for k, v in sorted(t.labels.items())})
            groups.append({"targets": [t.address], "labels": labels})
    return groups
