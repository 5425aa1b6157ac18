"""MeshTCPRoute on a sidecar: weighted backends for the connections of an outbound.

As Kuma 2.14 (plugin/v1alpha1/listeners*.go, api/v1alpha1/helpers.go):
- each `to[]` entry contributes its first rule (a TCP connection has nothing to match on), or without rules
  its own targetRef with weight 1; entries of several policies merge per destination as JSON merge patches,
  so the most precedent policy's backendRefs win whole;
- a TCP outbound with a rule gets a tcp_proxy to its backends (one cluster, or weighted clusters);
- an HTTP, HTTP/2 or gRPC outbound is taken over only when no MeshHTTPRoute has rules for it: then its
  connections are proxied as TCP to the backends; a MeshHTTPRoute for the same destination wins;
- backends are clusters as for MeshHTTPRoute (MeshService, MeshServiceSubset); weight 0 drops one.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from appliance.model.proxy import MeshSnapshot, Proxy
from appliance.policies import _envoy, _rules
from appliance.policies._backends import Backend, add_clusters, backend
from appliance.policies.meshhttproute import plugin as meshhttproute

KIND = "MeshTCPRoute"
OUTBOUND_ONLY = True   # TCP routes on outbound listeners only (policies/__init__.py)
Conf = dict[str, Any]


@dataclass(frozen=True)
class Matched:
    mesh: str
    outbounds: dict[_rules.InboundKey, tuple[str, tuple[Backend, ...]]]   # listener -> (service, splits)
    to_key: tuple[str, ...]

    @cached_property   # asked once per outbound of the proxy (xds/generate)
    def backend_services(self) -> dict[_rules.InboundKey, tuple[str, ...]]:
        """Per outbound, the services its connections go to: the generator adds their clusters."""
        return {k: tuple(sorted({b.service for b in splits})) for k, (_, splits) in self.outbounds.items()}


def conf_of(entry: Conf) -> Conf:
    rules = entry.get("rules") or []
    if rules:
        return rules[0]
    return {"default": {"backendRefs": [{**(entry.get("targetRef") or {}), "weight": 1}]}}


def _http_routed(snapshot: MeshSnapshot, proxy: Proxy) -> set[str]:
    """The destinations some MeshHTTPRoute has rules for (they keep HTTP routing)."""
    selection = _rules.select(snapshot.policies.get(meshhttproute.KIND, ()), proxy)
    rules = _rules.to_rules(selection, meshhttproute._conf_of, meshhttproute.merge_rules)
    routed = set()
    for outbound in proxy.outbounds:
        rule = _rules.compute(rules, {_rules.SERVICE_TAG: outbound.service})
        if rule is not None and rule.conf.get("rules"):
            routed.add(outbound.service)
    return routed


NOTHING = Matched("", {}, ())   # no policy of this kind in the mesh


def match(snapshot: MeshSnapshot, proxy: Proxy) -> Matched:
    if not snapshot.policies.get(KIND):
        return NOTHING
    selection = _rules.select(snapshot.policies[KIND], proxy)
    rules = _rules.to_rules(selection, conf_of)
    http_routed: set[str] | None = None
    outbounds = {}
    for outbound in proxy.outbounds:
        rule = _rules.compute(rules, {_rules.SERVICE_TAG: outbound.service})
        if rule is None:
            continue   # the generated listener is already Kuma's default (the whole service)
        if snapshot.protocols.get(outbound.service, "tcp") in _envoy.HTTP_PROTOCOLS:
            if http_routed is None:
                http_routed = _http_routed(snapshot, proxy)
            if outbound.service in http_routed:
                continue
        refs = (rule.conf.get("default") or {}).get("backendRefs") or []
        splits = tuple(found for found in (backend(r, snapshot.destinations) for r in refs)
                       if found is not None and found.weight > 0)
        if not splits:
            continue   # nowhere to send the connections: the listener keeps going to the whole service
        outbounds[(outbound.address, outbound.port)] = (outbound.service, splits)
    return Matched(snapshot.mesh, outbounds, selection.key)


def tcp_proxy(service: str, splits: tuple[Backend, ...]) -> tcp_proxy_pb2.TcpProxy:
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=_envoy.sanitize_metric(service))
    if len(splits) == 1:
        proxy.cluster = splits[0].cluster
    else:
        for split in splits:
            proxy.weighted_clusters.clusters.add(name=split.cluster, weight=split.weight)
    return proxy


def outbound_view(matched: Matched, place: _rules.InboundKey) -> Any:
    """What `apply` reads for the outbound at `place` (policies/__init__.py)."""
    return matched.mesh, matched.outbounds.get(place)


def apply(matched: Matched, resources: _envoy.Resources) -> None:
    listeners = _envoy.listeners_by_address(resources, base_pb2.OUTBOUND)
    for key, (service, splits) in matched.outbounds.items():
        listener = listeners.get(key)
        if listener is None:
            continue
        for chain in listener.filter_chains:
            del chain.filters[:]
            chain.filters.append(listener_components_pb2.Filter(
                name=_envoy.TCP_PROXY_FILTER, typed_config=_envoy.pack(tcp_proxy(service, splits))))
        add_clusters(resources, splits, matched.mesh)
