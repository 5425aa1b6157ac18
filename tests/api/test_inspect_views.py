"""Kuma's inspect API on a live server with real policies stored: `_rules`, `_resources/dataplanes`,
MeshService `_dataplanes`, service insights, `/global-insight`, `_policies` / `_layout`.

Scenarios and expected bodies follow Kuma 2.14.3's api-server fixtures
(pkg/api-server/testdata/resources/inspect/..., testdata/service-insights/...), named at each test.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.core.resources import registry
from appliance.core.resources.model import Resource
from tests.support import LiveApi, live_api

DP_1 = """
type: Dataplane
name: dp-1
mesh: default
networking:
  address: 127.0.0.1
  inbound:
    - port: 8080
      tags:
        kuma.io/service: foo
"""

# resources/inspect/dataplanes/_rules/overriding_meshtimeout.input.yaml
OVERRIDING_MESHTIMEOUT = DP_1 + """
---
type: MeshTimeout
name: default
mesh: default
spec:
  targetRef: {kind: Mesh}
  to:
  - targetRef: {kind: Mesh}
    default: {idleTimeout: 20s, connectionTimeout: 2s, http: {requestTimeout: 10s}}
  from:
  - targetRef: {kind: Mesh}
    default: {idleTimeout: 20s, connectionTimeout: 2s, http: {requestTimeout: 5s}}
---
type: MeshTimeout
name: override
mesh: default
spec:
  targetRef: {kind: MeshService, name: foo}
  to:
  - targetRef: {kind: MeshService, name: foo}
    default: {http: {requestTimeout: 15s}}
  - targetRef: {kind: MeshService, name: bar}
    default: {http: {requestTimeout: 20s}}
  from:
  - targetRef: {kind: Mesh}
    default: {connectionTimeout: 20s}
"""


def _load(api: LiveApi, text: str, mesh_spec: dict[str, Any] | None = None) -> None:
    api.store.create(Resource("Mesh", "", "default", dict(mesh_spec or {}), {}))
    for doc in yaml.safe_load_all(text):
        scope_mesh = doc.get("mesh", "") if registry.get(doc["type"]).scope == "Mesh" else ""
        content = {k: v for k, v in doc.items() if k not in ("type", "name", "mesh", "labels")}
        api.store.create(Resource(doc["type"], scope_mesh, doc["name"], content, dict(doc.get("labels") or {})))


@pytest.fixture
def api(tmp_path: Path):
    with live_api(tmp_path) as a:
        yield a


def _meta(type: str, name: str, mesh: str = "default", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"labels": labels or {}, "mesh": mesh, "name": name, "type": type}


def _origin(name: str, index: int = 0) -> dict[str, Any]:
    return {"resourceMeta": _meta("MeshTimeout", name), "ruleIndex": index}


def _service(value: str) -> list[dict[str, Any]]:
    return [{"key": "kuma.io/service", "not": False, "value": value}]


FOO_INBOUND = {"port": 8080, "tags": {"kuma.io/service": "foo"}}


def test_rules_of_a_dataplane_merge_policies_as_kuma_does(api) -> None:
    """Kuma's overriding_meshtimeout.golden.json, item for item."""
    _load(api, OVERRIDING_MESHTIMEOUT)
    r = api.get("/meshes/default/dataplanes/dp-1/_rules")
    assert r.status_code == 200, r.text
    both = [_meta("MeshTimeout", "default"), _meta("MeshTimeout", "override")]
    assert r.json() == {
        "httpMatches": [],
        "resource": _meta("Dataplane", "dp-1"),
        "rules": [{
            "fromRules": [{"inbound": FOO_INBOUND, "rules": [{
                "conf": {"connectionTimeout": "20s", "idleTimeout": "20s", "http": {"requestTimeout": "5s"}},
                "matchers": [], "origin": both}]}],
            "inboundRules": [{"inbound": FOO_INBOUND, "rules": [
                {"conf": [{"connectionTimeout": "2s", "idleTimeout": "20s", "http": {"requestTimeout": "5s"}}],
                 "origin": [_origin("default")]},
                {"conf": [{"connectionTimeout": "20s"}], "origin": [_origin("override")]}]}],
            "toResourceRules": [{
                "conf": [{"connectionTimeout": "2s", "idleTimeout": "20s", "http": {"requestTimeout": "10s"}}],
                "origin": [_origin("default")], "resourceMeta": _meta("Mesh", "default", mesh=""),
                "resourceSectionName": ""}],
            "toRules": [
                {"conf": {"connectionTimeout": "2s", "idleTimeout": "20s", "http": {"requestTimeout": "15s"}},
                 "matchers": _service("foo"), "origin": both},
                {"conf": {"connectionTimeout": "2s", "idleTimeout": "20s", "http": {"requestTimeout": "20s"}},
                 "matchers": _service("bar"), "origin": both},
                {"conf": {"connectionTimeout": "2s", "idleTimeout": "20s", "http": {"requestTimeout": "10s"}},
                 "matchers": [], "origin": [_meta("MeshTimeout", "default")]}],
            "type": "MeshTimeout", "warnings": []}]}


