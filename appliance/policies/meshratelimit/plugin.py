"""MeshRateLimit on a sidecar: local rate limits on the inbounds it selects.

As Kuma 2.14 (plugin/v1alpha1 + plugin/xds/configurer.go), with `from[]` read as rules that match every
client (the policy's `is_from_as_rules`) and `rules[]` entries without matches:
- HTTP `local.http.requestRate`: an empty `envoy.filters.http.local_ratelimit` filter right before the
  router, and on every route of the inbound a per-route LocalRateLimit (token bucket of `num` per
  `interval`, `onRateLimit.status`, response headers: `add` appended, `set` overwriting, one header per
  comma-separated value), unless a route already has one;
- TCP `local.tcp.connectionRate`: a network LocalRateLimit filter first on every filter chain of the
  inbound (new connections over the limit are closed at once);
- `disabled: true` or an absent rate leaves that part out.
Rules matched by client identity (spiffeID / SNI) are not applied yet: the API says so on write.
On a builtin gateway (`apply_to_gateway`), per port, the `to` entries for the whole mesh (or a route's
MeshHTTPRoute rule) of the policies that select its listeners (Kuma's gateway takes `to`, not `from`/`rules`):
`local.http` on each route of its route configurations (with the filter in its HTTP connection managers),
`local.tcp` on each of its filter chains.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as http_rl_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.local_ratelimit.v3 import local_rate_limit_pb2 as tcp_rl_pb2
from envoy.type.v3 import percent_pb2, token_bucket_pb2

from appliance.model.proxy import MeshGateway, MeshSnapshot, Proxy
from appliance.policies import _envoy, _gateway, _rules

KIND = "MeshRateLimit"
INBOUND_ONLY = True   # rate limits on inbound listeners only (policies/__init__.py)
HTTP_FILTER = "envoy.filters.http.local_ratelimit"
# Kuma names the network filter after its config type, not after the extension.
TCP_FILTER = "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit"

Conf = dict[str, Any]


@dataclass(frozen=True)
class Matched:
    by_inbound: dict[_rules.InboundKey, Conf]   # the conf that applies to every client of each inbound
    to_key: tuple[str, ...] = ()


def match(snapshot: MeshSnapshot, proxy: Proxy) -> Matched:
    selection = _rules.select(snapshot.policies.get(KIND, ()), proxy)
    by_inbound = {}
    for inbound in proxy.inbounds:
        key = _rules.inbound_key(inbound)
        rules = _rules.inbound_rules(selection.by_inbound.get(key, ()), from_as_rules=True)
        # Only identity-matched rules: the common conf is left to them (as Kuma's SkipCommonConfig).
        if rules and any(r.match is None for r in rules):
            by_inbound[key] = _rules.catch_all_conf(rules)
    return Matched(by_inbound)


def _bucket(rate: Conf) -> token_bucket_pb2.TokenBucket:
    bucket = token_bucket_pb2.TokenBucket(max_tokens=int(rate["num"]))
    bucket.tokens_per_fill.value = int(rate["num"])
    bucket.fill_interval.CopyFrom(_envoy.duration(rate.get("interval"), 0))
    return bucket


def _enabled(runtime_key: str) -> base_pb2.RuntimeFractionalPercent:
    percent = percent_pb2.FractionalPercent(numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED)
    return base_pb2.RuntimeFractionalPercent(default_value=percent, runtime_key=runtime_key)


def route_rate_limit(http: Conf) -> http_rl_pb2.LocalRateLimit | None:
    """RateLimitConfigurationFromPolicy + NewRateLimitConfiguration: the per-route limit, None when off."""
    if http.get("disabled") or http.get("requestRate") is None:
        return None
    config = http_rl_pb2.LocalRateLimit(stat_prefix="rate_limit", token_bucket=_bucket(http["requestRate"]),
                                        filter_enabled=_enabled("local_rate_limit_enabled"),
                                        filter_enforced=_enabled("local_rate_limit_enforced"))
    on_limit = http.get("onRateLimit")
    if on_limit is not None:
        if on_limit.get("status"):
            config.status.code = int(on_limit["status"])
        headers = on_limit.get("headers") or {}
        for header in headers.get("add") or []:
            config.response_headers_to_add.add(
                header=base_pb2.HeaderValue(key=header["name"], value=header["value"]),
                append_action=base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD)
        for header in headers.get("set") or []:
            for value in header["value"].split(","):
                config.response_headers_to_add.add(
                    header=base_pb2.HeaderValue(key=header["name"], value=value),
                    append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)
    return config


def connection_rate_limit(tcp: Conf) -> tcp_rl_pb2.LocalRateLimit | None:
    if tcp.get("disabled") or tcp.get("connectionRate") is None:
        return None
    return tcp_rl_pb2.LocalRateLimit(stat_prefix="tcp_rate_limit", token_bucket=_bucket(tcp["connectionRate"]))


def _upsert_http_filter(hcm: hcm_pb2.HttpConnectionManager) -> None:
    """The (empty) local rate limit filter that the routes' per-route limits configure."""
    http_filter = hcm_pb2.HttpFilter(
        name=HTTP_FILTER, typed_config=_envoy.pack(http_rl_pb2.LocalRateLimit(stat_prefix="rate_limit")))
    for index, existing in enumerate(hcm.http_filters):
        if existing.name == HTTP_FILTER:
            hcm.http_filters[index].CopyFrom(http_filter)
            return
    _envoy.insert_before_router(hcm, http_filter)


