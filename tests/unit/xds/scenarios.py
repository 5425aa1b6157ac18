"""Snapshots and proxies the generator tests share: small meshes a user would build with Kuma's quick start."""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from appliance.policies._backends import subset_clusters
from appliance.policies.meshcircuitbreaker import schema as meshcircuitbreaker
from appliance.policies.meshretry import schema as meshretry
from appliance.policies.meshtimeout import schema as meshtimeout
from appliance.model import names, vips
from appliance.model.proxy import (
    Endpoint, Identity, Inbound, MeshSnapshot, Mtls, Outbound, Policy, Proxy, TransparentProxy,
)

MESH = "default"
IDENTITY = Identity(cert_pem=b"-----BEGIN CERTIFICATE-----\nweb\n-----END CERTIFICATE-----\n",
                    key_pem=b"-----BEGIN PRIVATE KEY-----\nweb\n-----END PRIVATE KEY-----\n", expires=0.0)
CA_PEM = b"-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n"


def policy(kind: str, name: str, spec: dict[str, Any]) -> Policy:
    return Policy(kind, name, spec)


def default_policies(mesh: str = MESH, extra: tuple[Policy, ...] = ()) -> dict[str, tuple[Policy, ...]]:
    """What Kuma creates with a new Mesh (plus `extra`), grouped by kind and sorted by name as the snapshot is."""
    policies = [Policy(m.KIND, name, spec) for m in (meshtimeout, meshretry, meshcircuitbreaker)
                for name, spec in m.mesh_defaults(mesh)] + list(extra)
    grouped: dict[str, list[Policy]] = {}
    for p in sorted(policies, key=lambda p: p.name):
        grouped.setdefault(p.kind, []).append(p)
    return {kind: tuple(ps) for kind, ps in grouped.items()}


def endpoint(address: str, port: int, service: str, dataplane: str, **tags: str) -> Endpoint:
    return Endpoint(address, port, {"kuma.io/service": service, **tags}, dataplane)


def snapshot(mtls: str | None = None, policies: dict[str, tuple[Policy, ...]] | None = None,
             **changes: Any) -> MeshSnapshot:
    base = MeshSnapshot(
        mesh=MESH, revision=7,
        mtls=Mtls("ca-1", mtls, CA_PEM) if mtls else None,
        endpoints={
            "backend": (endpoint("10.0.0.3", 8080, "backend", "backend-2", **{"kuma.io/protocol": "http"}),
                        endpoint("10.0.0.2", 8080, "backend", "backend-1", **{"kuma.io/protocol": "http"})),
            "db": (endpoint("10.0.0.4", 5432, "db", "db-1", role="primary"),),
            "web": (endpoint("10.0.0.1", 8080, "web", "web-1", **{"kuma.io/protocol": "http"}),),
        },
        protocols={"backend": "http", "db": "tcp", "web": "http", "grpc-api": "grpc", "h2-api": "http2"},
        policies=default_policies() if policies is None else policies)
    return replace(base, **changes)


def web_proxy(**changes: Any) -> Proxy:
    """`web`: an HTTP service on :8080 (app on 127.0.0.1:8081) calling backend (HTTP) and db (TCP)."""
    base = Proxy(
        mesh=MESH, name="web-1", address="10.0.0.1",
        inbounds=(Inbound(port=8080, service_port=8081, address="10.0.0.1", service_address="127.0.0.1",
                          tags={"kuma.io/service": "web", "kuma.io/protocol": "http", "team": "frontend"},
                          protocol="http"),),
        outbounds=(Outbound(port=10001, address="127.0.0.1", service="backend"),
                   Outbound(port=10002, address="127.0.0.1", service="db")))
    return replace(base, **changes)


def db_proxy(**changes: Any) -> Proxy:
    """`db`: a TCP service on :5432 with no outbounds."""
    base = Proxy(
        mesh=MESH, name="db-1", address="10.0.0.4",
        inbounds=(Inbound(port=5432, service_port=5433, address="10.0.0.4", service_address="127.0.0.1",
                          tags={"kuma.io/service": "db", "kuma.io/protocol": "tcp", "role": "primary"},
                          protocol="tcp"),),
        outbounds=())
    return replace(base, **changes)


def grpc_proxy() -> Proxy:
    """A gRPC inbound calling a gRPC and an HTTP/2 service (retries differ by protocol)."""
    return Proxy(
        mesh=MESH, name="grpc-1", address="10.0.0.5",
        inbounds=(Inbound(port=9090, service_port=9091, address="10.0.0.5", service_address="127.0.0.1",
                          tags={"kuma.io/service": "grpc-api", "kuma.io/protocol": "grpc"}, protocol="grpc"),),
        outbounds=(Outbound(port=10010, address="127.0.0.1", service="h2-api"),
                   Outbound(port=10011, address="127.0.0.1", service="grpc-api")))


