"""MeshHTTPRoute matches and filters as Envoy routes (Kuma 2.14: meshhttproute/xds/{configurer,match}.go,
xds/filters/*.go).

One policy match may become two Envoy routes: a PathPrefix other than "/" matches the path itself and
everything below it ("/v1" and "/v1/..."), never "/v1x", as the Gateway API asks.
"""
from __future__ import annotations

from typing import Any, Iterable

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2

from appliance.policies._common import parse_decimal

Conf = dict[str, Any]
Split = tuple[str, int]        # (cluster, weight)

_REDIRECT_CODES = {301: route_pb2.RedirectAction.MOVED_PERMANENTLY, 302: route_pb2.RedirectAction.FOUND,
                   303: route_pb2.RedirectAction.SEE_OTHER, 307: route_pb2.RedirectAction.TEMPORARY_REDIRECT,
                   308: route_pb2.RedirectAction.PERMANENT_REDIRECT}


def _regex(value: str) -> regex_pb2.RegexMatcher:
    return regex_pb2.RegexMatcher(regex=value)


def _path_matches(path: Conf) -> list[tuple[route_pb2.RouteMatch, bool]]:
    """(Envoy match, made from a prefix) for one policy path match."""
    kind, value = path.get("type"), str(path.get("value", ""))
    if kind == "Exact":
        return [(route_pb2.RouteMatch(path=value), False)]
    if kind == "RegularExpression":
        return [(route_pb2.RouteMatch(safe_regex=_regex(value)), False)]
    if value == "/":
        return [(route_pb2.RouteMatch(prefix="/"), True)]
    trimmed = value.rstrip("/")
    return [(route_pb2.RouteMatch(path=trimmed), True), (route_pb2.RouteMatch(prefix=trimmed + "/"), True)]


def _header_matcher(header: Conf) -> route_pb2.HeaderMatcher:
    name, value, kind = str(header.get("name", "")), str(header.get("value") or ""), header.get("type") or "Exact"
    matcher = route_pb2.HeaderMatcher(name=name)
    if kind == "Exact":
        matcher.string_match.CopyFrom(string_pb2.StringMatcher(exact=value))
    elif kind == "RegularExpression":
        matcher.string_match.CopyFrom(string_pb2.StringMatcher(safe_regex=_regex(value)))
    elif kind == "Prefix" and value:
        matcher.string_match.CopyFrom(string_pb2.StringMatcher(prefix=value))
    else:   # Present, Absent; a Prefix of "" is any value (Envoy refuses an empty prefix)
        matcher.present_match = kind != "Absent"
    return matcher


def route_matches(match: Conf) -> list[tuple[route_pb2.RouteMatch, bool]]:
    """The Envoy matches of one policy match; a match without a path has been given the "/" prefix."""
    out = []
    for envoy_match, from_prefix in _path_matches(match.get("path") or {"type": "PathPrefix", "value": "/"}):
        if match.get("method") is not None:
            envoy_match.headers.add(name=":method").string_match.exact = str(match["method"])
        seen: set[str] = set()
        for param in match.get("queryParams") or []:
            name = str(param.get("name", ""))
            if name in seen:
                continue
            seen.add(name)
            matcher = envoy_match.query_parameters.add(name=name)
            if param.get("type") == "RegularExpression":
                matcher.string_match.safe_regex.CopyFrom(_regex(str(param.get("value", ""))))
            else:
                matcher.string_match.exact = str(param.get("value", ""))
        seen = set()
        for header in match.get("headers") or []:
            if header.get("name") in seen:
                continue
            seen.add(header.get("name"))
            envoy_match.headers.append(_header_matcher(header))
        out.append((envoy_match, from_prefix))
    return out


def _header_options(modifier: Conf) -> list[base_pb2.HeaderValueOption]:
    options = []
    for entry in modifier.get("set") or []:
        options.append(base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=entry["name"], value=entry.get("value", "")),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD))
    for entry in modifier.get("add") or []:
        options.append(base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=entry["name"], value=entry.get("value", "")),
            append_action=base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD))
    return options


def _rewrite_all(substitution: str) -> regex_pb2.RegexMatchAndSubstitute:
    return regex_pb2.RegexMatchAndSubstitute(pattern=_regex(".*"), substitution=substitution)


