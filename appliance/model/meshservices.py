"""MeshServices generated from Dataplanes, their status and their virtual IPs (Kuma 2.14 on Universal), as
pure functions from what the store holds to what the leader writes (runtime/meshservice_sync.py).

- Generation (Kuma's meshservice/generate) while a Mesh's `meshServices.mode` is not Disabled: one MeshService
  per `kuma.io/service` of the Dataplanes' inbounds (names that are DNS-1035 labels only), selecting
  `dataplaneTags: {kuma.io/service: X}`, a port per inbound (`name` or the port number, `targetPort` the
  port, `appProtocol` from the inbound's protocol or `kuma.io/protocol`, else tcp), labelled
  `kuma.io/managed-by: meshservice-generator` beside the zone labels. When Dataplanes disagree on the ports,
  the stored ports win while one Dataplane still has them, else the first Dataplane's (by name). A generated
  MeshService no Dataplane serves is labelled `kuma.io/deletion-grace-period-started-at` and deleted once
  `meshService.deletionGracePeriod` has passed; with the mode back to Disabled, at once.
- Status (Kuma's meshservice/status) of every MeshService of this zone: `spec.state` Available while a
  selected Dataplane has every port's inbound ready, `spec.identities` (the selected proxies' services),
  `status.dataplaneProxies` (total, connected, healthy) and `status.tls` (Ready once every selected proxy
  has a certificate of the mesh's enabled CA; never Ready without mTLS).
- VIPs (Kuma's vip.Allocator): a MeshService without one gets the lowest address of `ipam.meshService.cidr`
  that no MeshService of any mesh holds, in `status.vips`; it keeps it for its life, across restarts.
  A MeshExternalService gets one of `ipam.meshExternalService.cidr` in `status.vip`, and its hostnames too.
"""
from __future__ import annotations

import copy
import ipaddress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Mapping

from appliance.core.resources.meta import is_dns1035_label
from appliance.core.resources.model import Resource
from appliance.model import hostnames
from appliance.model.vips import VipDomains
from appliance.core.resources.proto_validation import known_protocol

TYPE = "MeshService"
MANAGED_BY = "kuma.io/managed-by"
GENERATOR = "meshservice-generator"
GRACE_LABEL = "kuma.io/deletion-grace-period-started-at"
SERVICE_TAG = "kuma.io/service"
DEFAULT_CIDR = "241.0.0.0/8"
EXTERNAL_TYPE = "MeshExternalService"
DEFAULT_EXTERNAL_CIDR = "242.0.0.0/8"        # ipam.meshExternalService.cidr


@dataclass
class Write:
    """One store write: `op` create / update / delete of the MeshService `name` of `mesh`."""
    op: str
    mesh: str
    name: str
    content: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    version: int = 0
    type: str = "MeshService"


def mode(mesh_content: Mapping[str, Any]) -> str:
    return str((mesh_content.get("meshServices") or {}).get("mode") or "Disabled")


def is_local(labels: Mapping[str, str]) -> bool:
    """IsLocalMeshService: no origin label, or `zone`."""
    return labels.get("kuma.io/origin", "zone") == "zone"


def is_generated(res: Resource) -> bool:
    return is_local(res.labels) and res.labels.get(MANAGED_BY) == GENERATOR


# --- generation -------------------------------------------------------------------------------------------

def _port(inbound: Mapping[str, Any]) -> dict[str, Any]:
    number = int(inbound.get("port") or 0)
    protocol = str(inbound.get("protocol") or (inbound.get("tags") or {}).get("kuma.io/protocol") or "")
    return {"name": str(inbound.get("name") or number), "port": number, "targetPort": number,
            "appProtocol": protocol.lower() if known_protocol(protocol) else "tcp"}


