"""What the policies of a mesh do to one proxy, and which proxies a policy hits: Kuma's inspect views.

Pure functions over the generators' model (appliance.model.proxy). The matching is policies/_rules.py's,
the same code the plugins run, so what these views show is what the proxy gets:
- `/meshes/{m}/dataplanes/{n}/_rules` (Kuma's InspectRules: toRules, toResourceRules, fromRules, inboundRules);
- `/meshes/{m}/{policy-path}/{name}/_resources/dataplanes` (a policy's top-level targetRef);
- `/meshes/{m}/meshservices/{name}/_dataplanes` (a MeshService's selector).

A builtin gateway proxy is selected by the listeners of the MeshGateway that configures it (policies/_gateway.py):
the policies that target it are its own, in its `to` rules, resource rules and proxy rule; it has no inbound rules.

Where we differ from Kuma, it is where our control plane does not apply a policy: a policy whose top-level
targetRef is a MeshHTTPRoute is stored with a warning and configures nothing here, so it is in no rule. And on a
gateway, Kuma keeps a MeshHTTPRoute's rules apart per `to[].hostnames` (a rule, and a resource rule conf, per set
of hostnames); we show them merged as the route plugin merges them (its virtual hosts pick the hostnames).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from appliance.model.proxy import Inbound, MeshGateway, Policy, Proxy
from appliance.policies import _gateway, _merge, _rules
from appliance.policies._matches import hash_matches, match_fields

ROUTE_KINDS = ("MeshHTTPRoute", "MeshTCPRoute")


@dataclass(frozen=True)
class MeshPolicies:
    """A mesh's policies of every kind (sorted by name, as the snapshot holds them) and their labels."""
    mesh: str
    by_kind: dict[str, tuple[Policy, ...]]
    labels: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)   # (kind, name) -> labels
    mesh_services: tuple[str, ...] = ()          # names of the mesh's MeshService resources
    gateways: tuple[MeshGateway, ...] = ()       # the mesh's MeshGateways (what a builtin gateway proxy is)

    def meta(self, kind: str, name: str) -> dict[str, Any]:
        return meta(kind, self.mesh, name, self.labels.get((kind, name)) or {})


