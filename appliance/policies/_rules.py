"""How Kuma 2.14 turns targetRef policies into per-proxy rules (pkg/plugins/policies/core/{matchers,rules}).

Every plugin uses the same steps:
1. select: which policies a proxy's top-level targetRef picks, per inbound and for the whole proxy;
2. sort: by targetRef kind (Mesh < Dataplane < MeshSubset < MeshService < MeshServiceSubset), then by
   name descending, so that later entries win when confs merge (the lexicographically smallest name last);
3. build rules: `to[]` items into per-destination rules, `from[]` items into per-client rules with
   negations (MADR 007), or `from`/`rules` into inbound rules;
4. merge confs with JSON merge patch (RFC 7396), later ones over earlier ones.
Steps 1-2 and the caches live here; the subsets and rule building of step 3 in _subsets.py, step 4 in _merge.py.

Plain data in, plain data out: a policy plugin turns the merged confs into Envoy settings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence, TypeVar

from appliance.model.proxy import Inbound, Policy, Proxy
from appliance.policies import _destinations
from appliance.model.names import SERVICE_TAG
from appliance.policies._matches import hash_matches
# the rule model and its merging live in _subsets / _merge; plugins reach them through this module too
from appliance.policies._merge import Merge, merge
from appliance.policies._subsets import Item, Rule, Subset, as_subset, build_rules, contains_element

if TYPE_CHECKING:   # policies import nothing of core/, which model/destinations reads from
    from appliance.model.destinations import Destination

# A route of a MeshHTTPRoute as a tag: entries of kind MeshHTTPRoute apply to the routes of its rules.
RULE_HASH_TAG = "__rule-matches-hash__"
_KIND_ORDER = {"Mesh": 1, "Dataplane": 2, "MeshSubset": 3, "MeshGateway": 4, "MeshService": 5,
               "MeshExternalService": 6, "MeshMultiZoneService": 7, "MeshServiceSubset": 8, "MeshHTTPRoute": 9}
# The kinds a legacy (kuma.io/service) rule can express as tags.
_OLD_KINDS = frozenset({"Mesh", "MeshSubset", "MeshServiceSubset", "MeshService", "MeshGateway", "MeshHTTPRoute"})

InboundKey = tuple[str, int]         # (address, port) of an inbound listener
ConfOf = Callable[[dict[str, Any]], dict[str, Any]]   # a `to`/`from` entry -> the conf it contributes
T = TypeVar("T")
_MISSING = object()


@dataclass(frozen=True)
class InboundRule:
    match: dict[str, Any] | None     # common_api.Match (spiffeID / sni); None matches all clients
    conf: dict[str, Any]
    origin: str


@dataclass(frozen=True)
class Selection:
    """The policies of one kind that select a proxy, sorted by Kuma's precedence (last wins)."""
    proxy: tuple[Policy, ...]
    by_inbound: dict[InboundKey, tuple[Policy, ...]]
    # the proxy's MeshService ports (Proxy.destinations), which `to[]` entries of kind MeshService also name
    destinations: dict[str, Destination] | None = field(default=None, compare=False)

    @cached_property   # asked by several plugins per proxy
    def key(self) -> tuple[str, ...]:
        """Equal keys mean equal `to` rules: what may be cached across proxies."""
        return tuple(p.name for p in self.proxy)


def top_ref(policy: Policy) -> dict[str, Any]:
    """An absent top-level targetRef means the whole mesh."""
    return policy.spec.get("targetRef") or {"kind": "Mesh"}


def inbound_key(inbound: Inbound) -> InboundKey:
    return inbound.address, inbound.port


def tags_match(selector: dict[str, str], tags: dict[str, str]) -> bool:
    """mesh_proto.TagSelector.Matches: every selector tag present and equal (or `*`)."""
    return all(k in tags and (v == tags[k] or v == "*") for k, v in selector.items())


def _sidecar_selected(ref: dict[str, Any]) -> bool:
    proxy_types = ref.get("proxyTypes") or []
    return not proxy_types or "Sidecar" in proxy_types