def test_resource_rules_for_a_mesh_service_that_exists(api) -> None:
    """toResourceRules name real resources: the Mesh, and a MeshService a `to[]` entry names when it exists."""
    _load(api, OVERRIDING_MESHTIMEOUT + """
---
type: MeshService
name: bar
mesh: default
spec: {selector: {dataplaneTags: {kuma.io/service: bar}}, ports: [{port: 80}]}
""")
    [timeouts] = api.get("/meshes/default/dataplanes/dp-1/_rules").json()["rules"]
    by_resource = {(r["resourceMeta"]["type"], r["resourceMeta"]["name"]): r for r in timeouts["toResourceRules"]}
    assert list(by_resource) == [("MeshService", "bar"), ("Mesh", "default")]
    bar = by_resource[("MeshService", "bar")]
    assert bar["resourceMeta"] == _meta("MeshService", "bar")
    assert bar["conf"] == [{"connectionTimeout": "2s", "idleTimeout": "20s", "http": {"requestTimeout": "20s"}}]
    assert bar["origin"] == [_origin("default"), _origin("override", 1)]


def test_rules_empty_and_not_found(api) -> None:
    """_rules/empty, dp_not_found and mesh_doesnt_exist_not_found."""
    _load(api, DP_1)
    assert api.get("/meshes/default/dataplanes/dp-1/_rules").json() == {
        "httpMatches": [], "resource": _meta("Dataplane", "dp-1"), "rules": []}
    r = api.get("/meshes/default/dataplanes/dp-2/_rules")
    assert (r.status_code, r.json()["title"], r.json()["detail"]) == (404, "Could not retrieve Dataplane", "Not found")
    r = api.get("/meshes/not-a-mesh/dataplanes/dp-1/_rules")
    assert (r.status_code, r.json()["title"]) == (404, "Failed to retrieve Mesh")


