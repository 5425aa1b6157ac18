"""Virtual IPs of a mesh's services (Kuma's pkg/dns/vips and VIPsAllocator), as pure functions.

Every `kuma.io/service` of a mesh (from its Dataplanes' inbounds and its ExternalServices) gets one address
from `dnsServer.CIDR` (240.0.0.0/4); an ExternalService's host name gets one too. The leader keeps them in
the global Config resource `kuma-<mesh>-dns-vips`, in Kuma's JSON, so that every control-plane instance
(and a restarted one) sees the same addresses:

    {"0:backend":{"address":"240.0.0.0","outbounds":[{"Port":0,"TagSet":{"kuma.io/service":"backend"},"Origin":"service"}]}}

The key is Kuma's HostnameEntry text, `<type>:<name>` (0 service, 1 host, 2 fqdn: a crossMesh MeshGateway
listener's hostname, in every mesh). An entry keeps its address
while it exists; a new one takes the lowest free address of the range (Kuma's IPAM), in entry order.
Proxies with transparent proxying get an outbound per VIP (`vip_outbounds`) and names for them (`<service>.mesh`).
"""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

SERVICE, HOST, FQDN = 0, 1, 2
CONFIG_NAME = "kuma-{mesh}-dns-vips"
DEFAULT_CIDR = "240.0.0.0/4"
# dnsServer.domain and dnsServer.serviceVipPort: Kuma's defaults (config.kuma lists them as not applied)
DOMAIN = "mesh"
VIP_PORT = 80
_SERVICE_ORIGIN = "service"          # Kuma's metadata.OriginService
_RESERVED_PORT = 49151               # an inbound on this port is a service without one: no VIP (Kuma)

Entry = tuple[int, str]              # (type, name), ordered as Kuma's HostnameEntry.Less


@dataclass(frozen=True)
class OutboundEntry:
    port: int
    tags: tuple[tuple[str, str], ...]
    origin: str

    def key(self) -> str:
        """Kuma's OutboundEntry.String(): what tells two entries apart."""
        return f"{self.origin}={self.port}{{{','.join(f'{k}={v}' for k, v in sorted(self.tags))}}}"


@dataclass(frozen=True)
class VirtualOutbound:
    address: str
    outbounds: tuple[OutboundEntry, ...]


View = dict[Entry, VirtualOutbound]


@dataclass(frozen=True)
class VipOutbound:
    """A listener a transparent proxy gets: `address:port` to the service of `tags`."""
    address: str
    port: int
    service: str
    tags: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class VipDomains:
    address: str
    domains: tuple[str, ...]


def config_name(mesh: str) -> str:
    return CONFIG_NAME.format(mesh=mesh)


def mesh_of_config(name: str) -> str | None:
    """The mesh whose VIPs a Config of this name holds (None: another Config)."""
    prefix, suffix = "kuma-", "-dns-vips"
    if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix):
        return name[len(prefix):-len(suffix)]
    return None


def _add(view: dict[Entry, list[OutboundEntry]], entry: Entry, outbound: OutboundEntry) -> None:
    """VirtualOutboundMeshView.Add: one outbound per port; a second one on a taken port is left out."""
    found = view.setdefault(entry, [])
    if any(o.port == outbound.port for o in found):
        return
    found.append(outbound)
    found.sort(key=lambda o: o.port)


def wanted(dataplanes: Iterable[Mapping[str, Any]], external_services: Iterable[tuple[str, Mapping[str, Any]]],
           service_vips: bool = True) -> dict[Entry, tuple[OutboundEntry, ...]]:
    """The entries a mesh needs now, without addresses: from its Dataplanes' contents and its
    ExternalServices as (name, content), both in name order (buildVirtualOutboundMeshView)."""
    view: dict[Entry, list[OutboundEntry]] = {}
    for content in dataplanes:
        for inbound in (content.get("networking") or {}).get("inbound") or []:
            service = str((inbound.get("tags") or {}).get("kuma.io/service") or "")
            if inbound.get("state") == "Ignored" or inbound.get("port") == _RESERVED_PORT or not service:
                continue
            if service_vips:
                _add(view, (SERVICE, service), OutboundEntry(0, (("kuma.io/service", service),), _SERVICE_ORIGIN))
    for name, content in external_services:
        service = str((content.get("tags") or {}).get("kuma.io/service") or "")
        host, _, port_text = str((content.get("networking") or {}).get("address") or "").rpartition(":")
        port = int(port_text) if port_text.isdigit() else 0
        tags = (("kuma.io/service", service),)
        if service_vips and service:
            _add(view, (SERVICE, service), OutboundEntry(port, tags, _SERVICE_ORIGIN))
        if host and not (content.get("networking") or {}).get("disableHostDNSEntry"):
            _add(view, (HOST, host.strip("[]")), OutboundEntry(port, tags, f"external-service:{name}"))
    return {entry: tuple(outbounds) for entry, outbounds in view.items()}


