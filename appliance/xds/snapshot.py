"""From the store to the generators' model: one MeshSnapshot per mesh revision, one Proxy per Dataplane."""
from __future__ import annotations

import base64
import functools
import logging
import threading
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from appliance.ca._x509 import pem_blocks
from appliance.core.resources.dataplane import inbound_ready, workload
from appliance.core.resources.mesh import enabled_backend
from appliance.core.resources.secret import is_system_secret
from appliance.core.resources import registry
from appliance.core.resources.model import Resource
from appliance.policies._backends import subset_clusters
from appliance.store import ListQuery, Store
from appliance.model.proxy import (
    Endpoint, ExternalService, ExternalTls, GatewayCertificate, GatewayListener, Inbound, MeshExternalService, MeshGateway, MeshSnapshot,
    Outbound, Policy, PolicyKinds, Proxy, TransparentProxy,
)
from appliance.model import destinations, meshservices, names, vips
from appliance.model.destinations import Destination
from appliance.xds import cross_mesh, mesh_ca

DEFAULT_ADMIN_PORT = 9901
MES_SHORT_NAME = "extsvc"              # a MeshExternalService's type in its names
log = logging.getLogger("appliance.xds")


def _inbounds(dp: Resource) -> tuple[Inbound, ...]:
    networking = dp.content.get("networking") or {}
    address = networking.get("address", "")
    out = []
    for ib in networking.get("inbound") or []:
        tags = {k: str(v) for k, v in (ib.get("tags") or {}).items()}
        # Kuma 2.14: the application is reached on the inbound's own address unless serviceAddress says
        service_address, service_port = workload(networking, ib)
        out.append(Inbound(
            port=int(ib.get("port") or 0), service_port=service_port,
            address=ib.get("address") or address, service_address=service_address,
            tags=tags, protocol=tags.get("kuma.io/protocol", "tcp"), ready=inbound_ready(ib),
            name=str(ib.get("name") or "")))
    return tuple(out)


def proxy_from_dataplane(dp: Resource) -> Proxy:
    networking = dp.content.get("networking") or {}
    outbounds = []
    for ob in networking.get("outbound") or []:
        tags = {k: str(v) for k, v in (ob.get("tags") or {}).items()}
        ref = ob.get("backendRef") or {}
        service = tags.get("kuma.io/service") or ref.get("name", "")
        if not tags.get("kuma.io/service") and ref.get("kind") == "MeshExternalService":
            service = mes_destination(dp.mesh, service, int(ref.get("port") or 0))
        outbounds.append(Outbound(port=int(ob.get("port") or 0), address=ob.get("address") or "127.0.0.1",
                                  service=service, tags=tags, mesh=tags.get(names.MESH_TAG, ""),
                                  backend_port=int(ref.get("port") or 0) if ref.get("kind") == "MeshService" else 0))
    admin = (networking.get("admin") or {}).get("port") or DEFAULT_ADMIN_PORT
    gateway = networking.get("gateway")
    return Proxy(mesh=dp.mesh, name=dp.name, address=networking.get("address", ""), inbounds=_inbounds(dp),
                 outbounds=tuple(outbounds), admin_port=int(admin), labels=dict(dp.labels),
                 metrics=dp.content.get("metrics") or None,
                 gateway_tags=None if gateway is None else {k: str(v) for k, v in (gateway.get("tags") or {}).items()},
                 builtin_gateway=gateway is not None and gateway.get("type") == "BUILTIN",
                 transparent_proxy=TransparentProxy.from_dataplane(networking.get("transparentProxying")))



@functools.lru_cache(maxsize=64)
def gateway_certificate(pem: bytes, source: str, name: str) -> GatewayCertificate:
    """A Secret's PEM (the certificate chain and its private key, in any order) as an HTTPS listener's
    certificate, named as Kuma names it by key type. ValueError says what is wrong with it. Cached: snapshots
    are built at every revision and a certificate lasts for months."""
    blocks = [(label, block + b"\n") for label, block in pem_blocks(pem)]
    chain = b"".join(block for label, block in blocks if label == "CERTIFICATE")
    keys = [block for label, block in blocks if label.endswith("PRIVATE KEY")]
    if not chain or len(keys) != 1:
        raise ValueError("it must hold a PEM certificate chain and one PEM private key")
    try:
        key = serialization.load_pem_private_key(keys[0], password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"its private key cannot be read: {e}") from None
    kind = "ecdsa" if isinstance(key, ec.EllipticCurvePrivateKey) else "rsa"
    return GatewayCertificate(f"cert.{kind}:{source}:{name}", chain, keys[0])


