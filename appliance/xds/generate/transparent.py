"""What a sidecar with transparent proxying gets (Kuma's TransparentProxyGenerator, VIP outbounds, DNSGenerator).

iptables send the app's outgoing connections to `redirectPortOutbound` and incoming ones to
`redirectPortInbound`. There Envoy's capture listeners (`outbound:passthrough:ipv4`, `inbound:passthrough:ipv4`)
hand each connection to the listener of its original destination: the outbound listener of a virtual IP
(`outbound:240.0.0.1:80`), the inbound listener of the app's port. Those do not bind (bind_to_port false): only
redirected connections reach them. A connection whose destination has no listener goes out unchanged
(the passthrough cluster, ORIGINAL_DST) when the mesh allows passthrough; otherwise the capture listener
points at a cluster that does not exist and Envoy closes it (Kuma's blackhole).

The sidecar's outbounds are then the mesh's VIP outbounds (its `networking.outbound` are not used, as in
Kuma), limited to `reachableServices` when it lists some, and those of its MeshServices and
MeshExternalServices at their VIPs. Its kuma-dp's DNS server gets the names of
those VIPs from the `/dns` path of `_kuma:dynamicconfig` (Kuma's dpapi.DNSProxyConfig JSON).
"""
from __future__ import annotations

import ipaddress
import json
from dataclasses import replace

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2

from appliance.model import names
from appliance.model.names import Resources
from appliance.model.proxy import MeshSnapshot, Outbound, Proxy, TransparentProxy
from appliance.policies._dynconf import add_config_route
from appliance.policies._envoy import original_dst_cluster
from appliance.xds.generate import meshexternalservices, meshservices
from appliance.xds.generate.listeners import network_filter, socket_address, tcp_proxy

NO_DESTINATION = "self_transparentproxy_no_destination_inbound"
DNS_TTL = 30                              # Kuma's TTL for the embedded DNS (kumahq/kuma#13353)
FEATURE_EMBEDDED_DNS = "feature-embedded-dns"
# (family, every address, where the inbound passthrough connects to the app from)
_FAMILIES = (("ipv4", "0.0.0.0", "127.0.0.6"), ("ipv6", "::", "::6"))


def with_vip_outbounds(snapshot: MeshSnapshot, proxy: Proxy) -> Proxy:
    """The proxy with the mesh's VIP outbounds for outbounds (resolveVIPOutbounds): those of its
    reachableServices when it lists some, never one on an address and port it serves itself; then those of
    the MeshServices (xds/generate/meshservices.py), which the policies resolve by `destinations`, and of the
    MeshExternalServices (xds/generate/meshexternalservices.py), in Kuma's order."""
    tp = proxy.transparent
    if tp is None:
        return proxy
    reachable = set(tp.reachable_services)
    own = {(i.address, i.port) for i in proxy.inbounds}
    outbounds = tuple(Outbound(port=o.port, address=o.address, service=o.service, tags=dict(o.tags),
                               mesh=dict(o.tags).get(names.MESH_TAG, ""))
                      for o in snapshot.vip_outbounds
                      if (not reachable or o.service in reachable) and (o.address, o.port) not in own)
    taken = {(o.address, o.port) for o in outbounds}
    for real in (meshservices.outbounds(snapshot, proxy, tp), meshexternalservices.outbounds(snapshot, proxy, tp)):
        outbounds += tuple(o for o in real if (o.address, o.port) not in taken)
        taken.update((o.address, o.port) for o in real)
    return replace(proxy, outbounds=outbounds, destinations=snapshot.destinations or None)


def _passthrough_cluster(name: str, bind: str | None) -> cluster_pb2.Cluster:
    cluster = original_dst_cluster(name)
    if bind is not None:
        cluster.upstream_bind_config.source_address.address = bind
        cluster.upstream_bind_config.source_address.port_value = 0
    return cluster


