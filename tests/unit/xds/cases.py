"""The generator cases every xds test runs: name -> (snapshot, proxy, identity)."""
from __future__ import annotations

from appliance.model.proxy import Identity, MeshSnapshot, Proxy, TransparentProxy
from tests.unit.xds.scenarios import (
    BACKEND_AS_TCP, CANARY, RING_HASH, DB_SPLIT, HTTP_ROUTE, IDENTITY, KUMA_INBOUND_PROXY_3, PERMISSIONS, RULE_PERMISSIONS, db_proxy, default_policies, grpc_proxy, policy,
    routed_snapshot, snapshot, subset, transparent_proxy, transparent_snapshot, web_proxy,
)

CUSTOM_POLICIES = (
    # More specific top-level targetRefs than the mesh defaults, so they win where they overlap.
    policy("MeshTimeout", "timeout-backend", {
        "targetRef": {"kind": "MeshService", "name": "web"},
        "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                "default": {"connectionTimeout": "2s", "http": {"requestTimeout": "3s", "maxStreamDuration": "10m"}}}],
        "from": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "20m", "http": {"requestTimeout": "7s"}}}],
    }),
    policy("MeshRetry", "retry-backend", {
        "targetRef": {"kind": "Dataplane", "name": "web-1"},
        "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                "default": {"http": {"numRetries": 2, "perTryTimeout": "1s", "retryOn": ["5xx", "503", "HttpMethodGet"],
                                     "retriableResponseHeaders": [{"name": "x-retry", "type": "Prefix", "value": "y"}],
                                     "hostSelection": [{"predicate": "OmitPreviousHosts"}]}}},
               {"targetRef": {"kind": "MeshService", "name": "db"}, "default": {"tcp": {"maxConnectAttempt": 2}}}],
    }),
    policy("MeshCircuitBreaker", "cb-db", {
        "targetRef": {"kind": "MeshSubset", "tags": {"team": "frontend"}},
        "to": [{"targetRef": {"kind": "MeshService", "name": "db"},
                "default": {"connectionLimits": {"maxConnections": 10},
                            "outlierDetection": {"interval": "5s", "baseEjectionTime": "30s",
                                                 "healthyPanicThreshold": "25.5",
                                                 "detectors": {"totalFailures": {"consecutive": 3},
                                                               "successRate": {"standardDeviationFactor": "1.9"}}}}}],
        "from": [{"targetRef": {"kind": "Mesh"}, "default": {"connectionLimits": {"maxPendingRequests": 7}}}],
    }),
)

# Rule merging across policies: `backend-canary` (Mesh) and a more precise Dataplane policy of web-1. The
# precise one's rules come first; the rule both have (PathPrefix /) merges, the precise one's backendRefs win
# and its filters add to none; /api (Exact beats PathPrefix) sorts before everything.
WEB_ROUTES = policy(HTTP_ROUTE, "web-routes", {
    "targetRef": {"kind": "Dataplane", "name": "web-1"},
    "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
         "default": {"backendRefs": [subset("backend", "v1", 50), subset("backend", "v2", 50)],
                     "filters": [{"type": "RequestHeaderModifier",
                                  "requestHeaderModifier": {"set": [{"name": "x-routed", "value": "yes"}]}}]}},
        {"matches": [{"path": {"type": "Exact", "value": "/api"}, "method": "GET"}],
         "default": {"backendRefs": [{"kind": "MeshService", "name": "backend", "weight": 1}]}},
    ]}],
})

# Active health checks of every kind: HTTP to backend, TCP to db (Kuma's plugin test confs), gRPC to grpc-api.
HEALTH_CHECKS = policy("MeshHealthCheck", "health", {
    "targetRef": {"kind": "Mesh"},
    "to": [{"targetRef": {"kind": "Mesh"},
            "default": {"interval": "10s", "timeout": "2s", "unhealthyThreshold": 3, "healthyThreshold": 1,
                        "initialJitter": "13s", "intervalJitter": "15s", "intervalJitterPercent": 10,
                        "failTrafficOnPanic": True, "eventLogPath": "/dev/null", "alwaysLogHealthCheckFailures": True,
                        "noTrafficInterval": "16s", "reuseConnection": False,
                        "http": {"path": "/health", "expectedStatuses": [200, 204],
                                 "requestHeadersToAdd": {"set": [{"name": "x-check", "value": "yes"}]}},
                        "tcp": {"send": "ping", "receive": ["pong"]},
                        "grpc": {"serviceName": "grpc-api", "authority": "grpc-api.mesh"}}}],
})