def meta(type: str, mesh: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    """Kuma's api_common.Meta (oapi_helpers.ResourceMetaToMeta): labels always present."""
    return {"labels": dict(labels), "mesh": mesh, "name": name, "type": type}


# --- which proxies a policy hits ----------------------------------------------------------------

def policy_selects(policy: Policy, proxy: Proxy, routes: Sequence[Policy] = (),
                   gateways: Sequence[MeshGateway] | None = None) -> bool:
    """matchers.PolicyMatches: the policy's top-level targetRef selects some inbound of the proxy. A targetRef of
    kind MeshHTTPRoute selects what the route's own targetRef selects (an unknown route: nothing).
    With the mesh's `gateways`, also gateways as Kuma's `_resources/dataplanes` does: a builtin one by the listeners
    of its MeshGateway, a DELEGATED one by its tags (without: the legacy views, where only sidecars are hit)."""
    ref = _rules.top_ref(policy)
    if ref.get("kind") == "MeshHTTPRoute":
        route = next((r for r in routes if r.name == (ref.get("name") or "")), None)
        if route is None:
            return False
        policy = route
        ref = _rules.top_ref(route)
    if gateways is None:
        return bool(_rules.selected_inbounds(ref, proxy))
    if proxy.builtin_gateway:
        gateway = _gateway.select_gateway(tuple(gateways), proxy.gateway_tags or {})
        return gateway is not None and bool(_gateway.gateway_policies((policy,), proxy, gateway))
    return bool(_rules.selected_inbounds(ref, proxy)) or _rules.delegated_gateway_selected(ref, proxy)


# --- the rules of one proxy ---------------------------------------------------------------------

def _matchers(subset: _rules.Subset) -> list[dict[str, Any]]:
    return [{"key": key, "not": negated, "value": value} for key, value, negated in subset]


def _rule(kind: str, rule: _rules.Rule, policies: MeshPolicies) -> dict[str, Any]:
    return {"conf": rule.conf, "matchers": _matchers(rule.subset),
            "origin": [policies.meta(kind, name) for name in rule.origins]}


def _inbound(inbound: Inbound) -> dict[str, Any]:
    out: dict[str, Any] = {"name": inbound.name} if inbound.name else {}
    out["port"] = inbound.port
    out["tags"] = dict(inbound.tags)
    return out


def _entries(policy: Policy, from_as_rules: bool) -> list[dict[str, Any]]:
    """The entries inbound.BuildRules reads from a policy: `rules[]`, else `from[]` for kinds that read it so."""
    entries = policy.spec.get("rules") or []
    if not entries and from_as_rules:
        entries = policy.spec.get("from") or []
    return entries


def _rule_index(rule: _rules.InboundRule, by_name: dict[str, Policy], from_as_rules: bool) -> int:
    """The index of the entry an inbound rule came from (Kuma's origin ruleIndex). inbound_rules hands on each
    entry's own `default` object, so identity finds it; equality is the fallback for an absent default."""
    entries = _entries(by_name[rule.origin], from_as_rules)
    for i, entry in enumerate(entries):
        if entry.get("default") is rule.conf:
            return i
    return next((i for i, e in enumerate(entries) if (e.get("default") or {}) == rule.conf), 0)


def _inbound_rules(kind: str, rules: list[_rules.InboundRule], selected: Sequence[Policy],
                   from_as_rules: bool, policies: MeshPolicies) -> list[dict[str, Any]]:
    by_name = {p.name: p for p in selected}
    out = []
    for rule in rules:
        item: dict[str, Any] = {"conf": [rule.conf]}
        if rule.match is not None:
            item["match"] = rule.match
        item["origin"] = [{"resourceMeta": policies.meta(kind, rule.origin),
                           "ruleIndex": _rule_index(rule, by_name, from_as_rules)}]
        out.append(item)
    return out


def _resource_rules(kind: str, selected: Sequence[Policy], policies: MeshPolicies,
                    conf_of: _rules.ConfOf = _rules.default_conf,
                    merger: _rules.Merge = _rules.merge) -> list[dict[str, Any]]:
    """outbound.BuildRules for the real resources a `to[]` entry names: the Mesh, and MeshServices that exist.
    A MeshService's rule merges the Mesh's entries with its own, in precedence order."""
    entries: list[tuple[Policy, int, dict[str, Any]]] = [
        (p, i, e) for p in selected for i, e in enumerate(p.spec.get("to") or [])]

    def ref(entry: dict[str, Any]) -> dict[str, Any]:
        return entry.get("targetRef") or {}

    targets: list[tuple[str, str]] = []
    if any(ref(e).get("kind") == "Mesh" for _, _, e in entries):
        targets.append(("Mesh", policies.mesh))
    named = {ref(e).get("name") for _, _, e in entries if ref(e).get("kind") == "MeshService"
             and not ref(e).get("sectionName")}
    targets += [("MeshService", name) for name in policies.mesh_services if name in named]
    out = []
    for target_kind, name in targets:
        relevant = [(p, i, e) for p, i, e in entries
                    if ref(e).get("kind") == "Mesh" or (target_kind == "MeshService" and ref(e).get("kind") ==
                                                        "MeshService" and ref(e).get("name") == name)]
        if target_kind == "MeshService":
            resource = meta("MeshService", policies.mesh, name, {})
        else:
            resource = meta("Mesh", "", name, {})
        out.append({"conf": [merger(conf_of(e) for _, _, e in relevant)],
                    "origin": [{"resourceMeta": policies.meta(kind, p.name), "ruleIndex": i} for p, i, _ in relevant],
                    "resourceMeta": resource, "resourceSectionName": ""})
    return sorted(out, key=lambda r: r["resourceMeta"]["name"])


def _route_merge() -> tuple[Callable[[dict[str, Any]], dict[str, Any]], _rules.Merge]:
    # The route plugin's own merge of `rules[]` (imported when asked: it brings the Envoy types).
    from appliance.policies.meshhttproute import plugin as http_routes
    return http_routes._conf_of, http_routes.merge_rules


def select(candidates: Sequence[Policy], proxy: Proxy, policies: MeshPolicies) -> _rules.Selection:
    """The policies that select the proxy: a sidecar's by its inbounds; a builtin gateway's by the listeners of
    the MeshGateway that configures it (policies/_gateway.py), as a whole (it has no inbounds)."""
    if not proxy.builtin_gateway:
        return _rules.select(candidates, proxy)
    gateway = _gateway.select_gateway(policies.gateways, proxy.gateway_tags or {})
    selected = _gateway.gateway_policies(candidates, proxy, gateway) if gateway is not None else []
    return _rules.Selection(tuple(selected), {})


def applied(kind: str, proxy: Proxy, policies: MeshPolicies) -> _rules.Selection:
    """The policies of a kind that select the proxy, among those our plugins apply: a top-level targetRef of
    kind MeshHTTPRoute is stored with a warning only."""
    candidates = tuple(p for p in policies.by_kind.get(kind, ()) if _rules.top_ref(p).get("kind") != "MeshHTTPRoute")
    return select(candidates, proxy, policies)


def sidecar_to_rules(kind: str, selection: _rules.Selection, policies: MeshPolicies) -> list[_rules.Rule]:
    """A sidecar's `to` rules of one kind, as its plugin builds them (the routes by their own merge)."""
    if kind in ROUTE_KINDS:
        return _rules.to_rules(selection, *_route_merge())
    return _rules.to_rules(selection, routes=policies.by_kind.get("MeshHTTPRoute", ()))


def kind_rules(kind: str, from_as_rules: bool, proxy: Proxy, policies: MeshPolicies) -> dict[str, Any] | None:
    """One policy kind's InspectRule for the proxy, or None when no policy of the kind selects it."""
    selection = applied(kind, proxy, policies)
    if not selection.proxy:
        return None
    routes = policies.by_kind.get("MeshHTTPRoute", ())
    conf_of, merger = _route_merge() if kind in ROUTE_KINDS else (_rules.default_conf, _rules.merge)
    if proxy.builtin_gateway:   # the policies that target the MeshGateway are the gateway's own
        to_rules = _rules.policies_to_rules(selection.proxy, conf_of, merger,
                                            routes=() if kind in ROUTE_KINDS else routes)
    else:
        to_rules = sidecar_to_rules(kind, selection, policies)
    from_rules, inbound_rules = [], []
    for inbound in sorted(proxy.inbounds, key=lambda i: i.port):
        selected = selection.by_inbound.get(_rules.inbound_key(inbound), ())
        if not selected:
            continue
        legacy = _rules.from_rules(selected)
        if legacy:
            from_rules.append({"inbound": _inbound(inbound), "rules": [_rule(kind, r, policies) for r in legacy]})
        rules = _rules.inbound_rules(selected, from_as_rules)
        if rules:
            inbound_rules.append({"inbound": _inbound(inbound),
                                  "rules": _inbound_rules(kind, rules, selected, from_as_rules, policies)})
    # Kuma's route plugins build resource rules on gateways only (a sidecar's routes are per outbound)
    resource_rules = [] if kind in ROUTE_KINDS and not proxy.builtin_gateway else \
        _resource_rules(kind, selection.proxy, policies, conf_of, merger)
    # a kind with a top-level `default` (MeshProxyPatch) has one rule for the whole proxy
    single = [p for p in selection.proxy if p.spec.get("default") is not None]
    if not (to_rules or from_rules or inbound_rules or resource_rules or single):
        return None
    out = {"fromRules": from_rules, "inboundRules": inbound_rules, "toResourceRules": resource_rules,
           "toRules": [_rule(kind, r, policies) for r in to_rules], "type": kind, "warnings": []}
    if single:
        out["proxyRule"] = {"conf": _merge.single_item_conf(single),
                            "origin": [policies.meta(kind, p.name) for p in single]}
    return out


def http_matches(rules: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The matches of every MeshHTTPRoute rule in `rules`, by their hash (what `__rule-matches-hash__` names)."""
    by_hash: dict[str, Any] = {}
    for item in rules:
        if item["type"] != "MeshHTTPRoute":
            continue
        for rule in item["toRules"]:
            for route in rule["conf"].get("rules") or []:
                matches = route.get("matches") or []
                by_hash[hash_matches(matches)] = matches
    return [{"hash": h, "match": by_hash[h]} for h in sorted(by_hash)]


def proxy_policies(kinds: Sequence[tuple[str, bool]], proxy: Proxy, policies: MeshPolicies,
                   kri: Callable[[str, str], str]) -> dict[str, Any]:
    """Kuma's PoliciesList (`.../dataplanes/{name}/_policies`): per kind, in plugin order, the proxy-wide conf
    of the selecting policies with a top-level `default` (MeshTrace, MeshMetric, MeshProxyPatch), merged as the
    plugin merges it, and their KRIs in precedence order. `kri(kind, name)` names a policy."""
    out = []
    for kind, _ in kinds:
        single = [p for p in select(policies.by_kind.get(kind, ()), proxy, policies).proxy
                  if p.spec.get("default") is not None]
        if single:
            out.append({"conf": _merge.single_item_conf(single), "kind": kind,
                        "origins": [{"kri": kri(kind, p.name)} for p in single]})
    return {"policies": out}


def outbound_to_rules(kind: str, selection: _rules.Selection, policies: MeshPolicies) -> list[_rules.Rule]:
    """A sidecar's `to` rules of one kind as its plugin builds them for its outbounds (the route plugins each
    by their own conf and merge)."""
    if kind == "MeshTCPRoute":
        from appliance.policies.meshtcproute import plugin as tcp_routes
        return _rules.to_rules(selection, tcp_routes.conf_of)
    return sidecar_to_rules(kind, selection, policies)


def _http_rule_origin(conf_rule: dict[str, Any], origins: Sequence[str], routes: Sequence[Policy]) -> str:
    """The route whose rule with these matches was merged last (Kuma's OriginByMatches)."""
    key = [match_fields(m) for m in conf_rule.get("matches") or []]
    by_name = {r.name: r for r in routes}
    found = ""
    for name in origins:
        entries = (by_name[name].spec.get("to") or []) if name in by_name else []
        if any([match_fields(m) for m in r.get("matches") or []] == key for e in entries for r in e.get("rules") or []):
            found = name
    return found


def outbound_routes(kinds: Sequence[tuple[str, bool]], proxy: Proxy, policies: MeshPolicies, service: str,
                    kri: Callable[[str, str], str]) -> dict[str, Any]:
    """Kuma's RoutesList (`.../_outbounds/{kri}/_routes`): the MeshHTTPRoute and MeshTCPRoute confs the route
    plugins compute for the outbound's `service`, in plugin order, each rule with the KRI of its route."""
    out = []
    for kind in (k for k, _ in kinds if k in ROUTE_KINDS):
        selection = applied(kind, proxy, policies)
        rule = _rules.compute(outbound_to_rules(kind, selection, policies), {_rules.SERVICE_TAG: service}) \
            if selection.proxy and service else None
        if rule is None:
            continue
        if kind == "MeshHTTPRoute":
            routes = policies.by_kind.get(kind, ())
            rules = [{"conf": r.get("default") or {}, "kri": kri(kind, _http_rule_origin(r, rule.origins, routes)),
                      "matches": r.get("matches") or []} for r in rule.conf.get("rules") or []]
        else:
            rules = [{"conf": rule.conf.get("default") or {}, "kri": "", "matches": None}]
        out.append({"kind": kind, "origins": [{"kri": kri(kind, n)} for n in rule.origins], "rules": rules})
    return {"routes": out}


def route_policies(kinds: Sequence[tuple[str, bool]], proxy: Proxy, policies: MeshPolicies, service: str,
                   route: str, kri: Callable[[str, str], str]) -> dict[str, Any]:
    """Kuma's PoliciesList for one route of an outbound (`.../_routes/{kri}/_policies`): the policies of the
    other kinds, computed for the rules of the MeshHTTPRoute `route` on that outbound as their plugins compute
    them for its Envoy routes (by the hash of their matches); the outbound's own conf when it has none there."""
    element: dict[str, str] = {_rules.SERVICE_TAG: service} if service else {}
    selection = applied("MeshHTTPRoute", proxy, policies)
    merged = _rules.compute(outbound_to_rules("MeshHTTPRoute", selection, policies), element) \
        if selection.proxy and service else None
    routes = policies.by_kind.get("MeshHTTPRoute", ())
    for conf_rule in (merged.conf.get("rules") or []) if merged else []:
        if _http_rule_origin(conf_rule, merged.origins, routes) == route:
            element = _rules.route_element(service, hash_matches(conf_rule.get("matches") or []))
            break
    return _policies_list([k for k, _ in kinds if k not in ROUTE_KINDS], proxy, policies, element, kri)


def _policies_list(kinds: Sequence[str], proxy: Proxy, policies: MeshPolicies, element: dict[str, str],
                   kri: Callable[[str, str], str]) -> dict[str, Any]:
    """A PoliciesList: per kind, the conf its plugin computes for `element` and the KRIs of what was merged."""
    out = []
    for kind in kinds:
        selection = applied(kind, proxy, policies)
        rule = _rules.compute(outbound_to_rules(kind, selection, policies), element) if selection.proxy else None
        if rule is not None:
            out.append({"conf": [rule.conf], "kind": kind, "origins": [{"kri": kri(kind, n)} for n in rule.origins]})
    return {"policies": out}


def outbound_policies(kinds: Sequence[tuple[str, bool]], proxy: Proxy, policies: MeshPolicies, service: str,
                      kri: Callable[[str, str], str]) -> dict[str, Any]:
    """Kuma's PoliciesList for one outbound (`.../_outbounds/{kri}/_policies`): per kind, in plugin order, the
    conf the plugin computes for the outbound's `service` (a MeshService port's or MeshExternalService's legacy
    name) and the KRIs of what was merged, in merge order. No `service` (a KRI naming no outbound of the mesh):
    the Mesh-wide entries, as Kuma gives an identifier it does not know."""
    element = {_rules.SERVICE_TAG: service} if service else {}   # no service: what every destination gets
    return _policies_list([k for k, _ in kinds], proxy, policies, element, kri)


def inbound_policies(kinds: Sequence[tuple[str, bool]], proxy: Proxy, inbound: Inbound, policies: MeshPolicies,
                     kri: Callable[[str, str], str]) -> dict[str, Any]:
    """Kuma's InboundPoliciesList (`.../_inbounds/{kri}/_policies`): per kind, in plugin order, the inbound rules
    of the policies that select this inbound (each entry's own conf, in the order the plugin applies them) and
    the KRIs of those policies, each once."""
    out = []
    for kind, from_as_rules in kinds:
        selected = applied(kind, proxy, policies).by_inbound.get(_rules.inbound_key(inbound), ())
        rules = _rules.inbound_rules(selected, from_as_rules)
        if rules:
            origins = list(dict.fromkeys(r.origin for r in rules))
            out.append({"kind": kind, "origins": [{"kri": kri(kind, n)} for n in origins],
                        "rules": [{"conf": r.conf, "kri": kri(kind, r.origin)} for r in rules]})
    return {"policies": out}


def inspect_rules(kinds: Sequence[tuple[str, bool]], proxy: Proxy, policies: MeshPolicies,
                  resource: dict[str, Any]) -> dict[str, Any]:
    """Kuma's InspectRules for a proxy. `kinds`: (kind, is_from_as_rules) in Kuma's plugin order."""
    rules = [r for kind, from_as_rules in kinds if (r := kind_rules(kind, from_as_rules, proxy, policies))]
    return {"httpMatches": http_matches(rules), "resource": resource, "rules": rules}
