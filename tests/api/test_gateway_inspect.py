"""The inspect API for builtin gateway proxies on a live server: a gateway Dataplane's `_rules` and `policies`,
a MeshGateway's `_rules` and `dataplanes`.

Scenarios follow Kuma 2.14.3's api-server fixtures (pkg/api-server/testdata/resources/inspect/dataplanes/_rules/
meshgateway, .../meshgateways/_rules/meshgateway, testdata/inspect_gateway_dataplane(s).json), named at each test.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appliance.kumactl.inspect_policies import render_policies
from tests.api.test_inspect_views import _load
from tests.support import live_api

LABELS = {"k8s.kuma.io/namespace": "kuma-demo"}

# resources/inspect/dataplanes/_rules/meshgateway.input.yaml (and meshgateways/_rules/meshgateway.input.yaml)
GATEWAY = """
type: MeshGateway
name: the-gateway
mesh: default
labels: {k8s.kuma.io/namespace: kuma-demo, kuma.io/display-name: the-gateway}
selectors: [{match: {kuma.io/service: gw-1}}]
conf:
  listeners: [{port: 8080, protocol: HTTP}]
---
type: Dataplane
name: dp-1
mesh: default
labels: {k8s.kuma.io/namespace: kuma-demo, kuma.io/display-name: dp-1}
networking:
  address: 127.0.0.1
  gateway: {type: BUILTIN, tags: {kuma.io/service: gw-1, another: v1}}
---
type: MeshTimeout
name: mt-on-gateway
mesh: default
labels: {k8s.kuma.io/namespace: kuma-demo, kuma.io/display-name: mt-on-gateway}
spec:
  targetRef: {kind: MeshGateway, name: the-gateway}
  to:
  - targetRef: {kind: Mesh}
    default: {idleTimeout: 20s, connectionTimeout: 2s, http: {requestTimeout: 10s}}
---
type: MeshProxyPatch
mesh: default
name: mpp-on-gateway
labels: {k8s.kuma.io/namespace: kuma-demo, kuma.io/display-name: mpp-on-gateway}
spec:
  targetRef: {kind: MeshGateway, name: the-gateway}
  default:
    appendModifications:
    - cluster:
        operation: Add
        value: |
          name: test-cluster
          connectTimeout: 5s
          type: STATIC
"""

ROUTES = """
---
type: Dataplane
name: backend-1
mesh: default
networking:
  address: 127.0.0.1
  inbound: [{port: 9000, tags: {kuma.io/service: backend, kuma.io/protocol: http, version: v1}}]
---
type: Dataplane
name: sidecar
mesh: default
networking:
  address: 127.0.0.1
  gateway: {type: DELEGATED, tags: {kuma.io/service: gw-1}}
---
type: MeshHTTPRoute
name: route-1
mesh: default
spec:
  targetRef: {kind: MeshGateway, name: the-gateway}
  to:
  - targetRef: {kind: Mesh}
    rules:
    - matches: [{path: {type: PathPrefix, value: /api}}]
      default:
        backendRefs:
        - {kind: MeshService, name: backend, weight: 90}
        - {kind: MeshServiceSubset, name: backend, tags: {version: v1}, weight: 10}
    - matches: [{path: {type: Exact, value: /redirect}}]
      default:
        filters: [{type: RequestRedirect, requestRedirect: {statusCode: 301, hostname: example.com}}]
---
type: MeshHTTPRoute
name: route-0
mesh: default
spec:
  targetRef: {kind: MeshGateway, name: the-gateway}
  to:
  - targetRef: {kind: Mesh}
    rules:
    - matches: [{path: {type: PathPrefix, value: /redis}}]
      default: {backendRefs: [{kind: MeshService, name: redis}]}
"""


@pytest.fixture
def api(tmp_path: Path):
    with live_api(tmp_path) as a:
        yield a


def _meta(type: str, name: str, mesh: str = "default") -> dict[str, Any]:
    return {"labels": {**LABELS, "kuma.io/display-name": name}, "mesh": mesh, "name": name, "type": type}


def _gateway_rules(resource: dict[str, Any]) -> dict[str, Any]:
    """Kuma's golden body of both `_rules` fixtures: only the resource differs."""
    timeout = {"connectionTimeout": "2s", "idleTimeout": "20s", "http": {"requestTimeout": "10s"}}
    mesh = {"labels": {}, "mesh": "", "name": "default", "type": "Mesh"}
    return {"httpMatches": [], "resource": resource, "rules": [
        {"fromRules": [], "inboundRules": [],
         "toResourceRules": [{"conf": [timeout], "origin": [{"resourceMeta": _meta("MeshTimeout", "mt-on-gateway"),
                                                             "ruleIndex": 0}],
                              "resourceMeta": mesh, "resourceSectionName": ""}],
         "toRules": [{"conf": timeout, "matchers": [], "origin": [_meta("MeshTimeout", "mt-on-gateway")]}],
         "type": "MeshTimeout", "warnings": []},
        {"fromRules": [], "inboundRules": [],
         "proxyRule": {"conf": {"appendModifications": [{"cluster": {
             "operation": "Add", "value": "name: test-cluster\nconnectTimeout: 5s\ntype: STATIC\n"}}]},
             "origin": [_meta("MeshProxyPatch", "mpp-on-gateway")]},
         "toResourceRules": [], "toRules": [], "type": "MeshProxyPatch", "warnings": []}]}