def _limit_route(route: route_components_pb2.Route, packed: Any) -> None:
    if HTTP_FILTER not in route.typed_per_filter_config:   # a route's own limit stays
        route.typed_per_filter_config[HTTP_FILTER].CopyFrom(packed)


def _configure_http(chain: listener_components_pb2.FilterChain, limit: http_rl_pb2.LocalRateLimit) -> None:
    packed = _envoy.pack(limit)

    def update(hcm: hcm_pb2.HttpConnectionManager) -> None:
        if not hcm.HasField("route_config"):
            return
        for route in _envoy.routes(hcm):
            _limit_route(route, packed)
        _upsert_http_filter(hcm)

    _envoy.update_hcm(chain, update)


def _configure_tcp(chain: listener_components_pb2.FilterChain, limit: tcp_rl_pb2.LocalRateLimit) -> None:
    network_filter = listener_components_pb2.Filter(name=TCP_FILTER, typed_config=_envoy.pack(limit))
    for index, existing in enumerate(chain.filters):
        if existing.name == TCP_FILTER:
            chain.filters[index].CopyFrom(network_filter)
            return
    chain.filters.insert(0, network_filter)


def apply(matched: Matched, resources: _envoy.Resources) -> None:
    inbound_listeners = _envoy.listeners_by_address(resources, base_pb2.INBOUND)
    for key, conf in matched.by_inbound.items():
        listener = inbound_listeners.get(key)
        local = conf.get("local")
        if listener is None or not local:
            continue
        http = route_rate_limit(local["http"]) if local.get("http") else None
        tcp = connection_rate_limit(local["tcp"]) if local.get("tcp") else None
        for chain in listener.filter_chains:
            if http is not None:
                _configure_http(chain, http)
            if tcp is not None:
                _configure_tcp(chain, tcp)


def apply_to_gateway(snapshot: MeshSnapshot, proxy: Proxy, gateway: MeshGateway,
                     ports: tuple[_gateway.GatewayPort, ...], resources: _envoy.Resources) -> None:
    for port in ports:
        policies = _gateway.port_policies(snapshot.policies.get(KIND, ()), proxy, gateway, port.port)
        listener = _envoy.listener(resources, port.listener)
        if not policies or listener is None:
            continue
        rules = _rules.policies_to_rules(policies, routes=snapshot.policies.get("MeshHTTPRoute", ()))
        common = _rules.compute(rules, {})
        local = (common.conf if common is not None else {}).get("local") or {}
        tcp = connection_rate_limit(local["tcp"]) if local.get("tcp") else None
        default = route_rate_limit(local["http"]) if local.get("http") else None
        limited = False
        for name in port.route_configs:
            config = resources.get(_envoy.ROUTE, {}).get(name)
            for host in getattr(config, "virtual_hosts", ()):
                for route in host.routes:
                    found = _rules.compute(rules, {_rules.RULE_HASH_TAG: route.name})
                    http = ((found.conf if found is not None else {}).get("local") or {}).get("http")
                    limit = (route_rate_limit(http) if http else None) or default
                    if limit is not None:
                        _limit_route(route, _envoy.pack(limit))
                        limited = True
        for chain in listener.filter_chains:
            if limited:
                _envoy.update_hcm(chain, _upsert_http_filter)
            if tcp is not None:
                _configure_tcp(chain, tcp)
