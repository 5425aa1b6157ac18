"""MeshHTTPRoute on a sidecar: the routes of HTTP outbounds, and clusters for the parts of services they use.

As Kuma 2.14 (plugin/v1alpha1/listeners.go, api/v1alpha1/{compare,helpers}.go, core/rules/merge):
- each `to[]` entry of the policies selecting the proxy contributes its rules (reversed); entries of several
  policies merge per destination in precedence order: rules with equal `matches` merge their `default`
  (JSON merge patch: a later policy's backendRefs or filters replace an earlier one's) and take the place
  of the later one; the list is then reversed, so the most precedent policy's rules come first;
- every match of every rule becomes a route named by the hash of its rule's matches; routes are sorted
  (stable) by Gateway API precedence: Exact path, then longer PathPrefix, then longer RegularExpression,
  then with method, then more headers, then more query parameters;
- unless some route matches exactly `PathPrefix /`, a catch-all to the whole service comes last; a rule
  without backendRefs goes to the whole service (weight 100);
- a backendRef MeshService is the service's cluster; MeshServiceSubset a cluster of its own named
  `<service>-<hash of its tags>` with the endpoints carrying those tags (an empty one answers 503);
  weight 0 drops a backend; a route with no backend left is dropped; a backend that is not an HTTP
  service is dropped.
Only HTTP, HTTP/2 and gRPC outbounds are routed here; TCP outbounds belong to MeshTCPRoute.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, cmp_to_key
from typing import Any, Iterable

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from appliance.model.proxy import MeshSnapshot, Proxy
from appliance.policies import _envoy, _rules
from appliance.policies._backends import Backend, add_clusters, backend
from appliance.policies._matches import hash_matches, match_fields
from appliance.policies.meshhttproute._envoy_routes import envoy_routes

KIND = "MeshHTTPRoute"
OUTBOUND_ONLY = True   # routes on outbound listeners only (policies/__init__.py)
Conf = dict[str, Any]
CATCH_ALL: Conf = {"path": {"value": "/", "type": "PathPrefix"}}
DEFAULT_WEIGHT = 100


# --- merging the rules of several policies (merge.Confs with mergeValuesByKey on `rules`) ----------------

def _conf_of(entry: Conf) -> Conf:
    return {"rules": list(reversed(entry.get("rules") or []))}


def merge_rules(confs: Iterable[Conf]) -> Conf:
    """Rules with equal matches merge (later over earlier) at the place of the later; the result is reversed."""
    merged: list[tuple[Any, list[Conf]] | None] = []
    for conf in confs:
        for rule in conf.get("rules") or []:
            key = [match_fields(m) for m in rule.get("matches") or []]
            defaults = [rule.get("default") or {}]
            for i, earlier in enumerate(merged):
                if earlier is not None and earlier[0] == key:
                    defaults = earlier[1] + defaults
                    merged[i] = None
            merged.append((key, defaults))
    rules = [{"matches": key, "default": _rules.merge(defaults)} for key, defaults in filter(None, merged)]
    return {"rules": list(reversed(rules))}


# --- ordering (api.CompareMatch) -----------------------------------------------------------------------

def _compare_path(a: Conf | None, b: Conf | None) -> int:
    if a is None or b is None:
        return (a is None) - (b is None)
    rank = {"Exact": 0, "PathPrefix": 1, "RegularExpression": 2}
    if a.get("type") != b.get("type"):
        return rank.get(a.get("type"), 3) - rank.get(b.get("type"), 3)
    if a.get("type") == "Exact":
        return 0
    return len(str(b.get("value", ""))) - len(str(a.get("value", "")))   # longer first


def compare_match(a: Conf, b: Conf) -> int:
    for found in (_compare_path(a.get("path"), b.get("path")),
                  (a.get("method") is None) - (b.get("method") is None),
                  len(b.get("headers") or []) - len(a.get("headers") or []),
                  len(b.get("queryParams") or []) - len(a.get("queryParams") or [])):
        if found:
            return found
    return 0


# --- what a proxy gets ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Route:
    name: str
    match: Conf
    filters: tuple[Conf, ...]
    splits: tuple[Backend, ...]
    mirrors: dict[int, Backend]          # a RequestMirror filter's index -> where it mirrors to


@dataclass(frozen=True)
class OutboundRoutes:
    service: str
    routes: tuple[Route, ...]
    auto_host_rewrite: tuple[bool, ...]   # per route: some backend is an external service

    @property
    def backends(self) -> tuple[Backend, ...]:
        return tuple(b for r in self.routes for b in (*r.splits, *r.mirrors.values()))


@dataclass(frozen=True)
class Matched:
    mesh: str
    outbounds: dict[_rules.InboundKey, OutboundRoutes]
    to_key: tuple[str, ...]

    @cached_property   # asked once per outbound of the proxy (xds/generate)
    def backend_services(self) -> dict[_rules.InboundKey, tuple[str, ...]]:
        """Per outbound, the services its routes send to: the generator adds their clusters."""
        return {k: tuple(sorted({b.service for b in o.backends})) for k, o in self.outbounds.items()}


def _http(snapshot: MeshSnapshot, service: str) -> bool:
    return snapshot.protocols.get(service, "tcp") in _envoy.HTTP_PROTOCOLS


def _usable(snapshot: MeshSnapshot, ref: Any) -> Backend | None:
    found = backend(ref, snapshot.destinations) if isinstance(ref, dict) else None
    if found is None or found.weight == 0 or not _http(snapshot, found.service):
        return None
    return found


def routes_for(snapshot: MeshSnapshot, service: str, rules: list[Conf]) -> OutboundRoutes:
    """prepareRoutes + MakeHTTPSplit for one destination service and its merged rules. Without a `service` (a
    gateway's virtual host) there is no catch-all, and only a redirect may have no backend."""
    prepared: list[tuple[str, Conf, Conf]] = []
    for rule in rules:
        name = hash_matches(rule.get("matches") or [])
        prepared += [(name, match, rule.get("default") or {}) for match in rule.get("matches") or []]
    prepared.sort(key=cmp_to_key(lambda a, b: compare_match(a[1], b[1])))
    if service and not any(match_fields(match) == CATCH_ALL for _, match, _ in prepared):
        prepared.append((hash_matches([CATCH_ALL]), CATCH_ALL, {}))
    whole = (Backend(service, (), DEFAULT_WEIGHT),) if service else ()
    routes, rewrites = [], []
    for name, match, conf in prepared:
        refs = conf.get("backendRefs") or []
        splits = tuple(found for found in map(lambda r: _usable(snapshot, r), refs) if found) if refs else whole
        filters = tuple(conf.get("filters") or [])
        if not splits and (service or not any(f.get("type") == "RequestRedirect" for f in filters)):
            continue
        mirrors = {}
        for index, item in enumerate(filters):
            target = _usable(snapshot, (item.get("requestMirror") or {}).get("backendRef"))
            if item.get("type") == "RequestMirror" and target is not None:
                mirrors[index] = target
        routes.append(Route(name, match, filters, splits, mirrors))
        rewrites.append(any(s.service in snapshot.external_services or s.service in snapshot.mesh_external_services
                            for s in splits))
    return OutboundRoutes(service, tuple(routes), tuple(rewrites))


NOTHING = Matched("", {}, ())   # no policy of this kind in the mesh

# The routes of one destination are the same for every proxy whose merged rule for it is the same Rule
# (rules are built once per set of policies, _rules._built): kept per mesh for its latest snapshot only,
# each entry holding its Rule so that no id is reused meanwhile.
_ROUTES: dict[str, tuple[MeshSnapshot, dict[tuple[str, int], tuple[_rules.Rule, OutboundRoutes]]]] = {}


def _routes_of(snapshot: MeshSnapshot, service: str, rule: _rules.Rule) -> OutboundRoutes:
    entry = _ROUTES.get(snapshot.mesh)
    if entry is None or entry[0] is not snapshot:
        entry = _ROUTES[snapshot.mesh] = (snapshot, {})
    memo = entry[1]
    hit = memo.get((service, id(rule)))
    if hit is None or hit[0] is not rule:
        hit = memo[(service, id(rule))] = (rule, routes_for(snapshot, service, rule.conf["rules"]))
    return hit[1]


def match(snapshot: MeshSnapshot, proxy: Proxy) -> Matched:
    if not snapshot.policies.get(KIND):
        return NOTHING
    selection = _rules.select(snapshot.policies[KIND], proxy)

    def build() -> Matched:
        rules = _rules.to_rules(selection, _conf_of, merge_rules)
        outbounds = {}
        for outbound in proxy.outbounds:
            if not _http(snapshot, outbound.service):
                continue
            rule = _rules.compute(rules, {_rules.SERVICE_TAG: outbound.service})
            if rule is not None and rule.conf.get("rules"):
                outbounds[(outbound.address, outbound.port)] = _routes_of(snapshot, outbound.service, rule)
        return Matched(snapshot.mesh, outbounds, selection.key)
    return _rules.per_group(snapshot, KIND, selection, proxy, build)


def outbound_view(matched: Matched, place: _rules.InboundKey) -> Any:
    """What `apply` reads for the outbound at `place` (policies/__init__.py)."""
    return matched.mesh, matched.outbounds.get(place)


def apply(matched: Matched, resources: _envoy.Resources) -> None:
    listeners = _envoy.listeners_by_address(resources, base_pb2.OUTBOUND)
    for key, outbound in matched.outbounds.items():
        listener = listeners.get(key)
        if listener is None:
            continue
        routes = []
        for route, rewrite in zip(outbound.routes, outbound.auto_host_rewrite):
            routes += envoy_routes(route.name, route.match, route.filters,
                                   [(s.cluster, s.weight) for s in route.splits], rewrite,
                                   {i: b.cluster for i, b in route.mirrors.items()})

        def replace_routes(hcm: hcm_pb2.HttpConnectionManager) -> None:
            host = hcm.route_config.virtual_hosts[0]
            del host.routes[:]
            host.routes.extend(routes)

        for chain in listener.filter_chains:
            _envoy.update_hcm(chain, replace_routes)
        add_clusters(resources, outbound.backends, matched.mesh)