# Kuma's pkg/xds/generator/testdata/inbound-proxy/3-dataplane.input.yaml as our model (Kuma's default
# serviceAddress is the inbound's own address).
KUMA_INBOUND_PROXY_3 = Proxy(
    mesh=MESH, name="dp-1", address="192.168.0.1",
    inbounds=(
        Inbound(80, 8080, "192.168.0.1", "192.168.0.1", {"kuma.io/service": "backend1", "kuma.io/protocol": "http"},
                "http"),
        Inbound(443, 8443, "192.168.0.1", "192.168.0.1", {"kuma.io/service": "backend2"}, "tcp"),
        Inbound(80, 8080, "192.168.0.2", "192.168.0.2", {"kuma.io/service": "backend3", "kuma.io/protocol": "http"},
                "http"),
        Inbound(443, 8443, "192.168.0.2", "192.168.0.2", {"kuma.io/service": "backend4"}, "tcp"),
    ),
    outbounds=())

MTP = "MeshTrafficPermission"
PERMISSIONS = (
    policy(MTP, "allow-web", {"targetRef": {"kind": "MeshService", "name": "backend"},
                              "from": [{"targetRef": {"kind": "MeshService", "name": "web"},
                                        "default": {"action": "Allow"}}]}),
    policy(MTP, "db-readers", {"targetRef": {"kind": "MeshSubset", "tags": {"role": "primary"}},
                               "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Deny"}},
                                        {"targetRef": {"kind": "MeshSubset", "tags": {"team": "frontend"}},
                                         "default": {"action": "AllowWithShadowDeny"}},
                                        {"targetRef": {"kind": "MeshService", "name": "web"},
                                         "default": {"action": "Allow"}}]}),
)

# The `rules[]` form: SPIFFE ids exact and by prefix, a deny that beats a broader allow, a shadow deny,
# and an SNI match (which needs a TLS inspector on a STRICT listener).
RULE_PERMISSIONS = (
    Policy(MTP, "rules-web", {"targetRef": {"kind": "Mesh"}, "rules": [{"default": {
        "allow": [{"spiffeID": {"type": "Exact", "value": "spiffe://default/web"}}],
        "allowWithShadowDeny": [{"spiffeID": {"type": "Prefix", "value": "spiffe://default/team-"}}],
        "deny": [{"spiffeID": {"type": "Exact", "value": "spiffe://default/team-evil"}}]}}]},
        {"kuma.io/zone": "zone-1"}),
    Policy(MTP, "rules-sni", {"targetRef": {"kind": "Mesh"}, "rules": [{"default": {
        "allow": [{"spiffeID": {"type": "Prefix", "value": "spiffe://default/"},
                   "sni": {"type": "Exact", "value": "db.default"}}]}}]}, {"kuma.io/zone": "zone-1"}),
)


# --- routing: two versions of backend, and the canary of the MeshHTTPRoute docs --------------------

HTTP_ROUTE = "MeshHTTPRoute"
TCP_ROUTE = "MeshTCPRoute"
VERSIONED_DB = (endpoint("10.0.0.4", 5432, "db", "db-1", version="v1"),
                endpoint("10.0.0.5", 5432, "db", "db-2", version="v2"))
VERSIONED_BACKEND = (
    endpoint("10.0.0.2", 8080, "backend", "backend-v1", **{"kuma.io/protocol": "http", "version": "v1"}),
    endpoint("10.0.0.3", 8080, "backend", "backend-v2", **{"kuma.io/protocol": "http", "version": "v2"}),
)


def subset(name: str, version: str, weight: int | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"kind": "MeshServiceSubset", "name": name, "tags": {"version": version}}
    if weight is not None:
        ref["weight"] = weight
    return ref


CANARY = policy(HTTP_ROUTE, "backend-canary", {
    "targetRef": {"kind": "Mesh"},
    "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
        # With the path, the header match sorts first (more headers win among equal paths); a match of the
        # header alone would sort after the explicit `PathPrefix /` below, as in Kuma, and never be reached.
        {"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                      "headers": [{"type": "Exact", "name": "x-version", "value": "v2"}]}],
         "default": {"backendRefs": [subset("backend", "v2", 1)]}},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
         "default": {"backendRefs": [subset("backend", "v1", 90), subset("backend", "v2", 10)]}},
    ]}],
})


