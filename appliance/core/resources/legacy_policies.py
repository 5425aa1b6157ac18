"""Kuma's legacy (source/destination) policies, which this control plane does not serve.

Kuma 2.14 still accepts them, deprecated; here each one is refused with the targetRef policy that
replaces it, and its lists read empty so that old scripts and dashboards keep working. Paths and
kumactl names are Kuma 2.14's (its resource type descriptors).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LegacyPolicy:
    name: str                       # "TrafficPermission"
    path: str                       # REST path segment: /meshes/{mesh}/traffic-permissions
    kumactl: str                    # kumactl get traffic-permission NAME
    kumactl_list: str               # kumactl get traffic-permissions
    replaced_by: tuple[str, ...]    # the targetRef policies that do its job

    def refusal(self) -> str:
        """One sentence for the 400 of a PUT (kumactl prints it on its `Error:` line)."""
        return (f"{self.name} is a legacy policy, which this control plane does not support: "
                f"use {_either(self.replaced_by)} instead, the targetRef policy that replaces it")


def _either(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


LEGACY_POLICIES: tuple[LegacyPolicy, ...] = (
    LegacyPolicy("CircuitBreaker", "circuit-breakers", "circuit-breaker", "circuit-breakers", ("MeshCircuitBreaker",)),
    LegacyPolicy("FaultInjection", "fault-injections", "fault-injection", "fault-injections", ("MeshFaultInjection",)),
    LegacyPolicy("HealthCheck", "health-checks", "healthcheck", "healthchecks", ("MeshHealthCheck",)),
    LegacyPolicy("MeshGatewayRoute", "meshgatewayroutes", "meshgatewayroute", "meshgatewayroutes",
                 ("MeshHTTPRoute", "MeshTCPRoute")),
    LegacyPolicy("ProxyTemplate", "proxytemplates", "proxytemplate", "proxytemplates", ("MeshProxyPatch",)),
    LegacyPolicy("RateLimit", "rate-limits", "rate-limit", "rate-limits", ("MeshRateLimit",)),
    LegacyPolicy("Retry", "retries", "retry", "retries", ("MeshRetry",)),
    LegacyPolicy("Timeout", "timeouts", "timeout", "timeouts", ("MeshTimeout",)),
    LegacyPolicy("TrafficLog", "traffic-logs", "traffic-log", "traffic-logs", ("MeshAccessLog",)),
    LegacyPolicy("TrafficPermission", "traffic-permissions", "traffic-permission", "traffic-permissions",
                 ("MeshTrafficPermission",)),
    LegacyPolicy("TrafficRoute", "traffic-routes", "traffic-route", "traffic-routes",
                 ("MeshHTTPRoute", "MeshTCPRoute", "MeshLoadBalancingStrategy")),
    LegacyPolicy("TrafficTrace", "traffic-traces", "traffic-trace", "traffic-traces", ("MeshTrace",)),
    LegacyPolicy("VirtualOutbound", "virtual-outbounds", "virtual-outbound", "virtual-outbounds",
                 ("MeshService with a HostnameGenerator",)),
)
BY_NAME: dict[str, LegacyPolicy] = {p.name: p for p in LEGACY_POLICIES}