def fractional_percent(value: Any) -> percent_pb2.FractionalPercent:
    """ConvertPercentage: the coarsest denominator that holds the value exactly (else a millionth)."""
    number = float(parse_decimal(value) or 0)
    if number.is_integer():
        return percent_pb2.FractionalPercent(numerator=int(number), denominator=percent_pb2.FractionalPercent.HUNDRED)
    if (number * 100).is_integer():
        return percent_pb2.FractionalPercent(numerator=int(number * 100),
                                             denominator=percent_pb2.FractionalPercent.TEN_THOUSAND)
    return percent_pb2.FractionalPercent(numerator=round(number * 10_000),
                                         denominator=percent_pb2.FractionalPercent.MILLION)


def _apply_filter(route: route_pb2.Route, item: Conf, from_prefix: bool, mirror_clusters: dict[int, str],
                  index: int) -> None:
    kind = item.get("type")
    if kind == "RequestHeaderModifier":
        modifier = item.get("requestHeaderModifier") or {}
        route.request_headers_to_add.extend(_header_options(modifier))
        route.request_headers_to_remove.extend(modifier.get("remove") or [])
    elif kind == "ResponseHeaderModifier":
        modifier = item.get("responseHeaderModifier") or {}
        route.response_headers_to_add.extend(_header_options(modifier))
        route.response_headers_to_remove.extend(modifier.get("remove") or [])
    elif kind == "RequestRedirect":
        _redirect(route, item.get("requestRedirect") or {}, from_prefix)
    elif kind == "URLRewrite" and route.HasField("route"):
        rewrite, action = item.get("urlRewrite") or {}, route.route
        if rewrite.get("hostname") is not None:
            action.host_rewrite_literal = str(rewrite["hostname"])
        path = rewrite.get("path") or {}
        if path.get("type") == "ReplaceFullPath":
            action.regex_rewrite.CopyFrom(_rewrite_all(str(path.get("replaceFullPath", ""))))
        elif path.get("type") == "ReplacePrefixMatch" and from_prefix:
            if route.match.path:
                action.regex_rewrite.CopyFrom(_rewrite_all(str(path.get("replacePrefixMatch", ""))))
            elif route.match.prefix:
                action.prefix_rewrite = str(path.get("replacePrefixMatch", ""))
    elif kind == "RequestMirror" and route.HasField("route") and index in mirror_clusters:
        mirror = route.route.request_mirror_policies.add(cluster=mirror_clusters[index])
        percentage = (item.get("requestMirror") or {}).get("percentage")
        if percentage is not None:
            mirror.runtime_fraction.default_value.CopyFrom(fractional_percent(percentage))


def _redirect(route: route_pb2.Route, redirect: Conf, from_prefix: bool) -> None:
    action = route_pb2.RedirectAction()
    if redirect.get("hostname") is not None:
        action.host_redirect = str(redirect["hostname"])
    if redirect.get("port") is not None:
        action.port_redirect = int(redirect["port"])
    if redirect.get("scheme") is not None:
        action.scheme_redirect = str(redirect["scheme"])
    path = redirect.get("path") or {}
    if path.get("type") == "ReplaceFullPath":
        action.regex_rewrite.CopyFrom(_rewrite_all(str(path.get("replaceFullPath", ""))))
    elif path.get("type") == "ReplacePrefixMatch" and from_prefix:
        if route.match.path:
            action.regex_rewrite.CopyFrom(_rewrite_all(str(path.get("replacePrefixMatch", ""))))
        elif route.match.prefix:
            action.prefix_rewrite = str(path.get("replacePrefixMatch", ""))
    action.response_code = _REDIRECT_CODES.get(int(redirect.get("statusCode") or 302), route_pb2.RedirectAction.FOUND)
    route.redirect.CopyFrom(action)   # answers the request itself: no upstream


def envoy_routes(name: str, match: Conf, filters: Iterable[Conf], splits: list[Split], auto_host_rewrite: bool,
                 mirror_clusters: dict[int, str]) -> list[route_pb2.Route]:
    """The Envoy routes of one policy match: to one cluster or weighted clusters, then the rule's filters.
    `mirror_clusters` maps a RequestMirror filter's index in `filters` to its cluster."""
    out = []
    for envoy_match, from_prefix in route_matches(match):
        route = route_pb2.Route(name=name, match=envoy_match)
        action = route.route
        action.timeout.SetInParent()   # MeshTimeout sets it
        if len(splits) == 1:
            action.cluster = splits[0][0]
        else:
            for cluster, weight in splits:
                action.weighted_clusters.clusters.add(name=cluster).weight.value = weight
        if auto_host_rewrite:
            action.auto_host_rewrite.value = True
        for index, item in enumerate(filters):
            _apply_filter(route, item, from_prefix, mirror_clusters, index)
        out.append(route)
    return out
