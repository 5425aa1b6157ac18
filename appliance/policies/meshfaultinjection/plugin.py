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
`rules[]` (identity-matched filters) are not applied yet: the API says so on write.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.v3 import percent_pb2
from envoy.config.core.v3 import base_pb2

from appliance.model import names
from appliance.model.proxy import MeshSnapshot, Proxy
from appliance.policies import _envoy, _rules
from appliance.policies._common import parse_decimal

KIND = "MeshFaultInjection"
FAULT_FILTER = "envoy.filters.http.fault"
_BANDWIDTH = re.compile(r"([0-9]*)[ \t\n\f\r]?([GMk]+bps)")
_KBPS_FACTOR = {"kbps": 1, "Mbps": 1000, "Gbps": 1000000}


@dataclass(frozen=True)
class Matched:
    # inbound listener -> the client groups and their merged confs, most specific first (HTTP inbounds only)
    by_inbound: dict[_rules.InboundKey, tuple[_rules.Rule, ...]]
    to_key: tuple[str, ...] = ()


def match(snapshot: MeshSnapshot, proxy: Proxy) -> Matched:
    selection = _rules.select(snapshot.policies.get(KIND, ()), proxy)
    by_inbound = {}
    for inbound in proxy.inbounds:
        if inbound.protocol not in names.HTTP_PROTOCOLS:
            continue
        key = _rules.inbound_key(inbound)
        rules = _rules.from_rules(selection.by_inbound.get(key, ()))
        if rules:
            by_inbound[key] = tuple(rules)
    return Matched(by_inbound)


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


def _filters(rules: tuple[_rules.Rule, ...]) -> list[hcm_pb2.HttpFilter]:
    return [hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=_envoy.pack(fault_config(fault, rule.subset)))
            for rule in rules for fault in (rule.conf.get("http") or [])]


def apply(matched: Matched, resources: _envoy.Resources) -> None:
    inbound_listeners = _envoy.listeners_by_address(resources, base_pb2.INBOUND)
    for key, rules in matched.by_inbound.items():
        listener = inbound_listeners.get(key)
        filters = _filters(rules)
        if listener is None or not filters:
            continue
        for chain in listener.filter_chains:
            _envoy.update_hcm(chain, lambda hcm: _envoy.insert_before_router(hcm, *filters))
