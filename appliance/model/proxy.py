"""What the generators see: a mesh at one revision and one proxy in it, as plain frozen values.

Built from the store by xds/snapshot.py; consumed by the pure functions in xds/generate/.
No I/O, no store, no protobuf here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from appliance.model.vips import VipDomains, VipOutbound

if TYPE_CHECKING:   # destinations builds on the types of this module
    from appliance.model.destinations import Destination

Tags = dict[str, str]

# kuma-cp's default `ipam.knownInternalCIDRs` (KUMA_IPAM_KNOWN_INTERNAL_CIDRS).
KNOWN_INTERNAL_CIDRS: tuple[str, ...] = (
    "10.0.0.0/8", "192.168.0.0/16", "172.16.0.0/12", "fc00::/7", "fd00::/8", "127.0.0.1/32", "::1/128")


class GenerationError(Exception):
    """A proxy's config cannot be built from what the store holds (e.g. a MeshProxyPatch that does not
    apply): the proxy keeps its last good config, and the text says why."""


@dataclass(frozen=True)
class Inbound:
    port: int                 # the port Envoy listens on (networking.inbound[].port)
    service_port: int         # where the application listens (servicePort, default = port)
    address: str              # listener address (inbound.address or networking.address)
    service_address: str      # the application's address (serviceAddress, default 127.0.0.1)
    tags: Tags
    protocol: str             # "http" | "http2" | "grpc" | "tcp" (kuma.io/protocol, default tcp)
    ready: bool = True        # state Ready (the default) and health.ready (absent = ready)
    name: str = ""            # inbound.name: what a Dataplane targetRef's sectionName selects (besides the port)

    @property
    def service(self) -> str:
        return self.tags.get("kuma.io/service", "")


@dataclass(frozen=True)
class Outbound:
    port: int
    address: str              # default 127.0.0.1
    service: str              # kuma.io/service of the destination (or a MeshService port's legacy name)
    tags: Tags = field(default_factory=dict)
    backend_port: int = 0     # a `backendRef` of kind MeshService: its `port` (see xds/generate/meshservices.py)
    # its `kuma.io/mesh` tag: the crossMesh MeshGateway listeners of that mesh (Kuma's cross-mesh outbound, the
    # proxy's own mesh included), reached over mTLS with this proxy's own identity; "" for a mesh service
    mesh: str = ""


def _reachable_backends(found: Any) -> tuple[tuple[str, str, int, tuple[tuple[str, str], ...]], ...] | None:
    if found is None:
        return None
    return tuple((str(r.get("kind") or ""), str(r.get("name") or ""), int(r.get("port") or 0),
                  tuple(sorted((str(k), str(v)) for k, v in (r.get("labels") or {}).items())))
                 for r in found.get("refs") or [] if isinstance(r, dict))


@dataclass(frozen=True)
class TransparentProxy:
    """Where iptables send the proxy's traffic (Kuma's tproxy DataplaneConfig): from the Dataplane's
    `networking.transparentProxying`, or what kuma-dp `--transparent-proxy` announced."""
    inbound_port: int = 0                 # redirectPortInbound (0: inbound traffic is not captured)
    outbound_port: int = 0                # redirectPortOutbound
    ipv6: bool = True                     # ipFamilyMode other than IPv4: IPv6 is captured too
    reachable_services: tuple[str, ...] = ()   # the only services it gets outbounds for (empty: all)
    dns_port: int = 0                     # kuma-dp's embedded DNS (metadata dataplane.dns.port; 0: none)
    # reachableBackends.refs as (kind, name, port, labels); None when the Dataplane sets no reachableBackends
    reachable_backends: tuple[tuple[str, str, int, tuple[tuple[str, str], ...]], ...] | None = None

    @staticmethod
    def from_dataplane(tp: dict[str, Any] | None) -> "TransparentProxy | None":
        """A Dataplane's `networking.transparentProxying` (DataplaneResource.GetTransparentProxy)."""
        if not tp:
            return None
        return TransparentProxy(inbound_port=int(tp.get("redirectPortInbound") or 0),
                                outbound_port=int(tp.get("redirectPortOutbound") or 0),
                                ipv6=str(tp.get("ipFamilyMode") or "").lower() != "ipv4",
                                reachable_services=tuple(str(s) for s in tp.get("reachableServices") or ()),
                                reachable_backends=_reachable_backends(tp.get("reachableBackends")))

    def enabled(self, address: str) -> bool:
        """Kuma's DataplaneConfig.Enabled: a redirect port, and an IPv4 address when only IPv4 is captured."""
        return (self.inbound_port > 0 or self.outbound_port > 0) and (self.ipv6 or ":" not in address)