def specs_of(dataplane: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The MeshService specs one Dataplane's inbounds ask for, by name (serviceTagMeshServicesForDataplane)."""
    ports: dict[str, list[dict[str, Any]]] = {}
    for inbound in (dataplane.get("networking") or {}).get("inbound") or []:
        service = str((inbound.get("tags") or {}).get(SERVICE_TAG) or "")
        if is_dns1035_label(service):
            ports.setdefault(service, []).append(_port(inbound))
    return {name: {"selector": {"dataplaneTags": {SERVICE_TAG: name}}, "ports": found}
            for name, found in ports.items()}


def _chosen(stored: dict[str, Any] | None, wanted: list[dict[str, Any]]) -> dict[str, Any] | None:
    """checkMeshServicesConsistency: the stored ports while a Dataplane agrees with them, else the first's."""
    if not wanted:
        return None
    if stored is not None and any(w["ports"] == stored.get("ports") for w in wanted):
        return stored
    return wanted[0]


def _labels(mesh: str, name: str, zone: str, existing: Mapping[str, str]) -> dict[str, str]:
    """desiredLabels, and the labels somebody else put on it kept."""
    out = {k: v for k, v in existing.items() if k != GRACE_LABEL}
    out.update({"kuma.io/mesh": mesh, "kuma.io/display-name": name, MANAGED_BY: GENERATOR,
                "kuma.io/env": "universal", "kuma.io/zone": zone, "kuma.io/origin": "zone"})
    return out


def go_time(moment: datetime) -> str:
    """Go's time.MarshalText of a UTC time (RFC 3339, fraction without trailing zeros)."""
    text = moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def generate(mesh: str, zone: str, mesh_mode: str, dataplanes: Iterable[Resource], services: Iterable[Resource],
             now: datetime, grace_s: float) -> list[Write]:
    """What the generator writes for one mesh this round (Generator.generate and, Disabled, its cleanup)."""
    generated = sorted((s for s in services if is_generated(s)), key=lambda s: s.name)
    if mesh_mode == "Disabled":
        return [Write("delete", mesh, s.name, version=s.version) for s in generated]
    wanted: dict[str, list[dict[str, Any]]] = {}
    for dp in sorted(dataplanes, key=lambda d: d.name):
        for name, spec in specs_of(dp.content).items():
            wanted.setdefault(name, []).append(spec)
    out: list[Write] = []
    for ms in generated:
        spec = _chosen(ms.spec, wanted.pop(ms.name, []))
        started = ms.labels.get(GRACE_LABEL)
        if spec is not None:
            labels = _labels(mesh, ms.name, zone, ms.labels)
            if spec["ports"] != ms.spec.get("ports") or started is not None or labels != ms.labels:
                content = copy.deepcopy(ms.content)
                content["spec"] = {**content.get("spec", {}), "selector": spec["selector"], "ports": spec["ports"]}
                out.append(Write("update", mesh, ms.name, content, labels, ms.version))
            continue
        since = _parse_time(started) if started is not None else None
        if since is None:
            out.append(Write("update", mesh, ms.name, ms.content, {**ms.labels, GRACE_LABEL: go_time(now)},
                             ms.version))
        elif (now - since).total_seconds() > grace_s:
            out.append(Write("delete", mesh, ms.name, version=ms.version))
    for name, specs in sorted(wanted.items()):
        if any(s.name == name for s in services):
            continue   # a MeshService of that name the generator does not own: left alone
        spec = _chosen(None, specs) or {}
        out.append(Write("create", mesh, name, {"spec": spec}, _labels(mesh, name, zone, {})))
    return out


# --- status and VIPs --------------------------------------------------------------------------------------

def selects(spec: Mapping[str, Any], name: str, labels: Mapping[str, str],
            inbound_tags: Iterable[Mapping[str, str]]) -> bool:
    """meshservice.MatchesDataplane: by dataplaneRef, by the tags of one inbound, or by the Dataplane's labels."""
    selector = spec.get("selector") or {}
    if selector.get("dataplaneRef") is not None:
        return (selector["dataplaneRef"] or {}).get("name") == name
    if selector.get("dataplaneTags") is not None:
        wanted = selector["dataplaneTags"] or {}
        return any(all(tags.get(k) == v for k, v in wanted.items()) for tags in inbound_tags)
    if selector.get("dataplaneLabels") is not None:
        wanted = (selector["dataplaneLabels"] or {}).get("matchLabels") or {}
        return all(labels.get(k) == v for k, v in wanted.items())
    return False


def _inbounds(dp: Resource) -> list[dict[str, Any]]:
    return [i for i in (dp.content.get("networking") or {}).get("inbound") or [] if isinstance(i, dict)]


def serves(inbound: Mapping[str, Any], port: Mapping[str, Any]) -> bool:
    """MatchInboundWithMeshServicePort: a number targets the inbound's port, a name the inbound's name."""
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, str) and not target.isdigit():
        return target == inbound.get("name")
    return target is not None and int(target) == int(inbound.get("port") or 0)