def _listener_tls(store: Store, mesh: str, path: str, listener: dict[str, Any],
                  hostname: str) -> tuple[tuple[GatewayCertificate, ...], str]:
    """The certificates of a TLS-terminating listener, or why they cannot be used."""
    tls = listener.get("tls") or {}
    if tls.get("mode") != "TERMINATE":
        return (), ""
    out = []
    for i, source in enumerate(tls.get("certificates") or []):
        where = f"{path}.tls.certificates[{i}]"
        try:
            pem = _data_source(store, mesh, source, where)
            secret = source.get("secret") if isinstance(source, dict) else None
            out.append(gateway_certificate(pem or b"", "secret" if secret else "inline", str(secret or hostname)))
        except Unresolved as e:
            return (), str(e)
        except ValueError as e:
            return (), f"{where}: {e}"
    return tuple(out), ""


def mesh_gateways(store: Store, mesh: str) -> tuple[MeshGateway, ...]:
    out = []
    for gw in sorted(store.list(ListQuery(type="MeshGateway", mesh=mesh)).items, key=lambda r: r.name):
        listeners = []
        for i, l in enumerate((gw.content.get("conf") or {}).get("listeners") or []):
            if not isinstance(l, dict):
                continue
            hostname = str(l.get("hostname") or "*")
            certificates, tls_error = _listener_tls(store, mesh, f"conf.listeners[{i}]", l, hostname)
            if tls_error:
                _report_gateway(mesh, gw.name, i, tls_error)
            listeners.append(GatewayListener(
                port=int(l.get("port") or 0), protocol=str(l.get("protocol") or ""), hostname=hostname,
                tags={k: str(v) for k, v in (l.get("tags") or {}).items()},
                tls_mode=str((l.get("tls") or {}).get("mode") or ""), certificates=certificates, tls_error=tls_error,
                connection_limit=int((l.get("resources") or {}).get("connectionLimit") or 0),
                cross_mesh=bool(l.get("crossMesh")) and l.get("protocol") == "HTTP"))
        selectors = tuple({k: str(v) for k, v in ((s or {}).get("match") or {}).items()}
                          for s in gw.content.get("selectors") or [])
        out.append(MeshGateway(gw.name, selectors, {k: str(v) for k, v in (gw.content.get("tags") or {}).items()},
                               tuple(listeners)))
    return tuple(out)


class Unresolved(Exception):
    """A data source the control plane cannot or will not give a proxy."""


def _data_source(store: Store, mesh: str, source: Any, path: str) -> bytes | None:
    """A Kuma DataSource's bytes, as Kuma 2.14's xDS reads them (its static loader): `inline` (base64),
    `inlineString` or `secret` (a Secret of the mesh). Never a `file`, and never a Secret the control
    plane keeps for itself (signing keys, CA keys), whatever the store holds (validation refuses both;
    this is the second line): those, and a missing Secret, raise Unresolved."""
    if not isinstance(source, dict):
        return None
    if source.get("inline"):
        return base64.b64decode(source["inline"])
    if source.get("inlineString"):
        return str(source["inlineString"]).encode()
    name = source.get("secret")
    if name:
        if is_system_secret(str(name)):
            raise Unresolved(f"{path}: the Secret {name!r} is the control plane's own")
        secret = store.get("Secret", mesh, str(name))
        if secret is None:
            raise Unresolved(f"{path}: there is no Secret {name!r} in the mesh")
        return base64.b64decode(secret.content.get("data") or "")
    if source.get("file") is not None:
        raise Unresolved(f"{path}: the control plane does not read files for proxies")
    return None