def test_rules_of_routes_list_their_matches_by_hash(api) -> None:
    """_rules/meshhttproute: a route's rules per destination, and the hash that names each match."""
    _load(api, """
type: Dataplane
name: dp-1
mesh: default
networking:
  address: 127.0.0.1
  inbound: [{port: 1234, tags: {kuma.io/service: svc-1}}]
---
type: MeshHTTPRoute
name: the-http-route
mesh: default
spec:
  targetRef: {kind: MeshService, name: svc-1}
  to:
  - targetRef: {kind: MeshService, name: backend}
    rules:
    - matches: [{path: {type: PathPrefix, value: /api}}]
      default:
        backendRefs: [{kind: MeshService, name: backend, weight: 1}]
---
type: MeshTimeout
name: on-service
mesh: default
spec:
  targetRef: {kind: Mesh}
  to:
  - targetRef: {kind: MeshService, name: backend}
    default: {http: {requestTimeout: 20s}}
""")
    body = api.get("/meshes/default/dataplanes/dp-1/_rules").json()
    # Kuma's hash of [{"path": {"value": "/api", "type": "PathPrefix"}}] (meshhttproute.golden.json)
    api_hash = "waFsoIISmZDTfFWYqxvY265/GASHYEWvHQTwMh/bpuU="
    assert body["httpMatches"] == [{"hash": api_hash, "match": [{"path": {"value": "/api", "type": "PathPrefix"}}]}]
    assert [r["type"] for r in body["rules"]] == ["MeshHTTPRoute", "MeshTimeout"]
    route = body["rules"][0]
    assert route["toRules"] == [{
        "conf": {"rules": [{"matches": [{"path": {"value": "/api", "type": "PathPrefix"}}],
                            "default": {"backendRefs": [{"kind": "MeshService", "name": "backend", "weight": 1}]}}]},
        "matchers": _service("backend"), "origin": [_meta("MeshHTTPRoute", "the-http-route")]}]
    assert body["rules"][1]["toRules"] == [{"conf": {"http": {"requestTimeout": "20s"}}, "matchers": _service("backend"),
                                            "origin": [_meta("MeshTimeout", "on-service")]}]


def test_rules_of_a_traffic_permission_by_client(api) -> None:
    """MeshTrafficPermission `from[]` as rules per client group (with negations) and per inbound."""
    _load(api, DP_1 + """
---
type: MeshTrafficPermission
name: allow-web
mesh: default
spec:
  targetRef: {kind: MeshService, name: foo}
  from:
  - targetRef: {kind: MeshService, name: web}
    default: {action: Allow}
""")
    rules = api.get("/meshes/default/dataplanes/dp-1/_rules").json()["rules"]
    assert [r["type"] for r in rules] == ["MeshTrafficPermission"]
    mtp = _meta("MeshTrafficPermission", "allow-web")
    assert rules[0]["fromRules"] == [{"inbound": FOO_INBOUND, "rules": [
        {"conf": {"action": "Allow"}, "matchers": _service("web"), "origin": [mtp]}]}]
    assert rules[0]["toRules"] == [] and rules[0]["toResourceRules"] == [] and rules[0]["inboundRules"] == []


PAGINATION = """
type: MeshTrafficPermission
name: foo
mesh: default
spec:
  targetRef: {kind: MeshService, name: bar}
  from: [{targetRef: {kind: Mesh}, default: {action: Allow}}]
---
type: Dataplane
name: dp-1
mesh: default
labels: {kuma.io/display-name: dp-1}
networking: {address: 127.0.0.1, inbound: [{port: 8080, tags: {kuma.io/service: foo}}]}
---
type: Dataplane
name: dp-2
mesh: default
labels: {kuma.io/display-name: dp-2}
networking: {address: 127.0.0.1, inbound: [{port: 8080, tags: {kuma.io/service: bar}}]}
---
type: Dataplane
name: the-dp
mesh: default
labels: {kuma.io/display-name: the-dp}
networking: {address: 127.0.0.1, inbound: [{port: 8080, tags: {kuma.io/service: bar}}]}
"""


def test_the_proxies_a_policy_hits(api) -> None:
    """_resources/dataplanes: match_meshservice_dataplanes, pagination_dataplanes, policy_not_found."""
    _load(api, PAGINATION)
    body = api.get("/meshes/default/meshtrafficpermissions/foo/_resources/dataplanes").json()
    assert body == {"items": [_meta("Dataplane", "dp-2", labels={"kuma.io/display-name": "dp-2"}),
                              _meta("Dataplane", "the-dp", labels={"kuma.io/display-name": "the-dp"})], "total": 2}
    body = api.get("/meshes/default/meshtrafficpermissions/foo/_resources/dataplanes?name=dp&offset=1&size=1").json()
    assert body == {"items": [_meta("Dataplane", "the-dp", labels={"kuma.io/display-name": "the-dp"})], "total": 2}
    page = api.get("/meshes/default/meshtrafficpermissions/foo/_resources/dataplanes?size=1").json()
    assert page["total"] == 2 and [i["name"] for i in page["items"]] == ["dp-2"]
    assert page["next"].endswith("/meshes/default/meshtrafficpermissions/foo/_resources/dataplanes?offset=1&size=1")
    r = api.get("/meshes/default/meshtimeouts/bar/_resources/dataplanes")
    assert (r.status_code, r.json()["title"]) == (404, "Could not retrieve policy")
    r = api.get("/meshes/not-a-mesh/meshtimeouts/bar/_resources/dataplanes")
    assert (r.status_code, r.json()["title"]) == (404, "Failed to retrieve Mesh")
    r = api.get("/meshes/default/meshtrafficpermissions/foo/_resources/dataplanes?size=x")
    assert r.status_code == 400 and r.json()["invalid_parameters"][0]["field"] == "size"