def selected_inbounds(ref: dict[str, Any], proxy: Proxy) -> list[Inbound]:
    """matchers.DppSelectedByPolicy for a sidecar: the inbounds a top-level targetRef picks."""
    kind = ref.get("kind")
    if kind in ("Mesh", "MeshSubset"):
        if not _sidecar_selected(ref):
            return []
        selector = (ref.get("tags") or {}) if kind == "MeshSubset" else {}
        return [i for i in proxy.inbounds if tags_match(selector, i.tags)]
    if kind == "MeshService":
        return [i for i in proxy.inbounds if tags_match({SERVICE_TAG: ref.get("name") or ""}, i.tags)]
    if kind == "MeshServiceSubset":
        selector = {**(ref.get("tags") or {}), SERVICE_TAG: ref.get("name") or ""}
        return [i for i in proxy.inbounds if tags_match(selector, i.tags)]
    if kind == "Dataplane":
        name, labels = ref.get("name") or "", ref.get("labels")
        everyone = not name and not ref.get("namespace") and labels is None
        by_name = bool(name) and name == proxy.name
        by_labels = labels is not None and all(proxy.labels.get(k) == v for k, v in labels.items())
        if not (everyone or by_name or by_labels):
            return []
        section = ref.get("sectionName") or ""
        return [i for i in proxy.inbounds if not section or (i.name or str(i.port)) == section]
    return []  # MeshGateway, MeshHTTPRoute: not for sidecars here


def delegated_gateway_selected(ref: dict[str, Any], proxy: Proxy) -> bool:
    """matchers.DppSelectedByPolicy for a DELEGATED gateway (no inbounds): whether the targetRef picks it by its
    gateway tags, so that its `to` rules apply to the gateway's outbounds."""
    tags = proxy.gateway_tags
    if tags is None or proxy.builtin_gateway:
        return False
    kind = ref.get("kind")
    if kind in ("Mesh", "MeshSubset"):
        proxy_types = ref.get("proxyTypes") or []
        selector = (ref.get("tags") or {}) if kind == "MeshSubset" else {}
        return (not proxy_types or "Gateway" in proxy_types) and tags_match(selector, tags)
    if kind in ("MeshService", "MeshServiceSubset"):
        selector = {**(ref.get("tags") or {}), SERVICE_TAG: ref.get("name") or ""}
        return tags_match(selector if kind == "MeshServiceSubset" else {SERVICE_TAG: ref.get("name") or ""}, tags)
    return False


def _dataplane_precision(ref: dict[str, Any]) -> int:
    """TargetRef.CompareDataplaneKind: labels < name, and without sectionName < with it."""
    return (2 if ref.get("name") else 0) + (1 if ref.get("sectionName") else 0)


def _precedence(policy: Policy) -> tuple[int, int]:
    ref = top_ref(policy)
    kind = ref.get("kind", "")
    return _KIND_ORDER.get(kind, 0), _dataplane_precision(ref) if kind == "Dataplane" else 0


def sort_policies(policies: Iterable[Policy]) -> list[Policy]:
    """matchers.SortByTargetRef: by kind specificity, then by name descending (smallest name wins)."""
    by_name = sorted(policies, key=lambda p: p.name, reverse=True)
    return sorted(by_name, key=_precedence)


# The policies of a kind in precedence order, sorted once per snapshot rather than per proxy: keyed by the
# identity of the (immutable, per-snapshot) tuple, which each entry holds so that no id is reused meanwhile.
_SORTED: dict[int, tuple[Sequence[Policy], tuple[tuple[Policy, dict[str, Any]], ...]]] = {}
_SORTED_MAX = 256


def in_precedence_order(policies: Sequence[Policy]) -> tuple[tuple[Policy, dict[str, Any]], ...]:
    """`sort_policies`, each with its top-level targetRef: sorted once per snapshot tuple."""
    if not isinstance(policies, tuple):   # a list may change under the same id: sorted every time
        return tuple((p, top_ref(p)) for p in sort_policies(policies))
    hit = _SORTED.get(id(policies))
    if hit is None or hit[0] is not policies:
        if len(_SORTED) >= _SORTED_MAX:
            _SORTED.clear()
        hit = _SORTED[id(policies)] = (policies, tuple((p, top_ref(p)) for p in sort_policies(policies)))
    return hit[1]