@dataclass(frozen=True)
class Endpoint:
    address: str              # the dataplane's networking.address (or inbound.address)
    port: int                 # the inbound port
    tags: Tags                # the inbound's tags
    dataplane: str            # name of the dataplane it belongs to


@dataclass(frozen=True)
class Policy:
    kind: str                 # "MeshTrafficPermission"
    name: str
    spec: dict[str, Any]
    labels: Tags = field(default_factory=dict)   # kuma.io/zone etc.: part of the policy's KRI


@dataclass(frozen=True)
class Mtls:
    backend: str              # enabled backend name
    mode: str                 # "STRICT" | "PERMISSIVE"
    ca_cert_pem: bytes        # the mesh CA certificate (trust anchor for inbound/outbound validation)
    # the CA's key, checked against the certificate when the snapshot was built; never printed
    ca_key_pem: bytes = field(default=b"", repr=False)
    workload_validity_s: float | None = None   # the backend's dpCert.rotation.expiration (None: Kuma's 24 h)
    # what proxies trust: the CA of every usable backend of the mesh, the enabled one first, so that during a CA
    # rotation (a second backend added, then enabled, then the first removed) each side accepts either
    trusted_ca_pem: bytes = b""


@dataclass(frozen=True)
class ExternalTls:
    """An ExternalService's `networking.tls`, with its data sources already read."""
    ca_cert: bytes | None = None
    client_cert: bytes | None = None
    client_key: bytes | None = None
    server_name: str = ""
    allow_renegotiation: bool = False
    skip_hostname_verification: bool = False


@dataclass(frozen=True)
class ExternalService:
    name: str                 # the ExternalService resource's name
    service: str              # kuma.io/service tag
    address: str              # host (name or IP)
    port: int
    protocol: str             # kuma.io/protocol tag, default tcp
    tags: Tags                # all its tags
    tls: ExternalTls | None   # None: plaintext to the external server


@dataclass(frozen=True)
class MeshExternalService:
    """A MeshExternalService: reached only through the zone egress (Kuma 2.14, single zone)."""
    name: str
    destination: str          # its legacy name, the cluster's: "<mesh>_<name>_<namespace>_<zone>_extsvc_<port>"
    sni: str                  # what the sidecar sends to the egress (tls.SNIForResource)
    protocol: str             # match.protocol
    endpoints: tuple[tuple[str, int], ...]
    tls: ExternalTls | None
    kri: str = ""             # "kri_extsvc_<mesh>_<zone>_<namespace>_<name>_<port>": listener tag, route config
    port: int = 0             # match.port: where a transparent proxy reaches it at its VIP
    vip: str = ""             # status.vip.ip ("" until the leader gives it one)
    labels: tuple[tuple[str, str], ...] = ()   # what a reachableBackends ref by `labels` selects


# The MeshGateway listener protocols gateway proxies are given listeners for (the API warns about the others).
SERVED_GATEWAY_PROTOCOLS: tuple[str, ...] = ("HTTP", "HTTPS", "TCP", "TLS")


@dataclass(frozen=True)
class GatewayCertificate:
    """A certificate an HTTPS gateway listener presents (a Secret holding the PEM chain and its key)."""
    name: str                 # the Envoy secret's: "cert.<rsa|ecdsa>:secret:<Secret name>" or "...:inline:<host>"
    chain_pem: bytes
    key_pem: bytes = field(repr=False)


@dataclass(frozen=True)
class GatewayListener:
    """One listener of a MeshGateway, as its `conf.listeners[]` entry says."""
    port: int
    protocol: str             # "HTTP" | "HTTPS" | "TCP" | "TLS"
    hostname: str             # "*" when the listener has none
    tags: Tags                # the listener's own tags
    tls_mode: str = ""        # tls.mode: "TERMINATE" | "PASSTHROUGH" ("" without tls)
    certificates: tuple[GatewayCertificate, ...] = ()   # TLS TERMINATE, read from their data sources
    tls_error: str = ""       # why its certificates cannot be used: then the listener is not served
    connection_limit: int = 0  # resources.connectionLimit: most connections open at once on its port (0: no limit)
    cross_mesh: bool = False  # crossMesh: served to the proxies of every mesh with mTLS, over their own mTLS


