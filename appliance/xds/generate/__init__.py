"""From "what the store holds" to "what Envoy gets": pure functions for a Universal sidecar.

    resources = generate_sidecar(snapshot, proxy, identity, cache=per_revision_cache)

`Resources` maps a type URL (names.LISTENER, CLUSTER, ENDPOINT, ROUTE, SECRET; always all five keys)
to {resource name: protobuf message}. Generation is deterministic: the same input gives messages that
serialize (deterministic=True) to the same bytes, so a server can hash them and skip what did not change.

The base resources follow Kuma 2.14's generators; then the policy plugins edit them in Kuma's plugin
order (`policies.plugins()`, each policy's ORDER), each as `plugin.apply(plugin.match(snapshot, proxy), resources)`;
then those with `apply_to_proxy` once more on all of the proxy's resources (GenerationError when they fail).

Sharing: pass one dict as `cache` per snapshot revision (never across revisions) and proxies of the
mesh share the ClusterLoadAssignments, the CA secret and the resources of each outbound (listener,
clusters, load assignments) whose policies match alike. Shared messages may sit in many proxies'
`Resources`: treat every returned message as read-only.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Hashable, MutableMapping

from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf.message import Message

from appliance import policies
from appliance.model import names
from appliance.model.names import Resources
from appliance.model.proxy import Identity, MeshSnapshot, Outbound, PolicyKinds, Proxy
from appliance.policies._envoy import packed_once
from appliance.xds.generate.clusters import cluster_for, local_cluster
from appliance.xds.generate.cross_mesh import cluster_of, cross_mesh_outbound
from appliance.xds.generate.endpoints import load_assignment_for
from appliance.xds.generate.gateway import generate_gateway
from appliance.xds.generate.listeners import inbound_listener, outbound_listener
from appliance.xds.generate.routes import inbound_routes_by_rds
from appliance.xds.generate import meshexternalservices, meshservices, transparent
from appliance.xds.generate.tls import ca_secret, identity_secret

__all__ = ["PLUGINS", "Resources", "ca_secret", "cluster_for", "generate_sidecar", "load_assignment_for",
           "outbound_resources", "serialize"]

Cache = MutableMapping[Hashable, Any]

PLUGINS = policies.plugins()
MATCHED = "matched"   # cache entries (MATCHED, plugin index, id(proxy)) -> (proxy, its match, policy kinds read)


def _cached(cache: Cache | None, key: Hashable, build: Any) -> Any:
    if cache is None:
        return build()
    found = cache.get(key)
    if found is None:
        found = cache[key] = build()
    return found


def _match(cache: Cache | None, index: int, snapshot: MeshSnapshot, proxy: Proxy) -> Any:
    """PLUGINS[index].match, kept in `cache` by the proxy with the policy kinds it read: the cache of the
    next revision may take it over while those kinds are all that changed (xds/meshes.py)."""
    plugin = PLUGINS[index]
    if cache is None:
        return plugin.match(snapshot, proxy)
    key = (MATCHED, index, id(proxy))
    hit = cache.get(key)
    if hit is not None and hit[0] is proxy:
        return hit[1]
    policies = snapshot.policies
    if not isinstance(policies, PolicyKinds) or policies.reads is not None:
        return plugin.match(snapshot, proxy)
    policies.reads = set()
    try:
        found = plugin.match(snapshot, proxy)
        cache[key] = (proxy, found, frozenset(policies.reads))
    finally:
        policies.reads = None
    return found


def outbound_resources(snapshot: MeshSnapshot, outbound: Outbound, proxy: Proxy,
                       matched: tuple[Any, ...]) -> Resources:
    """One outbound's listener and its service's cluster, with the plugins applied.

    The plugins see only these resources, so they can only touch (or add to) them: routes may add clusters
    for parts of the service. What they do depends on the snapshot, the outbound, the proxy's IPv6 setting and
    tags (x-kuma-tags) and their `to` rules (`matched[i].to_key`): what `generate_sidecar` caches by. Load assignments are not
    part of it: they change with endpoints alone, and are added per EDS cluster by `generate_sidecar`.
    """
    listener = outbound_listener(outbound, snapshot, proxy)
    unit: Resources = {type_url: {} for type_url in names.TYPE_ORDER}
    unit[names.LISTENER][listener.name] = listener
    clusters = unit[names.CLUSTER]
    clusters[outbound.service] = cluster_for(snapshot, outbound.service)
    for plugin_matched in matched:   # the other services this outbound's routes send to
        for service in getattr(plugin_matched, "backend_services", {}).get((outbound.address, outbound.port), ()):
            if service not in clusters:
                clusters[service] = cluster_for(snapshot, service)
    with packed_once():
        for plugin, plugin_matched in zip(PLUGINS, matched):
            plugin.apply(plugin_matched, unit)
    return unit


def _with_eds_names(unit: Resources) -> tuple[Resources, tuple[str, ...]]:
    """An outbound's resources and the clusters among them that need a load assignment (EDS)."""
    return unit, tuple(n for n, c in unit[names.CLUSTER].items() if c.type == cluster_pb2.Cluster.EDS)


