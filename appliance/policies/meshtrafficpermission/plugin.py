"""MeshTrafficPermission on a sidecar: RBAC on every inbound filter chain protected by mesh mTLS.

As Kuma 2.14 (plugin/v1alpha1 + xds/rbac_configurer.go, xds/legacy_rbac_configurer.go):
- without mTLS the policy does nothing (there is no client identity to check);
- with mTLS, an inbound that no policy selects denies everyone;
- when policies with `rules[]` select an inbound, they alone decide (the `from[]` ones are ignored there):
  each rule's `deny` matchers first (all rules, in precedence order), then its `allow` and
  `allowWithShadowDeny` ones, first match wins, no match is denied; `allowWithShadowDeny` also feeds a shadow
  matcher. Matched by the client certificate's URI SAN (spiffeID Exact/Prefix) and the TLS SNI;
- otherwise `from[]` entries become client groups with negations (MADR 007), each group's actions merged
  in precedence order; the groups whose action is Allow or AllowWithShadowDeny become RBAC principals,
  AllowWithShadowDeny also a shadow DENY rule.

Where it is enforced differs from Kuma on purpose (a policy change must be the rule for the next request,
also on connections opened before it): HTTP chains get a fixed `envoy.filters.http.rbac` (deny everyone)
first in their HTTP filters, and the decision itself as RBACPerRoute on the inbound route configuration's
virtual hosts, which the generator then serves by RDS. Envoy swaps a route configuration in place, so
the listener, and the connections on it, stay. Other chains get `envoy.filters.network.rbac` first in the
chain (the connection is closed); Envoy checks it once per connection, so a change replaces the chain
and connections a Deny forbids are closed when the old chain's drain time ends.
"""
from __future__ import annotations

from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.type.matcher.v3 import string_pb2

from appliance.model import names
from appliance.policies import _envoy, _rules, _subsets
from appliance.policies.meshtrafficpermission import _matcher
from appliance.model.proxy import MeshSnapshot, Policy, Proxy

KIND = "MeshTrafficPermission"
INBOUND_ONLY = True   # RBAC on inbound listeners only (policies/__init__.py)
SHORT_NAME = "mtp"
POLICY_NAME = "MeshTrafficPermission"   # the RBAC policy key Kuma uses
NETWORK_RBAC_FILTER = names.NETWORK_RBAC_FILTER
HTTP_RBAC_FILTER = names.HTTP_RBAC_FILTER


@dataclass(frozen=True)
class Permissions:
    """Who may connect to one inbound: client groups (subsets of tags) per outcome (the `from[]` form)."""
    allow: tuple[_rules.Subset, ...]
    shadow_deny: tuple[_rules.Subset, ...]


@dataclass(frozen=True)
class RulePermissions:
    """Who may connect to one inbound, by the `rules[]` form: ordered rules and each policy's KRI."""
    rules: tuple[_rules.InboundRule, ...]
    kri: dict[str, str]

    @property
    def has_sni(self) -> bool:
        return any(_matcher.has_sni(r.conf.get(n) or []) for r in self.rules
                   for n in ("allow", "deny", "allowWithShadowDeny"))


@dataclass(frozen=True)
class Matched:
    mesh: str
    # empty when mTLS is off: nothing to enforce
    by_inbound: dict[_rules.InboundKey, Permissions | RulePermissions]


def kri(mesh: str, policy: Policy) -> str:
    """The policy's Kuma Resource Identifier, which names its RBAC actions (as Kuma's stats and logs do)."""
    zone = policy.labels.get("kuma.io/zone", "")
    namespace = policy.labels.get("k8s.kuma.io/namespace", "")
    return f"kri_{SHORT_NAME}_{mesh}_{zone}_{namespace}_{policy.name}_"


