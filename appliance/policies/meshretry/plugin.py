"""MeshRetry on a sidecar: route retry policies (HTTP, gRPC) and connect attempts (TCP) on outbounds.

Field mapping as Kuma 2.14 (plugin/xds/configurer.go). Only `http` services get the `http` section and
only `grpc` services the `grpc` one (an `http2` service gets neither, as in Kuma); `tcp` services get
tcp.maxConnectAttempt as tcp_proxy max_connect_attempts. `numRetries: 0` turns retries off.
On a builtin gateway (`apply_to_gateway`), per port, the `to` entries for the whole mesh (or a route's
MeshHTTPRoute rule) of the policies that select its listeners: `http` on the routes of HTTP/HTTPS ports,
tcp.maxConnectAttempt on TCP/TLS ports.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.retry.host.omit_host_metadata.v3 import omit_host_metadata_config_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from appliance.policies import _envoy, _gateway, _rules
from appliance.policies._common import HTTP_STATUS_CODES
from appliance.model.proxy import MeshGateway, MeshSnapshot, Proxy

KIND = "MeshRetry"
HTTP_RETRY_ON_DEFAULT = "gateway-error,connect-failure,refused-stream"
GRPC_RETRY_ON_DEFAULT = "cancelled,connect-failure,gateway-error,refused-stream,reset,resource-exhausted,unavailable"
GRPC_BASE_INTERVAL = 0.025   # mesh.DefaultBaseInterval: gRPC back-off without a base interval
_HTTP_RETRY_ON = {"5xx": "5xx", "GatewayError": "gateway-error", "Reset": "reset", "Retriable4xx": "retriable-4xx",
                  "ConnectFailure": "connect-failure", "EnvoyRatelimited": "envoy-ratelimited",
                  "RefusedStream": "refused-stream", "Http3PostConnectFailure": "http3-post-connect-failure"}
_GRPC_RETRY_ON = {"Canceled": "canceled", "DeadlineExceeded": "deadline-exceeded", "Internal": "internal",
                  "ResourceExhausted": "resource-exhausted", "Unavailable": "unavailable"}
_METHOD_PREFIX = "HttpMethod"
_RESET_FORMATS = {"Seconds": route_components_pb2.RetryPolicy.SECONDS,
                  "UnixTimestamp": route_components_pb2.RetryPolicy.UNIX_TIMESTAMP}

Conf = dict[str, Any]


@dataclass(frozen=True)
class Matched:
    outbounds: dict[_rules.InboundKey, tuple[str, str]]   # listener (address, port) -> (service, protocol)
    to_rules: tuple[_rules.Rule, ...]
    to_key: tuple[str, ...] = ()                           # equal keys: equal outbound listener retries


def match(snapshot: MeshSnapshot, proxy: Proxy) -> Matched:
    selection = _rules.select(snapshot.policies.get(KIND, ()), proxy)
    routes = snapshot.policies.get("MeshHTTPRoute", ())

    def build() -> Matched:
        outbounds = {(o.address, o.port): (o.service, snapshot.protocols.get(o.service, "tcp"))
                     for o in proxy.outbounds}
        return Matched(outbounds, tuple(_rules.to_rules(selection, routes=routes)), selection.key)
    return _rules.per_group(snapshot, KIND, selection, proxy, build)


def _back_off(policy: route_components_pb2.RetryPolicy, conf: Conf, default_base: float | None) -> None:
    back_off = conf.get("backOff")
    if back_off is None:
        return
    target = policy.retry_back_off
    target.SetInParent()
    if back_off.get("baseInterval") is not None or default_base is not None:
        target.base_interval.CopyFrom(_envoy.duration(back_off.get("baseInterval"), default_base or 0))
    if back_off.get("maxInterval") is not None:
        target.max_interval.CopyFrom(_envoy.duration(back_off["maxInterval"], 0))


def _rate_limited_back_off(policy: route_components_pb2.RetryPolicy, conf: Conf) -> None:
    limited = conf.get("rateLimitedBackOff")
    if limited is None:
        return
    target = policy.rate_limited_retry_back_off
    target.SetInParent()
    for header in limited.get("resetHeaders") or []:
        target.reset_headers.add(name=header.get("name", ""), format=_RESET_FORMATS.get(header.get("format"), 0))
    if limited.get("maxInterval") is not None:
        target.max_interval.CopyFrom(_envoy.duration(limited["maxInterval"], 0))


def _header_matcher(header: Conf) -> route_components_pb2.HeaderMatcher:
    matcher = route_components_pb2.HeaderMatcher(name=header.get("name", ""))
    kind, value = header.get("type") or "Exact", header.get("value", "")
    if kind == "RegularExpression":
        matcher.string_match.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=value))
    elif kind == "Prefix":
        matcher.string_match.CopyFrom(string_pb2.StringMatcher(prefix=value))
    elif kind == "Exact":
        matcher.string_match.CopyFrom(string_pb2.StringMatcher(exact=value))
    else:
        matcher.present_match = kind == "Present"
    return matcher


def _host_selection(policy: route_components_pb2.RetryPolicy, predicates: list[Conf]) -> None:
    for predicate in predicates:
        kind = predicate.get("predicate")
        if kind == "OmitPreviousHosts":
            policy.retry_host_predicate.add(name="envoy.retry_host_predicates.previous_hosts",
                                            typed_config=_envoy.pack(previous_hosts_pb2.PreviousHostsPredicate()))
        elif kind == "OmitHostsWithTags":
            config = omit_host_metadata_config_pb2.OmitHostMetadataConfig()
            tags = {k: v for k, v in (predicate.get("tags") or {}).items() if k != _rules.SERVICE_TAG}
            if tags:
                fields = config.metadata_match.filter_metadata["envoy.lb"].fields
                for name in sorted(tags):
                    fields[name].string_value = tags[name]
            policy.retry_host_predicate.add(name="envoy.retry_host_predicates.omit_host_metadata",
                                            typed_config=_envoy.pack(config))
        elif kind == "OmitPreviousPriorities":
            config = previous_priorities_config_pb2.PreviousPrioritiesConfig(
                update_frequency=predicate.get("updateFrequency", 2))
            policy.retry_priority.name = "envoy.retry_priorities.previous_priorities"
            policy.retry_priority.typed_config.CopyFrom(_envoy.pack(config))


def http_retry_policy(conf: Conf) -> route_components_pb2.RetryPolicy | None:
    if conf.get("numRetries") == 0:
        return None
    policy = route_components_pb2.RetryPolicy(retry_on=HTTP_RETRY_ON_DEFAULT)
    if conf.get("perTryTimeout") is not None:
        policy.per_try_timeout.CopyFrom(_envoy.duration(conf["perTryTimeout"], 0))
    if conf.get("numRetries") is not None:
        policy.num_retries.value = conf["numRetries"]
    _back_off(policy, conf, None)
    _rate_limited_back_off(policy, conf)
    retry_on, status_codes, methods = [], [], []
    for item in conf.get("retryOn") or []:
        if item.isdigit() and int(item) in HTTP_STATUS_CODES:
            status_codes.append(int(item))
        elif item.startswith(_METHOD_PREFIX):
            methods.append(item[len(_METHOD_PREFIX):].upper())
        else:
            retry_on.append(_HTTP_RETRY_ON.get(item, item))
    if retry_on:
        policy.retry_on = ",".join(retry_on)
    if status_codes:
        policy.retriable_status_codes.extend(status_codes)
        if "retriable-status-codes" not in policy.retry_on.split(","):
            policy.retry_on += ",retriable-status-codes"
    for method in methods:
        policy.retriable_request_headers.add(name=":method").string_match.exact = method
    for header in conf.get("retriableRequestHeaders") or []:
        policy.retriable_request_headers.append(_header_matcher(header))
    for header in conf.get("retriableResponseHeaders") or []:
        policy.retriable_headers.append(_header_matcher(header))
    if conf.get("hostSelection") is not None:
        _host_selection(policy, conf["hostSelection"])
    if conf.get("hostSelectionMaxAttempts") is not None:
        policy.host_selection_retry_max_attempts = conf["hostSelectionMaxAttempts"]
    return policy


def grpc_retry_policy(conf: Conf) -> route_components_pb2.RetryPolicy | None:
    if conf.get("numRetries") == 0:
        return None
    policy = route_components_pb2.RetryPolicy(retry_on=GRPC_RETRY_ON_DEFAULT)
    if conf.get("perTryTimeout") is not None:
        policy.per_try_timeout.CopyFrom(_envoy.duration(conf["perTryTimeout"], 0))
    if conf.get("numRetries") is not None:
        policy.num_retries.value = conf["numRetries"]
    retry_on = [_GRPC_RETRY_ON.get(item, item) for item in conf.get("retryOn") or []]
    if retry_on:
        policy.retry_on = ",".join(retry_on)
    _back_off(policy, conf, GRPC_BASE_INTERVAL)
    _rate_limited_back_off(policy, conf)
    return policy


def retry_policy(conf: Conf | None, protocol: str) -> route_components_pb2.RetryPolicy | None:
    if conf is None:
        return None
    if protocol == "http" and conf.get("http") is not None:
        return http_retry_policy(conf["http"])
    if protocol == "grpc" and conf.get("grpc") is not None:
        return grpc_retry_policy(conf["grpc"])
    return None


def _configure_listener(listener: listener_pb2.Listener, matched: Matched, service: str, protocol: str) -> None:
    """A route takes the entries of kind MeshHTTPRoute for its rule over those of its service."""
    rule = _rules.compute(matched.to_rules, {_rules.SERVICE_TAG: service})
    conf = rule.conf if rule is not None else None
    attempts = ((conf or {}).get("tcp") or {}).get("maxConnectAttempt")

    def update_tcp(proxy: tcp_proxy_pb2.TcpProxy) -> None:
        proxy.max_connect_attempts.value = attempts

    def update_hcm(hcm: hcm_pb2.HttpConnectionManager) -> None:
        for route in _envoy.routes(hcm):
            found = _rules.compute(matched.to_rules, _rules.route_element(service, route.name))
            policy = retry_policy(found.conf if found is not None else None, protocol)
            if route.HasField("route") and policy is not None:
                route.route.retry_policy.CopyFrom(policy)

    for chain in listener.filter_chains:
        if protocol == "tcp" and attempts is not None:
            _envoy.update_tcp_proxy(chain, update_tcp)
        elif protocol != "tcp":
            _envoy.update_hcm(chain, update_hcm)


def apply(matched: Matched, resources: _envoy.Resources) -> None:
    outbound_listeners = _envoy.listeners_by_address(resources, base_pb2.OUTBOUND)
    for key, (service, protocol) in matched.outbounds.items():
        listener = outbound_listeners.get(key)
        if listener is None:
            continue
        _configure_listener(listener, matched, service, protocol)


def apply_to_gateway(snapshot: MeshSnapshot, proxy: Proxy, gateway: MeshGateway,
                     ports: tuple[_gateway.GatewayPort, ...], resources: _envoy.Resources) -> None:
    for port in ports:
        policies = _gateway.port_policies(snapshot.policies.get(KIND, ()), proxy, gateway, port.port)
        if not policies:
            continue
        rules = _rules.policies_to_rules(policies, routes=snapshot.policies.get("MeshHTTPRoute", ()))
        common = _rules.compute(rules, {})
        conf = common.conf if common is not None else None
        if port.protocol in ("TCP", "TLS"):
            attempts = ((conf or {}).get("tcp") or {}).get("maxConnectAttempt")
            listener = _envoy.listener(resources, port.listener)
            if attempts is not None and listener is not None:
                def update_tcp(tcp: tcp_proxy_pb2.TcpProxy) -> None:
                    tcp.max_connect_attempts.value = attempts
                for chain in listener.filter_chains:
                    _envoy.update_tcp_proxy(chain, update_tcp)
            continue
        default = retry_policy(conf, "http")
        for name in port.route_configs:
            config = resources.get(_envoy.ROUTE, {}).get(name)
            for host in getattr(config, "virtual_hosts", ()):
                for route in host.routes:
                    found = _rules.compute(rules, {_rules.RULE_HASH_TAG: route.name})
                    policy = retry_policy(found.conf if found is not None else None, "http") or default
                    if route.HasField("route") and policy is not None:
                        route.route.retry_policy.CopyFrom(policy)
