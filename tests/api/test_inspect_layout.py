"""Kuma 2.14's views of a proxy by KRI on a live server, in a mesh whose `meshServices.mode` is Exclusive:
`_layout`, `_policies`, `_outbounds/{kri}/_policies`, `_inbounds/{kri}/_policies`.

Scenarios and expected bodies follow Kuma 2.14.3's api-server fixtures
(pkg/api-server/testdata/resources/inspect/dataplanes/_layout/..., .../_policies/...), named at each test. One
server and one store for the module: the views only read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from appliance.core.resources import registry
from appliance.core.resources.model import Resource
from tests.support import LiveApi, live_api

# _layout/single_ms_destination.input.yaml and _layout/multiple_mixed_destinations.input.yaml, the proxy made a
# transparent one and the MeshService and MeshExternalService given their VIPs (what gives a proxy outbounds
# here); _policies/outbounds/merged_outbound_policies and multiple_outbound_polices; _policies/inbounds/
# merged_inbound_policy (its durations written as Kuma shows them back); _routes/meshservice_meshhttproute and
# meshservice_meshtcproute (the HTTP backendRef's default weight written out); _policies/routes/
# multiple_different_policies
STORE = """
type: Dataplane
name: dp-1
mesh: default
labels: {kuma.io/zone: test-zone}
networking:
  address: 127.0.0.1
  inbound:
    - {port: 8080, name: main-port, tags: {kuma.io/service: foo, kuma.io/protocol: http}}
    - {port: 8081, name: secondary-port, tags: {kuma.io/service: foo, kuma.io/protocol: tcp}}
  transparentProxying: {redirectPortInbound: 15006, redirectPortOutbound: 15001}
---
type: Dataplane
name: dp-2
mesh: default
networking:
  address: 127.0.0.2
  inbound:
    - {port: 8080, tags: {kuma.io/service: bar}}
  outbound:
    - {port: 10001, backendRef: {kind: MeshService, name: test-server-syncedhash, port: 80}}
---
type: Dataplane
name: dp-3
mesh: default
networking:
  address: 127.0.0.3
  inbound:
    - {port: 8080, tags: {kuma.io/service: baz}}
---
type: MeshService
name: test-server-syncedhash
mesh: default
labels: {kuma.io/display-name: test-server, kuma.io/zone: test-zone}
spec:
  selector: {dataplaneTags: {kuma.io/service: test-server}}
  ports:
    - {port: 80, targetPort: 80, appProtocol: http, name: main-port}
status:
  vips: [{ip: 241.0.0.1}]
---
type: MeshExternalService
name: mes-1
mesh: default
spec:
  match: {type: HostnameGenerator, port: 9090, protocol: http}
  endpoints: [{address: 127.0.0.1, port: 8080}]
status:
  vip: {ip: 242.0.0.1}
---
type: MeshTimeout
name: mt-1
mesh: default
spec:
  to:
    - targetRef: {kind: MeshService, labels: {kuma.io/display-name: test-server}}
      default: {idleTimeout: 20s, connectionTimeout: 2s}
---
type: MeshTimeout
name: mt-2
mesh: default
spec:
  to:
    - targetRef: {kind: MeshService, labels: {kuma.io/display-name: test-server}}
      default: {http: {requestTimeout: 2s}}
---
type: MeshCircuitBreaker
name: web-to-backend-circuit-breaker
mesh: default
spec:
  to:
    - targetRef: {kind: MeshService, labels: {kuma.io/display-name: test-server}}
      default: {connectionLimits: {maxConnections: 2, maxPendingRequests: 8, maxRetries: 2, maxRequests: 2}}
---
type: MeshTimeout
name: inbound-timeout
mesh: default
spec:
  rules:
    - default: {idleTimeout: 1m0s, connectionTimeout: 2s}
---
type: MeshTimeout
name: inbound-timeout-1
mesh: default
spec:
  rules:
    - default: {http: {requestTimeout: 10s, streamIdleTimeout: 1h0m0s, maxStreamDuration: 30m0s,
                       maxConnectionDuration: 30m0s}}
---
type: MeshService
name: test-server-1
mesh: default
labels: {kuma.io/display-name: test-server-1, kuma.io/zone: test-zone}
spec:
  selector: {dataplaneTags: {kuma.io/service: test-server}}
  ports:
    - {port: 80, targetPort: 80, appProtocol: http, name: main-port}
    - {port: 8080, targetPort: 8080, appProtocol: tcp, name: secondary-port}