# Access logs of every backend and format: outbound `to` (file with the default format, tcp with JSON, an
# OpenTelemetry collector), inbound rules (a plain file log for everyone, a JSON one for one client identity).
ACCESS_LOGS = (
    policy("MeshAccessLog", "logs-out", {
        "targetRef": {"kind": "Mesh"},
        "to": [{"targetRef": {"kind": "Mesh"}, "default": {"backends": [
            {"type": "File", "file": {"path": "/var/log/kuma/out.log"}},
            {"type": "Tcp", "tcp": {"address": "127.0.0.1:5170", "format": {"type": "Json", "json": [
                {"key": "src", "value": "%KUMA_SOURCE_SERVICE%"}, {"key": "dst", "value": "%KUMA_DESTINATION_SERVICE%"},
                {"key": "status", "value": "%RESPONSE_CODE%"}]}}},
            {"type": "OpenTelemetry", "openTelemetry": {
                "endpoint": "otel-collector:4317", "attributes": [{"key": "mesh", "value": "%KUMA_MESH%"}],
                "body": {"kvlistValue": {"values": [
                    {"key": "route", "value": {"stringValue": "%KUMA_SOURCE_SERVICE%->%KUMA_DESTINATION_SERVICE%"}}]}}}},
        ]}}],
    }),
    policy("MeshAccessLog", "logs-in", {
        "targetRef": {"kind": "Mesh"},
        "rules": [
            {"default": {"backends": [{"type": "File", "file": {"path": "/var/log/kuma/in.log", "format": {
                "type": "Plain", "plain": "%KUMA_SOURCE_ADDRESS% %KUMA_TRAFFIC_DIRECTION% %KUMA_DESTINATION_SERVICE%"}}}]}},
            {"matches": [{"spiffeID": {"type": "Exact", "value": "spiffe://default/web"}}],
             "default": {"backends": [{"type": "Tcp", "tcp": {"address": "127.0.0.1:5171"}}]}},
        ],
    }),
)
TRACE_ZIPKIN = policy("MeshTrace", "trace", {"default": {
    "backends": [{"type": "Zipkin", "zipkin": {"url": "http://127.0.0.1:9411/api/v2/spans", "traceId128bit": True,
                                               "apiVersion": "httpJson", "sharedSpanContext": True}}],
    "sampling": {"overall": 80, "client": "25.5", "random": 50},
    "tags": [{"name": "team", "literal": "frontend"},
             {"name": "client", "header": {"name": "x-client", "default": "none"}}]}})
TRACE_DATADOG = policy("MeshTrace", "trace", {"targetRef": {"kind": "MeshService", "name": "web"}, "default": {
    "backends": [{"type": "Datadog", "datadog": {"url": "http://datadog-agent:8126", "splitService": True}}]}})
TRACE_OTEL = policy("MeshTrace", "trace", {"default": {
    "backends": [{"type": "OpenTelemetry", "openTelemetry": {"endpoint": "127.0.0.1:4317"}}]}})

