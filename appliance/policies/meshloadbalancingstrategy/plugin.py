"""MeshLoadBalancingStrategy on a sidecar: the balancing algorithm of outbound clusters and the request hash.

As Kuma 2.14 (plugin/v1alpha1/plugin.go), for each outbound whose service a `to` entry matches:
- loadBalancer.type -> the cluster's lb_policy (and those of the service's parts, `clusters_of`):
  RoundRobin, LeastRequest (choiceCount, activeRequestBias), RingHash (min/maxRingSize, hashFunction),
  Random, Maglev (tableSize);
- hashPolicies (or the deprecated loadBalancer.ringHash/maglev.hashPolicies) -> hash_policy of every route
  of the outbound, or of the routes of one MeshHTTPRoute's rules for an entry of kind MeshHTTPRoute: Header, Cookie (name, path, ttl), Connection (sourceIP), QueryParameter, FilterState,
  each with `terminal`; the deprecated SourceIP type is hashed like Connection.
- localityAwareness: with one zone every endpoint is local, so `disabled`, `crossZone` and the failover
  threshold change nothing Envoy does; `localZone.affinityTags` would weight endpoints by tags shared with
  the caller, which needs load assignments per caller: not applied, and a write that sets it gets a warning.
On a builtin gateway (`apply_to_gateway`), per port, from the policies that select its listeners: each
cluster its routes send to takes the `to` entries for its service; and, as Kuma's gateway does, the hash
policies of a service whose conf sets loadBalancer go on every route of the port (of several such services,
the last by name).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from appliance.model.proxy import MeshGateway, MeshSnapshot, Proxy
from appliance.policies import _envoy, _gateway, _rules
from appliance.policies._common import parse_decimal

KIND = "MeshLoadBalancingStrategy"
Conf = dict[str, Any]
_POLICIES = {"RoundRobin": cluster_pb2.Cluster.ROUND_ROBIN, "LeastRequest": cluster_pb2.Cluster.LEAST_REQUEST,
             "RingHash": cluster_pb2.Cluster.RING_HASH, "Random": cluster_pb2.Cluster.RANDOM,
             "Maglev": cluster_pb2.Cluster.MAGLEV}
_HASH_FUNCTIONS = {"XXHash": cluster_pb2.Cluster.RingHashLbConfig.XX_HASH,
                   "MurmurHash2": cluster_pb2.Cluster.RingHashLbConfig.MURMUR_HASH_2}


@dataclass(frozen=True)
class Matched:
    outbounds: dict[_rules.InboundKey, str]            # listener -> its service (with a rule)
    clusters: dict[str, tuple[tuple[str, ...], Conf]]  # service -> (its clusters, merged conf)
    to_rules: tuple[_rules.Rule, ...]
    to_key: tuple[str, ...]


NOTHING = Matched({}, {}, (), ())   # no policy of this kind in the mesh


def match(snapshot: MeshSnapshot, proxy: Proxy) -> Matched:
    if not snapshot.policies.get(KIND):
        return NOTHING
    selection = _rules.select(snapshot.policies[KIND], proxy)
    routes = snapshot.policies.get("MeshHTTPRoute", ())

    def build() -> Matched:
        rules = _rules.to_rules(selection, routes=routes)
        outbounds, clusters = {}, {}
        for outbound in proxy.outbounds:
            rule = _rules.compute(rules, {_rules.SERVICE_TAG: outbound.service})
            outbounds[(outbound.address, outbound.port)] = outbound.service
            if rule is not None:
                clusters[outbound.service] = (snapshot.clusters_of(outbound.service), rule.conf)
        return Matched(outbounds, clusters, tuple(rules), selection.key)
    return _rules.per_group(snapshot, KIND, selection, proxy, build)


def hash_policies(conf: Conf) -> list[Conf] | None:
    """The root hashPolicies, else those of a RingHash or Maglev balancer (deprecated place)."""
    if conf.get("hashPolicies") is not None:
        return conf["hashPolicies"]
    balancer = conf.get("loadBalancer") or {}
    field = {"RingHash": "ringHash", "Maglev": "maglev"}.get(balancer.get("type"))
    return (balancer.get(field) or {}).get("hashPolicies") if field else None


def hash_policy(conf: Conf) -> route_components_pb2.RouteAction.HashPolicy:
    policy = route_components_pb2.RouteAction.HashPolicy(terminal=bool(conf.get("terminal")))
    kind = conf.get("type")
    if kind == "Header":
        policy.header.header_name = (conf.get("header") or {}).get("name", "")
    elif kind == "Cookie":
        cookie = conf.get("cookie") or {}
        policy.cookie.name = cookie.get("name", "")
        policy.cookie.path = cookie.get("path") or ""
        if cookie.get("ttl") is not None:
            policy.cookie.ttl.CopyFrom(_envoy.duration(cookie["ttl"], 0))
    elif kind in ("Connection", "SourceIP"):
        policy.connection_properties.source_ip = bool((conf.get("connection") or {}).get("sourceIP"))
    elif kind == "QueryParameter":
        policy.query_parameter.name = (conf.get("queryParameter") or {}).get("name", "")
    elif kind == "FilterState":
        policy.filter_state.key = (conf.get("filterState") or {}).get("key", "")
    return policy


def configure_cluster(cluster: cluster_pb2.Cluster, balancer: Conf) -> None:
    kind = balancer.get("type")
    if kind not in _POLICIES:
        return
    cluster.lb_policy = _POLICIES[kind]
    if kind == "LeastRequest" and balancer.get("leastRequest") is not None:
        least = balancer["leastRequest"]
        cluster.least_request_lb_config.SetInParent()
        if least.get("activeRequestBias") is not None:
            bias = parse_decimal(least["activeRequestBias"])
            cluster.least_request_lb_config.active_request_bias.default_value = float(bias or 0)
        if least.get("choiceCount") is not None:
            cluster.least_request_lb_config.choice_count.value = int(least["choiceCount"])
    elif kind == "RingHash" and balancer.get("ringHash") is not None:
        ring = balancer["ringHash"]
        cluster.ring_hash_lb_config.SetInParent()
        if ring.get("minRingSize") is not None:
            cluster.ring_hash_lb_config.minimum_ring_size.value = int(ring["minRingSize"])
        if ring.get("maxRingSize") is not None:
            cluster.ring_hash_lb_config.maximum_ring_size.value = int(ring["maxRingSize"])
        if ring.get("hashFunction") is not None:
            cluster.ring_hash_lb_config.hash_function = _HASH_FUNCTIONS.get(ring["hashFunction"], 0)
    elif kind == "Maglev" and balancer.get("maglev") is not None:
        cluster.maglev_lb_config.SetInParent()
        if balancer["maglev"].get("tableSize") is not None:
            cluster.maglev_lb_config.table_size.value = int(balancer["maglev"]["tableSize"])


def apply(matched: Matched, resources: _envoy.Resources) -> None:
    listeners = _envoy.listeners_by_address(resources, base_pb2.OUTBOUND)
    if not matched.to_rules:
        return
    for key, service in matched.outbounds.items():
        listener = listeners.get(key)
        if listener is None:
            continue

        def add_hashing(hcm: hcm_pb2.HttpConnectionManager, service: str = service) -> None:
            for route in _envoy.routes(hcm):
                # an entry of kind MeshHTTPRoute for the route's rule over those of its service
                found = _rules.compute(matched.to_rules, _rules.route_element(service, route.name))
                policies = hash_policies(found.conf) if found is not None else None
                if route.HasField("route") and policies is not None:
                    del route.route.hash_policy[:]
                    route.route.hash_policy.extend(hash_policy(p) for p in policies)

        for chain in listener.filter_chains:
            _envoy.update_hcm(chain, add_hashing)
    for cluster_names, conf in matched.clusters.values():
        if conf.get("loadBalancer") is None:
            continue
        for name in cluster_names:
            cluster = _envoy.cluster(resources, name)
            if cluster is not None:
                configure_cluster(cluster, conf["loadBalancer"])


def apply_to_gateway(snapshot: MeshSnapshot, proxy: Proxy, gateway: MeshGateway,
                     ports: tuple[_gateway.GatewayPort, ...], resources: _envoy.Resources) -> None:
    for port in ports:
        policies = _gateway.port_policies(snapshot.policies.get(KIND, ()), proxy, gateway, port.port)
        if not policies:
            continue
        rules = _rules.policies_to_rules(policies)
        balanced: dict[str, Conf] = {}
        for service, name in port.backends:
            found = _rules.compute(rules, {_rules.SERVICE_TAG: service})
            cluster = _envoy.cluster(resources, name)
            if found is None or found.conf.get("loadBalancer") is None or cluster is None:
                continue
            configure_cluster(cluster, found.conf["loadBalancer"])
            balanced[service] = found.conf
        for service in sorted(balanced):
            policies_of = hash_policies(balanced[service])
            if policies_of is None:
                continue
            for name in port.route_configs:
                config = resources.get(_envoy.ROUTE, {}).get(name)
                for host in getattr(config, "virtual_hosts", ()):
                    for route in host.routes:
                        if route.HasField("route"):
                            del route.route.hash_policy[:]
                            route.route.hash_policy.extend(hash_policy(p) for p in policies_of)