def select(policies: Sequence[Policy], proxy: Proxy) -> Selection:
    # Filtering the sorted sequence keeps its order, which is what sorting the selected ones would give.
    picked = _picked(policies, proxy)
    by_inbound: dict[InboundKey, list[Policy]] = {}
    for policy, indexes in picked:
        for index in indexes:
            by_inbound.setdefault(inbound_key(proxy.inbounds[index]), []).append(policy)
    return Selection(tuple(policy for policy, _ in picked), {key: tuple(ps) for key, ps in by_inbound.items()},
                     proxy.destinations)


# Which policies pick a proxy, and which of its inbounds (by position), depends on what `selected_inbounds`
# and `delegated_gateway_selected` read: inbound tags, names and ports, gateway tags, and the proxy's name
# and labels only for policies of kind Dataplane. Most proxies of a mesh look alike there, so the answer is
# worked out once per look and snapshot (keyed like _SORTED, by the identity of the policies' tuple).
_PICKED: dict[tuple[Any, ...], tuple[Sequence[Policy], tuple[tuple[Policy, tuple[int, ...]], ...]]] = {}
_PICKED_MAX = 4096
# whether any of the (sorted) policies has a top-level targetRef of kind Dataplane, by the identity of the tuple
_BY_DATAPLANE: dict[int, tuple[tuple[tuple[Policy, dict[str, Any]], ...], bool]] = {}


def _picked(policies: Sequence[Policy], proxy: Proxy) -> tuple[tuple[Policy, tuple[int, ...]], ...]:
    ordered = in_precedence_order(policies)
    by_dataplane = _BY_DATAPLANE.get(id(ordered))
    if by_dataplane is None or by_dataplane[0] is not ordered:
        if len(_BY_DATAPLANE) >= _SORTED_MAX:
            _BY_DATAPLANE.clear()
        by_dataplane = _BY_DATAPLANE[id(ordered)] = (ordered, any(r.get("kind") == "Dataplane" for _, r in ordered))
    key = (id(policies), proxy.selection_look, (proxy.name, tuple(proxy.labels.items())) if by_dataplane[1] else None)
    hit = _PICKED.get(key) if isinstance(policies, tuple) else None
    if hit is not None and hit[0] is policies:
        return hit[1]
    picked = []
    for policy, ref in ordered:
        inbounds = selected_inbounds(ref, proxy)
        if not inbounds and not delegated_gateway_selected(ref, proxy):
            continue
        picked.append((policy, tuple(i for i, inbound in enumerate(proxy.inbounds)
                                     if any(inbound is s for s in inbounds))))
    if isinstance(policies, tuple):
        if len(_PICKED) >= _PICKED_MAX:
            _PICKED.clear()
        _PICKED[key] = (policies, tuple(picked))
    return tuple(picked)


def service_selected(ref: dict[str, Any], tags: dict[str, str]) -> bool:
    """matchers.serviceSelectedByTargetRef: does a top-level targetRef pick a service with these tags?
    (How a zone egress selects policies for an external service.)"""
    kind = ref.get("kind")
    if kind == "Mesh":
        return True
    if kind == "MeshSubset":
        return tags_match(ref.get("tags") or {}, tags)
    if kind == "MeshService":
        return (ref.get("name") or "") == tags.get(SERVICE_TAG)
    if kind == "MeshServiceSubset":
        return (ref.get("name") or "") == tags.get(SERVICE_TAG) and tags_match(ref.get("tags") or {}, tags)
    return False


def default_conf(entry: dict[str, Any]) -> dict[str, Any]:
    return entry.get("default") or {}


def _route_subsets(route: Policy, destinations: Mapping[str, Destination] | None = None) -> list[Subset]:
    """rules.buildToListWithRoutes: one group per rule of a MeshHTTPRoute, its destination plus its hash."""
    out = []
    for item in route.spec.get("to") or []:
        ref = item.get("targetRef") or {}
        bases: list[Subset] = [()] if ref.get("kind") in ("Mesh", "MeshSubset") else [
            ((SERVICE_TAG, ref.get("name") or "", False),), *_destinations.subsets(ref, destinations)]
        for rule in item.get("rules") or []:
            out += [base + ((RULE_HASH_TAG, hash_matches(rule.get("matches") or []), False),) for base in bases]
    return out