@dataclass(frozen=True)
class Proxy:
    """A Dataplane with what its insight says: online, and the CA backend its certificate is from."""
    dataplane: Resource
    online: bool
    issued_backend: str


def status(ms: Resource, proxies: list[Proxy], mtls_enabled: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The spec and status the status updater gives `ms`: state, identities, dataplaneProxies, tls."""
    ports = ms.spec.get("ports") or []
    selected = [p for p in proxies if selects(ms.spec, p.dataplane.name, p.dataplane.labels,
                                              ((i.get("tags") or {}) for i in _inbounds(p.dataplane)))]
    healthy = sum(1 for p in selected if all(
        any((i.get("state") or "Ready") == "Ready" and serves(i, port) for i in _inbounds(p.dataplane))
        for port in ports))
    counts = {"connected": sum(1 for p in selected if p.online), "healthy": healthy, "total": len(selected)}
    services = sorted({str((i.get("tags") or {}).get(SERVICE_TAG)) for p in selected
                       for i in _inbounds(p.dataplane) if (i.get("tags") or {}).get(SERVICE_TAG)})
    old_status = ms.content.get("status") or {}
    if not mtls_enabled:
        tls = "NotReady"
    elif (old_status.get("tls") or {}).get("status") == "Ready":
        tls = "Ready"   # once Ready, it stays so (as Kuma's buildTLS)
    else:
        tls = "Ready" if all(p.issued_backend for p in selected) else "NotReady"
    spec = {**ms.spec, "state": "Available" if healthy else "Unavailable",
            "identities": [{"type": "ServiceTag", "value": s} for s in services]}
    new_status = {**old_status, "dataplaneProxies": {k: v for k, v in counts.items() if v},
                  "tls": {"status": tls}}
    return spec, new_status


def with_hostnames(status_: dict[str, Any], generated: hostnames.Generated | None) -> dict[str, Any]:
    """`status.addresses` and `status.hostnameGenerators` from the HostnameGenerators (left out when none)."""
    out = {k: v for k, v in status_.items() if k not in ("addresses", "hostnameGenerators")}
    if generated is not None and generated.addresses:
        out["addresses"] = generated.addresses
    if generated is not None and generated.generators:
        out["hostnameGenerators"] = generated.generators
    return out


def addresses_of(ms: Resource) -> list[str]:
    """The hostnames in its status."""
    return [str(a["hostname"]) for a in (ms.content.get("status") or {}).get("addresses") or [] if a.get("hostname")]


def domains(services: Iterable[Resource]) -> tuple[VipDomains, ...]:
    """Domains() of MeshServices and MeshExternalServices: each one with a VIP answers at its hostnames
    (kuma-dp's DNS serves them to proxies with an outbound at that VIP)."""
    out = []
    for ms in sorted(services, key=lambda s: (s.type, s.name)):
        vips = vips_of(ms)
        if vips:
            out.append(VipDomains(vips[0], tuple(addresses_of(ms))))
    return tuple(out)


def vips_of(res: Resource) -> list[str]:
    """A MeshService's `status.vips`, a MeshExternalService's `status.vip` (ResourceHoldingVIPs.VIPs)."""
    status_ = res.content.get("status") or {}
    if res.type == EXTERNAL_TYPE:
        ip = (status_.get("vip") or {}).get("ip")
        return [str(ip)] if ip else []
    return [str(v.get("ip")) for v in status_.get("vips") or [] if v.get("ip")]


def free_vips(services: Iterable[Resource], cidr: str = DEFAULT_CIDR) -> Iterator[str]:
    """The addresses of `cidr` no MeshService holds, lowest first (Kuma's IPAM)."""
    taken = {v for s in services for v in vips_of(s)}
    return (str(a) for a in ipaddress.ip_network(cidr, strict=False) if str(a) not in taken)