def test_a_policy_on_a_route_hits_what_the_route_selects(api) -> None:
    """_resources/dataplanes/meshtimeouthttproute: top-level targetRef MeshHTTPRoute resolves to its targetRef."""
    _load(api, """
type: MeshTimeout
name: mt1
mesh: default
spec:
  targetRef: {kind: MeshHTTPRoute, name: route-1}
  to: [{targetRef: {kind: Mesh}, default: {http: {requestTimeout: 2s}}}]
---
type: MeshHTTPRoute
name: route-1
mesh: default
spec:
  targetRef: {kind: MeshService, name: client}
  to:
  - targetRef: {kind: MeshService, name: server}
    rules: [{matches: [{path: {type: PathPrefix, value: /t}}], default: {backendRefs: [{kind: MeshService, name: server}]}}]
---
type: Dataplane
name: not-the-dp
mesh: default
networking: {address: 127.0.0.1, inbound: [{port: 8080, tags: {kuma.io/service: server}}]}
---
type: Dataplane
name: the-dp
mesh: default
networking: {address: 127.0.0.1, inbound: [{port: 8080, tags: {kuma.io/service: client}}]}
""")
    body = api.get("/meshes/default/meshtimeouts/mt1/_resources/dataplanes").json()
    assert body == {"items": [_meta("Dataplane", "the-dp")], "total": 1}


def test_the_proxies_of_a_mesh_service(api) -> None:
    """meshservices/_dataplanes/meshservice: by the selector's dataplaneTags."""
    _load(api, """
type: MeshService
name: test-server
mesh: default
spec:
  selector: {dataplaneTags: {app: test-server}}
  ports: [{port: 80, targetPort: 80, appProtocol: http}]
---
type: Dataplane
name: ts-01
mesh: default
networking: {address: 127.0.0.1, inbound: [{port: 80, tags: {kuma.io/service: test-server, app: test-server}}]}
---
type: Dataplane
name: ts-02
mesh: default
networking: {address: 127.0.0.2, inbound: [{port: 80, tags: {kuma.io/service: test-server, app: test-server}}]}
---
type: Dataplane
name: not-ts-01
mesh: default
networking: {address: 127.0.0.2, inbound: [{port: 80, tags: {kuma.io/service: other, app: other}}]}
""")
    expected = {"items": [_meta("Dataplane", "ts-01"), _meta("Dataplane", "ts-02")], "total": 2}
    assert api.get("/meshes/default/meshservices/test-server/_dataplanes").json() == expected
    assert api.get("/meshes/default/meshservices/test-server/_resources/dataplanes").json() == expected
    assert api.get("/meshes/default/meshservices/nope/_dataplanes").status_code == 404


def _connected(api: LiveApi, name: str, online: bool) -> None:
    sub = {"id": "1", "controlPlaneInstanceId": "cp", "connectTime": "2026-01-01T00:00:00Z"}
    if not online:
        sub["disconnectTime"] = "2026-01-01T00:01:00Z"
    api.store.create(Resource("DataplaneInsight", "default", name, {"subscriptions": [sub]}, {}))


