"""The generator cases every xds test runs: name -> (snapshot, proxy, identity)."""
from __future__ import annotations

from appliance.model.proxy import Identity, MeshSnapshot, Proxy
from tests.unit.xds.scenarios import (
    IDENTITY, KUMA_INBOUND_PROXY_3, PERMISSIONS, db_proxy, default_policies, grpc_proxy, policy, snapshot, web_proxy,
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

CASES: dict[str, tuple[MeshSnapshot, Proxy, Identity | None]] = {
    "plain-http-and-tcp": (snapshot(), web_proxy(), None),
    "strict-http-and-tcp": (snapshot("STRICT"), web_proxy(), IDENTITY),
    "permissive-http": (snapshot("PERMISSIVE"), web_proxy(), IDENTITY),
    "permissive-tcp": (snapshot("PERMISSIVE"), db_proxy(), IDENTITY),
    "strict-permissions": (snapshot("STRICT", policies=default_policies(extra=PERMISSIONS)), db_proxy(), IDENTITY),
    "strict-grpc-and-http2": (snapshot("STRICT"), grpc_proxy(), IDENTITY),
    "no-policies": (snapshot(policies={}), web_proxy(), None),
    "custom-policies": (snapshot("STRICT", policies=default_policies(extra=CUSTOM_POLICIES)), web_proxy(), IDENTITY),
    "kuma-inbound-proxy-3": (snapshot("STRICT"), KUMA_INBOUND_PROXY_3, IDENTITY),
}