---
type: MeshHTTPRoute
name: the-http-route
mesh: default
spec:
  to:
    - targetRef: {kind: MeshService, labels: {kuma.io/display-name: test-server-1}}
      rules:
        - matches: [{path: {type: PathPrefix, value: /api}}]
          default:
            backendRefs: [{kind: MeshService, labels: {kuma.io/display-name: test-server-1}, port: 80, weight: 1}]
---
type: MeshTCPRoute
name: the-tcp-route
mesh: default
spec:
  to:
    - targetRef: {kind: MeshService, labels: {kuma.io/display-name: test-server-1}}
      rules:
        - default:
            backendRefs:
              - {kind: MeshService, labels: {kuma.io/display-name: test-server-1}, port: 80, weight: 90}
              - {kind: MeshService, labels: {kuma.io/display-name: test-server-1}, port: 8080, weight: 10}
---
type: MeshTimeout
name: route-timeout
mesh: default
spec:
  targetRef: {kind: Mesh}
  to:
    - targetRef: {kind: MeshHTTPRoute, name: the-http-route}
      default: {http: {requestTimeout: 20s}}
---
type: MeshRetry
name: mr-1
mesh: default
spec:
  targetRef: {kind: Mesh}
  to:
    - targetRef: {kind: MeshHTTPRoute, name: the-http-route}
      default: {http: {numRetries: 10, retryOn: ["503"]}}
