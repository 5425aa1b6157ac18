"""MeshGateway over the API: Kuma 2.14's path, shape and validation messages, a `warnings` entry for what gateway
proxies do not get yet, and its certificates' Secrets guarded like every other data source."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support import LiveApi, live_api

PATH = "/meshes/default/meshgateways/edge"
EDGE: dict[str, Any] = {
    "type": "MeshGateway", "mesh": "default", "name": "edge",
    "selectors": [{"match": {"kuma.io/service": "edge"}}],
    "conf": {"listeners": [{"port": 8080, "protocol": "HTTP", "hostname": "*"}]},
}


def _user(api: LiveApi, name: str, group: str) -> dict[str, str]:
    r = api.post("/tokens/user", {"name": name, "groups": [group], "validFor": "1h"})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.text}"}


def _with(**conf: Any) -> dict[str, Any]:
    body = copy.deepcopy(EDGE)
    body.update(conf)
    return body


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LiveApi]:
    with live_api(tmp_path, defaults=True) as a:
        yield a


def test_a_user_creates_lists_and_reads_a_gateway_from_another_host(api: LiveApi) -> None:
    remote, alice = api.remote(), _user(api, "alice", "team-a")
    created = remote.put(PATH, EDGE, headers=alice)
    assert created.status_code == 201, created.text
    assert "warnings" not in created.json()      # an HTTP listener is served as it is
    got = remote.get(PATH, headers=alice)
    assert got.status_code == 200, got.text
    body = got.json()
    assert {k: body[k] for k in ("type", "mesh", "name", "selectors", "conf")} == EDGE
    assert body["labels"]["kuma.io/origin"] == "zone"
    listed = remote.get("/meshes/default/meshgateways", headers=alice).json()
    assert [i["name"] for i in listed["items"]] == ["edge"] and listed["total"] == 1
    assert [i["name"] for i in remote.get("/meshgateways", headers=alice).json()["items"]] == ["edge"]
    kinds = {r["name"]: r for r in api.get("/_resources").json()["resources"]}
    assert kinds["MeshGateway"]["path"] == "meshgateways" and kinds["MeshGateway"]["shortName"] == "mgw"
    assert remote.delete(PATH, headers=alice).status_code == 200
    assert api.get(PATH).status_code == 404


@pytest.mark.parametrize(("body", "field", "reason"), [
    (_with(selectors=[]), "selectors", "must have at least one element"),
    (_with(selectors=[{"match": {"app": "edge"}}]), "selectors[0].match", 'mandatory tag "kuma.io/service" is missing'),
    (_with(tags={"kuma.io/service": "x"}), 'tags["kuma.io/service"]', 'tag name must not be "kuma.io/service"'),
    (_with(conf=None), "conf", "cannot be empty"),
    (_with(conf={"listeners": []}), "conf.listeners", "cannot be empty"),
    (_with(conf={"listeners": [{"port": 0, "protocol": "HTTP"}]}), "conf.listeners[0].port",
     "port must be in the range [1, 65535]"),
    (_with(conf={"listeners": [{"port": 80}]}), "conf.listeners[0].protocol", "cannot be empty"),
    (_with(conf={"listeners": [{"port": 80, "protocol": "HTTP", "hostname": "Bad_Host"}]}),
     "conf.listeners[0].hostname", "invalid hostname"),
    (_with(conf={"listeners": [{"port": 80, "protocol": "HTTP", "hostname": "*.-x"}]}),
     "conf.listeners[0].hostname", "invalid wildcard domain"),
    (_with(conf={"listeners": [{"port": 443, "protocol": "HTTPS"}]}), "conf.listeners[0].tls", "cannot be empty"),
    (_with(conf={"listeners": [{"port": 443, "protocol": "HTTPS", "tls": {"mode": "PASSTHROUGH"}}]}),
     "conf.listeners[0].tls.mode", "mode is not supported on HTTPS listeners"),
    (_with(conf={"listeners": [{"port": 443, "protocol": "HTTPS", "tls": {"mode": "TERMINATE"}}]}),
     "conf.listeners[0].tls.certificates", "cannot be empty in TLS termination mode"),
    (_with(conf={"listeners": [{"port": 80, "protocol": "HTTP"}, {"port": 80, "protocol": "TCP"}]}),
     "conf.listeners[1]", "protocol conflicts with other listeners on this port"),
    (_with(conf={"listeners": [{"port": 80, "protocol": "HTTP"}, {"port": 80, "protocol": "HTTP", "hostname": "*"}]}),
     "conf.listeners[0]", "multiple listeners for hostname on this port"),
    # crossMesh (Kuma's gateway_validator_test.go): HTTP only, one selector, no TLS of its own
    (_with(conf={"listeners": [{"port": 99, "protocol": "HTTPS", "hostname": "foo.example.com", "crossMesh": True}]}),
     "conf.listeners[0].protocol", "protocol is not supported with crossMesh"),
    (_with(selectors=[{"match": {"kuma.io/service": "edge"}}, {"match": {"kuma.io/service": "other-edge"}}],
           conf={"listeners": [{"port": 443, "protocol": "HTTP", "hostname": "www-1.example.com", "crossMesh": True}]}),
     "selectors[1]", "there can be at most one selector"),
    (_with(conf={"listeners": [{"port": 80, "protocol": "HTTP", "crossMesh": True, "tls": {"mode": "TERMINATE"}}]}),
     "conf.listeners[0].tls", "must be empty with crossMesh"),
])
def test_a_bad_gateway_is_refused_with_kumas_message(api: LiveApi, body: dict, field: str, reason: str) -> None:
    r = api.put(PATH, body)
    assert r.status_code == 400, r.text
    assert r.json()["title"] == "Could not process a resource"
    assert {"field": field, "reason": reason} in r.json()["invalid_parameters"]
    assert api.get(PATH).status_code == 404


def test_what_gateway_proxies_do_not_get_yet_is_answered_with_warnings(api: LiveApi) -> None:
    api.put("/meshes/default/secrets/shop-cert", {"type": "Secret", "mesh": "default", "name": "shop-cert",
                                                  "data": "Y2VydA=="})
    body = _with(tags={"vhost": "shop"}, conf={"listeners": [
        {"port": 8080, "protocol": "HTTP", "crossMesh": True, "resources": {"connectionLimit": 10}},
        {"port": 8443, "protocol": "HTTPS", "hostname": "shop.example.com",
         "tls": {"mode": "TERMINATE", "certificates": [{"secret": "shop-cert"}]}},
        {"port": 9000, "protocol": "TCP"},
        {"port": 9443, "protocol": "TLS", "hostname": "db.example.com",
         "tls": {"mode": "TERMINATE", "certificates": [{"secret": "shop-cert"}]}},
        {"port": 9443, "protocol": "TLS", "hostname": "pass.example.com", "tls": {"mode": "PASSTHROUGH"}},
        {"port": 9443, "protocol": "TLS", "hostname": "plain.example.com"},
        {"port": 9100, "protocol": "TCP", "crossMesh": True}]})
    r = api.put(PATH, body)
    assert r.status_code == 201, r.text
    warnings = r.json()["warnings"]
    # crossMesh is served on HTTP listeners only
    assert "'conf.listeners[6].crossMesh' is stored but not yet applied to gateway proxies by this control plane" \
        in warnings
    assert "'conf.listeners[5].tls' is missing: a TLS listener is served only with tls.mode TERMINATE or " \
           "PASSTHROUGH" in warnings
    # HTTPS, TCP, TLS, the connection limit and the tags (routes pick listeners by them) are applied
    assert len(warnings) == 2, warnings


def test_a_certificate_secret_is_named_by_secret_keepers_only(api: LiveApi) -> None:
    remote, dev = api.remote(), _user(api, "gina", "dev")
    body = _with(conf={"listeners": [{"port": 8443, "protocol": "HTTPS", "hostname": "shop.example.com",
                                      "tls": {"mode": "TERMINATE", "certificates": [{"secret": "shop-cert"}]}}]})
    r = remote.put(PATH, body, headers=dev)
    assert r.status_code == 403 and "conf.listeners[0].tls.certificates[0].secret" in r.json()["detail"], r.text
    r = api.put(PATH, _with(conf={"listeners": [{"port": 8443, "protocol": "HTTPS", "tls": {
        "mode": "TERMINATE", "certificates": [{"secret": "dataplane-token-signing-key-default-1"}]}}]}))
    assert r.status_code == 400, r.text
    assert r.json()["invalid_parameters"][0]["field"] == "conf.listeners[0].tls.certificates[0].secret"


def test_kumactl_applies_and_gets_meshgateways(api: LiveApi, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from appliance.kumactl import main
    from appliance.kumactl.client import ApiClient, ApiServer
    from appliance.kumactl.context import Context

    class LiveContext(Context):
        def client(self) -> ApiClient:
            return ApiClient(ApiServer(url=api.url))

    manifest = tmp_path / "edge.yaml"
    manifest.write_text("type: MeshGateway\nmesh: default\nname: edge\n"
                        "selectors: [{match: {kuma.io/service: edge}}]\n"
                        "conf: {listeners: [{port: 8080, protocol: HTTP, hostname: '*'}]}\n")
    assert main(["--no-config", "apply", "-f", str(manifest)], make_context=LiveContext) == 0
    capsys.readouterr()
    assert main(["--no-config", "get", "meshgateways"], make_context=LiveContext) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["MESH", "NAME", "AGE"] and lines[1].split()[:2] == ["default", "edge"]
    assert main(["--no-config", "get", "meshgateway", "edge", "-o", "yaml"], make_context=LiveContext) == 0
    assert "protocol: HTTP" in capsys.readouterr().out


def test_a_route_on_the_gateway_is_applied_and_listeners_are_picked_by_tags(api: LiveApi) -> None:
    route = {"type": "MeshHTTPRoute", "mesh": "default", "name": "edge-api", "spec": {
        "targetRef": {"kind": "MeshGateway", "name": "edge", "tags": {"vhost": "shop"}},
        "to": [{"targetRef": {"kind": "Mesh"}, "hostnames": ["shop.example.com"], "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
             "default": {"backendRefs": [{"kind": "MeshService", "name": "backend"}]}}]}]}}
    r = api.put("/meshes/default/meshhttproutes/edge-api", route)
    assert r.status_code == 201 and "warnings" not in r.json(), r.text
    route["spec"]["to"][0]["rules"][0]["default"]["filters"] = [
        {"type": "URLRewrite", "urlRewrite": {"hostToBackendHostname": True}}]
    r = api.put("/meshes/default/meshhttproutes/edge-api", route)
    assert r.status_code == 200 and "warnings" not in r.json(), r.text
    route["spec"]["targetRef"] = {"kind": "MeshGateway", "name": "edge", "sectionName": "http"}
    r = api.put("/meshes/default/meshhttproutes/edge-api", route)   # Kuma 2.14 picks listeners by tags
    assert r.status_code == 400, r.text
    assert {"field": "spec.targetRef.sectionName", "reason": "must not be set with kind MeshGateway"} in \
        r.json()["invalid_parameters"]


@pytest.mark.parametrize(("path", "body"), [
    ("meshtlses/gw", {"type": "MeshTLS", "mesh": "default", "name": "gw", "spec": {
        "targetRef": {"kind": "Mesh", "proxyTypes": ["Gateway"]},
        "rules": [{"default": {"tlsVersion": {"min": "TLS13"}}}]}}),
])
def test_a_policy_for_gateways_that_gateways_do_not_get_says_so(api: LiveApi, path: str, body: dict) -> None:
    r = api.put(f"/meshes/default/{path}", body)
    assert r.status_code == 201, r.text
    assert f"a {body['type']} for gateways (top-level targetRef MeshGateway, or proxyTypes [Gateway]) is stored but " \
           "not yet applied to builtin gateway proxies by this control plane (only MeshHTTPRoute, MeshTCPRoute, " \
           "MeshTimeout, MeshRetry, MeshCircuitBreaker, MeshHealthCheck, MeshAccessLog, MeshRateLimit, " \
           "MeshFaultInjection, MeshLoadBalancingStrategy, MeshTrace, MeshProxyPatch configure them; DELEGATED " \
           "gateways get it on their outbounds)" \
           in r.json()["warnings"]


@pytest.mark.parametrize(("path", "body"), [
    ("meshtimeouts/gw", {"type": "MeshTimeout", "mesh": "default", "name": "gw", "spec": {
        "targetRef": {"kind": "MeshGateway", "name": "edge"},
        "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "10s"}}]}}),
    ("meshretries/gw", {"type": "MeshRetry", "mesh": "default", "name": "gw", "spec": {
        "targetRef": {"kind": "Mesh", "proxyTypes": ["Gateway"]},
        "to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"numRetries": 2}}}]}}),
    ("meshcircuitbreakers/gw", {"type": "MeshCircuitBreaker", "mesh": "default", "name": "gw", "spec": {
        "targetRef": {"kind": "MeshGateway", "name": "edge"},
        "to": [{"targetRef": {"kind": "Mesh"}, "default": {"connectionLimits": {"maxConnections": 2}}}]}}),
    ("meshhealthchecks/gw", {"type": "MeshHealthCheck", "mesh": "default", "name": "gw", "spec": {
        "targetRef": {"kind": "MeshGateway", "name": "edge"},
        "to": [{"targetRef": {"kind": "Mesh"}, "default": {"interval": "10s", "http": {"path": "/health"}}}]}}),
    ("meshaccesslogs/gw", {"type": "MeshAccessLog", "mesh": "default", "name": "gw", "spec": {
        "targetRef": {"kind": "Mesh", "proxyTypes": ["Gateway"]},
        "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"backends": [{"type": "File", "file": {"path": "/dev/stdout"}}]}}]}}),
    ("meshratelimits/gw", {"type": "MeshRateLimit", "mesh": "default", "name": "gw", "spec": {
        "targetRef": {"kind": "MeshGateway", "name": "edge"},
        "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"local": {"http": {"requestRate": {"num": 5, "interval": "10s"}}}}}]}}),
    ("meshfaultinjections/gw", {"type": "MeshFaultInjection", "mesh": "default", "name": "gw", "spec": {
        "targetRef": {"kind": "Mesh", "proxyTypes": ["Gateway"]},
        "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"http": [{"abort": {"httpStatus": 503, "percentage": 50}}]}}]}}),
    ("meshloadbalancingstrategies/gw", {"type": "MeshLoadBalancingStrategy", "mesh": "default", "name": "gw", "spec": {
        "targetRef": {"kind": "MeshGateway", "name": "edge"},
        "to": [{"targetRef": {"kind": "Mesh"}, "default": {"loadBalancer": {"type": "RoundRobin"}}}]}}),
    ("meshtraces/gw", {"type": "MeshTrace", "mesh": "default", "name": "gw", "spec": {
        "targetRef": {"kind": "MeshGateway", "name": "edge"},
        "default": {"backends": [{"type": "Zipkin", "zipkin": {"url": "http://127.0.0.1:9411/api/v2/spans"}}]}}}),
    ("meshproxypatches/gw", {"type": "MeshProxyPatch", "mesh": "default", "name": "gw", "spec": {
        "targetRef": {"kind": "Mesh", "proxyTypes": ["Gateway"]},
        "default": {"appendModifications": [{"httpFilter": {
            "operation": "Remove", "match": {"name": "envoy.filters.http.fault"}}}]}}}),
])
def test_a_policy_for_gateways_that_gateways_get_has_no_warning(api: LiveApi, path: str, body: dict) -> None:
    r = api.put(f"/meshes/default/{path}", body)
    assert r.status_code == 201 and "warnings" not in r.json(), r.text


def test_a_virtual_host_patch_for_gateways_says_it_changes_nothing_there(api: LiveApi) -> None:
    """A gateway's routes reach Envoy by RDS; Kuma's virtualHost modifications edit only inline route
    configurations, so on a gateway they do nothing: said, not silent."""
    r = api.put("/meshes/default/meshproxypatches/vh", {"type": "MeshProxyPatch", "mesh": "default", "name": "vh",
                                                         "spec": {"targetRef": {"kind": "MeshGateway", "name": "edge"},
                                                                  "default": {"appendModifications": [
                                                                      {"virtualHost": {"operation": "Remove", "match": {"name": "x"}}}]}}})
    assert r.status_code == 201, r.text
    assert r.json()["warnings"] == [
        "'spec.default.appendModifications[0].virtualHost' is stored but changes nothing on builtin gateway proxies: "
        "their routes are sent by RDS, and virtualHost modifications edit only route configurations inline in a "
        "listener (as in Kuma)"]
