"""MeshCircuitBreaker on a sidecar: connection limits and outlier detection on clusters.

Field mapping as Kuma 2.14 (plugin/xds/configurer.go): every cluster tracks remaining capacity in its
default-priority threshold; connectionLimits.* -> that threshold's max_*; outlierDetection -> the
cluster's outlier_detection, each detector enforced at 100% when configured and 0% otherwise.
Inbound (local) clusters use the `from`/`rules` entries that apply to every client, outbound clusters
the `to` entries of their service. On a builtin gateway (`apply_to_gateway`), each cluster a port's routes
send to takes the `to` entries for its service of the policies that select that port's listeners.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2

from appliance.policies import _envoy, _gateway, _rules
from appliance.policies._common import parse_decimal
from appliance.model.proxy import MeshGateway, MeshSnapshot, Proxy

KIND = "MeshCircuitBreaker"
_LIMITS = {"maxConnections": "max_connections", "maxConnectionPools": "max_connection_pools",
           "maxPendingRequests": "max_pending_requests", "maxRetries": "max_retries", "maxRequests": "max_requests"}

Conf = dict[str, Any]


@dataclass(frozen=True)
class Matched:
    inbound_clusters: dict[str, Conf]      # local cluster name -> conf for all clients
    services: dict[str, tuple[str, ...]]   # destination service -> its clusters (and its parts')
    to_rules: tuple[_rules.Rule, ...]
    to_key: tuple[str, ...]                # equal keys: equal outbound cluster limits


def match(snapshot: MeshSnapshot, proxy: Proxy) -> Matched:
    selection = _rules.select(snapshot.policies.get(KIND, ()), proxy)
    inbound_clusters = {}
    for inbound in proxy.inbounds:
        rules = _rules.inbound_rules(selection.by_inbound.get(_rules.inbound_key(inbound), ()), from_as_rules=True)
        inbound_clusters[_envoy.local_cluster(inbound.service_port)] = _rules.catch_all_conf(rules)
    services = {s: snapshot.clusters_of(s) for s in sorted({o.service for o in proxy.outbounds})}
    return Matched(inbound_clusters, services, tuple(_rules.to_rules(selection)), selection.key)


def _default_threshold(cluster: cluster_pb2.Cluster) -> circuit_breaker_pb2.CircuitBreakers.Thresholds:
    for threshold in cluster.circuit_breakers.thresholds:
        if threshold.priority == 0:  # RoutingPriority.DEFAULT
            return threshold
    return cluster.circuit_breakers.thresholds.add()


def ensure_track_remaining(cluster: cluster_pb2.Cluster) -> None:
    _default_threshold(cluster).track_remaining = True


def _u32(target: Any, field: str, value: Any) -> None:
    if value is not None:
        getattr(target, field).value = int(value)


def _outlier_detection(cluster: cluster_pb2.Cluster, conf: Conf) -> None:
    if conf.get("disabled"):
        return
    outlier = outlier_detection_pb2.OutlierDetection()
    if conf.get("interval") is not None:
        outlier.interval.CopyFrom(_envoy.duration(conf["interval"], 0))
    if conf.get("baseEjectionTime") is not None:
        outlier.base_ejection_time.CopyFrom(_envoy.duration(conf["baseEjectionTime"], 0))
    if conf.get("splitExternalAndLocalErrors") is not None:
        outlier.split_external_local_origin_errors = bool(conf["splitExternalAndLocalErrors"])
    _u32(outlier, "max_ejection_percent", conf.get("maxEjectionPercent"))
    detectors = conf.get("detectors") or {}
    for detector, count_field, enforcing_field in (
            ("totalFailures", "consecutive_5xx", "enforcing_consecutive_5xx"),
            ("localOriginFailures", "consecutive_local_origin_failure", "enforcing_consecutive_local_origin_failure"),
            ("gatewayFailures", "consecutive_gateway_failure", "enforcing_consecutive_gateway_failure")):
        consecutive = (detectors.get(detector) or {}).get("consecutive")
        getattr(outlier, enforcing_field).value = 0 if consecutive is None else 100
        _u32(outlier, count_field, consecutive)
    if conf.get("detectors") is not None:
        success = detectors.get("successRate")
        outlier.enforcing_success_rate.value = 0 if success is None else 100
        outlier.enforcing_local_origin_success_rate.value = 0 if success is None else 100
        if success is not None:
            _u32(outlier, "success_rate_minimum_hosts", success.get("minimumHosts"))
            _u32(outlier, "success_rate_request_volume", success.get("requestVolume"))
            factor = parse_decimal(success.get("standardDeviationFactor"))
            if factor is not None:
                outlier.success_rate_stdev_factor.value = int(factor * 1000)
        failure = detectors.get("failurePercentage")
        outlier.enforcing_failure_percentage.value = 0 if failure is None else 100
        outlier.enforcing_failure_percentage_local_origin.value = 0 if failure is None else 100
        if failure is not None:
            _u32(outlier, "failure_percentage_minimum_hosts", failure.get("minimumHosts"))
            _u32(outlier, "failure_percentage_request_volume", failure.get("requestVolume"))
            _u32(outlier, "failure_percentage_threshold", failure.get("threshold"))
    cluster.outlier_detection.CopyFrom(outlier)
    panic = parse_decimal(conf.get("healthyPanicThreshold"))
    if panic is not None:
        cluster.common_lb_config.healthy_panic_threshold.value = float(panic)


def configure_cluster(cluster: cluster_pb2.Cluster, conf: Conf) -> None:
    threshold = _default_threshold(cluster)
    threshold.track_remaining = True
    for name, field in _LIMITS.items():
        _u32(threshold, field, (conf.get("connectionLimits") or {}).get(name))
    if conf.get("outlierDetection") is not None:
        _outlier_detection(cluster, conf["outlierDetection"])


def apply(matched: Matched, resources: _envoy.Resources) -> None:
    for found in resources.get(_envoy.CLUSTER, {}).values():
        if isinstance(found, cluster_pb2.Cluster):
            ensure_track_remaining(found)
    for name, conf in matched.inbound_clusters.items():
        cluster = _envoy.cluster(resources, name)
        if cluster is not None:
            configure_cluster(cluster, conf)
    for service, cluster_names in matched.services.items():
        rule = _rules.compute(matched.to_rules, {_rules.SERVICE_TAG: service})
        for name in cluster_names:
            cluster = _envoy.cluster(resources, name)
            if cluster is not None and rule is not None:
                configure_cluster(cluster, rule.conf)


def apply_to_gateway(snapshot: MeshSnapshot, proxy: Proxy, gateway: MeshGateway,
                     ports: tuple[_gateway.GatewayPort, ...], resources: _envoy.Resources) -> None:
    for found in resources.get(_envoy.CLUSTER, {}).values():
        if isinstance(found, cluster_pb2.Cluster):
            ensure_track_remaining(found)
    for port in ports:
        rules = _rules.policies_to_rules(
            _gateway.port_policies(snapshot.policies.get(KIND, ()), proxy, gateway, port.port))
        for service, name in port.backends:
            rule = _rules.compute(rules, {_rules.SERVICE_TAG: service})
            cluster = _envoy.cluster(resources, name)
            if cluster is not None and rule is not None:
                configure_cluster(cluster, rule.conf)
