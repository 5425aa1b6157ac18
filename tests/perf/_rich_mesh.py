"""The policy-rich mesh of `fleet.py --policy-rich`: 50 services in two versions and about 50 policies.

Services `svc-0` .. `svc-49`; every tenth (`svc-9`, `svc-19`, ...) speaks TCP, the others HTTP. Proxy i
serves `svc-<i % 50>` with `version: v1` or `v2` (alternating by i // 50, so every subset has endpoints)
and a `team` tag, and calls `svc-0` and its next four neighbours (5 outbounds). The policies use every
type the API serves, with the shapes of tests/unit/xds and tests/e2e/test_routing.py; `canary-svc-0`,
a MeshHTTPRoute every proxy not of svc-0 uses, is the one the `route` scenario changes.
"""
from __future__ import annotations

from typing import Any

SERVICES = 50
OUTBOUNDS = 5
CANARY = "canary-svc-0"
# the weights (v1, v2) that the route scenario puts on canary-svc-0's catch-all rule, one change each
CANARY_ROUNDS = ((70, 30), (50, 50), (30, 70), (10, 90), (90, 10))


def protocol(service: int) -> str:
    return "tcp" if service % 10 == 9 else "http"


def http_services() -> list[int]:
    return [k for k in range(SERVICES) if protocol(k) == "http"]


def tcp_services() -> list[int]:
    return [k for k in range(SERVICES) if protocol(k) == "tcp"]


def outbound_services(own: int) -> list[int]:
    """svc-0 (which every other service calls) and the next neighbours; svc-0 calls svc-1 .. svc-5."""
    out = [] if own == 0 else [0]
    k = own
    while len(out) < OUTBOUNDS:
        k = (k + 1) % SERVICES
        if k not in (0, own):
            out.append(k)
    return out


def dataplane(mesh: str, name: str, address: str, i: int) -> dict:
    own = i % SERVICES
    tags = {"kuma.io/service": f"svc-{own}", "kuma.io/protocol": protocol(own),
            "version": "v1" if (i // SERVICES) % 2 == 0 else "v2", "team": f"team-{own % 5}"}
    return {"type": "Dataplane", "mesh": mesh, "name": name, "networking": {
        "address": address,
        "inbound": [{"port": 8080, "servicePort": 18080, "tags": tags}],
        "outbound": [{"port": 10001 + j, "tags": {"kuma.io/service": f"svc-{s}"}}
                     for j, s in enumerate(outbound_services(own))]}}


# --- the policies --------------------------------------------------------------------------------

def _svc(k: int) -> dict:
    return {"kind": "MeshService", "name": f"svc-{k}"}


def _subset(k: int, version: str, weight: int) -> dict:
    return {"kind": "MeshServiceSubset", "name": f"svc-{k}", "tags": {"version": version}, "weight": weight}


MESH_WIDE = {"kind": "Mesh"}
V2_PROXIES = {"kind": "MeshSubset", "tags": {"version": "v2"}}


def canary_spec(k: int, v1: int = 90, v2: int = 10, filters: bool = False) -> dict:
    """A header match pinning v2, a weighted catch-all, and (with `filters`) a rewritten, mirrored path and
    a redirect, as tests/e2e/test_routing.py."""
    rules: list[dict[str, Any]] = [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                      "headers": [{"type": "Exact", "name": "x-version", "value": "v2"}]}],
         "default": {"backendRefs": [_subset(k, "v2", 1)]}},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
         "default": {"backendRefs": [_subset(k, "v1", v1), _subset(k, "v2", v2)]}}]
    if filters:
        rules += [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
             "default": {"backendRefs": [_subset(k, "v1", 1)], "filters": [
                 {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch",
                                                                "replacePrefixMatch": "/new/"}}},
                 {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                     "set": [{"name": "x-set", "value": "by-route"}], "remove": ["x-secret"]}},
                 {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                     "add": [{"name": "x-answered-by", "value": "route"}]}},
                 {"type": "RequestMirror", "requestMirror": {
                     "backendRef": _svc((k + 1) % SERVICES), "percentage": 10}}]}},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "method": "POST"}],
             "default": {"backendRefs": [_subset(k, "v2", 1)]}},
            {"matches": [{"path": {"type": "Exact", "value": "/moved"}},
                         {"queryParams": [{"type": "Exact", "name": "legacy", "value": "1"}]}],
             "default": {"filters": [{"type": "RequestRedirect", "requestRedirect": {
                 "scheme": "https", "hostname": "example.com", "statusCode": 301,
                 "path": {"type": "ReplaceFullPath", "replaceFullPath": "/elsewhere"}}}]}}]
    return {"targetRef": MESH_WIDE, "to": [{"targetRef": _svc(k), "rules": rules}]}


OBSERVABILITY = ("some", "none", "all")