def _capture_listener(name: str, address: str, port: int, direction: int) -> listener_pb2.Listener:
    listener = listener_pb2.Listener(name=name, address=socket_address(address, port), traffic_direction=direction)
    listener.use_original_dst.value = True
    if direction == base_pb2.INBOUND:
        listener.enable_reuse_port.value = False   # as inbound listeners (xds/generate/listeners.py)
    listener.filter_chains.add().filters.append(network_filter(names.TCP_PROXY_FILTER, tcp_proxy(name, name)))
    return listener


def add_capture(snapshot: MeshSnapshot, tp: TransparentProxy, resources: Resources) -> None:
    """The capture listeners and passthrough clusters, IPv6 ones too unless only IPv4 is captured."""
    if tp.outbound_port <= 0:
        return   # Kuma generates none when outbound traffic is not redirected
    listeners, clusters = resources[names.LISTENER], resources[names.CLUSTER]
    no_destination = cluster_pb2.Cluster(name=NO_DESTINATION, alt_stat_name=NO_DESTINATION, type=cluster_pb2.Cluster.STATIC)
    no_destination.connect_timeout.seconds = 5
    clusters[NO_DESTINATION] = no_destination
    for family, everywhere, inbound_source in _FAMILIES if tp.ipv6 else _FAMILIES[:1]:
        outbound, inbound = f"outbound:passthrough:{family}", f"inbound:passthrough:{family}"
        listeners[outbound] = _capture_listener(outbound, everywhere, tp.outbound_port, base_pb2.OUTBOUND)
        if snapshot.passthrough:
            clusters[outbound] = _passthrough_cluster(outbound, None)
        listeners[inbound] = _capture_listener(inbound, everywhere, tp.inbound_port, base_pb2.INBOUND)
        clusters[inbound] = _passthrough_cluster(inbound, inbound_source)


def _to_v6(address: str) -> str:
    """Kuma's util_net.ToV6: an IPv4 address as IPv4-mapped IPv6, in Go's spelling (::ffff:f000:1)."""
    ip = ipaddress.ip_address(address)
    if ip.version != 4:
        return address
    packed = ip.packed
    return f"::ffff:{packed[0] << 8 | packed[1]:x}:{packed[2] << 8 | packed[3]:x}"


def dns_records(snapshot: MeshSnapshot, proxy: Proxy, tp: TransparentProxy) -> bytes:
    """The `/dns` body: every name of a VIP the proxy has an outbound to, sorted by name (DNSGenerator)."""
    addresses = {o.address for o in proxy.outbounds}
    ips: dict[str, list[str]] = {}
    for vip in snapshot.vip_domains:
        if vip.address not in addresses:
            continue   # no outbound, no use resolving it
        both = [vip.address]
        if tp.ipv6 and _to_v6(vip.address) != vip.address:
            both.append(_to_v6(vip.address))
        for domain in vip.domains:
            ips[domain] = both
    body = {"records": [{"name": name, "ips": ips[name]} for name in sorted(ips)], "ttl": DNS_TTL,
            "extraLabels": _extra_labels(proxy)}
    return json.dumps(body, separators=(",", ":")).encode()


def _extra_labels(proxy: Proxy) -> dict[str, str]:
    """dnsExtraLabels: what kuma-dp labels its DNS metrics with (Go's JSON: keys sorted)."""
    labels = {"mesh": proxy.mesh}
    for label, key in (("kuma.io/workload", "kuma_workload"), ("k8s.kuma.io/namespace", "k8s_kuma_io_namespace"),
                       ("kuma.io/zone", "kuma_io_zone")):
        if proxy.labels.get(label):
            labels[key] = proxy.labels[label]
    return dict(sorted(labels.items()))


def add_dns(snapshot: MeshSnapshot, proxy: Proxy, resources: Resources) -> None:
    """The records for kuma-dp's embedded DNS server: when its kuma-dp runs one (a DNS port and the
    feature) for a transparent proxy."""
    tp = proxy.transparent
    if tp is None or not tp.dns_port or FEATURE_EMBEDDED_DNS not in proxy.features:
        return
    add_config_route(resources, names.meshmetric_config_socket(proxy.work_dir), names.DNS_CONFIG_PATH,
                     dns_records(snapshot, proxy, tp), proxy.ipv6_enabled)