def match(snapshot: MeshSnapshot, proxy: Proxy) -> Matched:
    if snapshot.mtls is None:
        return Matched(snapshot.mesh, {})
    selection = _rules.select(snapshot.policies.get(KIND, ()), proxy)
    by_inbound: dict[_rules.InboundKey, Permissions | RulePermissions] = {}
    for inbound in proxy.inbounds:
        key = _rules.inbound_key(inbound)
        selected = selection.by_inbound.get(key, ())
        rules = _rules.inbound_rules(selected, from_as_rules=False)
        if rules:  # policies with `rules[]` take the inbound over, as Kuma's plugin does
            by_inbound[key] = RulePermissions(tuple(rules), {p.name: kri(snapshot.mesh, p) for p in selected})
        else:
            # No rule for a subset (or no policy at all) means that subset is denied.
            by_inbound[key] = _permissions(_rules.from_rules(selected))
    return Matched(snapshot.mesh, by_inbound)


def match_egress(snapshot: MeshSnapshot, tags: dict[str, str]) -> Permissions | None:
    """Who may reach an external service (with these tags) through the zone egress; None without mTLS.

    As Kuma's egress: the policies whose top-level targetRef selects the service, their `from[]` as
    rules; no rule for a client means it is denied, so an external service no policy selects is closed."""
    if snapshot.mtls is None:
        return None
    selected = [p for p in snapshot.policies.get(KIND, ()) if _rules.service_selected(_rules.top_ref(p), tags)]
    return _permissions(_rules.from_rules(_rules.sort_policies(selected)))


def _permissions(rules: list[_rules.Rule]) -> Permissions:
    allow: list[_rules.Subset] = []
    shadow: list[_rules.Subset] = []
    for rule in rules:
        action = rule.conf.get("action")
        if action in ("Allow", "AllowWithShadowDeny"):
            allow.append(rule.subset)
        if action == "AllowWithShadowDeny":
            shadow.append(rule.subset)
    return Permissions(tuple(allow), tuple(shadow))


def _authenticated(mesh: str, tag: _subsets.Tag) -> rbac_pb2.Principal:
    key, value, negated = tag
    name = f"spiffe://{mesh}/{value}" if key == _rules.SERVICE_TAG else f"kuma://{key}/{value}"
    principal = rbac_pb2.Principal()
    principal.authenticated.principal_name.CopyFrom(string_pb2.StringMatcher(exact=name))
    return rbac_pb2.Principal(not_id=principal) if negated else principal


def _principal(mesh: str, subset: _rules.Subset) -> rbac_pb2.Principal:
    """A client group as a principal: its tags as certificate SANs, all of them required."""
    ids = [_authenticated(mesh, tag) for tag in subset]
    if not ids:
        return rbac_pb2.Principal(any=True)
    if len(ids) == 1:
        return ids[0]
    principal = rbac_pb2.Principal()
    principal.and_ids.ids.extend(ids)
    return principal


def _policy(mesh: str, subsets: tuple[_rules.Subset, ...]) -> rbac_pb2.Policy:
    policy = rbac_pb2.Policy(principals=[_principal(mesh, s) for s in subsets])
    policy.permissions.add(any=True)
    return policy


def _rbac_rules(mesh: str, permissions: Permissions) -> tuple[rbac_pb2.RBAC, rbac_pb2.RBAC | None]:
    rules = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW)   # no policy at all: nobody is allowed
    if permissions.allow:
        rules.policies[POLICY_NAME].CopyFrom(_policy(mesh, permissions.allow))
    shadow = None
    if permissions.shadow_deny:
        shadow = rbac_pb2.RBAC(action=rbac_pb2.RBAC.DENY)
        shadow.policies[POLICY_NAME].CopyFrom(_policy(mesh, permissions.shadow_deny))
    return rules, shadow


def _decision(mesh: str, permissions: Permissions | RulePermissions) -> http_rbac_pb2.RBAC:
    """The verdict as an HTTP RBAC config; the network RBAC filter has the same fields (and a stat prefix)."""
    config = http_rbac_pb2.RBAC()
    if isinstance(permissions, RulePermissions):
        enforced, shadow_matcher = _matcher.matchers(permissions.rules, permissions.kri)
        config.matcher.CopyFrom(enforced)
        if shadow_matcher is not None:
            config.shadow_matcher.CopyFrom(shadow_matcher)
        return config
    rules, shadow = _rbac_rules(mesh, permissions)
    config.rules.CopyFrom(rules)   # present even when empty: an RBAC without rules would allow everyone
    if shadow is not None:
        config.shadow_rules.CopyFrom(shadow)
    return config