def policies(observability: str = "some") -> list[tuple[str, str, str, dict]]:
    """(API path, type, name, spec) of every policy, in the order they are created (routes before the
    policies that name them). `observability`: "some" (inbound access logs on five services), "none" (no
    MeshAccessLog), "all" (those, plus an access log on every proxy's inbounds and outbounds, a MeshMetric and
    a MeshTrace for the whole mesh: the overhead figure of the observability issue compares it with "none")."""
    http, tcp = http_services(), tcp_services()
    out: list[tuple[str, str, str, dict]] = []

    def add(path: str, kind: str, name: str, spec: dict) -> None:
        out.append((path, kind, name, spec))

    # routes: 10 HTTP canaries (every other with filters), a TCP split for each TCP service
    for k in http[:10]:
        add("meshhttproutes", "MeshHTTPRoute", f"canary-svc-{k}", canary_spec(k, filters=k % 2 == 0))
    for k in tcp:
        add("meshtcproutes", "MeshTCPRoute", f"split-svc-{k}", {"targetRef": MESH_WIDE, "to": [
            {"targetRef": _svc(k), "rules": [{"default": {"backendRefs": [_subset(k, "v1", 80),
                                                                           _subset(k, "v2", 20)]}}]}]})
    # permissions: the mesh allows all; five services deny one caller and shadow-deny v2 callers
    add("meshtrafficpermissions", "MeshTrafficPermission", "allow-all",
        {"targetRef": MESH_WIDE, "from": [{"targetRef": MESH_WIDE, "default": {"action": "Allow"}}]})
    for k in http[1:6]:
        add("meshtrafficpermissions", "MeshTrafficPermission", f"guard-svc-{k}", {"targetRef": _svc(k), "from": [
            {"targetRef": MESH_WIDE, "default": {"action": "Allow"}},
            {"targetRef": V2_PROXIES, "default": {"action": "AllowWithShadowDeny"}},
            {"targetRef": _svc((k + 20) % SERVICES), "default": {"action": "Deny"}}]})
    # timeouts: per destination, for v2 proxies, and on the canary's routes
    for k in http[1:5]:
        add("meshtimeouts", "MeshTimeout", f"timeout-svc-{k}", {"targetRef": MESH_WIDE, "to": [
            {"targetRef": _svc(k), "default": {"connectionTimeout": "2s",
                                               "http": {"requestTimeout": f"{k + 2}s", "maxStreamDuration": "10m"}}}],
            "from": [{"targetRef": MESH_WIDE, "default": {"idleTimeout": "20m"}}]})
    add("meshtimeouts", "MeshTimeout", "timeout-v2", {"targetRef": V2_PROXIES, "to": [
        {"targetRef": MESH_WIDE, "default": {"idleTimeout": "30m", "http": {"requestTimeout": "20s"}}}]})
    add("meshtimeouts", "MeshTimeout", "timeout-canary", {"targetRef": MESH_WIDE, "to": [
        {"targetRef": {"kind": "MeshHTTPRoute", "name": CANARY}, "default": {"http": {"requestTimeout": "3s"}}}]})
    # retries: HTTP and TCP destinations, one service's own, the canary's routes
    for k in http[1:4]:
        add("meshretries", "MeshRetry", f"retry-svc-{k}", {"targetRef": MESH_WIDE, "to": [
            {"targetRef": _svc(k), "default": {"http": {
                "numRetries": 2, "perTryTimeout": "1s", "retryOn": ["5xx", "503", "HttpMethodGet"],
                "retriableResponseHeaders": [{"name": "x-retry", "type": "Prefix", "value": "y"}],
                "hostSelection": [{"predicate": "OmitPreviousHosts"}]}}}]})
    add("meshretries", "MeshRetry", "retry-tcp", {"targetRef": _svc(1), "to": [
        {"targetRef": _svc(k), "default": {"tcp": {"maxConnectAttempt": 2}}} for k in tcp]})
    add("meshretries", "MeshRetry", "retry-canary", {"targetRef": MESH_WIDE, "to": [
        {"targetRef": {"kind": "MeshHTTPRoute", "name": CANARY}, "default": {"http": {"numRetries": 7}}}]})
    # circuit breakers on five destinations
    for k in http[5:10]:
        add("meshcircuitbreakers", "MeshCircuitBreaker", f"cb-svc-{k}", {"targetRef": MESH_WIDE, "to": [
            {"targetRef": _svc(k), "default": {
                "connectionLimits": {"maxConnections": 2, "maxPendingRequests": 8, "maxRetries": 2,
                                     "maxRequests": 2},
                "outlierDetection": {"disabled": False, "interval": "5s", "baseEjectionTime": "30s",
                                     "maxEjectionPercent": 20, "splitExternalAndLocalErrors": True,
                                     "detectors": {"totalFailures": {"consecutive": 10},
                                                   "gatewayFailures": {"consecutive": 10},
                                                   "localOriginFailures": {"consecutive": 10},
                                                   "failurePercentage": {"requestVolume": 10, "minimumHosts": 5,
                                                                         "threshold": 85}}}}}]})
    # load balancing: one of each kind, and a hash on the canary's routes
    balancers = [
        {"loadBalancer": {"type": "RingHash", "ringHash": {"minRingSize": 64, "maxRingSize": 1024,
                                                           "hashFunction": "MurmurHash2"}},
         "hashPolicies": [{"type": "Header", "header": {"name": "x-user"}, "terminal": True},
                          {"type": "Cookie", "cookie": {"name": "session", "ttl": "1h", "path": "/"}},
                          {"type": "Connection", "connection": {"sourceIP": True}}]},
        {"loadBalancer": {"type": "LeastRequest", "leastRequest": {"choiceCount": 3, "activeRequestBias": "1.5"}}},
        {"loadBalancer": {"type": "Maglev", "maglev": {"tableSize": 1021}}},
        {"loadBalancer": {"type": "Random"}},
        {"loadBalancer": {"type": "RoundRobin"}},
    ]
    for k, default in zip(http[10:15], balancers):
        add("meshloadbalancingstrategies", "MeshLoadBalancingStrategy", f"lb-svc-{k}",
            {"targetRef": MESH_WIDE, "to": [{"targetRef": _svc(k), "default": default}]})
    add("meshloadbalancingstrategies", "MeshLoadBalancingStrategy", "lb-canary", {"targetRef": MESH_WIDE, "to": [
        {"targetRef": {"kind": "MeshHTTPRoute", "name": CANARY},
         "default": {"hashPolicies": [{"type": "QueryParameter", "queryParameter": {"name": "user"}}]}}]})
    # stored, not applied yet (the PUT answers with a warning): two of each
    for k in http[15:17]:
        add("meshhealthchecks", "MeshHealthCheck", f"hc-svc-{k}", {"targetRef": MESH_WIDE, "to": [
            {"targetRef": _svc(k), "default": {"interval": "10s", "timeout": "2s", "unhealthyThreshold": 3,
                                               "healthyThreshold": 1, "http": {"path": "/health",
                                                                               "expectedStatuses": [200]}}}]})
        add("meshfaultinjections", "MeshFaultInjection", f"fault-svc-{k}", {"targetRef": _svc(k), "from": [
            {"targetRef": MESH_WIDE, "default": {"http": [{"abort": {"httpStatus": 503, "percentage": 1},
                                                           "delay": {"value": "1s", "percentage": 5}}]}}]})
        add("meshratelimits", "MeshRateLimit", f"ratelimit-svc-{k}", {"targetRef": _svc(k), "from": [
            {"targetRef": MESH_WIDE, "default": {"local": {
                "http": {"requestRate": {"num": 100, "interval": "10s"}},
                "tcp": {"connectionRate": {"num": 100, "interval": "100ms"}}}}}]})
        if observability != "none":
            add("meshaccesslogs", "MeshAccessLog", f"log-svc-{k}", {"targetRef": _svc(k), "from": [
                {"targetRef": MESH_WIDE, "default": {"backends": [
                    {"type": "File", "file": {"path": f"/tmp/kuma-fleet-svc-{k}.log"}}]}}]})
    if observability == "all":
        logged = {"backends": [{"type": "File", "file": {"path": "/tmp/kuma-fleet-all.log", "format": {
            "type": "Json", "json": [{"key": "from", "value": "%KUMA_SOURCE_SERVICE%"},
                                     {"key": "to", "value": "%KUMA_DESTINATION_SERVICE%"}]}}}]}
        add("meshaccesslogs", "MeshAccessLog", "log-all", {"targetRef": MESH_WIDE,
                                                           "from": [{"targetRef": MESH_WIDE, "default": logged}],
                                                           "to": [{"targetRef": MESH_WIDE, "default": logged}]})
        add("meshmetrics", "MeshMetric", "metrics-all", {"targetRef": MESH_WIDE, "default": {
            "sidecar": {"profiles": {"appendProfiles": [{"name": "Basic"}]}},
            "applications": [{"path": "/metrics", "port": 9100}],
            "backends": [{"type": "Prometheus", "prometheus": {"port": 5670, "path": "/metrics"}}]}})
        add("meshtraces", "MeshTrace", "trace-all", {"targetRef": MESH_WIDE, "default": {
            "backends": [{"type": "Zipkin", "zipkin": {"url": "http://127.0.0.1:9411/api/v2/spans"}}],
            "sampling": {"overall": 10}, "tags": [{"name": "team", "header": {"name": "x-team", "default": "none"}}]}})
    return out


def canary_body(mesh: str, v1: int, v2: int) -> dict:
    """canary-svc-0 as created (svc-0 is even: with filters), the catch-all's weights changed."""
    return {"type": "MeshHTTPRoute", "mesh": mesh, "name": CANARY, "spec": canary_spec(0, v1, v2, filters=True)}
