"""MeshTrafficPermission on a sidecar: an RBAC filter on every inbound filter chain protected by mesh mTLS.

As Kuma 2.14 (plugin/v1alpha1 + xds/legacy_rbac_configurer.go):
- without mTLS the policy does nothing (there is no client identity to check);
- with mTLS, an inbound that no policy selects denies everyone;
- `from[]` entries become client groups with negations (MADR 007), each group's actions merged in
  precedence order; the groups whose action is Allow or AllowWithShadowDeny become RBAC principals,
  AllowWithShadowDeny also a shadow DENY rule;
- HTTP chains get `envoy.filters.http.rbac` first in the HTTP filters (403 per request), other chains
  `envoy.filters.network.rbac` first in the chain (connection closed).
"""
from __future__ import annotations

from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.type.matcher.v3 import string_pb2

from appliance.policies import _envoy, _rules
from appliance.model.proxy import MeshSnapshot, Proxy

KIND = "MeshTrafficPermission"
POLICY_NAME = "MeshTrafficPermission"   # the RBAC policy key Kuma uses
NETWORK_RBAC_FILTER = "envoy.filters.network.rbac"
HTTP_RBAC_FILTER = "envoy.filters.http.rbac"


@dataclass(frozen=True)
class Permissions:
    """Who may connect to one inbound: client groups (subsets of tags) per outcome."""
    allow: tuple[_rules.Subset, ...]
    shadow_deny: tuple[_rules.Subset, ...]


@dataclass(frozen=True)
class Matched:
    mesh: str
    by_inbound: dict[_rules.InboundKey, Permissions]   # empty when mTLS is off: nothing to enforce


def match(snapshot: MeshSnapshot, proxy: Proxy) -> Matched:
    if snapshot.mtls is None:
        return Matched(snapshot.mesh, {})
    selection = _rules.select(snapshot.policies.get(KIND, ()), proxy)
    by_inbound = {}
    for inbound in proxy.inbounds:
        key = _rules.inbound_key(inbound)
        # No rule for a subset (or no policy at all) means that subset is denied.
        by_inbound[key] = _permissions(_rules.from_rules(selection.by_inbound.get(key, ())))
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


def apply_egress(chain: listener_components_pb2.FilterChain, listener_name: str, mesh: str,
                 permissions: Permissions) -> None:
    """RBAC on one egress filter chain (HTTP: 403 per request; TCP: the connection is closed)."""
    rules, shadow = _rbac_rules(mesh, permissions)
    _configure(chain, listener_name, rules, shadow)


def _authenticated(mesh: str, tag: _rules.Tag) -> rbac_pb2.Principal:
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


def _configure(chain: listener_components_pb2.FilterChain, listener_name: str,
               rules: rbac_pb2.RBAC, shadow: rbac_pb2.RBAC | None) -> None:
    for index, existing in enumerate(chain.filters):
        if existing.name == NETWORK_RBAC_FILTER:  # this policy owns the chain's RBAC
            del chain.filters[index]
            break

    def add_http_rbac(hcm: hcm_pb2.HttpConnectionManager) -> None:
        config = http_rbac_pb2.RBAC(rules=rules)
        if shadow is not None:
            config.shadow_rules.CopyFrom(shadow)
        http_filter = hcm_pb2.HttpFilter(name=HTTP_RBAC_FILTER, typed_config=_envoy.pack(config))
        hcm.http_filters.insert(0, http_filter)

    if _envoy.update_hcm(chain, add_http_rbac):
        return
    # The trailing dot turns "inbound:1.2.3.4:80rbac.allowed" into "inbound_1_2_3_4_80.rbac.allowed".
    config = network_rbac_pb2.RBAC(stat_prefix=_envoy.sanitize_metric(listener_name) + ".", rules=rules)
    if shadow is not None:
        config.shadow_rules.CopyFrom(shadow)
    chain.filters.insert(0, listener_components_pb2.Filter(name=NETWORK_RBAC_FILTER, typed_config=_envoy.pack(config)))


def apply(matched: Matched, resources: _envoy.Resources) -> None:
    inbound_listeners = _envoy.listeners_by_address(resources, base_pb2.INBOUND)
    for key, permissions in matched.by_inbound.items():
        listener = inbound_listeners.get(key)
        if listener is None:
            continue
        rules, shadow = _rbac_rules(matched.mesh, permissions)
        for chain in listener.filter_chains:
            # Plaintext chains of a PERMISSIVE listener carry no identity: RBAC only on mesh mTLS.
            if chain.transport_socket.name == _envoy.TLS_TRANSPORT_SOCKET:
                _configure(chain, listener.name, rules, shadow)
