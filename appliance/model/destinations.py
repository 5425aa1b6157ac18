"""MeshService destinations (Kuma 2.14's real-resource outbounds), as pure functions of what the store holds.

A MeshService with a VIP (`status.vips`) is a destination per port (`spec.ports[]`): a transparent proxy gets
an outbound listener on `<vip>:<port>` for each (MeshServiceResource.AsOutbounds), and kuma-dp's DNS answers
the MeshService's hostnames (`status.addresses`) with the VIP. Kuma names them without unified naming
(kuma-dp's default) as:

- cluster, virtual host, HCM stat prefix and load assignment: the legacy name
  `<mesh>_<name>_<namespace>_<zone>_msvc_<port>` (destinationname.ResolveLegacyFromKRI);
- route configuration and the listener's `io.kuma.tags` `kuma.io/unified-name`: the KRI
  `kri_msvc_<mesh>_<zone>_<namespace>_<name>_<port name>`;
- the upstream SNI `a<fnv64a>.<name>.<port>.<mesh>.ms` (tls.SNIForResource), and the servers' SPIFFE ids
  from `spec.identities` (`spiffe://<mesh>/<kuma.io/service>`).

The endpoints of a port are the ready inbounds of the Dataplanes the MeshService selects that serve its
`targetPort` (fillLocalMeshServices). Which proxies get these outbounds depends on `Mesh.meshServices.mode`
(xds/generate/transparent.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from appliance.core.resources.model import Resource
from appliance.model import meshservices, names
from appliance.model.proxy import Endpoint, Inbound

TYPE = "MeshService"
SHORT_NAME = "msvc"
SNI_ABBREVIATION = "ms"
UNIFIED_NAME_TAG = "kuma.io/unified-name"   # a MeshService outbound listener's io.kuma.tags: its KRI


@dataclass(frozen=True)
class Destination:
    """One port of one MeshService."""
    name: str                             # the legacy name: cluster, virtual host, stat prefix
    kri: str                              # route configuration, listener metadata
    service: str                          # the MeshService's name
    labels: tuple[tuple[str, str], ...]   # its labels (what a targetRef by `labels` selects)
    port: int
    section: str                          # the port's name, its number when it has none (a targetRef's sectionName)
    protocol: str                         # appProtocol, tcp when unset
    sni: str
    identities: tuple[str, ...]           # the SPIFFE ids its servers may present
    vips: tuple[str, ...]
    tls_ready: bool                       # status.tls Ready: its proxies serve mTLS (PERMISSIVE calls them so)


def legacy_name(mesh: str, name: str, namespace: str, zone: str, port: int, short_name: str = SHORT_NAME) -> str:
    """ResolveLegacyFromKRI; `short_name` is the type's (`extsvc` for a MeshExternalService)."""
    return f"{mesh}_{name}_{namespace}_{zone}_{short_name}_{port}"


def kri(mesh: str, zone: str, namespace: str, name: str, section: str, short_name: str = SHORT_NAME) -> str:
    return f"kri_{short_name}_{mesh}_{zone}_{namespace}_{name}_{section}"


def _ports(ms: Resource) -> list[dict[str, Any]]:
    return [p for p in ms.spec.get("ports") or [] if isinstance(p, dict) and p.get("port")]


def _section(port: Mapping[str, Any]) -> str:
    """Port.GetName: its name, else its number."""
    return str(port.get("name") or port["port"])


def of_services(services: Iterable[Resource]) -> dict[str, Destination]:
    """Every port of every MeshService of one mesh, by legacy name (those without a VIP included: a route may
    still send to them)."""
    out: dict[str, Destination] = {}
    for ms in sorted(services, key=lambda s: s.name):
        labels = ms.labels
        display = labels.get("kuma.io/display-name") or ms.name
        namespace, zone = labels.get("k8s.kuma.io/namespace", ""), labels.get("kuma.io/zone", "")
        identities = tuple(sorted({names.spiffe_id(ms.mesh, str(i.get("value")))
                                   for i in ms.spec.get("identities") or []
                                   if isinstance(i, dict) and i.get("type") == "ServiceTag" and i.get("value")}))
        status = ms.content.get("status") or {}
        vips = tuple(str(v.get("ip")) for v in status.get("vips") or [] if v.get("ip"))
        for port in _ports(ms):
            number, section = int(port["port"]), _section(port)
            name = legacy_name(ms.mesh, display, namespace, zone, number)
            out[name] = Destination(
                name=name, kri=kri(ms.mesh, zone, namespace, display, section), service=ms.name,
                labels=tuple(sorted(labels.items())), port=number, section=section,
                protocol=str(port.get("appProtocol") or "tcp").lower(),
                sni=names.sni_for_resource(ms.name, ms.mesh, SNI_ABBREVIATION, number),
                identities=identities, vips=vips, tls_ready=(status.get("tls") or {}).get("status") == "Ready")
    return out


def uses_dataplane_labels(services: Iterable[Resource]) -> bool:
    return any(((ms.spec.get("selector") or {}).get("dataplaneLabels") is not None) for ms in services)


def endpoints(services: Iterable[Resource], inbounds: Mapping[str, tuple[Inbound, ...]],
              labels: Mapping[str, Mapping[str, str]]) -> dict[str, tuple[Endpoint, ...]]:
    """The ready endpoints of every MeshService port, by legacy name: `inbounds` and `labels` by Dataplane name."""
    out: dict[str, list[Endpoint]] = {}
    everyone = sorted(inbounds)
    # a generated MeshService selects by kuma.io/service: only the Dataplanes that serve it need a look
    by_service: dict[str, list[str]] = {}
    for dataplane in everyone:
        for service in sorted({i.tags.get(meshservices.SERVICE_TAG, "") for i in inbounds[dataplane]}):
            by_service.setdefault(service, []).append(dataplane)
    for ms in services:
        ports = _ports(ms)
        display = ms.labels.get("kuma.io/display-name") or ms.name
        namespace, zone = ms.labels.get("k8s.kuma.io/namespace", ""), ms.labels.get("kuma.io/zone", "")
        wanted = ((ms.spec.get("selector") or {}).get("dataplaneTags") or {}).get(meshservices.SERVICE_TAG)
        for dataplane in everyone if wanted is None else by_service.get(str(wanted), []):
            found = inbounds[dataplane]
            if not meshservices.selects(ms.spec, dataplane, labels.get(dataplane, {}), (i.tags for i in found)):
                continue
            for inbound in found:
                for port in ports:
                    if inbound.ready and meshservices.serves({"port": inbound.port, "name": inbound.name}, port):
                        name = legacy_name(ms.mesh, display, namespace, zone, int(port["port"]))
                        found_at = Endpoint(inbound.address, inbound.port, inbound.tags, dataplane)
                        out.setdefault(name, []).append(found_at)
    return {name: tuple(sorted(found, key=lambda e: (e.address, e.port))) for name, found in out.items()}