SERVICES = """
type: Dataplane
name: backend-1
mesh: default
networking: {address: 127.0.0.1, inbound: [{port: 80, tags: {kuma.io/service: backend}}]}
---
type: Dataplane
name: backend-2
mesh: default
networking: {address: 127.0.0.2, inbound: [{port: 80, tags: {kuma.io/service: backend}}]}
---
type: Dataplane
name: web-1
mesh: default
networking:
  address: 127.0.0.3
  inbound:
  - {port: 80, tags: {kuma.io/service: web}}
  - {port: 81, tags: {kuma.io/service: web-admin}, health: {ready: false}}
---
type: Dataplane
name: db-1
mesh: default
networking: {address: 127.0.0.4, inbound: [{port: 5432, tags: {kuma.io/service: db}}]}
---
type: ExternalService
name: httpbin
mesh: default
networking: {address: httpbin.org:443}
tags: {kuma.io/service: httpbin}
"""


def _load_services(api: LiveApi) -> None:
    _load(api, SERVICES)
    _connected(api, "backend-1", True)
    _connected(api, "backend-2", False)
    _connected(api, "web-1", True)   # one of its two inbounds is not ready: partially degraded


def test_service_insights_count_the_proxies_of_each_service(api) -> None:
    """service-insights/get and list-simple: status online / offline / partially_degraded, counts, VIP."""
    _load_services(api)
    body = api.get("/meshes/default/service-insights").json()
    assert body["total"] == 5 and body["next"] is None
    by_name = {i["name"]: i for i in body["items"]}
    assert list(by_name) == ["backend", "db", "httpbin", "web", "web-admin"]
    backend = by_name["backend"]
    assert backend["type"] == "ServiceInsight" and backend["mesh"] == "default"
    assert (backend["status"], backend["dataplanes"]) == ("partially_degraded", {"total": 2, "online": 1, "offline": 1})
    assert backend["addressPort"] == "backend.mesh:80" and "serviceType" not in backend
    assert (by_name["db"]["status"], by_name["db"]["dataplanes"]) == ("offline", {"total": 1, "online": 0, "offline": 1})
    # a partially degraded proxy counts as offline for its services (resyncer.populateInsight)
    assert by_name["web"]["status"] == "offline"
    assert by_name["httpbin"]["status"] == "not_available" and by_name["httpbin"]["serviceType"] == "external"
    assert api.get("/meshes/default/service-insights/backend").json() == backend
    assert api.get("/service-insights").json()["items"] == body["items"]
    external = api.get("/meshes/default/service-insights?type=external").json()
    assert [i["name"] for i in external["items"]] == ["httpbin"]
    r = api.get("/meshes/default/service-insights?type=random-type")
    assert (r.status_code, r.json()["detail"]) == (400, "bad request: unsupported service type")
    page = api.get("/meshes/default/service-insights?size=2").json()
    assert page["total"] == 5 and [i["name"] for i in page["items"]] == ["backend", "db"]
    assert page["next"].endswith("/meshes/default/service-insights?offset=2&size=2")
    assert [i["name"] for i in api.get("/meshes/default/service-insights?name=web").json()["items"]] == [
        "web", "web-admin"]
    # Kuma answers for a service no proxy serves: offline, no proxies
    assert api.get("/meshes/default/service-insights/nobody").json()["dataplanes"] == {
        "total": 0, "online": 0, "offline": 0}
    assert api.get("/meshes/nope/service-insights").status_code == 404


def test_global_insight_sums_the_meshes(api) -> None:
    _load_services(api)
    body = api.get("/global-insight").json()
    assert body["createdAt"]
    assert body["meshes"] == {"total": 1}
    assert body["dataplanes"]["standard"] == {"offline": 2, "online": 1, "partiallyDegraded": 1, "total": 4}
    assert body["services"] == {
        "external": {"total": 1},
        "internal": {"offline": 3, "online": 0, "partiallyDegraded": 1, "total": 4},
        "gatewayBuiltin": {"offline": 0, "online": 0, "partiallyDegraded": 0, "total": 0},
        "gatewayDelegated": {"offline": 0, "online": 0, "partiallyDegraded": 0, "total": 0}}
    assert body["resources"]["Dataplane"] == {"total": 4} and body["resources"]["ExternalService"] == {"total": 1}
    assert body["zones"]["zoneEgresses"] == {"online": 0, "total": 0}
    insight = api.get("/mesh-insights/default").json()
    assert insight["dataplanes"] == {"total": 4, "online": 1, "offline": 2, "partiallyDegraded": 1}


