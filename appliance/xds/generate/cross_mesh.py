"""Cross-mesh gateways in generated config (xds/cross_mesh.py says what they are).

- the gateway side (`serve_cross_mesh`): a crossMesh HTTP listener takes only TLS connections that offer the
  `kuma` ALPN, with a client certificate of any mesh's CA (`mesh_ca:secret:all`), and its virtual hosts ask
  for TLS as on HTTPS listeners (Kuma's gateway generator treats the listener as HTTPS);
- the caller's side (`cross_mesh_outbound`): an outbound tagged `kuma.io/mesh: <gateway's mesh>` is a TCP
  listener to the cluster `<service>-<hash>_<mesh>` over mTLS with the sidecar's own identity, checking the
  gateway against its mesh's CA (`mesh_ca:secret:<gateway's mesh>`).
"""
from __future__ import annotations

from dataclasses import replace

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from appliance.model import names
from appliance.model.names import Resources
from appliance.model.proxy import GenerationError, MeshSnapshot, Outbound, Proxy
from appliance.policies.meshtimeout.plugin import CONNECT_TIMEOUT, IDLE_TIMEOUT
from appliance.xds.generate import tls
from appliance.xds.generate._proto import ads_source, pack
from appliance.xds.generate.listeners import network_filter, outbound_listener, tcp_proxy


def serve_cross_mesh(chain: listener_pb2.FilterChain, snapshot: MeshSnapshot, resources: Resources) -> None:
    """Make a gateway's HTTP filter chain a crossMesh one (Kuma's HTTPS filter chain in TLS mode NONE)."""
    if snapshot.mtls is None:
        raise GenerationError("mTLS must be enabled for crossMesh-enabled MeshGateways")
    # no SNI match: a client's SNI is `<service>{mesh=<mesh>}`, not the listener's hostname
    chain.filter_chain_match.transport_protocol = "tls"
    chain.filter_chain_match.application_protocols.append(names.KUMA_ALPN)
    chain.transport_socket.CopyFrom(tls.cross_mesh_downstream_socket(snapshot.mesh))
    resources[names.SECRET][names.ALL_MESHES_CA_SECRET] = tls.trusted_ca_secret(
        names.ALL_MESHES_CA_SECRET, snapshot.all_mesh_ca_pem)


def cluster_of(snapshot: MeshSnapshot, outbound: Outbound) -> str:
    """The cluster of an outbound to a crossMesh gateway: named by all its tags, as Kuma's, when the snapshot
    has it (a transparent proxy's, from a virtual IP); a Dataplane's own outbound by service and mesh alone."""
    name = names.cross_mesh_cluster(outbound.service, outbound.mesh, outbound.tags)
    return name if name in snapshot.cross_mesh else names.cross_mesh_cluster(outbound.service, outbound.mesh)


def _cluster(snapshot: MeshSnapshot, outbound: Outbound, name: str) -> cluster_pb2.Cluster:
    """EDS, HTTP/2 options as to any mesh service, mTLS when both meshes have it (else plaintext, as Kuma)."""
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    cluster.eds_cluster_config.eds_config.CopyFrom(ads_source())
    cluster.connect_timeout.seconds = CONNECT_TIMEOUT   # MeshTimeout's default
    alt = names.sanitize_metric(name)
    if alt != name:
        cluster.alt_stat_name = alt
    options = http_protocol_options_pb2.HttpProtocolOptions()
    options.explicit_http_config.http2_protocol_options.SetInParent()
    cluster.typed_extension_protocol_options[names.HTTP_PROTOCOL_OPTIONS].CopyFrom(pack(options))
    target = snapshot.cross_mesh.get(name)
    if snapshot.mtls is not None and target is not None and target.ca_pem:
        cluster.transport_socket.CopyFrom(
            tls.cross_mesh_upstream_socket(snapshot.mesh, outbound.mesh, outbound.service))
    return cluster


def cross_mesh_outbound(snapshot: MeshSnapshot, outbound: Outbound, proxy: Proxy) -> Resources:
    """The listener, cluster and other mesh's CA of an outbound to another mesh's crossMesh gateway. The
    service's protocol is not known in this mesh, so it is TCP, as Kuma's; the gateway speaks HTTP inside."""
    name = cluster_of(snapshot, outbound)
    unit: Resources = {type_url: {} for type_url in names.TYPE_ORDER}
    own_tags = {k: v for k, v in outbound.tags.items() if k != names.MESH_TAG}
    listener = outbound_listener(replace(outbound, tags=own_tags, mesh=""), snapshot, proxy)
    del listener.filter_chains[:]
    proxy_config = tcp_proxy(outbound.service, name)
    proxy_config.idle_timeout.seconds = IDLE_TIMEOUT   # MeshTimeout's default
    listener.filter_chains.add().filters.append(network_filter(names.TCP_PROXY_FILTER, proxy_config))
    unit[names.LISTENER][listener.name] = listener
    cluster = _cluster(snapshot, outbound, name)
    unit[names.CLUSTER][name] = cluster
    target = snapshot.cross_mesh.get(name)
    if cluster.HasField("transport_socket") and target is not None:
        secret = names.mesh_ca_secret(outbound.mesh)
        unit[names.SECRET][secret] = tls.trusted_ca_secret(secret, target.ca_pem)
    return unit