def _external_tls(store: Store, mesh: str, tls: dict[str, Any]) -> ExternalTls | None:
    if not tls.get("enabled"):
        return None
    return ExternalTls(
        ca_cert=_data_source(store, mesh, tls.get("caCert"), "networking.tls.caCert"),
        client_cert=_data_source(store, mesh, tls.get("clientCert"), "networking.tls.clientCert"),
        client_key=_data_source(store, mesh, tls.get("clientKey"), "networking.tls.clientKey"),
        server_name=str(tls.get("serverName") or ""),
        allow_renegotiation=bool(tls.get("allowRenegotiation")),
        skip_hostname_verification=bool(tls.get("skipHostnameVerification")))


def _left_out(kind: str, mesh: str, name: str, problem: Unresolved) -> None:
    # Kuma: "unable to create ExternalService endpoint. Endpoint won't be included in the XDS."
    log.warning("%s %s/%s is left out of proxies' config: %s", kind, mesh, name, problem)


def external_services(store: Store, mesh: str) -> dict[str, ExternalService]:
    """The mesh's ExternalServices by kuma.io/service (two with one service: the first by name wins).
    One whose TLS data cannot be given to proxies is left out (its callers get no route to it), as in Kuma."""
    out: dict[str, ExternalService] = {}
    for es in sorted(store.list(ListQuery(type="ExternalService", mesh=mesh)).items, key=lambda r: r.name):
        networking = es.content.get("networking") or {}
        host, _, port = str(networking.get("address", "")).rpartition(":")
        tags = {k: str(v) for k, v in (es.content.get("tags") or {}).items()}
        service = tags.get("kuma.io/service", es.name)
        if service in out:
            continue
        try:
            settings = _external_tls(store, mesh, networking.get("tls") or {})
        except Unresolved as e:
            _left_out("ExternalService", mesh, es.name, e)
            continue
        out[service] = ExternalService(es.name, service, host.strip("[]"), int(port or 0),
                                       tags.get("kuma.io/protocol", "tcp"), tags, settings)
    return out


def mes_destination(mesh: str, name: str, port: int) -> str:
    """The key a Dataplane's outbound `backendRef` of kind MeshExternalService names it by (its legacy name
    without namespace and zone); the snapshot maps it to the MeshExternalService, whose own name Envoy gets
    (xds/generate/meshexternalservices.py). A backendRef without a port means the service's own (`match.port`)."""
    return f"{mesh}_{name}___extsvc_{port}" if port else f"{mesh}_{name}___extsvc"


def mes_sni(mesh: str, name: str, port: int) -> str:
    """tls.SNIForResource for a MeshExternalService."""
    return names.sni_for_resource(name, mesh, "mes", port)


def _mes_tls(store: Store, mesh: str, tls: dict[str, Any]) -> ExternalTls | None:
    """MeshExternalService `tls` (verification modes as Kuma: SkipSAN, SkipCA, SkipAll)."""
    if not tls.get("enabled"):
        return None
    verification = tls.get("verification") or {}
    mode = verification.get("mode") or "Secured"
    path = "spec.tls.verification"
    settings = ExternalTls(
        ca_cert=None if mode in ("SkipCA", "SkipAll") else _data_source(store, mesh, verification.get("caCert"),
                                                                        f"{path}.caCert"),
        client_cert=None if mode == "SkipAll" else _data_source(store, mesh, verification.get("clientCert"),
                                                                f"{path}.clientCert"),
        client_key=None if mode == "SkipAll" else _data_source(store, mesh, verification.get("clientKey"),
                                                               f"{path}.clientKey"),
        server_name="" if mode in ("SkipSAN", "SkipAll") else str(verification.get("serverName") or ""),
        allow_renegotiation=bool(tls.get("allowRenegotiation")),
        skip_hostname_verification=mode in ("SkipSAN", "SkipAll"))
    return settings