def test_policies_and_layout_need_mesh_services(api) -> None:
    """_policies/meshservice_disabled and _layout/meshservice_disabled."""
    _load(api, DP_1)
    for endpoint in ("_policies", "_layout"):
        r = api.get(f"/meshes/default/dataplanes/dp-1/{endpoint}")
        assert r.status_code == 400
        assert r.json() == {"type": "/std-errors", "status": 400, "title": "Bad Request",
                            "detail": f"bad request: can't use {endpoint} endpoint without meshService enabled",
                            "details": f"bad request: can't use {endpoint} endpoint without meshService enabled"}
    assert api.get("/meshes/default/dataplanes/dp-9/_policies").status_code == 404


KRI_VIEWS = ("_inbounds/kri_dp_default__dp-1__8080/_policies", "_outbounds/kri_msvc_default__backend__http/_policies",
             "_outbounds/kri_msvc_default__backend__http/_routes",
             "_outbounds/kri_msvc_default__backend__http/_routes/kri_mhttpr_default__route__/_policies")


def test_inbound_outbound_and_route_views_need_mesh_services_as_kumas_policies_handler(api) -> None:
    """Kuma serves the views under `_policies` from one handler: its refusal names `_policies` for each."""
    _load(api, DP_1)
    for view in KRI_VIEWS:
        r = api.get(f"/meshes/default/dataplanes/dp-1/{view}")
        assert (r.status_code, r.json()["detail"]) == \
            (400, "bad request: can't use _policies endpoint without meshService enabled"), view
        assert api.get(f"/meshes/default/dataplanes/dp-9/{view}").status_code == 404


