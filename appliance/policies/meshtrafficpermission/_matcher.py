"""The `rules[]` form as Envoy's unified matcher for RBAC (Kuma 2.14 xds/rbac_configurer.go,
envoy/builders/xds/matchers): one field matcher per rule and verdict, actions named by the policy's KRI."""
from __future__ import annotations

import re
from typing import Any, Sequence

from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.matching.common_inputs.network.v3 import network_inputs_pb2
from envoy.extensions.matching.common_inputs.ssl.v3 import ssl_inputs_pb2
from google.protobuf import any_pb2
from xds.core.v3 import extension_pb2
from xds.type.matcher.v3 import matcher_pb2

from appliance.policies._rules import InboundRule

RBAC_ACTION = "envoy.filters.rbac.action"
URI_SAN_INPUT = "envoy.matching.inputs.uri_san"
SERVER_NAME_INPUT = "envoy.matching.inputs.server_name"
NO_MATCH_NAME = "default"

Predicate = matcher_pb2.Matcher.MatcherList.Predicate


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def _action(action: int, name: str) -> matcher_pb2.Matcher.OnMatch:
    config = extension_pb2.TypedExtensionConfig(
        name=RBAC_ACTION, typed_config=_pack(rbac_pb2.Action(name=name, action=action)))
    return matcher_pb2.Matcher.OnMatch(action=config)


def _single(input_name: str, input_config: Any) -> Predicate:
    predicate = Predicate()
    single = predicate.single_predicate
    single.input.name = input_name
    single.input.typed_config.CopyFrom(_pack(input_config))
    return predicate


def _spiffe_id(match: dict[str, str]) -> Predicate:
    """A client certificate's SPIFFE id, Exact or by Prefix.

    Differs from Kuma on purpose: Kuma matches the input with `exact`/`prefix`, but Envoy's uri_san input
    is every URI SAN of the certificate joined by commas, and the mesh CA's certificates carry
    `spiffe://<mesh>/<service>` then `kuma://<tag>/<value>` URIs. There an Exact never matches: an allow
    would deny its client and, worse, a deny would let its client through to a broader allow. So we match
    one element of the list (a regular expression, RE2 full match); SPIFFE ids hold no commas."""
    predicate = _single(URI_SAN_INPUT, ssl_inputs_pb2.UriSanInput())
    tail = ".*" if match.get("type") == "Prefix" else "(,.*)?"
    regex = predicate.single_predicate.value_match.safe_regex
    regex.google_re2.SetInParent()
    regex.regex = "(.*,)?" + re.escape(match.get("value", "")) + tail
    return predicate


def _sni(match: dict[str, str]) -> Predicate:
    predicate = _single(SERVER_NAME_INPUT, network_inputs_pb2.ServerNameInput())
    predicate.single_predicate.value_match.exact = match.get("value", "")
    return predicate


def _combined(predicates: list[Predicate], field: str) -> Predicate | None:
    if not predicates:
        return None
    if len(predicates) == 1:
        return predicates[0]
    combined = Predicate()
    getattr(combined, field).predicate.extend(predicates)
    return combined


def has_sni(matches: Sequence[dict[str, Any]]) -> bool:
    return any(m.get("sni") for m in matches)


def _field_matcher(matches: Sequence[dict[str, Any]], action: int, name: str
                   ) -> matcher_pb2.Matcher.MatcherList.FieldMatcher | None:
    """One list of matches: any of them (OR), each its spiffeID and its SNI (AND)."""
    per_match = []
    for match in matches:
        parts = []
        if match.get("spiffeID"):
            parts.append(_spiffe_id(match["spiffeID"]))
        if match.get("sni"):
            parts.append(_sni(match["sni"]))
        combined = _combined(parts, "and_matcher")
        if combined is not None:
            per_match.append(combined)
    predicate = _combined(per_match, "or_matcher")
    if predicate is None:
        return None
    return matcher_pb2.Matcher.MatcherList.FieldMatcher(predicate=predicate, on_match=_action(action, name))


def _matcher(fields: list[matcher_pb2.Matcher.MatcherList.FieldMatcher | None]) -> matcher_pb2.Matcher:
    matcher = matcher_pb2.Matcher(on_no_match=_action(rbac_pb2.RBAC.DENY, NO_MATCH_NAME))
    present = [f for f in fields if f is not None]
    if present:
        matcher.matcher_list.matchers.extend(present)
    return matcher


def matchers(rules: Sequence[InboundRule], kri: dict[str, str]
             ) -> tuple[matcher_pb2.Matcher, matcher_pb2.Matcher | None]:
    """The enforced matcher and the shadow one (None without any allowWithShadowDeny).

    Merged rules may come broad to specific, and Envoy stops at the first match: every deny goes first."""
    def lists(rule: InboundRule, *names: str) -> list[dict[str, Any]]:
        return [m for n in names for m in (rule.conf.get(n) or [])]

    deny = [_field_matcher(lists(r, "deny"), rbac_pb2.RBAC.DENY, kri[r.origin]) for r in rules]
    allow = [_field_matcher(lists(r, "allow", "allowWithShadowDeny"), rbac_pb2.RBAC.ALLOW, kri[r.origin])
             for r in rules]
    shadow = [_field_matcher(lists(r, "allowWithShadowDeny"), rbac_pb2.RBAC.DENY, kri[r.origin])
              for r in rules if r.conf.get("allowWithShadowDeny")]
    shadow = [f for f in shadow if f is not None]
    return _matcher(deny + allow), (_matcher(shadow) if shadow else None)