def mesh_external_services(store: Store, mesh: str) -> dict[str, MeshExternalService]:
    """By legacy name (`<mesh>_<name>_<namespace>_<zone>_extsvc_<port>`, Kuma's
    ResolveLegacyFromKRI from the labels) and by the keys Dataplane backendRefs use (`mes_destination`)."""
    out: dict[str, MeshExternalService] = {}
    for mes in sorted(store.list(ListQuery(type="MeshExternalService", mesh=mesh)).items, key=lambda r: r.name):
        spec = mes.spec or {}
        match = spec.get("match") or {}
        port = int(match.get("port") or 0)
        endpoints = tuple((str(e.get("address") or ""), int(e.get("port") or 0)) for e in spec.get("endpoints") or [])
        display = mes.labels.get("kuma.io/display-name") or mes.name
        namespace, zone = mes.labels.get("k8s.kuma.io/namespace", ""), mes.labels.get("kuma.io/zone", "")
        destination = destinations.legacy_name(mesh, display, namespace, zone, port, MES_SHORT_NAME)
        try:
            settings = _mes_tls(store, mesh, spec.get("tls") or {})
        except Unresolved as e:
            _left_out("MeshExternalService", mesh, mes.name, e)
            continue
        vip = meshservices.vips_of(mes)
        out[destination] = MeshExternalService(
            mes.name, destination, mes_sni(mesh, mes.name, port), str(match.get("protocol") or "tcp"),
            endpoints, settings, kri=destinations.kri(mesh, zone, namespace, display, str(port), MES_SHORT_NAME),
            port=port, vip=vip[0] if vip else "", labels=tuple(sorted(mes.labels.items())))
        for key in (mes_destination(mesh, mes.name, port), mes_destination(mesh, mes.name, 0)):
            out.setdefault(key, out[destination])
    return out


def zone_egresses(store: Store) -> tuple[tuple[str, int], ...]:
    """Where the zone's egress proxies listen; sidecars of a mesh with `routing.zoneEgress` call them."""
    out = []
    for ze in store.list(ListQuery(type="ZoneEgress")).items:
        networking = ze.content.get("networking") or {}
        if networking.get("address") and networking.get("port"):
            out.append((str(networking["address"]), int(networking["port"])))
    return tuple(sorted(out))


def dataplane_inbounds(store: Store, mesh_name: str) -> dict[str, tuple[Inbound, ...]]:
    """Every Dataplane of the mesh by name, as the inbounds that make its endpoints."""
    return {dp.name: _inbounds(dp) for dp in store.list(ListQuery(type="Dataplane", mesh=mesh_name)).items}


_reported: dict[str, str | None] = {}
_reported_lock = threading.Lock()


def _report_gateway(mesh: str, gateway: str, index: int, problem: str) -> None:
    """Log a listener left out for its certificates once per problem (snapshots are built at every revision)."""
    key = f"{mesh}/{gateway}/{index}"
    with _reported_lock:
        if _reported.get(key) == problem:
            return
        _reported[key] = problem
    log.error("MeshGateway %s/%s: listener conf.listeners[%d] is not served until its certificate can be used: %s",
              mesh, gateway, index, problem)


def _report_mtls(mesh: str, problem: str | None) -> None:
    """Log a mesh's mTLS failure once per change (snapshots are built at every revision), and its end."""
    with _reported_lock:
        before = _reported.get(mesh)
        if before == problem:
            return
        _reported[mesh] = problem
    if problem is not None:
        log.error("mesh %s asks for mTLS but its CA cannot be used, so its proxies get no listeners (traffic "
                  "fails closed) until this is fixed: %s", mesh, problem)
    elif before is not None:
        log.warning("mesh %s: its CA can be used again; its proxies get their listeners back", mesh)