def test_rules_of_a_gateway_dataplane_and_of_its_meshgateway(api) -> None:
    """dataplanes/_rules/meshgateway and meshgateways/_rules/meshgateway: the policies that target the
    MeshGateway are the gateway proxy's own. (Kuma's golden shows the input's block scalar without its trailing
    newline; we answer the value as stored.)"""
    _load(api, GATEWAY)
    assert api.get("/meshes/default/dataplanes/dp-1/_rules").json() == _gateway_rules(_meta("Dataplane", "dp-1"))
    assert api.get("/meshes/default/meshgateways/the-gateway/_rules").json() == \
        _gateway_rules(_meta("MeshGateway", "the-gateway"))
    # meshgateways/_rules/gw_not_found and mesh_doesnt_exist_not_found
    not_found = {"type": "/std-errors", "status": 404, "detail": "Not found", "details": "Not found"}
    assert api.get("/meshes/default/meshgateways/nope/_rules").json() == {
        **not_found, "title": "Could not retrieve MeshGateway"}
    assert api.get("/meshes/not-a-mesh/meshgateways/the-gateway/_rules").json() == {
        **not_found, "title": "Failed to retrieve Mesh"}


def test_a_gateway_dataplane_for_kumactl(api) -> None:
    """`/policies` of a gateway (testdata/inspect_gateway_dataplane.json's shape): its MeshGateway, per port the
    hosts, the routes named by their MeshHTTPRoutes and their destinations. A redirect sends nowhere, and a
    service that no proxy serves (redis) gets no route on the gateway: neither is listed."""
    _load(api, GATEWAY + ROUTES)
    body = api.get("/meshes/default/dataplanes/dp-1/policies").json()
    service = {"tags": {"kuma.io/service": "backend"}, "policies": {}}
    subset = {"tags": {"kuma.io/service": "backend", "version": "v1"}, "policies": {}}
    assert body == {"kind": "MeshGatewayDataplane", "gateway": {"mesh": "default", "name": "the-gateway"},
                    "listeners": [{"port": 8080, "protocol": "HTTP", "hosts": [{"hostName": "*", "routes": [
                        {"route": "route-0_route-1", "destinations": [service, subset]}]}]}]}
    # what `kumactl inspect dataplane dp-1` prints of it (Kuma's template: a destination by its service)
    assert render_policies(body) == ("MESHGATEWAY:\n\nLISTENER (HTTP:8080):\n  *:\n    ROUTE route-0_route-1:\n"
                                     "      SERVICE backend:\n\n      SERVICE backend:\n\n")
    # the DELEGATED gateway is a sidecar to Kuma's inspect
    assert api.get("/meshes/default/dataplanes/sidecar/policies").json()["kind"] == "SidecarDataplane"


def test_the_proxies_of_a_meshgateway(api) -> None:
    """testdata/inspect_gateway_dataplanes.json: the builtin gateways the MeshGateway's selectors pick."""
    _load(api, GATEWAY + ROUTES)
    assert api.get("/meshes/default/meshgateways/the-gateway/dataplanes").json() == {
        "total": 1, "items": [{"dataplane": {"mesh": "default", "name": "dp-1"}}]}
    assert api.get("/meshes/default/meshgateways/nope/dataplanes").status_code == 404


@pytest.mark.parametrize("path", [
    "/meshes/default/dataplanes/dp-1/_rules",
    "/meshes/default/dataplanes/dp-1/policies",
    "/meshes/default/meshgateways/the-gateway/_rules",
    "/meshes/default/meshgateways/the-gateway/dataplanes",
])
def test_gateway_views_answer_a_remote_anonymous_user(api, path: str) -> None:
    _load(api, GATEWAY + ROUTES)
    remote = api.remote("127.0.0.2")
    assert remote.get("/who-am-i").json()["name"] == "mesh-system:anonymous"
    far = remote.get(path)
    assert far.status_code == 200, far.text
    assert far.json() == api.get(path).json()


def test_the_gateways_a_policy_hits(api) -> None:
    """`_resources/dataplanes` (matchers.PolicyMatches): a builtin gateway by the listeners of its MeshGateway, a
    DELEGATED one by its tags; `proxyTypes: [Sidecar]` leaves both out."""
    _load(api, GATEWAY + ROUTES + """
---
type: MeshTimeout
name: sidecars-only
mesh: default
spec:
  targetRef: {kind: Mesh, proxyTypes: [Sidecar]}
  to: [{targetRef: {kind: Mesh}, default: {idleTimeout: 5s}}]
""")

    def names(policy: str) -> list[str]:
        body = api.get(f"/meshes/default/meshtimeouts/{policy}/_resources/dataplanes").json()
        return [item["name"] for item in body["items"]]
    assert names("mt-on-gateway") == ["dp-1"]
    assert names("sidecars-only") == ["backend-1"]


def test_policies_of_a_gateway_in_exclusive_mode(tmp_path: Path) -> None:
    """`_policies` (meshServices Exclusive): a gateway's proxy-wide confs come from the policies that select its
    MeshGateway's listeners, here the MeshProxyPatch that targets it."""
    with live_api(tmp_path) as api:
        _load(api, GATEWAY, mesh_spec={"meshServices": {"mode": "Exclusive"}})
        kri = api.get("/meshes/default/meshproxypatches/mpp-on-gateway").json()["kri"]
        assert api.get("/meshes/default/dataplanes/dp-1/_policies").json() == {"policies": [{
            "conf": {"appendModifications": [{"cluster": {
                "operation": "Add", "value": "name: test-cluster\nconnectTimeout: 5s\ntype: STATIC\n"}}]},
            "kind": "MeshProxyPatch", "origins": [{"kri": kri}]}]}
