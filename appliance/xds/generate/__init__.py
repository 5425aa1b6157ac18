"""From "what the store holds" to "what Envoy gets": pure functions for a Universal sidecar.

    resources = generate_sidecar(snapshot, proxy, identity, cache=per_revision_cache)

`Resources` maps a type URL (names.LISTENER, CLUSTER, ENDPOINT, ROUTE, SECRET; always all five keys)
to {resource name: protobuf message}. Generation is deterministic: the same input gives messages that
serialize (deterministic=True) to the same bytes, so a server can hash them and skip what did not change.

The base resources follow Kuma 2.14's generators; then the policy plugins edit them in Kuma's plugin
order (MeshTimeout, MeshTrafficPermission, MeshCircuitBreaker, MeshRetry), each as
`plugin.apply(plugin.match(snapshot, proxy), resources)`.

Sharing: pass one dict as `cache` per snapshot revision (never across revisions) and proxies of the
mesh share the ClusterLoadAssignments, the CA secret and the outbound clusters and listeners whose
policies match alike. Shared messages may sit in many proxies' `Resources`: treat every returned message as read-only.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, Hashable, MutableMapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from google.protobuf.message import Message

from appliance.policies._envoy import Resources
from appliance.policies.meshcircuitbreaker import plugin as meshcircuitbreaker
from appliance.policies.meshretry import plugin as meshretry
from appliance.policies.meshtimeout import plugin as meshtimeout
from appliance.policies.meshtrafficpermission import plugin as meshtrafficpermission
from appliance.xds.generate import names
from appliance.xds.generate.clusters import cluster_for, local_cluster
from appliance.xds.generate.endpoints import has_load_assignment, load_assignment_for
from appliance.xds.generate.listeners import inbound_listener, outbound_listener
from appliance.xds.generate.tls import ca_secret, identity_secret
from appliance.xds.model import Identity, MeshSnapshot, Outbound, Proxy

__all__ = ["PLUGINS", "Resources", "ca_secret", "cluster_for", "generate_sidecar", "load_assignment_for",
           "outbound_cluster", "serialize"]

Cache = MutableMapping[Hashable, Any]

# Kuma's plugin order (`+kuma:policy:order`): MeshTimeout 1000, MTP 1100, MCB 1300, MeshRetry 1400.
PLUGINS: tuple[ModuleType, ...] = (meshtimeout, meshtrafficpermission, meshcircuitbreaker, meshretry)


def _cached(cache: Cache | None, key: Hashable, build: Any) -> Any:
    if cache is None:
        return build()
    found = cache.get(key)
    if found is None:
        found = cache[key] = build()
    return found


def outbound_cluster(snapshot: MeshSnapshot, service: str, matched: tuple[Any, ...]) -> cluster_pb2.Cluster:
    """`cluster_for` with the plugins' outbound effects (timeouts, circuit breakers) applied.

    The plugins see a resource set holding only this cluster, so they can only touch it; what they
    do to it depends on the snapshot, the service and their `to` rules (`matched[i].to_key`).
    """
    cluster = cluster_for(snapshot, service)
    only_cluster: Resources = {names.CLUSTER: {service: cluster}}
    for plugin, plugin_matched in zip(PLUGINS, matched):
        plugin.apply(plugin_matched, only_cluster)
    return cluster


def outbound_listener_with_policies(snapshot: MeshSnapshot, outbound: Outbound, proxy: Proxy,
                                    matched: tuple[Any, ...]) -> listener_pb2.Listener:
    """`outbound_listener` with the plugins' effects (timeouts, retries) applied, as `outbound_cluster`.

    What they do to it depends on the snapshot, the outbound, the proxy's IPv6 setting and their `to`
    rules (`matched[i].to_key`)."""
    listener = outbound_listener(outbound, snapshot, proxy)
    only_listener: Resources = {names.LISTENER: {listener.name: listener}}
    for plugin, plugin_matched in zip(PLUGINS, matched):
        plugin.apply(plugin_matched, only_listener)
    return listener


def generate_sidecar(snapshot: MeshSnapshot, proxy: Proxy, identity: Identity | None,
                     cache: Cache | None = None) -> Resources:
    """All resources of one sidecar. With mTLS on and no `identity`, the identity secret is left out:
    Envoy then keeps the mTLS listeners and clusters warming (nothing flows in plaintext) until it comes."""
    resources: Resources = {type_url: {} for type_url in names.TYPE_ORDER}
    listeners, clusters = resources[names.LISTENER], resources[names.CLUSTER]
    for inbound in proxy.inbounds:
        listener = inbound_listener(inbound, snapshot, proxy)
        listeners[listener.name] = listener
        cluster = local_cluster(inbound)
        clusters[cluster.name] = cluster  # two inbounds to one service port share it; the last wins, as in Kuma

    matched = tuple(plugin.match(snapshot, proxy) for plugin in PLUGINS)
    for plugin, plugin_matched in zip(PLUGINS, matched):
        plugin.apply(plugin_matched, resources)

    # Added after the per-proxy pass: outbound listeners and clusters and CLAs are shared between proxies.
    to_keys = tuple(getattr(m, "to_key", ()) for m in matched)
    for outbound in proxy.outbounds:
        key = ("outbound", outbound.address, outbound.port, outbound.service, tuple(sorted(outbound.tags.items())),
               proxy.ipv6_enabled, to_keys)
        listener = _cached(cache, key, lambda o=outbound: outbound_listener_with_policies(snapshot, o, proxy, matched))
        listeners[listener.name] = listener
    endpoints = resources[names.ENDPOINT]
    for service in sorted({o.service for o in proxy.outbounds}):
        clusters[service] = _cached(cache, ("cluster", service, to_keys),
                                    lambda s=service: outbound_cluster(snapshot, s, matched))
        if has_load_assignment(snapshot, service):
            endpoints[service] = _cached(cache, ("cla", service), lambda s=service: load_assignment_for(snapshot, s))

    if snapshot.mtls is not None:
        secrets = resources[names.SECRET]
        if identity is not None:
            secrets[names.identity_secret(snapshot.mesh)] = identity_secret(snapshot.mesh, identity)
        secrets[names.mesh_ca_secret(snapshot.mesh)] = _cached(cache, ("ca",), lambda: ca_secret(snapshot))
    return resources


def serialize(message: Message) -> bytes:
    """The bytes to hash and send: deterministic, so equal content means equal bytes."""
    return message.SerializeToString(deterministic=True)