@dataclass(frozen=True)
class CrossMeshGateway:
    """What a sidecar needs to reach another mesh's crossMesh gateway listeners under one kuma.io/service."""
    mesh: str                          # the gateway's mesh
    service: str                       # the gateway proxies' kuma.io/service
    endpoints: tuple[Endpoint, ...]    # per gateway proxy and crossMesh listener: (address, listener port, tags)
    ca_pem: bytes                      # what the gateway's certificate is checked against: that mesh's CAs


@dataclass(frozen=True)
class MeshGateway:
    """A MeshGateway: which builtin gateway proxies it configures (`selectors`) and what they listen on."""
    name: str
    selectors: tuple[Tags, ...]
    tags: Tags
    listeners: tuple[GatewayListener, ...]


ALL_KINDS = "*"   # what `PolicyKinds.reads` holds after a look at every kind at once


class PolicyKinds(dict):
    """A snapshot's policies (kind -> policies) that can tell which kinds were read while `reads` is a set:
    a plugin's match reads a few kinds, and its answer for a proxy holds while those stay the same
    (xds/generate). Any look at all kinds at once (iteration, items, values) counts as ALL_KINDS."""
    __slots__ = ("reads",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads: set[str] | None = None

    def _read(self, kind: str) -> None:
        if self.reads is not None:
            self.reads.add(kind)

    def get(self, kind: str, default: Any = None) -> Any:
        self._read(kind)
        return super().get(kind, default)

    def __getitem__(self, kind: str) -> tuple[Policy, ...]:
        self._read(kind)
        return super().__getitem__(kind)

    def __contains__(self, kind: object) -> bool:
        self._read(str(kind))
        return super().__contains__(kind)

    def __iter__(self) -> Any:
        self._read(ALL_KINDS)
        return super().__iter__()

    def keys(self) -> Any:
        self._read(ALL_KINDS)
        return super().keys()

    def values(self) -> Any:
        self._read(ALL_KINDS)
        return super().values()

    def items(self) -> Any:
        self._read(ALL_KINDS)
        return super().items()


@dataclass(frozen=True)
class MeshSnapshot:
    """Everything about one mesh that generation needs; shared by every proxy of the mesh."""
    mesh: str
    revision: int
    mtls: Mtls | None
    endpoints: dict[str, tuple[Endpoint, ...]]       # service -> ready endpoints
    protocols: dict[str, str]                         # service -> protocol of its inbounds
    policies: dict[str, tuple[Policy, ...]]           # kind -> policies, sorted by name
    external_services: dict[str, ExternalService] = field(default_factory=dict)
    zone_egress: bool = False                         # Mesh.routing.zoneEgress
    egresses: tuple[tuple[str, int], ...] = ()        # every ZoneEgress's (address, port)
    mesh_external_services: dict[str, MeshExternalService] = field(default_factory=dict)   # by destination
    forbid_mesh_external_service_access: bool = False   # Mesh.routing.defaultForbidMeshExternalServiceAccess
    # PERMISSIVE mTLS: services whose proxies cannot take mTLS yet (false) are called in plaintext; absent = ready.
    tls_ready: dict[str, bool] = field(default_factory=dict)
    # kuma-cp `ipam.knownInternalCIDRs`: HTTP clients from these ranges count as internal.
    known_internal_cidrs: tuple[str, ...] = KNOWN_INTERNAL_CIDRS
    # The parts of services that routes send to (MeshServiceSubset backends): cluster name -> (service, tags).
    # Their load assignments hold only the service's endpoints that carry all those tags.
    subsets: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = field(default_factory=dict)
    # The mesh asks for mTLS (an enabled backend) but its CA cannot be used: why. Its proxies then get
    # no listener at all (fail closed: no plaintext inbound, no plaintext outbound).
    mtls_error: str | None = None
    # Mesh.metrics: the enabled backend ({"name", "type", "conf"}), or None when metrics are off
    metrics: dict[str, Any] | None = None
    gateways: tuple[MeshGateway, ...] = ()            # the mesh's MeshGateways, by name
    # the mesh's virtual IPs (Config kuma-<mesh>-dns-vips): their names and the outbounds of transparent proxies
    vip_domains: tuple[VipDomains, ...] = ()
    vip_outbounds: tuple[VipOutbound, ...] = ()
    passthrough: bool = True                          # Mesh.networking.outbound.passthrough
    mesh_services_mode: str = "Disabled"              # Mesh.meshServices.mode
    # every port of the mesh's MeshServices, by legacy name (model/destinations.py): their endpoints and
    # protocols are in `endpoints` and `protocols` under the same names
    destinations: dict[str, Destination] = field(default_factory=dict)
    # the crossMesh gateway listeners of other meshes, by the cluster name this mesh's sidecars use for them
    cross_mesh: dict[str, CrossMeshGateway] = field(default_factory=dict)
    # the CAs of every mesh with usable mTLS (Kuma's all-in-one CA): what a crossMesh listener trusts
    all_mesh_ca_pem: bytes = b""
    # the meshes with a crossMesh MeshGateway listener: a change in one concerns every mesh's snapshot
    cross_mesh_sources: tuple[str, ...] = ()

    def clusters_of(self, service: str) -> tuple[str, ...]:
        """The clusters that carry traffic to a service: its own and those of its parts (`subsets`), which
        the policies that configure a service's cluster (timeouts, circuit breakers) configure alike."""
        return (service, *self._parts.get(service, ()))

    @cached_property
    def _parts(self) -> dict[str, tuple[str, ...]]:
        # asked per proxy, plugin and outbound: grouped once per snapshot (which never changes)
        parts: dict[str, list[str]] = {}
        for name, (owner, _) in self.subsets.items():
            parts.setdefault(owner, []).append(name)
        return {owner: tuple(sorted(names)) for owner, names in parts.items()}


@dataclass(frozen=True)
class Identity:
    """The proxy's workload certificate (builtin CA), PEM."""
    cert_pem: bytes
    key_pem: bytes
    expires: float


@dataclass(frozen=True)
class Proxy:
    mesh: str
    name: str
    address: str              # networking.address
    inbounds: tuple[Inbound, ...]
    outbounds: tuple[Outbound, ...]
    admin_port: int = 9901
    labels: Tags = field(default_factory=dict)        # the Dataplane's labels (Dataplane targetRef `labels`)
    features: frozenset[str] = frozenset()            # kuma-dp's metadata.features, e.g. "feature-reuse-port"
    ipv6_enabled: bool = False                        # kuma-dp's metadata.ipv6Enabled
    work_dir: str = ""                                # kuma-dp's metadata.workdir: where its Unix sockets are
    metrics_cert_path: str = ""                       # kuma-dp's metadata.metricsCertPath (ProvidedTLS)
    metrics_key_path: str = ""                        # kuma-dp's metadata.metricsKeyPath
    metrics: dict[str, Any] | None = None             # the Dataplane's `metrics` (overrides Mesh.metrics' conf)
    gateway_tags: Tags | None = None                  # a gateway's `networking.gateway.tags` (None: a sidecar)
    builtin_gateway: bool = False                     # `networking.gateway.type: BUILTIN`: configured by a MeshGateway
    transparent_proxy: TransparentProxy | None = None
    # the mesh's MeshService ports when the proxy has outbounds to them (MeshSnapshot.destinations): how the
    # policies resolve their `to[].targetRef`s of kind MeshService to those outbounds (policies/_destinations.py)
    destinations: dict[str, Destination] | None = field(default=None, compare=False, repr=False)

    @property
    def transparent(self) -> TransparentProxy | None:
        """Its transparent proxy config when traffic is captured (None otherwise)."""
        tp = self.transparent_proxy
        return tp if tp is not None and tp.enabled(self.address) else None

    @property
    def tag_sets(self) -> tuple[Tags, ...]:
        """The tags the proxy serves under (Kuma's TagSet): its inbounds' and, for a gateway, the gateway's."""
        gateway = () if self.gateway_tags is None else (self.gateway_tags,)
        return tuple(i.tags for i in self.inbounds) + gateway

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(sorted({t.get("kuma.io/service", "") for t in self.tag_sets} - {""}))

    @cached_property
    def selection_look(self) -> tuple[Any, ...]:
        """What decides which policies select the proxy, but for its name and labels (policies/_rules.py):
        equal for the proxies of one service and version, which share the answer."""
        return (self.builtin_gateway, tuple((tuple(i.tags.items()), i.name, i.port) for i in self.inbounds),
                None if self.gateway_tags is None else tuple(self.gateway_tags.items()))

    @cached_property
    def serialized_tags(self) -> str:
        """Kuma's tags.Serialize(Dataplane.TagSet()): every inbound's tags as `&key=v1,v2&` per key, keys and
        each key's values sorted. What the proxy's requests carry in `x-kuma-tags` (and HTTP health checks)."""
        values: dict[str, set[str]] = {}
        for tags in self.tag_sets:
            for key, value in tags.items():
                values.setdefault(key, set()).add(value)
        return "".join(f"&{key}={','.join(sorted(values[key]))}&" for key in sorted(values))