def _items(policies: Sequence[Policy], field: str, conf_of: ConfOf = default_conf,
           routes: Sequence[Policy] = (), destinations: Mapping[str, Destination] | None = None) -> list[Item]:
    by_name = {r.name: r for r in routes}
    items = []
    for policy in policies:
        for entry in policy.spec.get(field) or []:
            ref = entry.get("targetRef") or {}
            if ref.get("kind") == "MeshHTTPRoute":
                route = by_name.get(ref.get("name") or "")
                # an unknown route has no routes to configure (Kuma fails the proxy's whole config instead)
                items += [Item(s, conf_of(entry), policy.name)
                          for s in (_route_subsets(route, destinations) if route else [])]
                continue
            subset = as_subset(ref) if ref.get("kind") in _OLD_KINDS else None
            if subset is not None:
                items.append(Item(subset, conf_of(entry), policy.name))
            items += [Item(s, conf_of(entry), policy.name) for s in _destinations.subsets(ref, destinations)]
    return items


# Most proxies of a mesh select the same policies, so their rules are built once: keyed by the identity of
# the (immutable, per-snapshot) Policy objects, which each entry holds so that no id is reused meanwhile.
_BUILT: dict[tuple[Any, ...], tuple[tuple[Policy, ...], tuple[Rule, ...]]] = {}
_BUILT_MAX = 4096


def _built(field: str, policies: Sequence[Policy], with_negations: bool, conf_of: ConfOf = default_conf,
           merger: Merge = merge, routes: Sequence[Policy] = (),
           destinations: Mapping[str, Destination] | None = None) -> list[Rule]:
    key = (field, conf_of, merger, tuple(map(id, policies)), tuple(map(id, routes)), id(destinations))
    hit = _BUILT.get(key)
    if hit is None:
        if len(_BUILT) >= _BUILT_MAX:
            _BUILT.clear()
        rules = build_rules(_items(policies, field, conf_of, routes, destinations), with_negations, merger)
        hit = _BUILT[key] = ((*policies, *routes, destinations), tuple(rules))
    return list(hit[1])


def to_rules(selection: Selection, conf_of: ConfOf = default_conf, merger: Merge = merge,
             routes: Sequence[Policy] = ()) -> list[Rule]:
    """ToRules.Rules: per destination (kuma.io/service), from the `to[]` of the proxy's policies; entries of
    kind MeshHTTPRoute per rule of that route (`routes`: the mesh's MeshHTTPRoutes), see `route_element`.

    `conf_of` and `merger` are for the kinds whose entries are not a `default` merged as JSON (the routes)."""
    policies = [p for p in selection.proxy if top_ref(p).get("kind") not in ("MeshHTTPRoute", "MeshGateway")]
    return _built("to", policies, with_negations=False, conf_of=conf_of, merger=merger, routes=routes,
                  destinations=selection.destinations)


def policies_to_rules(policies: Sequence[Policy], conf_of: ConfOf = default_conf, merger: Merge = merge,
                      routes: Sequence[Policy] = ()) -> list[Rule]:
    """BuildToRules of these (selected, sorted) policies: what `to_rules` builds for a sidecar, and what a
    builtin gateway's port gets from the policies that select its listeners (policies/_gateway.py)."""
    return _built("to", policies, with_negations=False, conf_of=conf_of, merger=merger, routes=routes)


# What matches build from a proxy's selected policies and outbounds alone, per mesh for its latest snapshot,
# by kind and key (per_group).
_PER_GROUP: dict[tuple[str, str], tuple[Any, dict[tuple[Any, ...], Any]]] = {}