def test_policies_in_exclusive_mode_list_the_proxy_wide_confs(tmp_path: Path) -> None:
    """_policies/no_policies and _policies/merged_policies: the top-level `default` of the selecting policies,
    merged, per kind, with the KRIs of what was merged in precedence order (same level: by name, the last
    wins). Policies with `to`/`from` only (MeshTimeout) configure no proxy-wide conf. The views under it and
    `_layout`: test_inspect_layout.py."""
    with live_api(tmp_path) as api:
        _load(api, DP_1, mesh_spec={"meshServices": {"mode": "Exclusive"}})
        assert api.get("/meshes/default/dataplanes/dp-1/_policies").json() == {"policies": []}
        zipkin = {"type": "Zipkin", "zipkin": {"url": "http://jaeger-collector:9411/api/v2/spans",
                                               "apiVersion": "httpJson"}}
        for name, default in (("default", {"backends": [zipkin]}),
                              ("default-1", {"sampling": {"overall": 80, "random": 60, "client": 40},
                                             "backends": [zipkin]})):
            r = api.put(f"/meshes/default/meshtraces/{name}",
                        {"type": "MeshTrace", "mesh": "default", "name": name, "spec": {"default": default}})
            assert r.status_code == 201, r.text
        r = api.put("/meshes/default/meshtimeouts/t", {"type": "MeshTimeout", "mesh": "default", "name": "t", "spec": {
            "targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "5s"}}]}})
        assert r.status_code == 201, r.text
        assert api.get("/meshes/default/dataplanes/dp-1/_policies").json() == {"policies": [{
            "conf": {"backends": [{"type": "Zipkin", "zipkin": {
                "url": "http://jaeger-collector:9411/api/v2/spans", "traceId128bit": False,
                "apiVersion": "httpJson", "sharedSpanContext": True}}],
                "sampling": {"overall": 80, "client": 40, "random": 60}},
            "kind": "MeshTrace",
            # each policy's KRI as the API shows it (Kuma's fixture runs without a zone: `kri_mtr_default___...`)
            "origins": [{"kri": api.get(f"/meshes/default/meshtraces/{name}").json()["kri"]}
                        for name in ("default-1", "default")]}]}


def test_the_policies_of_a_dataplane_for_kumactl(api) -> None:
    """`/policies` (what plain `kumactl inspect dataplane NAME` reads): targetRef policies attach to the whole
    proxy, by type, in precedence order; the proxy's policies of no type are left out."""
    _load(api, OVERRIDING_MESHTIMEOUT + """
---
type: MeshTrafficPermission
name: other-service
mesh: default
labels: {team: a}
spec:
  targetRef: {kind: MeshService, name: not-foo}
  from: [{targetRef: {kind: Mesh}, default: {action: Deny}}]
""")
    body = api.get("/meshes/default/dataplanes/dp-1/policies").json()
    assert (body["kind"], body["total"]) == ("SidecarDataplane", 1)
    [item] = body["items"]
    assert {k: item[k] for k in ("type", "name", "service")} == {"type": "dataplane", "name": "", "service": ""}
    assert list(item["matchedPolicies"]) == ["MeshTimeout"]
    # Kuma's order: Mesh before MeshService (the more specific last)
    assert [(p["type"], p["mesh"], p["name"]) for p in item["matchedPolicies"]["MeshTimeout"]] == [
        ("MeshTimeout", "default", "default"), ("MeshTimeout", "default", "override")]
    assert all(p["creationTime"] and p["modificationTime"] for p in item["matchedPolicies"]["MeshTimeout"])
    assert api.get("/meshes/default/dataplanes/nope/policies").status_code == 404


def test_the_proxies_of_a_policy_for_kumactl(api) -> None:
    """`/meshes/{m}/{policy}/{name}/dataplanes` (what `kumactl inspect <policy> NAME` reads)."""
    _load(api, PAGINATION)
    body = api.get("/meshes/default/meshtrafficpermissions/foo/dataplanes").json()
    entry = {"kind": "SidecarDataplane", "attachments": [{"type": "dataplane", "name": "", "service": ""}]}
    assert body == {"total": 2, "items": [{**entry, "dataplane": {"mesh": "default", "name": "dp-2"}},
                                          {**entry, "dataplane": {"mesh": "default", "name": "the-dp"}}]}
    # as Kuma: a policy that does not exist hits no proxy
    assert api.get("/meshes/default/meshtrafficpermissions/nope/dataplanes").json() == {"total": 0, "items": []}


@pytest.mark.parametrize("path", [
    "/meshes/default/dataplanes/dp-1/_rules",
    "/meshes/default/dataplanes/dp-1/policies",
    "/meshes/default/meshtimeouts/default/_resources/dataplanes",
    "/meshes/default/meshtimeouts/default/dataplanes",
    "/meshes/default/meshservices/foo/_dataplanes",
    "/service-insights",
    "/meshes/default/service-insights",
    "/meshes/default/service-insights/foo",
    "/global-insight",
])
def test_every_inspect_view_answers_a_remote_anonymous_user(api, path: str) -> None:
    """Reads are open in Kuma: a client on another address, without a token, sees the same answer."""
    _load(api, OVERRIDING_MESHTIMEOUT + """
---
type: MeshService
name: foo
mesh: default
spec: {selector: {dataplaneTags: {kuma.io/service: foo}}, ports: [{port: 80}]}
""")
    remote = api.remote("127.0.0.2")
    assert remote.get("/who-am-i").json()["name"] == "mesh-system:anonymous"
    local, far = api.get(path), remote.get(path)
    assert far.status_code == 200, far.text
    strip = (lambda b: {k: v for k, v in b.items() if k != "createdAt"}) if path == "/global-insight" else (lambda b: b)
    assert strip(far.json()) == strip(local.json())
