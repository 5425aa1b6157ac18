"""Health discovery (HDS) for Universal proxies: what each proxy's Envoy health checks, and what its reports
mean for the Dataplane (Kuma 2.14's pkg/hds/tracker). Pure: no store, no gRPC.

Each proxy gets one HealthCheckSpecifier: an HTTP check of its own Envoy's admin `/ready` (a draining Envoy
takes all its inbounds out of service) and a TCP check of the application behind every inbound with a
`serviceProbe`. Envoy reports the results every `dpServer.hds.interval`; the control plane writes them into
the inbounds' `health.ready` and `state`, and a not-ready inbound is left out of its callers' endpoints.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import health_check_pb2
from envoy.service.health.v3 import hds_pb2

from appliance.core.resources.dataplane import inbound_ready, workload
from appliance.gocompat import parse_duration

# Kuma's names for the clusters Envoy reports on: its own admin, and `localhost:<workload port>` per inbound
ENVOY_ADMIN_CLUSTER = "kuma:envoy:admin"
_LOCAL_PREFIX = "localhost:"


@dataclass(frozen=True)
class HdsSettings:
    """`dpServer.hds.*`, durations in nanoseconds."""
    enabled: bool = True
    interval: int = 5_000_000_000             # how often Envoy reports
    refresh_interval: int = 10_000_000_000    # how often a proxy's checks are regenerated without a change
    timeout: int = 2_000_000_000              # checkDefaults: for a probe that leaves them out
    check_interval: int = 1_000_000_000
    no_traffic_interval: int = 1_000_000_000
    healthy_threshold: int = 1
    unhealthy_threshold: int = 1


def local_cluster_name(port: int) -> str:
    return f"{_LOCAL_PREFIX}{port}"


@dataclass(frozen=True)
class EnvoyAdmin:
    """Where the proxy's Envoy admin listens: a unix socket (`pipe`) or 127.0.0.1:`port`."""
    pipe: str = ""
    port: int = 0


def _set_duration(target: Any, nanoseconds: int) -> None:
    target.seconds, target.nanos = divmod(nanoseconds, 1_000_000_000)


def _probe_duration(probe: dict[str, Any], field: str, default: int) -> int:
    value = probe.get(field)
    return parse_duration(str(value)) if value else default


def _check(settings: HdsSettings, timeout: int, interval: int, healthy: int, unhealthy: int
           ) -> health_check_pb2.HealthCheck:
    check = health_check_pb2.HealthCheck()
    _set_duration(check.timeout, timeout)
    _set_duration(check.interval, interval)
    # Envoy checks a cluster that never carried traffic (an HDS cluster never does) at this interval
    _set_duration(check.no_traffic_interval, settings.no_traffic_interval)
    check.healthy_threshold.value = healthy
    check.unhealthy_threshold.value = unhealthy
    return check


def specifier(dataplane: dict[str, Any], admin: EnvoyAdmin, settings: HdsSettings) -> hds_pb2.HealthCheckSpecifier:
    """The health checks of one proxy: its Envoy's admin `/ready`, and a TCP connect to the application of
    each inbound with a `serviceProbe` (what the probe leaves out comes from `dpServer.hds.checkDefaults`)."""
    out = hds_pb2.HealthCheckSpecifier()
    _set_duration(out.interval, settings.interval)
    envoy = out.cluster_health_checks.add(cluster_name=ENVOY_ADMIN_CLUSTER)
    endpoint = envoy.locality_endpoints.add().endpoints.add()
    if admin.pipe:
        endpoint.address.pipe.path = admin.pipe
    else:
        endpoint.address.socket_address.address = "127.0.0.1"
        endpoint.address.socket_address.port_value = admin.port
    check = envoy.health_checks.add()
    check.CopyFrom(_check(settings, settings.timeout, settings.check_interval, settings.healthy_threshold,
                          settings.unhealthy_threshold))
    check.http_health_check.path = "/ready"
    networking = dataplane.get("networking") or {}
    probed: set[int] = set()
    for inbound in networking.get("inbound") or []:
        probe = inbound.get("serviceProbe")
        if probe is None:
            continue
        address, port = workload(networking, inbound)
        if port in probed:   # one cluster per application port, as Kuma names them
            continue
        probed.add(port)
        cluster = out.cluster_health_checks.add(cluster_name=local_cluster_name(port))
        socket = cluster.locality_endpoints.add().endpoints.add().address.socket_address
        socket.address, socket.port_value = address, port
        check = cluster.health_checks.add()
        check.CopyFrom(_check(
            settings, _probe_duration(probe, "timeout", settings.timeout),
            _probe_duration(probe, "interval", settings.check_interval),
            int(probe.get("healthyThreshold") or settings.healthy_threshold),
            int(probe.get("unhealthyThreshold") or settings.unhealthy_threshold)))
        check.tcp_health_check.SetInParent()
    return out


@dataclass(frozen=True)
class Report:
    """What one EndpointHealthResponse says: the health of each probed application port, and of Envoy."""
    ports: dict[int, bool]
    envoy: bool


# as Kuma: a host not yet checked (UNKNOWN) counts as healthy
_HEALTHY = (health_check_pb2.UNKNOWN, health_check_pb2.HEALTHY)


def read_report(response: hds_pb2.EndpointHealthResponse) -> Report:
    ports: dict[int, bool] = {}
    envoy = True   # no report on Envoy itself: assume it serves
    for cluster in response.cluster_endpoints_health:
        if not cluster.locality_endpoints_health or not cluster.locality_endpoints_health[0].endpoints_health:
            continue
        healthy = cluster.locality_endpoints_health[0].endpoints_health[0].health_status in _HEALTHY
        if cluster.cluster_name == ENVOY_ADMIN_CLUSTER:
            envoy = healthy
        elif cluster.cluster_name.startswith(_LOCAL_PREFIX) and cluster.cluster_name[len(_LOCAL_PREFIX):].isdigit():
            ports[int(cluster.cluster_name[len(_LOCAL_PREFIX):])] = healthy
    return Report(ports, envoy)


def apply_report(dataplane: dict[str, Any], report: Report) -> dict[str, Any] | None:
    """The Dataplane content with each inbound's readiness as reported (an inbound without a probe is as ready
    as Envoy), or None when nothing changes. An Ignored inbound stays as it is."""
    networking = dataplane.get("networking") or {}
    out = copy.deepcopy(dataplane)
    changed = False
    for inbound in (out.get("networking") or {}).get("inbound") or []:
        if inbound.get("state") == "Ignored":
            continue
        _, port = workload(networking, inbound)
        ready = report.ports.get(port, True) and report.envoy
        # As Kuma: the readiness of an inbound without a probe is Envoy's, and its `health` may be someone
        # else's (an external health checker's) unless Envoy's changes
        current = inbound_ready(inbound) if inbound.get("serviceProbe") is not None else \
            inbound.get("state") != "NotReady"
        if ready == current:
            continue
        changed = True
        # Kuma writes both: `state`, and `health` for clients of Kuma 2.5 and older
        inbound["health"] = {"ready": ready}
        if ready:
            inbound.pop("state", None)   # Ready is the proto default: not shown, as in Kuma
        else:
            inbound["state"] = "NotReady"
    return out if changed else None
