"""MeshFaultInjection on a sidecar: `envoy.filters.http.fault` filters on the HTTP inbounds it selects.

As Kuma 2.14 (plugin/v1alpha1 + plugin/xds/legacy_configurer.go), for `from[]`:
- the `from` entries become client groups (with negations, most specific first); each group's merged
  `http` list gives one fault filter per entry, inserted right before the router;
- a group other than "everyone" is matched per request on the `x-kuma-tags` header that the caller's
  Envoy sets (and the inbound route strips from outside requests): a regex for the positive tags and an
  inverted one for the negated tags;
- percentages become Envoy fractional percents (HUNDRED, TEN_THOUSAND or MILLION as Kuma picks them),
  the bandwidth limit is in kbps;
- TCP inbounds get nothing (faults are HTTP only).
For `rules[]` (2.14's form, which wins over `from[]` on an inbound), each fault of each rule is a filter
named by the policy's KRI, wrapped in an ExtensionWithMatcher that skips it unless the client's certificate
URI SAN (spiffeID, matched against each of its URI SANs, see `spiffe_id_regex`) and the requested SNI match
one of the rule's matches. A rule without matches applies to
every client: its filter is the plain fault filter (Kuma emits an empty matcher there).
On a builtin gateway (`apply_to_gateway`), the `to` entries (validation keeps gateways to `to`) of the
policies that select a port's listeners, as destination groups: one fault filter per entry on the port's
HTTP connection managers (HTTP and HTTPS ports), a group other than the whole mesh matched on `x-kuma-tags`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.common.matching.v3 import extension_matcher_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.common.matcher.action.v3 import skip_action_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.matching.common_inputs.network.v3 import network_inputs_pb2
from envoy.extensions.matching.common_inputs.ssl.v3 import ssl_inputs_pb2
from envoy.type.v3 import percent_pb2
from xds.type.matcher.v3 import matcher_pb2

from appliance.model import names
from appliance.model.proxy import MeshGateway, MeshSnapshot, Proxy
from appliance.policies import _envoy, _gateway, _rules
from appliance.policies._common import parse_decimal

KIND = "MeshFaultInjection"
INBOUND_ONLY = True   # fault filters on inbound listeners only (policies/__init__.py)
FAULT_FILTER = "envoy.filters.http.fault"
_BANDWIDTH = re.compile(r"([0-9]*)[ \t\n\f\r]?([GMk]+bps)")
_KBPS_FACTOR = {"kbps": 1, "Mbps": 1000, "Gbps": 1000000}


@dataclass(frozen=True)
class Matched:
    mesh: str
    # inbound listener -> its `rules[]` entries (sorted as Kuma: most specific match first), or, when it
    # has none, its `from[]` client groups with their merged confs, most specific first (HTTP inbounds only)
    by_inbound: dict[_rules.InboundKey, tuple[_rules.InboundRule, ...] | tuple[_rules.Rule, ...]]
    to_key: tuple[str, ...] = ()


def match(snapshot: MeshSnapshot, proxy: Proxy) -> Matched:
    selection = _rules.select(snapshot.policies.get(KIND, ()), proxy)
    by_inbound: dict[_rules.InboundKey, Any] = {}
    for inbound in proxy.inbounds:
        if inbound.protocol not in names.HTTP_PROTOCOLS:
            continue
        key = _rules.inbound_key(inbound)
        policies = selection.by_inbound.get(key, ())
        rules = _rules.inbound_rules(policies, from_as_rules=False) or _rules.from_rules(policies)
        if rules:
            by_inbound[key] = tuple(rules)
    return Matched(snapshot.mesh, by_inbound)


def fractional_percent(value: Any) -> percent_pb2.FractionalPercent:
    """listeners_v3.ConvertPercentage: whole numbers per hundred, two decimals per ten thousand, else per million."""
    # Kuma converts to float64 first, so 33.3 is 3329.99... per ten thousand and falls to per million.
    number = float(parse_decimal(value if value is not None else 0) or 0)
    percent = percent_pb2.FractionalPercent
    if number.is_integer():
        return percent(numerator=int(number), denominator=percent.HUNDRED)
    if (number * 100).is_integer():
        return percent(numerator=int(number * 100), denominator=percent.TEN_THOUSAND)
    return percent(numerator=int(round(number * 10000)), denominator=percent.MILLION)


def bandwidth_kbps(limit: str) -> int:
    """ConvertBandwidthToKbps of a limit validated on write ("10kbps", "2 Mbps")."""
    found = _BANDWIDTH.fullmatch(limit)
    if found is None or not found.group(1) or found.group(2) not in _KBPS_FACTOR:
        raise ValueError(f"unsupported bandwidth {limit!r}")
    return int(found.group(1)) * _KBPS_FACTOR[found.group(2)]


def tags_regex(tags: dict[str, str]) -> str:
    """tags.MatchingRegex: every tag, in key order, somewhere in the serialized `x-kuma-tags` header."""
    out = ""
    for key in sorted(tags):
        value = "" if tags[key] == "*" else f"[^&]*{tags[key]}[,&]"
        out += f"&{key}=" + value.replace(".", r"\.") + ".*"
    return ".*" + out


def _headers(subset: _rules.Subset) -> list[route_components_pb2.HeaderMatcher]:
    positive = {key: value for key, value, negated in subset if not negated}
    negative = {key: value for key, value, negated in subset if negated}
    out = []
    for tags, invert in ((positive, False), (negative, True)):
        if tags:
            header = route_components_pb2.HeaderMatcher(name=names.TAGS_HEADER, invert_match=invert)
            header.string_match.safe_regex.regex = tags_regex(tags)
            out.append(header)
    return out


def fault_config(fault: dict[str, Any], subset: _rules.Subset) -> fault_pb2.HTTPFault:
    config = fault_pb2.HTTPFault()
    delay = fault.get("delay")
    if delay is not None:
        config.delay.fixed_delay.CopyFrom(_envoy.duration(delay.get("value"), 0))
        config.delay.percentage.CopyFrom(fractional_percent(delay.get("percentage")))
    abort = fault.get("abort")
    if abort is not None:
        config.abort.http_status = int(abort.get("httpStatus") or 0)
        config.abort.percentage.CopyFrom(fractional_percent(abort.get("percentage")))
    bandwidth = fault.get("responseBandwidth")
    if bandwidth is not None:
        limit = common_fault_pb2.FaultRateLimit.FixedLimit(limit_kbps=bandwidth_kbps(bandwidth.get("limit") or ""))
        config.response_rate_limit.fixed_limit.CopyFrom(limit)
        config.response_rate_limit.percentage.CopyFrom(fractional_percent(bandwidth.get("percentage")))
    config.headers.extend(_headers(subset))
    return config


def spiffe_id_regex(match_type: str, value: str) -> str:
    """A spiffeID match against Envoy's `uri_san` input, which is every URI SAN of the client certificate
    joined by commas. Our certificates (as Kuma's builtin CA's) carry the SPIFFE ID and a kuma:// URI per
    tag, so Kuma's plain exact/prefix matcher would never match an Exact ID; this matches one element of
    the list instead. Tag keys and values cannot hold a comma, so no SAN can forge another."""
    rest = "[^,]*" if match_type == "Prefix" else ""
    return "(?:.*,)?" + re.escape(value) + rest + "(?:,.*)?"


def _predicate(match: dict[str, Any]) -> matcher_pb2.Matcher.MatcherList.Predicate | None:
    """One match: its spiffeID (client certificate URI SAN) and SNI, both required."""
    singles = []
    spiffe = match.get("spiffeID")
    if spiffe is not None:
        single = matcher_pb2.Matcher.MatcherList.Predicate.SinglePredicate()
        single.input.name = "envoy.matching.inputs.uri_san"
        single.input.typed_config.CopyFrom(_envoy.pack(ssl_inputs_pb2.UriSanInput()))
        single.value_match.safe_regex.google_re2.SetInParent()
        single.value_match.safe_regex.regex = spiffe_id_regex(spiffe.get("type") or "Exact", spiffe.get("value") or "")
        singles.append(single)
    sni = match.get("sni")
    if sni is not None:
        single = matcher_pb2.Matcher.MatcherList.Predicate.SinglePredicate()
        single.input.name = "envoy.matching.inputs.server_name"
        single.input.typed_config.CopyFrom(_envoy.pack(network_inputs_pb2.ServerNameInput()))
        single.value_match.exact = sni.get("value") or ""
        singles.append(single)
    predicates = [matcher_pb2.Matcher.MatcherList.Predicate(single_predicate=s) for s in singles]
    if not predicates:
        return None
    if len(predicates) == 1:
        return predicates[0]
    both = matcher_pb2.Matcher.MatcherList.Predicate()
    both.and_matcher.predicate.extend(predicates)
    return both


def _skip_unless(match: dict[str, Any], fault: fault_pb2.HTTPFault) -> extension_matcher_pb2.ExtensionWithMatcher:
    """The fault wrapped so that Envoy skips it for a request whose connection does not match."""
    wrapped = extension_matcher_pb2.ExtensionWithMatcher()
    wrapped.extension_config.name = FAULT_FILTER
    wrapped.extension_config.typed_config.CopyFrom(_envoy.pack(fault))
    field = wrapped.xds_matcher.matcher_list.matchers.add()
    predicate = _predicate(match)
    if predicate is not None:
        field.predicate.not_matcher.CopyFrom(predicate)
    field.on_match.action.name = "skip"
    field.on_match.action.typed_config.CopyFrom(_envoy.pack(skip_action_pb2.SkipFilter()))
    return wrapped


def _filters(mesh: str, rules: tuple[Any, ...]) -> list[hcm_pb2.HttpFilter]:
    out = []
    for rule in rules:
        for fault in rule.conf.get("http") or []:
            if isinstance(rule, _rules.Rule):
                config = _envoy.pack(fault_config(fault, rule.subset))
                out.append(hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=config))
                continue
            plain = fault_config(fault, ())
            packed = _envoy.pack(plain if rule.match is None else _skip_unless(rule.match, plain))
            # The policy's KRI (zone and namespace empty: a policy of this zone on Universal).
            out.append(hcm_pb2.HttpFilter(name=f"kri_mfi_{mesh}___{rule.origin}_", typed_config=packed))
    return out


def apply(matched: Matched, resources: _envoy.Resources) -> None:
    inbound_listeners = _envoy.listeners_by_address(resources, base_pb2.INBOUND)
    for key, rules in matched.by_inbound.items():
        listener = inbound_listeners.get(key)
        filters = _filters(matched.mesh, rules)
        if listener is None or not filters:
            continue
        for chain in listener.filter_chains:
            _envoy.update_hcm(chain, lambda hcm: _envoy.insert_before_router(hcm, *filters))


def apply_to_gateway(snapshot: MeshSnapshot, proxy: Proxy, gateway: MeshGateway,
                     ports: tuple[_gateway.GatewayPort, ...], resources: _envoy.Resources) -> None:
    for port in ports:
        listener = _envoy.listener(resources, port.listener)
        if port.protocol not in ("HTTP", "HTTPS") or listener is None:
            continue
        policies = _gateway.port_policies(snapshot.policies.get(KIND, ()), proxy, gateway, port.port)
        filters = _filters(snapshot.mesh, tuple(_rules.policies_to_rules(policies)))
        for chain in listener.filter_chains if filters else ():
            _envoy.update_hcm(chain, lambda hcm: _envoy.insert_before_router(hcm, *filters))
