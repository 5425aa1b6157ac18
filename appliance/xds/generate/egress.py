"""A zone egress: the one exit of every mesh's traffic to external services (Kuma 2.14's egress generator).

    resources = generate_egress(egress, snapshots, identities)

One listener `inbound:<address>:<port>` with the TLS inspector and, per mesh with mTLS and per
external service, one filter chain picked by the SNI the sidecars send (`<service>{mesh=<mesh>}`).
The chain terminates the mesh's mTLS with the egress's identity in that mesh
(`spiffe://<mesh>/zone-egress`), applies MeshTrafficPermission for the external service, then
proxies HTTP or TCP to the cluster `<mesh>:<service>`, which reaches the external server (with TLS
when its ExternalService asks). MeshExternalServices get a chain each too, named after their
destination (`<mesh>_<name>___extsvc_<port>`) and picked by their own SNI. A mesh without mTLS has
nothing here: its sidecars cannot reach it.
"""
from __future__ import annotations

from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2

from appliance.model.names import Resources
from appliance.policies.meshtrafficpermission import plugin as meshtrafficpermission
from appliance.model import names
from appliance.xds.generate import routes, tls
from appliance.xds.generate.clusters import external_cluster, mesh_external_cluster
from appliance.xds.generate.listeners import TLS_INSPECTOR, http_connection_manager, network_filter, socket_address, tcp_proxy
from appliance.xds.generate._proto import seconds
from appliance.model.proxy import ExternalService, Identity, Inbound, MeshExternalService, MeshSnapshot, Proxy

# envoy_clusters.DefaultTimeout(): the egress's connect timeout to external servers.
CONNECT_TIMEOUT = 5


@dataclass(frozen=True)
class EgressProxy:
    name: str
    address: str             # networking.address: where the listener binds and sidecars connect
    port: int
    ipv6_enabled: bool = False

    def identity_proxy(self, mesh: str) -> Proxy:
        """How the egress looks to a mesh's CA: a proxy of the service `zone-egress` (spiffe://<mesh>/zone-egress).
        Its name cannot clash with a dataplane's: `/` is not allowed in names."""
        inbound = Inbound(port=self.port, service_port=self.port, address=self.address,
                          service_address=self.address, tags={names.SERVICE_TAG: names.ZONE_EGRESS_SERVICE},
                          protocol="tcp")
        return Proxy(mesh=mesh, name=f"zoneegress/{self.name}", address=self.address, inbounds=(inbound,),
                     outbounds=())


def egress_meshes(snapshots: list[MeshSnapshot]) -> list[MeshSnapshot]:
    """The meshes an egress serves: those with mTLS (the sidecar's identity is what permissions check)."""
    return sorted((s for s in snapshots if s.mtls is not None), key=lambda s: s.mesh)


def _cluster(snapshot: MeshSnapshot, es: ExternalService) -> cluster_pb2.Cluster:
    cluster = external_cluster(names.egress_cluster(snapshot.mesh, es.service), es, mesh=snapshot.mesh)
    cluster.connect_timeout.CopyFrom(seconds(CONNECT_TIMEOUT))
    cluster.circuit_breakers.thresholds.add().track_remaining = True
    return cluster


def _filter_chain(egress: EgressProxy, listener_name: str, snapshot: MeshSnapshot,
                  es: ExternalService) -> listener_components_pb2.FilterChain:
    service, cluster = es.service, names.egress_cluster(snapshot.mesh, es.service)
    chain = listener_components_pb2.FilterChain(name=names.egress_filter_chain(service, snapshot.mesh))
    chain.filter_chain_match.server_names.append(names.sni(service, snapshot.mesh))
    chain.filter_chain_match.transport_protocol = "tls"
    chain.transport_socket.CopyFrom(tls.downstream_transport_socket(snapshot.mesh))
    if es.protocol in names.HTTP_PROTOCOLS:
        proxy = Proxy(mesh="", name=egress.name, address=egress.address, inbounds=(), outbounds=(),
                      ipv6_enabled=egress.ipv6_enabled)
        manager = http_connection_manager(service, "http", snapshot, proxy)
        manager.route_config.CopyFrom(routes.egress_route_config(service, cluster))
        chain.filters.append(network_filter(names.HCM_FILTER, manager))
    else:
        chain.filters.append(network_filter(names.TCP_PROXY_FILTER, tcp_proxy(service, cluster)))
    permissions = meshtrafficpermission.match_egress(snapshot, es.tags)
    if permissions is not None:
        meshtrafficpermission.apply_egress(chain, listener_name, snapshot.mesh, permissions)
    return chain