def resolve_outbounds(snapshot: MeshSnapshot, proxy: Proxy) -> Proxy:
    """The proxy with the outbounds its resources are generated for: its own (a `backendRef` to a MeshService
    port or a MeshExternalService named as that resource), then a transparent proxy's VIP outbounds. The inspect
    API's `_layout` reads the same."""
    proxy = meshexternalservices.with_backend_refs(snapshot, meshservices.with_backend_refs(snapshot, proxy))
    return transparent.with_vip_outbounds(snapshot, proxy)


def generate_sidecar(snapshot: MeshSnapshot, proxy: Proxy, identity: Identity | None,
                     cache: Cache | None = None) -> Resources:
    """All resources of one sidecar. With mTLS on and no `identity`, the identity secret is left out:
    Envoy then keeps the mTLS listeners and clusters warming (nothing flows in plaintext) until it comes.
    A mesh whose mTLS cannot be built (`snapshot.mtls_error`) gives its sidecars no resources at all.
    A builtin gateway proxy gets its own kind of resources (xds/generate/gateway.py)."""
    if proxy.builtin_gateway:
        return generate_gateway(snapshot, proxy, identity)
    resources: Resources = {type_url: {} for type_url in names.TYPE_ORDER}
    if snapshot.mtls_error is not None:
        # the mesh asks for mTLS and its CA cannot be used: nothing rather than plaintext (fail closed)
        return resources
    proxy = resolve_outbounds(snapshot, proxy)
    # outbounds to crossMesh gateways (kuma.io/mesh): this mesh's policies do not configure them
    cross_mesh = tuple(o for o in proxy.outbounds if o.mesh)
    if cross_mesh:
        proxy = replace(proxy, outbounds=tuple(o for o in proxy.outbounds if not o.mesh))
    if proxy.transparent is not None:
        transparent.add_capture(snapshot, proxy.transparent, resources)
    listeners, clusters = resources[names.LISTENER], resources[names.CLUSTER]
    for inbound in proxy.inbounds:
        listener = inbound_listener(inbound, snapshot, proxy)
        listeners[listener.name] = listener
        cluster = local_cluster(inbound)
        clusters[cluster.name] = cluster  # two inbounds to one service port share it; the last wins, as in Kuma
    transparent.add_dns(snapshot, proxy, resources)

    matched = tuple(_match(cache, index, snapshot, proxy) for index in range(len(PLUGINS)))
    with packed_once():
        for plugin, plugin_matched in zip(PLUGINS, matched):
            plugin.apply(plugin_matched, resources)

    # Added after the per-proxy pass: the resources of an outbound are shared between proxies.
    endpoints = resources[names.ENDPOINT]
    to_keys = tuple(getattr(m, "to_key", ()) for m in matched)
    called = {o.service for o in proxy.outbounds}
    routed = [m.backend_services for m in matched if hasattr(m, "backend_services")]
    for outbound in proxy.outbounds:
        # A route's other backends (a mirror, a backendRef to another service) get the limits and balancing
        # of their service only when the proxy calls that service itself (Kuma's GatherTargetedClusters):
        # which of them it calls is part of what the outbound's resources are shared by.
        place = (outbound.address, outbound.port)
        also_called = tuple(sorted({s for services in routed for s in services.get(place, ())
                                    if s in called and s != outbound.service}))
        # the caller's tags go into its HTTP outbounds' x-kuma-tags: only proxies with the same tags share them
        key = ("outbound", outbound.address, outbound.port, outbound.service, tuple(sorted(outbound.tags.items())),
               proxy.ipv6_enabled, to_keys, also_called, proxy.serialized_tags, proxy.transparent is not None)
        unit, eds = _cached(cache, key, lambda o=outbound: _with_eds_names(
            outbound_resources(snapshot, o, proxy, matched)))
        for type_url, by_name in unit.items():
            resources[type_url].update(by_name)
        for name in eds:
            endpoints[name] = _cached(cache, ("cla", name), lambda n=name: load_assignment_for(snapshot, n))

    for outbound in cross_mesh:
        for type_url, by_name in cross_mesh_outbound(snapshot, outbound, proxy).items():
            resources[type_url].update(by_name)
        name = cluster_of(snapshot, outbound)
        endpoints[name] = _cached(cache, ("cla", name), lambda n=name: load_assignment_for(snapshot, n))

    # Plugins of the whole proxy (MeshProxyPatch) see every resource, inbound and outbound, and inline
    # inbound route configurations: those go to RDS only after them.
    for plugin, plugin_matched in zip(PLUGINS, matched):
        if hasattr(plugin, "apply_to_proxy"):
            plugin.apply_to_proxy(plugin_matched, resources)
    inbound_routes_by_rds(resources)

    if snapshot.mtls is not None:
        secrets = resources[names.SECRET]
        if identity is not None:
            secrets[names.identity_secret(snapshot.mesh)] = identity_secret(snapshot.mesh, identity)
        secrets[names.mesh_ca_secret(snapshot.mesh)] = _cached(cache, ("ca",), lambda: ca_secret(snapshot))
    return resources


def serialize(message: Message) -> bytes:
    """The bytes to hash and send: deterministic, so equal content means equal bytes."""
    return message.SerializeToString(deterministic=True)