def cross_mesh_gateways(gateways: Iterable[tuple[str, str, Mapping[str, Any]]],
                        domain: str = DOMAIN) -> dict[Entry, tuple[OutboundEntry, ...]]:
    """The entries every mesh gets for the crossMesh listeners of the MeshGateways of all meshes, given as
    (mesh, name, content) in mesh and name order (Kuma's addFromMeshGateway): the listener's hostname, or
    `internal.<gateway>.<mesh>.mesh` when it has none or a wildcard, on the listener's port, to the gateway's
    selector tags with `kuma.io/mesh` (over them the MeshGateway's tags and the listener's)."""
    view: dict[Entry, list[OutboundEntry]] = {}
    for mesh, name, content in gateways:
        for listener in (content.get("conf") or {}).get("listeners") or []:
            # only HTTP ones are served across meshes (the API warns about the others)
            if not isinstance(listener, dict) or not listener.get("crossMesh") or listener.get("protocol") != "HTTP":
                continue
            hostname = str(listener.get("hostname") or "")
            if not hostname or "*" in hostname:
                hostname = f"internal.{name}.{mesh}.{domain}"
            for selector in content.get("selectors") or []:
                tags = {**(content.get("tags") or {}), **(listener.get("tags") or {}), "kuma.io/mesh": mesh,
                        **((selector or {}).get("match") or {})}
                _add(view, (FQDN, hostname), OutboundEntry(
                    int(listener.get("port") or 0), tuple(sorted((k, str(v)) for k, v in tags.items())),
                    f"mesh-gateway:{mesh}:{name}:{hostname}"))
    return {entry: tuple(outbounds) for entry, outbounds in view.items()}


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def allocate(old: View, wanted_now: Mapping[Entry, tuple[OutboundEntry, ...]], cidr: str = DEFAULT_CIDR) -> View:
    """The new view: every wanted entry keeps the address it had in `old`; the others take the lowest free
    addresses of `cidr`, in entry order. A host entry that is an IP address is its own address. Entries
    that are no longer wanted are dropped, and their addresses free again. Raises ValueError when the
    range is exhausted."""
    network = ipaddress.ip_network(cidr, strict=False)
    taken = {old[e].address for e in wanted_now if e in old and old[e].address
             and not (e[0] == HOST and _is_ip(e[1])) and ipaddress.ip_address(old[e].address) in network}
    next_free = int(network.network_address)
    out: View = {}
    for entry in sorted(wanted_now):
        if entry[0] == HOST and _is_ip(entry[1]):
            address = entry[1]
        elif entry in old and old[entry].address in taken:
            address = old[entry].address
        else:
            while str(ipaddress.ip_address(next_free)) in taken:
                next_free += 1
            if next_free > int(network.broadcast_address):
                raise ValueError(f"no virtual IP left in {cidr}")
            address = str(ipaddress.ip_address(next_free))
            taken.add(address)
        out[entry] = VirtualOutbound(address, wanted_now[entry])
    return out


def to_json(view: View) -> str:
    """Kuma's JSON of the view (Go's json.Marshal: map keys sorted, struct fields in declaration order)."""
    def outbound(o: OutboundEntry) -> dict[str, Any]:
        return {"Port": o.port, "TagSet": dict(sorted(o.tags)) or None, "Origin": o.origin}
    body = {}
    for key, entry in sorted((f"{t}:{n}", e) for (t, n), e in view.items()):
        vo: dict[str, Any] = {}
        if entry.address:
            vo["address"] = entry.address
        if entry.outbounds:
            vo["outbounds"] = [outbound(o) for o in entry.outbounds]
        body[key] = vo
    return json.dumps(body, separators=(",", ":"))


def from_json(text: str) -> View:
    """A stored view; an unreadable one is empty (its entries get addresses anew)."""
    try:
        body = json.loads(text or "{}")
    except ValueError:
        return {}
    out: View = {}
    for key, vo in (body or {}).items() if isinstance(body, dict) else ():
        kind, _, name = str(key).partition(":")
        if not kind.isdigit() or not isinstance(vo, dict):
            continue
        outbounds = tuple(OutboundEntry(int(o.get("Port") or 0), tuple(sorted((o.get("TagSet") or {}).items())),
                                        str(o.get("Origin") or "")) for o in vo.get("outbounds") or [])
        out[(int(kind), name)] = VirtualOutbound(str(vo.get("address") or ""), outbounds)
    return out


def _service(tags: tuple[tuple[str, str], ...]) -> str:
    return dict(tags).get("kuma.io/service", "")


def vip_outbounds(view: View, domain: str = DOMAIN,
                  vip_port: int = VIP_PORT) -> tuple[tuple[VipDomains, ...], tuple[VipOutbound, ...]]:
    """Kuma's topology.VIPOutbounds: the names of each address and the outbounds a transparent proxy gets.
    A service answers at `<service>.mesh` (and with `_` as `.`) on port 80, and on its own port when it
    has one (an ExternalService's); a host name on its port, and on 80 too."""
    domains: list[VipDomains] = []
    outbounds: list[VipOutbound] = []
    for entry in sorted(view):
        kind, name = entry
        vo = view[entry]
        if not vo.address or not vo.outbounds:
            continue
        if kind in (HOST, FQDN):
            if not _is_ip(name):
                domains.append(VipDomains(vo.address, (name,)))
            seen_vip_port = False
            for ob in vo.outbounds:
                seen_vip_port = seen_vip_port or ob.port == vip_port
                if ob.port:
                    outbounds.append(VipOutbound(vo.address, ob.port, _service(ob.tags), ob.tags))
            if kind == HOST and not seen_vip_port and not _is_ip(name):
                first = vo.outbounds[0]
                outbounds.append(VipOutbound(vo.address, vip_port, _service(first.tags), first.tags))
        elif kind == SERVICE:
            ob = vo.outbounds[0]
            service = _service(ob.tags)
            names = [f"{service}.{domain}"]
            cleaned = f"{service.replace('_', '.')}.{domain}"
            if cleaned != names[0]:
                names.append(cleaned)
            if ob.port:
                outbounds.append(VipOutbound(vo.address, ob.port, service, ob.tags))
            if ob.port != vip_port:
                outbounds.append(VipOutbound(vo.address, vip_port, service, ob.tags))
            domains.append(VipDomains(vo.address, tuple(names)))
    return tuple(domains), tuple(outbounds)