def build_snapshot(store: Store, mesh_name: str, revision: int,
                   inbounds: dict[str, tuple[Inbound, ...]] | None = None) -> MeshSnapshot | None:
    """The mesh at `revision`. `inbounds` (`dataplane_inbounds`, kept current by the caller) spares
    reading and parsing every Dataplane of the mesh again."""
    mesh = store.get("Mesh", "", mesh_name)
    if mesh is None:
        return None
    mtls, mtls_error = mesh_ca.mesh_mtls_of(store, mesh)
    _report_mtls(mesh_name, mtls_error)
    endpoints: dict[str, list[Endpoint]] = {}
    protocols: dict[str, str] = {}
    if inbounds is None:
        inbounds = dataplane_inbounds(store, mesh_name)
    # in name order, as the store lists them: the first inbound of a service sets its protocol
    for name in sorted(inbounds):
        for ib in inbounds[name]:
            service = ib.service
            if not service:
                continue
            protocols.setdefault(service, ib.protocol)
            if ib.ready:
                endpoints.setdefault(service, []).append(Endpoint(ib.address, ib.port, ib.tags, name))
    policies = PolicyKinds()
    for kind in registry.POLICY_MODULES:
        items = store.list(ListQuery(type=kind, mesh=mesh_name)).items
        policies[kind] = tuple(Policy(kind, r.name, r.spec, r.labels) for r in sorted(items, key=lambda r: r.name))
    mesh_services = store.list(ListQuery(type=meshservices.TYPE, mesh=mesh_name)).items
    found_destinations = _destinations(store, mesh_name, mesh_services, inbounds, endpoints, protocols)
    externals = external_services(store, mesh_name)
    meshexternals = mesh_external_services(store, mesh_name)
    zone_egress = bool((mesh.content.get("routing") or {}).get("zoneEgress"))
    for service, es in externals.items():
        protocols[service] = es.protocol   # the outbound goes to the external service
    for destination, mes in meshexternals.items():
        protocols[destination] = mes.protocol
    gateways = mesh_gateways(store, mesh_name)
    vip = _vips(store, mesh_name, mesh_services, meshservices.mode(mesh.content))
    others = cross_mesh.snapshot_fields(store, mesh_name, gateways, functools.partial(mesh_gateways, store),
                                        functools.partial(mesh_ca.trusted_ca_pem, store), vip["vip_outbounds"])
    return MeshSnapshot(
        mesh=mesh_name, revision=revision, mtls=mtls, mtls_error=mtls_error,
        endpoints={s: tuple(sorted(e, key=lambda x: (x.address, x.port))) for s, e in endpoints.items()},
        protocols=protocols, policies=policies, external_services=externals,
        zone_egress=zone_egress, mesh_external_services=meshexternals,
        forbid_mesh_external_service_access=bool(
            (mesh.content.get("routing") or {}).get("defaultForbidMeshExternalServiceAccess")),
        egresses=zone_egresses(store) if (zone_egress and externals) or meshexternals else (),
        subsets=subset_clusters(policies), metrics=enabled_backend(mesh.content, "metrics"),
        gateways=gateways, **others,
        passthrough=((mesh.content.get("networking") or {}).get("outbound") or {}).get("passthrough") is not False,
        mesh_services_mode=meshservices.mode(mesh.content), destinations=found_destinations,
        **vip)


def _destinations(store: Store, mesh: str, services: list[Resource], inbounds: dict[str, tuple[Inbound, ...]],
                  endpoints: dict[str, list[Endpoint]], protocols: dict[str, str]) -> dict[str, Destination]:
    """The mesh's MeshService ports, with their endpoints and protocols added to the services'."""
    found = destinations.of_services(services)
    labels = ({dp.name: dp.labels for dp in store.list(ListQuery(type="Dataplane", mesh=mesh)).items}
              if destinations.uses_dataplane_labels(services) else {})
    local = [s for s in services if meshservices.is_local(s.labels)]
    for name, served in destinations.endpoints(local, inbounds, labels).items():
        endpoints[name] = list(served)
    for name, destination in found.items():
        protocols[name] = destination.protocol
    return found


def _vips(store: Store, mesh: str, mesh_services: list[Resource], mode: str) -> dict[str, Any]:
    """The names and outbounds of the mesh's VIPs: those of its kuma.io/services (none with meshServices.mode
    Exclusive, as Kuma's mesh context), and the names of its MeshServices and MeshExternalServices."""
    domains: tuple[vips.VipDomains, ...] = ()
    outbounds: tuple[vips.VipOutbound, ...] = ()
    if mode != "Exclusive":
        config = store.get("Config", "", vips.config_name(mesh))
        stored = str((config.content if config else {}).get("config") or "")
        domains, outbounds = vips.vip_outbounds(vips.from_json(stored))
    domains += meshservices.domains([*mesh_services,
                                     *store.list(ListQuery(type=meshservices.EXTERNAL_TYPE, mesh=mesh)).items])
    return {"vip_domains": domains, "vip_outbounds": outbounds}