# Kuma's "basic listener" case of its MeshPassthrough plugin test, and a MySQL server (no listener inspection)
PASSTHROUGH = policy("MeshPassthrough", "passthrough", {"targetRef": {"kind": "Mesh"}, "default": {"appendMatch": [
    {"type": "Domain", "value": "api.example.com", "port": 443, "protocol": "tls"},
    {"type": "Domain", "value": "example.com", "port": 443, "protocol": "tls"},
    {"type": "Domain", "value": "*.example.com", "port": 443, "protocol": "tls"},
    {"type": "Domain", "value": "example.com", "port": 8080, "protocol": "http"},
    {"type": "Domain", "value": "other.com", "port": 8080, "protocol": "http"},
    {"type": "CIDR", "value": "192.168.0.0/16", "protocol": "http", "port": 8126},
    {"type": "CIDR", "value": "240.0.0.0/4", "protocol": "http", "port": 8126},
    {"type": "Domain", "value": "www.google.com", "protocol": "http", "port": 80},
    {"type": "IP", "value": "10.42.0.8", "protocol": "http"},
    {"type": "IP", "value": "b6e5:a45e:70ae:e77f:d24e:5023:375d:20a6", "protocol": "tls"},
    {"type": "IP", "value": "9942:9abf:d0e0:f2da:2290:333b:e590:f497", "port": 9091, "protocol": "tcp"},
    {"type": "IP", "value": "172.12.2.2", "port": 3306, "protocol": "mysql"}]}})

CASES: dict[str, tuple[MeshSnapshot, Proxy, Identity | None]] = {
    "plain-http-and-tcp": (snapshot(), web_proxy(), None),
    "strict-http-and-tcp": (snapshot("STRICT"), web_proxy(), IDENTITY),
    "permissive-http": (snapshot("PERMISSIVE"), web_proxy(), IDENTITY),
    "permissive-tcp": (snapshot("PERMISSIVE"), db_proxy(), IDENTITY),
    "strict-permissions": (snapshot("STRICT", policies=default_policies(extra=PERMISSIONS)), db_proxy(), IDENTITY),
    "strict-rules-http": (snapshot("STRICT", policies=default_policies(extra=RULE_PERMISSIONS)), web_proxy(), IDENTITY),
    "strict-rules-tcp": (snapshot("STRICT", policies=default_policies(extra=RULE_PERMISSIONS)), db_proxy(), IDENTITY),
    "strict-grpc-and-http2": (snapshot("STRICT"), grpc_proxy(), IDENTITY),
    "no-policies": (snapshot(policies={}), web_proxy(), None),
    "custom-policies": (snapshot("STRICT", policies=default_policies(extra=CUSTOM_POLICIES)), web_proxy(), IDENTITY),
    "kuma-inbound-proxy-3": (snapshot("STRICT"), KUMA_INBOUND_PROXY_3, IDENTITY),
    "http-route-canary": (routed_snapshot("STRICT", CANARY), web_proxy(), IDENTITY),
    "http-route-merged": (routed_snapshot("STRICT", CANARY, WEB_ROUTES), web_proxy(), IDENTITY),
    "load-balancing": (routed_snapshot("STRICT", CANARY, RING_HASH), web_proxy(), IDENTITY),
    "tcp-route-split": (routed_snapshot("STRICT", DB_SPLIT, BACKEND_AS_TCP), web_proxy(), IDENTITY),
    "health-checks": (snapshot("STRICT", policies=default_policies(extra=(HEALTH_CHECKS,))), web_proxy(), IDENTITY),
    "health-checks-grpc": (snapshot("STRICT", policies=default_policies(extra=(HEALTH_CHECKS,))), grpc_proxy(),
                           IDENTITY),
    "access-logs": (snapshot("STRICT", policies=default_policies(extra=ACCESS_LOGS)), web_proxy(), IDENTITY),
    "access-logs-tcp": (snapshot("STRICT", policies=default_policies(extra=ACCESS_LOGS)), db_proxy(), IDENTITY),
    "trace-zipkin": (snapshot("STRICT", policies=default_policies(extra=(TRACE_ZIPKIN,))), web_proxy(), IDENTITY),
    "trace-datadog": (snapshot(policies=default_policies(extra=(TRACE_DATADOG,))), web_proxy(), None),
    "trace-otel": (snapshot(policies=default_policies(extra=(TRACE_OTEL,))), grpc_proxy(), None),
    "transparent-proxy": (transparent_snapshot(), transparent_proxy(), IDENTITY),
    "meshpassthrough": (transparent_snapshot(policies=default_policies(extra=(PASSTHROUGH,))),
                        transparent_proxy(TransparentProxy(15006, 15001, True)), IDENTITY),
}
