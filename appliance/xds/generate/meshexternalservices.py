"""The outbounds of MeshExternalServices on sidecars (Kuma 2.14's MeshExternalServiceResource.AsOutbounds).

A MeshExternalService is reached only through the zone egress, by one outbound per sidecar that names it: a
Dataplane's own `networking.outbound[]` with `backendRef: {kind: MeshExternalService, name}`, or, on a
transparent proxy, `outbound:<vip>:<match.port>` for each MeshExternalService with a VIP (`status.vip`), whose
hostnames (`status.addresses`, e.g. `httpbin.extsvc.mesh.local`) kuma-dp's DNS answers with that VIP
(xds/generate/transparent.py). Both are the same outbound (listeners.outbound_listener, clusters.cluster_for:
EDS to the zone egresses, mTLS with the MeshExternalService's SNI), named as Kuma names a real resource's
outbound without unified naming: cluster, virtual host and stat prefix the legacy name
`<mesh>_<name>_<namespace>_<zone>_extsvc_<port>`, route configuration and the listener's `kuma.io/unified-name`
tag the KRI `kri_extsvc_<mesh>_<zone>_<namespace>_<name>_<port>`. The egress decides who may call it
(`routing.defaultForbidMeshExternalServiceAccess`, xds/generate/egress.py).

Which transparent proxies get them follows resolveVIPOutbounds as for MeshServices (xds/generate/meshservices.py):
none for a proxy that lists `reachableServices` without `reachableBackends`, none without `reachableBackends`
in mode `ReachableBackends`, and with `reachableBackends` only the MeshExternalServices its refs name (by name
or labels; a ref's `port` does not narrow it: a MeshExternalService has one port).
"""
from __future__ import annotations

from dataclasses import replace

from appliance.model.proxy import MeshExternalService, MeshSnapshot, Outbound, Proxy, TransparentProxy
from appliance.xds.generate import meshservices

KIND = "MeshExternalService"


def _unique(snapshot: MeshSnapshot) -> list[MeshExternalService]:
    """Each MeshExternalService once (the snapshot has it under its legacy name and its backendRef keys)."""
    return sorted({m.destination: m for m in snapshot.mesh_external_services.values()}.values(),
                  key=lambda m: m.destination)


def outbounds(snapshot: MeshSnapshot, proxy: Proxy, tp: TransparentProxy) -> tuple[Outbound, ...]:
    """The MeshExternalService outbounds of a transparent proxy, by VIP and port."""
    if not snapshot.mesh_external_services or not meshservices.gets_real_outbounds(snapshot, tp):
        return ()
    own = {(i.address, i.port) for i in proxy.inbounds}
    found = [Outbound(port=m.port, address=m.vip, service=m.destination) for m in _unique(snapshot)
             if m.vip and m.port and (m.vip, m.port) not in own
             and meshservices.reachable(tp, KIND, m.name, dict(m.labels), None)]
    return tuple(sorted(found, key=lambda o: (o.address, o.port)))


def with_backend_refs(snapshot: MeshSnapshot, proxy: Proxy) -> Proxy:
    """A Dataplane's own outbounds by `backendRef` to a MeshExternalService (which name it by the key
    xds/snapshot.py's `mes_destination` gives) go to that MeshExternalService under its own name."""
    known = snapshot.mesh_external_services
    if not known or not any(o.service in known for o in proxy.outbounds):
        return proxy
    found = tuple(replace(o, service=known[o.service].destination) if o.service in known else o
                  for o in proxy.outbounds)
    if all(a.service == b.service for a, b in zip(found, proxy.outbounds)):
        return proxy
    return replace(proxy, outbounds=found)