def _network_rbac(listener_name: str, decision: http_rbac_pb2.RBAC) -> listener_components_pb2.Filter:
    # The trailing dot turns "inbound:1.2.3.4:80rbac.allowed" into "inbound_1_2_3_4_80.rbac.allowed".
    config = network_rbac_pb2.RBAC(stat_prefix=_envoy.sanitize_metric(listener_name) + ".")
    for field in ("rules", "shadow_rules", "matcher", "shadow_matcher"):
        if decision.HasField(field):
            getattr(config, field).CopyFrom(getattr(decision, field))
    return listener_components_pb2.Filter(name=NETWORK_RBAC_FILTER, typed_config=_envoy.pack(config))


def _drop_network_rbac(chain: listener_components_pb2.FilterChain) -> None:
    for index, existing in enumerate(chain.filters):
        if existing.name == NETWORK_RBAC_FILTER:  # this policy owns the chain's RBAC
            del chain.filters[index]
            break


# The HTTP filter every mTLS HTTP chain carries, whatever the policies say: it denies everyone unless the
# route's RBACPerRoute (the decision, delivered by RDS) says otherwise. It never changes, so an Allow or a
# Deny never replaces the listener.
_DENY_UNLESS_ROUTED = hcm_pb2.HttpFilter(
    name=HTTP_RBAC_FILTER, typed_config=_envoy.pack(http_rbac_pb2.RBAC(rules=rbac_pb2.RBAC())))


def _route_decision(hcm: hcm_pb2.HttpConnectionManager, decision: http_rbac_pb2.RBAC) -> None:
    per_route = _envoy.pack(http_rbac_pb2.RBACPerRoute(rbac=decision))
    for host in hcm.route_config.virtual_hosts:
        host.typed_per_filter_config[HTTP_RBAC_FILTER].CopyFrom(per_route)


def _configure_inbound(listener: listener_pb2.Listener, mesh: str,
                       permissions: Permissions | RulePermissions) -> None:
    decision = _decision(mesh, permissions)
    secured = [c for c in listener.filter_chains if c.transport_socket.name == _envoy.TLS_TRANSPORT_SOCKET]
    for chain in listener.filter_chains:
        _drop_network_rbac(chain)
        # Every chain's routes carry the decision, so that a PERMISSIVE listener's chains keep one route
        # configuration; only the mTLS chains have the RBAC filter that reads it (plaintext has no identity).
        is_secured = chain in secured

        def add_http_rbac(hcm: hcm_pb2.HttpConnectionManager, is_secured: bool = is_secured) -> None:
            _route_decision(hcm, decision)
            if is_secured:
                hcm.http_filters.insert(0, _DENY_UNLESS_ROUTED)

        if not _envoy.update_hcm(chain, add_http_rbac) and is_secured:
            chain.filters.insert(0, _network_rbac(listener.name, decision))
    if isinstance(permissions, RulePermissions) and permissions.has_sni and secured and not any(
            f.name == names.TLS_INSPECTOR for f in listener.listener_filters):
        listener.listener_filters.add(name=names.TLS_INSPECTOR,
                                      typed_config=_envoy.pack(tls_inspector_pb2.TlsInspector()))


def apply_egress(chain: listener_components_pb2.FilterChain, listener_name: str, mesh: str,
                 permissions: Permissions) -> None:
    """RBAC on one egress filter chain (HTTP: 403 per request; TCP: the connection is closed)."""
    decision = _decision(mesh, permissions)
    _drop_network_rbac(chain)

    def add_http_rbac(hcm: hcm_pb2.HttpConnectionManager) -> None:
        hcm.http_filters.insert(0, hcm_pb2.HttpFilter(name=HTTP_RBAC_FILTER, typed_config=_envoy.pack(decision)))

    if not _envoy.update_hcm(chain, add_http_rbac):
        chain.filters.insert(0, _network_rbac(listener_name, decision))


def apply(matched: Matched, resources: _envoy.Resources) -> None:
    inbound_listeners = _envoy.listeners_by_address(resources, base_pb2.INBOUND)
    for key, permissions in matched.by_inbound.items():
        listener = inbound_listeners.get(key)
        if listener is not None:
            _configure_inbound(listener, matched.mesh, permissions)
