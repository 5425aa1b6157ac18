"""The outbounds and clusters of MeshService destinations (model/destinations.py).

A Dataplane's own `networking.outbound[]` with `backendRef: {kind: MeshService, name, port}` is such an outbound
when that MeshService has that port. A transparent proxy gets them at the MeshServices' VIPs.

Which transparent proxies get them follows Kuma 2.14's resolveVIPOutbounds for real-resource outbounds, whatever
`Mesh.meshServices.mode` (a MeshService exists only where the mode generates it or the user created it):
- a proxy whose `reachableServices` lists services and that sets no `reachableBackends` gets none;
- with mode `ReachableBackends`, only a proxy that sets `reachableBackends` gets any;
- a proxy that sets `reachableBackends` gets those of the MeshServices its refs name (by name or labels, all
  ports or the one of `port`).
Each is an outbound on every VIP of the MeshService and port, never on an address and port the proxy serves
itself. With mode `Exclusive` they are all a proxy gets (snapshot: no kuma.io/service VIPs then).
MeshExternalServices follow the same rules (xds/generate/meshexternalservices.py).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from appliance.model import names
from appliance.model.destinations import Destination
from appliance.model.proxy import MeshSnapshot, Outbound, Proxy, TransparentProxy
from appliance.xds.generate import tls
from appliance.xds.generate._proto import ads_source, pack


def reachable(tp: TransparentProxy, kind: str, name: str, labels: Mapping[str, str], port: int | None) -> bool:
    """Whether the proxy's reachableBackends select this port of a resource of `kind` (all do when it sets none);
    `port` None: any ref to the resource selects it (a MeshExternalService has one port, whatever a ref says)."""
    if tp.reachable_backends is None:
        return True
    for ref_kind, ref_name, ref_port, wanted in tp.reachable_backends:
        if ref_kind != kind or (port is not None and ref_port and ref_port != port):
            continue
        if (ref_name and ref_name == name) or (not ref_name and all(labels.get(k) == v for k, v in wanted)):
            return True
    return False


def gets_real_outbounds(snapshot: MeshSnapshot, tp: TransparentProxy) -> bool:
    """Whether a transparent proxy gets outbounds to real resources (MeshService, MeshExternalService) at all."""
    if tp.reachable_services and tp.reachable_backends is None:
        return False
    return snapshot.mesh_services_mode != "ReachableBackends" or tp.reachable_backends is not None


def outbounds(snapshot: MeshSnapshot, proxy: Proxy, tp: TransparentProxy) -> tuple[Outbound, ...]:
    """The MeshService outbounds of a transparent proxy, by VIP and port."""
    if not gets_real_outbounds(snapshot, tp):
        return ()
    own = {(i.address, i.port) for i in proxy.inbounds}
    found = [Outbound(port=d.port, address=vip, service=d.name)
             for d in snapshot.destinations.values() if reachable(tp, "MeshService", d.service, dict(d.labels), d.port)
             for vip in d.vips if (vip, d.port) not in own]
    return tuple(sorted(found, key=lambda o: (o.address, o.port)))


def with_backend_refs(snapshot: MeshSnapshot, proxy: Proxy) -> Proxy:
    """A Dataplane's own outbounds with a `backendRef` of kind MeshService and a `port` go to that MeshService
    port (Kuma's real-resource outbound); one naming no MeshService port keeps going to the kuma.io/service."""
    if not snapshot.destinations or not any(o.backend_port for o in proxy.outbounds):
        return proxy
    by_port = {(d.service, d.port): d.name for d in snapshot.destinations.values()}
    found = [replace(o, service=by_port[(o.service, o.backend_port)])
             if o.backend_port and (o.service, o.backend_port) in by_port else o for o in proxy.outbounds]
    if all(a is b for a, b in zip(found, proxy.outbounds)):
        return proxy
    return replace(proxy, outbounds=tuple(found), destinations=snapshot.destinations)


def cluster(snapshot: MeshSnapshot, destination: Destination) -> cluster_pb2.Cluster:
    """The EDS cluster of a MeshService port: HTTP/2 upstream options as every mesh cluster, and with mTLS the
    MeshService's SNI and its identities as the SPIFFE ids the server may have. PERMISSIVE: plaintext until
    the MeshService's status says its proxies serve mTLS (`status.tls`)."""
    out = cluster_pb2.Cluster(name=destination.name, type=cluster_pb2.Cluster.EDS)
    out.eds_cluster_config.eds_config.CopyFrom(ads_source())
    alt = names.sanitize_metric(destination.name)
    if alt != destination.name:
        out.alt_stat_name = alt
    options = http_protocol_options_pb2.HttpProtocolOptions()
    options.explicit_http_config.http2_protocol_options.SetInParent()
    out.typed_extension_protocol_options[names.HTTP_PROTOCOL_OPTIONS].CopyFrom(pack(options))
    mtls = snapshot.mtls
    if mtls is not None and (mtls.mode != "PERMISSIVE" or destination.tls_ready):
        out.transport_socket.CopyFrom(tls.upstream_transport_socket(
            snapshot.mesh, "", sni=destination.sni, spiffe_ids=destination.identities))
    return out