"""
DP_1 = "/meshes/default/dataplanes/dp-1"
TEST_SERVER = "kri_msvc_default_test-zone__test-server_main-port"
SERVER_1 = "kri_msvc_default_test-zone__test-server-1_main-port"
HTTP_ROUTE = "kri_mhttpr_default___the-http-route_"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    with live_api(Path(tmp_path_factory.mktemp("layout"))) as a:
        a.store.create(Resource("Mesh", "", "default", {"meshServices": {"mode": "Exclusive"}}, {}))
        for doc in yaml.safe_load_all(STORE):
            mesh = doc.get("mesh", "") if registry.get(doc["type"]).scope == "Mesh" else ""
            content = {k: v for k, v in doc.items() if k not in ("type", "name", "mesh", "labels")}
            a.store.create(Resource(doc["type"], mesh, doc["name"], content, dict(doc.get("labels") or {})))
        yield a


def _error(status: int, title: str, detail: str) -> dict[str, Any]:
    return {"type": "/std-errors", "status": status, "title": title, "detail": detail, "details": detail}


def test_layout_lists_the_outbounds_the_proxy_gets_by_kri(api: LiveApi) -> None:
    """_layout/single_ms_destination and multiple_mixed_destinations: inbounds by section name, outbounds to the
    MeshService port and the MeshExternalService by KRI and their own port, sorted by KRI."""
    assert api.get(f"{DP_1}/_layout").json() == {
        "inbounds": [
            {"kri": "kri_dp_default_test-zone__dp-1_main-port", "port": 8080, "protocol": "http",
             "proxyResourceName": "self_inbound_dp_main-port"},
            {"kri": "kri_dp_default_test-zone__dp-1_secondary-port", "port": 8081, "protocol": "tcp",
             "proxyResourceName": "self_inbound_dp_secondary-port"}],
        "kri": "kri_dp_default_test-zone__dp-1_",
        "labels": {"kuma.io/zone": "test-zone"},
        "listeners": [],
        "outbounds": [
            {"kri": "kri_extsvc_default___mes-1_9090", "port": 9090, "protocol": "http",
             "proxyResourceName": "kri_extsvc_default___mes-1_9090"},
            {"kri": TEST_SERVER, "port": 80, "protocol": "http", "proxyResourceName": TEST_SERVER}]}


def test_layout_of_proxies_without_a_transparent_proxy(api: LiveApi) -> None:
    """A Dataplane outbound by `backendRef` is the MeshService port's outbound; without one and without a
    transparent proxy, a proxy gets no outbound (_layout/single_dp: `outbounds: []`), an inbound without a name
    is known by its port and one without a protocol tag has none."""
    two = api.get("/meshes/default/dataplanes/dp-2/_layout").json()
    assert two["inbounds"] == [{"kri": "kri_dp_default___dp-2_8080", "port": 8080, "protocol": "",
                                "proxyResourceName": "self_inbound_dp_8080"}]
    assert two["outbounds"] == [{"kri": TEST_SERVER, "port": 80, "protocol": "http",
                                 "proxyResourceName": TEST_SERVER}]
    assert api.get("/meshes/default/dataplanes/dp-3/_layout").json()["outbounds"] == []
    r = api.get("/meshes/default/dataplanes/dp-9/_layout")
    assert (r.status_code, r.json()) == (404, _error(404, "Failed to retrieve Dataplane", "Not found"))


def test_outbound_policies_merge_what_the_outbound_gets(api: LiveApi) -> None:
    """_policies/outbounds/merged_outbound_policies + multiple_outbound_polices: per kind in plugin order, the
    merged conf and the KRIs of what was merged (same level: by name, the last wins)."""
    for dp in ("dp-1", "dp-3"):   # Kuma computes it for any proxy, whether or not it has the outbound
        body = api.get(f"/meshes/default/dataplanes/{dp}/_outbounds/{TEST_SERVER}/_policies").json()
        assert body == {"policies": [
            {"conf": [{"connectionTimeout": "2s", "idleTimeout": "20s", "http": {"requestTimeout": "2s"}}],
             "kind": "MeshTimeout", "origins": [{"kri": "kri_mt_default___mt-2_"}, {"kri": "kri_mt_default___mt-1_"}]},
            {"conf": [{"connectionLimits": {"maxConnections": 2, "maxPendingRequests": 8, "maxRetries": 2,
                                            "maxRequests": 2}}],
             "kind": "MeshCircuitBreaker", "origins": [{"kri": "kri_mcb_default___web-to-backend-circuit-breaker_"}]},
        ]}, dp
    # _policies/outbounds/no_policies: no policy names the MeshExternalService
    assert api.get(f"{DP_1}/_outbounds/kri_extsvc_default___mes-1_9090/_policies").json() == {"policies": []}


def test_outbound_and_inbound_kris_kuma_refuses(api: LiveApi) -> None:
    """_policies/outbounds/invalid_outbound_kri, inbounds/almost_valid_inbound_kri; a well-formed KRI naming
    nothing gets the Mesh-wide entries only (none here), as in Kuma."""
    for view, detail in (
            ("_outbounds/invalid-kri/_policies", 'bad request: invalid identifier string: "invalid-kri"'),
            ("_inbounds/invalid-kri/_policies", 'bad request: invalid identifier string: "invalid-kri"'),
            ("_inbounds/id_dp_default_test-zone__dp-1_main-port/_policies",
             "bad request: identifier must start with 'kri': \"id_dp_default_test-zone__dp-1_main-port\""),
            ("_outbounds/kri_nope_default___a_b/_policies", 'bad request: unknown short name of resource type: "nope"')):
        r = api.get(f"{DP_1}/{view}")
        assert (r.status_code, r.json()) == (400, _error(400, "Bad Request", detail)), view
    assert api.get(f"{DP_1}/_outbounds/kri_msvc_default_test-zone__nope_main-port/_policies").json() == \
        {"policies": []}
    r = api.get(f"{DP_1}/_inbounds/kri_dp_default_test-zone__dp-1_nope/_policies")
    assert (r.status_code, r.json()) == (500, _error(500, "Failed building response", "Internal Server Error"))


def test_inbound_policies_list_each_rule_with_its_policy(api: LiveApi) -> None:
    """_policies/inbounds/merged_inbound_policy: the rules in the order the plugin applies them."""
    for section in ("main-port", "secondary-port"):
        body = api.get(f"{DP_1}/_inbounds/kri_dp_default_test-zone__dp-1_{section}/_policies").json()
        assert body == {"policies": [{
            "kind": "MeshTimeout",
            "origins": [{"kri": "kri_mt_default___inbound-timeout-1_"}, {"kri": "kri_mt_default___inbound-timeout_"}],
            "rules": [
                {"conf": {"http": {"requestTimeout": "10s", "streamIdleTimeout": "1h0m0s", "maxStreamDuration": "30m0s",
                                   "maxConnectionDuration": "30m0s"}},
                 "kri": "kri_mt_default___inbound-timeout-1_"},
                {"conf": {"connectionTimeout": "2s", "idleTimeout": "1m0s"}, "kri": "kri_mt_default___inbound-timeout_"}],
        }]}, section
    # an inbound without a name is known by its port
    body = api.get("/meshes/default/dataplanes/dp-3/_inbounds/kri_dp_default___dp-3_8080/_policies").json()
    assert [p["kind"] for p in body["policies"]] == ["MeshTimeout"]


def test_the_routes_of_an_outbound(api: LiveApi) -> None:
    """_routes/meshservice_meshhttproute + meshservice_meshtcproute: each rule with the KRI of its route (a TCP
    rule has none) and its matches; _routes/invalid_outbound_kri."""
    assert api.get(f"{DP_1}/_outbounds/{SERVER_1}/_routes").json() == {"routes": [
        {"kind": "MeshHTTPRoute", "origins": [{"kri": HTTP_ROUTE}], "rules": [{
            "conf": {"backendRefs": [{"kind": "MeshService", "labels": {"kuma.io/display-name": "test-server-1"},
                                      "weight": 1, "port": 80}]},
            "kri": HTTP_ROUTE, "matches": [{"path": {"value": "/api", "type": "PathPrefix"}}]}]},
        {"kind": "MeshTCPRoute", "origins": [{"kri": "kri_mtcpr_default___the-tcp-route_"}], "rules": [{
            "conf": {"backendRefs": [
                {"kind": "MeshService", "labels": {"kuma.io/display-name": "test-server-1"}, "weight": 90, "port": 80},
                {"kind": "MeshService", "labels": {"kuma.io/display-name": "test-server-1"}, "weight": 10,
                 "port": 8080}]},
            "kri": "", "matches": None}]}]}
    assert api.get(f"{DP_1}/_outbounds/{TEST_SERVER}/_routes").json() == {"routes": []}
    r = api.get(f"{DP_1}/_outbounds/invalid-kri/_routes")
    assert (r.status_code, r.json()) == \
        (400, _error(400, "Bad Request", 'bad request: invalid identifier string: "invalid-kri"'))


def test_the_policies_of_a_route(api: LiveApi) -> None:
    """_policies/routes/multiple_different_policies: the policies that target the route, per kind; a route the
    outbound does not have gets the outbound's own conf (routes/fallback_route_conf_to_ms: none here);
    routes/invalid_outbound_kri and invalid_route_kri."""
    assert api.get(f"{DP_1}/_outbounds/{SERVER_1}/_routes/{HTTP_ROUTE}/_policies").json() == {"policies": [
        {"conf": [{"http": {"requestTimeout": "20s"}}], "kind": "MeshTimeout",
         "origins": [{"kri": "kri_mt_default___route-timeout_"}]},
        {"conf": [{"http": {"numRetries": 10, "retryOn": ["503"]}}], "kind": "MeshRetry",
         "origins": [{"kri": "kri_mr_default___mr-1_"}]}]}
    assert api.get(f"{DP_1}/_outbounds/{TEST_SERVER}/_routes/{HTTP_ROUTE}/_policies").json()["policies"] == \
        api.get(f"{DP_1}/_outbounds/{TEST_SERVER}/_policies").json()["policies"]
    for view in (f"_outbounds/invalid-kri/_routes/{HTTP_ROUTE}/_policies",
                 f"_outbounds/{SERVER_1}/_routes/invalid-kri/_policies"):
        r = api.get(f"{DP_1}/{view}")
        assert (r.status_code, r.json()["detail"]) == \
            (400, 'bad request: invalid identifier string: "invalid-kri"'), view


@pytest.mark.parametrize("view", ["_layout", "_policies", f"_outbounds/{TEST_SERVER}/_policies",
                                  "_inbounds/kri_dp_default_test-zone__dp-1_main-port/_policies",
                                  f"_outbounds/{SERVER_1}/_routes", f"_outbounds/{SERVER_1}/_routes/{HTTP_ROUTE}/_policies"])
def test_a_remote_anonymous_user_gets_the_same_answer(api: LiveApi, view: str) -> None:
    """Reads are open in Kuma (it checks only that the user may read the Dataplane, which anyone may)."""
    remote = api.remote("127.0.0.2")
    assert remote.get("/who-am-i").json()["name"] == "mesh-system:anonymous"
    local, far = api.get(f"{DP_1}/{view}"), remote.get(f"{DP_1}/{view}")
    assert far.status_code == 200, far.text
    assert far.json() == local.json()
