"""From "what the store holds" to "what Envoy gets": pure functions for a Universal sidecar.

    resources = generate_sidecar(snapshot, proxy, identity, cache=per_revision_cache)

`Resources` maps a type URL (names.LISTENER, CLUSTER, ENDPOINT, ROUTE, SECRET; always all five keys)
to {resource name: protobuf message}. Generation is deterministic: the same input gives messages that
serialize (deterministic=True) to the same bytes, so a server can hash them and skip what did not change.

The base resources follow Kuma 2.14's generators; then the policy plugins edit them in Kuma's plugin
order (`policies.plugins()`, each policy's ORDER), each as `plugin.apply(plugin.match(snapshot, proxy), resources)`;
then those with `apply_to_proxy` once more on all of the proxy's resources (GenerationError when they fail).

Sharing: pass one dict as `cache` per snapshot revision and proxies of the mesh share the
ClusterLoadAssignments, the CA secret and the resources of each outbound (listener, clusters, load
assignments) whose policies match alike. Across revisions only what xds/shared.py `Shared.successor` hands
over after a change of policies only: the matches that read none of the changed kinds, and each proxy's own
resources and the outbounds' resources, used again while the plugins' matches are equal for them. Shared
messages may sit in many proxies' `Resources`: treat every returned message as read-only.
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
# which resources each plugin's `apply` leaves alone (policies/__init__.py): asked for every proxy
_OUTBOUND_ONLY = tuple(getattr(p, "OUTBOUND_ONLY", False) for p in PLUGINS)
_NOT_OUTBOUNDS = tuple(getattr(p, "INBOUND_ONLY", False) or getattr(p, "OWN_ONLY", False) for p in PLUGINS)
_OWN_ONLY = tuple(getattr(p, "OWN_ONLY", False) for p in PLUGINS)
_OWN_EDITORS = tuple((i, p.edits_own_resources) for i, p in enumerate(PLUGINS) if hasattr(p, "edits_own_resources"))
MATCHED = "matched"   # cache entries (MATCHED, plugin index, id(proxy)) -> (proxy, its match, policy kinds read)
OUTBOUND = "outbound"  # cache entries (OUTBOUND, address, port, ..., the plugins' to_keys at TO_KEYS, ...): _outbound_unit
TO_KEYS = 6
OWN = "own"           # cache entries (OWN, id(proxy)) -> (proxy, the matches, its own resources): _own_resources
SAME = "same"         # cache entries (SAME, id(a), id(b), place) -> (a, b, equivalent): _equivalent
PREVIOUS = "previous"  # cache entries (PREVIOUS, *outbound key but the plugins' keys) -> [outbound entries]


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
        for plugin, plugin_matched, own_only in zip(PLUGINS, matched, _OWN_ONLY):
            if not own_only:
                plugin.apply(plugin_matched, unit)
    return unit


def _with_eds_names(unit: Resources, matched: tuple[Any, ...]) -> tuple[Resources, tuple[str, ...], tuple[Any, ...]]:
    """An outbound's resources, the clusters among them that need a load assignment (EDS), and the matches
    they were made with."""
    return unit, tuple(n for n, c in unit[names.CLUSTER].items() if c.type == cluster_pb2.Cluster.EDS), matched


def _outbound_unit(cache: Cache | None, key: tuple[Any, ...], snapshot: MeshSnapshot, outbound: Outbound,
                   proxy: Proxy, matched: tuple[Any, ...]) -> tuple[Resources, tuple[str, ...], tuple[Any, ...]]:
    """The outbound's resources, kept in `cache` by `key`. After a change of policies only, the previous
    revision's resources of an outbound alike (`key` but the plugins' keys, which tell proxies apart within a
    revision only) serve again when the plugins' matches are equivalent for it: a route change rebuilds the
    outbounds of the routed service alone."""
    if cache is None:
        return _with_eds_names(outbound_resources(snapshot, outbound, proxy, matched), matched)
    found = cache.get(key)
    if found is None:
        place = (outbound.address, outbound.port)
        for unit, eds, was in cache.get((PREVIOUS, *key[1:TO_KEYS], *key[TO_KEYS + 1:]), ()):
            if _equivalent(cache, was, matched, place):
                found = (unit, eds, matched)
                break
        else:
            found = _with_eds_names(outbound_resources(snapshot, outbound, proxy, matched), matched)
        cache[key] = found
    return found


def resolve_outbounds(snapshot: MeshSnapshot, proxy: Proxy) -> Proxy:
    """The proxy with the outbounds its resources are generated for: its own (a `backendRef` to a MeshService
    port or a MeshExternalService named as that resource), then a transparent proxy's VIP outbounds. The inspect
    API's `_layout` reads the same."""
    proxy = meshexternalservices.with_backend_refs(snapshot, meshservices.with_backend_refs(snapshot, proxy))
    return transparent.with_vip_outbounds(snapshot, proxy)