def per_group(snapshot: Any, kind: str, selection: Selection, proxy: Proxy, build: Callable[[], T]) -> T:
    """`build()`, once per snapshot for the proxies that select the same policies of `kind` and have the same
    outbounds (address, port, service): for the `to` side of a match, which reads nothing else of the proxy.
    A match reads every policy kind it depends on before asking: which kinds it read is recorded
    (model.proxy.PolicyKinds), and a `build` that is not called reads nothing."""
    entry = _PER_GROUP.get((snapshot.mesh, kind))
    if entry is None or entry[0] is not snapshot:
        entry = _PER_GROUP[(snapshot.mesh, kind)] = (snapshot, {})
    # the MeshService ports a proxy's `to` rules also name (None for a proxy with no outbound to one)
    key = (selection.key, tuple((o.address, o.port, o.service) for o in proxy.outbounds), id(selection.destinations))
    found = entry[1].get(key, _MISSING)
    if found is _MISSING:
        found = entry[1][key] = build()
    return found


def route_element(service: str, route_name: str) -> dict[str, str]:
    """What a route of an outbound is, for `compute`: its service and its rule's hash (its Envoy name)."""
    return {SERVICE_TAG: service, RULE_HASH_TAG: route_name}


def from_rules(policies: Sequence[Policy]) -> list[Rule]:
    """FromRules.Rules of one inbound: per client group, from `from[]`, with negations."""
    return _built("from", policies, with_negations=True)


# inbound_rules and catch_all_conf are asked for every proxy, mostly of the same few policies (rules):
# kept like _BUILT, by the identity of what they read, each entry holding it so that no id is reused meanwhile.
_INBOUND: dict[tuple[Any, ...], tuple[tuple[Any, ...], Any]] = {}


def by_identity(key: tuple[Any, ...], held: tuple[Any, ...], build: Callable[[], T]) -> T:
    """`build()` kept by `key`, which names objects of `held` by id (held meanwhile, so no id is reused): for
    what plugins build per proxy from the same few (per-snapshot, immutable) policies or confs. Read-only."""
    hit = _INBOUND.get(key)
    if hit is None:
        if len(_INBOUND) >= _BUILT_MAX:
            _INBOUND.clear()
        hit = _INBOUND[key] = (held, build())
    return hit[1]


def inbound_rules(policies: Sequence[Policy], from_as_rules: bool) -> list[InboundRule]:
    """inbound.BuildRules: `rules[]` (or `from[]` for kinds that read it as rules), one match each."""
    held = tuple(policies)
    return list(by_identity(("rules", from_as_rules, *map(id, held)), held,
                              lambda: tuple(_inbound_rules(held, from_as_rules))))


def _inbound_rules(policies: Sequence[Policy], from_as_rules: bool) -> list[InboundRule]:
    rules: list[InboundRule] = []
    for policy in policies:  # already sorted by precedence
        entries = policy.spec.get("rules") or []
        if not entries and from_as_rules:
            entries = [{"default": e.get("default") or {}} for e in policy.spec.get("from") or []]
        for entry in entries:
            matches = entry.get("matches") or []
            for match in matches or [None]:
                rules.append(InboundRule(match, entry.get("default") or {}, policy.name))
    # inbound.SortRules: spiffeID Exact, then Prefix, then SNI-only, then catch-all (stable).
    return sorted(rules, key=_match_rank)


def _match_rank(rule: InboundRule) -> tuple[int, int, int]:
    match = rule.match or {}
    spiffe = match.get("spiffeID")
    score = 0 if spiffe is None else {"Exact": 2, "Prefix": 1}.get(spiffe.get("type"), 0)
    return (0 if spiffe is not None else 1), -score, (0 if match.get("sni") is not None else 1)


def catch_all_conf(rules: Sequence[InboundRule]) -> dict[str, Any]:
    """MatchesAllIncomingTraffic: the merged conf of the rules that apply to every client (read-only: shared by
    the proxies whose rules are the same objects)."""
    held = tuple(rules)
    return by_identity(("conf", *map(id, held)), held, lambda: merge(r.conf for r in held if r.match is None))


def compute(rules: Sequence[Rule], element: dict[str, str]) -> Rule | None:
    """Rules.Compute: the first (most specific) rule whose group contains the element."""
    for rule in rules:
        if contains_element(rule.subset, element):
            return rule
    return None