def routed_snapshot(mtls: str | None, *routes: Policy, **changes: Any) -> MeshSnapshot:
    """A snapshot with versioned backend endpoints and these route policies (and the mesh defaults)."""
    policies = default_policies(extra=routes)
    endpoints = {**snapshot().endpoints, "backend": VERSIONED_BACKEND, "db": VERSIONED_DB}
    return snapshot(mtls, policies=policies, endpoints=endpoints, subsets=subset_clusters(policies), **changes)


DB_SPLIT = policy(TCP_ROUTE, "db-split", {
    "targetRef": {"kind": "Mesh"},
    "to": [{"targetRef": {"kind": "MeshService", "name": "db"},
            "rules": [{"default": {"backendRefs": [subset("db", "v1", 80), subset("db", "v2", 20)]}}]}],
})
# A TCP route for an HTTP destination: it applies only while no MeshHTTPRoute has rules for backend.
BACKEND_AS_TCP = policy(TCP_ROUTE, "backend-as-tcp", {
    "targetRef": {"kind": "Mesh"},
    "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
            "rules": [{"default": {"backendRefs": [subset("backend", "v1", 1)]}}]}],
})

MLBS = "MeshLoadBalancingStrategy"
RING_HASH = policy(MLBS, "ring-hash-backend", {
    "targetRef": {"kind": "Mesh"},
    "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
            "default": {"loadBalancer": {"type": "RingHash", "ringHash": {"minRingSize": 64, "maxRingSize": 1024,
                                                                          "hashFunction": "MurmurHash2"}},
                        "hashPolicies": [{"type": "Header", "header": {"name": "x-user"}, "terminal": True},
                                         {"type": "Cookie", "cookie": {"name": "session", "ttl": "1h", "path": "/"}},
                                         {"type": "Connection", "connection": {"sourceIP": True}}]}},
           {"targetRef": {"kind": "MeshService", "name": "db"},
            "default": {"loadBalancer": {"type": "LeastRequest",
                                         "leastRequest": {"choiceCount": 3, "activeRequestBias": "1.5"}}}}],
})

# Entries of kind MeshHTTPRoute: for the routes of backend-canary's rules only.
CANARY_TUNING = (
    policy("MeshTimeout", "canary-timeout", {
        "targetRef": {"kind": "Mesh"},
        "to": [{"targetRef": {"kind": "MeshHTTPRoute", "name": "backend-canary"},
                "default": {"http": {"requestTimeout": "3s"}}}]}),
    policy("MeshRetry", "canary-retry", {
        "targetRef": {"kind": "Mesh"},
        "to": [{"targetRef": {"kind": "MeshHTTPRoute", "name": "backend-canary"},
                "default": {"http": {"numRetries": 7}}}]}),
    policy(MLBS, "canary-hash", {
        "targetRef": {"kind": "Mesh"},
        "to": [{"targetRef": {"kind": "MeshHTTPRoute", "name": "backend-canary"},
                "default": {"hashPolicies": [{"type": "QueryParameter", "queryParameter": {"name": "user"}}]}}]}),
)


# Transparent proxying: the services of the mesh above (and an ExternalService's host) with virtual IPs, and
# `web` capturing its traffic (IPv4 only) with kuma-dp's embedded DNS on 15053.
VIP_DATAPLANES = [{"networking": {"inbound": [{"port": p, "tags": {"kuma.io/service": s}}]}}
                  for s, p in (("web", 8080), ("backend", 8080), ("db", 5432), ("my_svc", 7000))]
VIP_EXTERNAL = [("httpbin", {"networking": {"address": "httpbin.org:443"}, "tags": {"kuma.io/service": "httpbin"}})]
TRANSPARENT = TransparentProxy(inbound_port=15006, outbound_port=15001, ipv6=False, dns_port=15053)


def transparent_snapshot(mtls: str | None = "STRICT", **changes: Any) -> MeshSnapshot:
    domains, outbounds = vips.vip_outbounds(vips.allocate({}, vips.wanted(VIP_DATAPLANES, VIP_EXTERNAL)))
    return snapshot(mtls, vip_domains=domains, vip_outbounds=outbounds, **changes)


def transparent_proxy(tp: TransparentProxy = TRANSPARENT, **changes: Any) -> Proxy:
    return web_proxy(transparent_proxy=tp, features=frozenset({"feature-embedded-dns"}), work_dir="/tmp/web", **changes)


def served_dns_records(resources: dict) -> dict[str, list[str]]:
    """The name -> IPs a transparent proxy's DNS answers, as its dynamic-config route serves them to kuma-dp."""
    listener = resources[names.LISTENER][names.DYNAMIC_CONFIG_LISTENER]
    hcm = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    route = next(r for r in hcm.route_config.virtual_hosts[0].routes if r.name == "_kuma:dynamicconfig:/dns")
    return {r["name"]: r["ips"] for r in json.loads(route.direct_response.body.inline_string)["records"]}