def _build_own(snapshot: MeshSnapshot, proxy: Proxy, matched: tuple[Any, ...]) -> Resources:
    """The proxy's own resources (transparent capture, inbound listeners and their local clusters, DNS) after
    the plugins' per-proxy pass. Plugins that edit only the resources of outbounds (OUTBOUND_ONLY) sit it out."""
    resources: Resources = {type_url: {} for type_url in names.TYPE_ORDER}
    if proxy.transparent is not None:
        transparent.add_capture(snapshot, proxy.transparent, resources)
    listeners, clusters = resources[names.LISTENER], resources[names.CLUSTER]
    for inbound in proxy.inbounds:
        listener = inbound_listener(inbound, snapshot, proxy)
        listeners[listener.name] = listener
        cluster = local_cluster(inbound)
        clusters[cluster.name] = cluster  # two inbounds to one service port share it; the last wins, as in Kuma
    transparent.add_dns(snapshot, proxy, resources)
    with packed_once():
        for plugin, plugin_matched, outbound_only in zip(PLUGINS, matched, _OUTBOUND_ONLY):
            if not outbound_only:
                plugin.apply(plugin_matched, resources)
    return resources


def _equivalent(cache: Cache, old: tuple[Any, ...], new: tuple[Any, ...], place: tuple[str, int] | None = None) -> bool:
    """Whether the plugins' matches `new` do what `old` did: to a proxy's own resources (`place` None), or to the
    resources of its outbound at `place`. Each match is the same object (one the revision took over) or an equal
    one (matches are plain data, and `apply` reads nothing else), or the part of it that `apply` reads for that
    outbound (`outbound_view`) is equal; plugins that do not touch those resources are not asked. Comparisons
    are kept in `cache`: matches are mostly shared by groups of proxies."""
    skipped = _NOT_OUTBOUNDS if place is not None else _OUTBOUND_ONLY
    for plugin, a, b, skip in zip(PLUGINS, old, new, skipped):
        if a is b or skip:
            continue
        view = getattr(plugin, "outbound_view", None) if place is not None else None
        key = (SAME, id(a), id(b), place if view else None)
        hit = cache.get(key)
        if hit is None or hit[0] is not a or hit[1] is not b:
            hit = cache[key] = (a, b, view(a, place) == view(b, place) if view else a == b)
        if not hit[2]:
            return False
    return True


def _own_resources(cache: Cache | None, snapshot: MeshSnapshot, proxy: Proxy, matched: tuple[Any, ...]) -> Resources:
    """`_build_own` with inbound routes moved to RDS, kept in `cache` by the proxy with the matches it was built
    with: read-only. The cache of the next revision takes it over when only policies changed (xds/shared.py), and
    it holds while the matches are equivalent: a route change leaves every proxy's own resources as they were."""
    if cache is None:
        own = _build_own(snapshot, proxy, matched)
        inbound_routes_by_rds(own)
        return own
    key = (OWN, id(proxy))
    hit = cache.get(key)
    if hit is not None and hit[0] is proxy and _equivalent(cache, hit[1], matched):
        if hit[1] is not matched:
            cache[key] = (proxy, matched, hit[2])
        return hit[2]
    own = _build_own(snapshot, proxy, matched)
    inbound_routes_by_rds(own)
    cache.pop(key, None)   # a new entry goes last: xds/shared.py looks for new messages there
    cache[key] = (proxy, matched, own)
    return own


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
    matched = tuple(_match(cache, index, snapshot, proxy) for index in range(len(PLUGINS)))
    # A plugin whose apply_to_proxy edits the proxy's own (inbound) resources (MeshProxyPatch) sees their inline
    # route configurations: those go to RDS after it, and the own resources are built afresh for it.
    own_first = not any(edits(matched[i]) for i, edits in _OWN_EDITORS)
    if own_first:
        resources = {t: dict(items) for t, items in _own_resources(cache, snapshot, proxy, matched).items()}
    else:
        resources = _build_own(snapshot, proxy, matched)

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
        key = (OUTBOUND, outbound.address, outbound.port, outbound.service, tuple(sorted(outbound.tags.items())),
               proxy.ipv6_enabled, to_keys, also_called, proxy.serialized_tags, proxy.transparent is not None)
        unit, eds, _ = _outbound_unit(cache, key, snapshot, outbound, proxy, matched)
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
    if not own_first:
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