def _mes_filter_chain(egress: EgressProxy, listener_name: str, snapshot: MeshSnapshot,
                      mes: MeshExternalService, forbid: bool) -> listener_components_pb2.FilterChain:
    """A MeshExternalService's chain: named, routed and counted by its destination name, open to every
    client of the mesh unless the Mesh says `routing.defaultForbidMeshExternalServiceAccess` (Kuma 2.14)."""
    name = mes.destination
    chain = listener_components_pb2.FilterChain(name=name)
    chain.filter_chain_match.server_names.append(mes.sni)
    chain.filter_chain_match.transport_protocol = "tls"
    chain.transport_socket.CopyFrom(tls.downstream_transport_socket(snapshot.mesh))
    if mes.protocol in names.HTTP_PROTOCOLS:
        proxy = Proxy(mesh="", name=egress.name, address=egress.address, inbounds=(), outbounds=(),
                      ipv6_enabled=egress.ipv6_enabled)
        manager = http_connection_manager(name, "http", snapshot, proxy)
        route = routes.egress_route_config(name, name)
        route.name = name
        manager.route_config.CopyFrom(route)
        chain.filters.append(network_filter(names.HCM_FILTER, manager))
    else:
        chain.filters.append(network_filter(names.TCP_PROXY_FILTER, tcp_proxy(name, name)))
    everyone = meshtrafficpermission.Permissions(allow=() if forbid else ((),), shadow_deny=())
    meshtrafficpermission.apply_egress(chain, listener_name, snapshot.mesh, everyone)
    return chain


def generate_egress(egress: EgressProxy, snapshots: list[MeshSnapshot],
                    identities: dict[str, Identity | None]) -> Resources:
    """All resources of one zone egress. A mesh whose identity is not issued yet gets its chains anyway:
    Envoy keeps the listener warming until the secret arrives, so nothing flows without mTLS."""
    resources: Resources = {type_url: {} for type_url in names.TYPE_ORDER}
    name = names.inbound_listener(egress.address, egress.port)
    listener = listener_pb2.Listener(name=name, address=socket_address(egress.address, egress.port),
                                     traffic_direction=base_pb2.INBOUND)
    listener.enable_reuse_port.value = False  # see listeners.inbound_listener
    listener.listener_filters.append(TLS_INSPECTOR)
    for snapshot in egress_meshes(snapshots):
        mesh = snapshot.mesh
        for service in sorted(snapshot.external_services):
            es = snapshot.external_services[service]
            listener.filter_chains.append(_filter_chain(egress, name, snapshot, es))
            cluster = _cluster(snapshot, es)
            resources[names.CLUSTER][cluster.name] = cluster
        for destination in sorted({m.destination for m in snapshot.mesh_external_services.values()}):
            mes = snapshot.mesh_external_services[destination]
            listener.filter_chains.append(_mes_filter_chain(egress, name, snapshot, mes,
                                                            snapshot.forbid_mesh_external_service_access))
            cluster = mesh_external_cluster(mes, mesh)
            cluster.connect_timeout.CopyFrom(seconds(CONNECT_TIMEOUT))
            cluster.circuit_breakers.thresholds.add().track_remaining = True
            resources[names.CLUSTER][cluster.name] = cluster
        identity = identities.get(mesh)
        if identity is not None:
            resources[names.SECRET][names.identity_secret(mesh)] = tls.identity_secret(mesh, identity)
        resources[names.SECRET][names.mesh_ca_secret(mesh)] = tls.ca_secret(snapshot)
    if listener.filter_chains:  # Envoy refuses a listener without filter chains
        resources[names.LISTENER][name] = listener
    return resources

