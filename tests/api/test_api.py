"""The REST API as a user drives it: meshes and what they bring, errors, auth, compare-and-swap."""
from __future__ import annotations

import base64
import threading
from pathlib import Path

import pytest
import requests

from tests.support import live_api

DP = {"type": "Dataplane", "mesh": "default", "name": "web-1",
      "networking": {"address": "127.0.0.1", "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}]}}


@pytest.fixture(params=["sqlite", "postgres"])
def api(request: pytest.FixtureRequest, tmp_path: Path):
    postgres = request.getfixturevalue("postgres_server") if request.param == "postgres" else None
    with live_api(tmp_path, defaults=True, postgres=postgres) as a:
        yield a


def test_index_and_default_mesh(api) -> None:
    index = api.get("/").json()
    assert index["product"] == "Kuma" and index["version"] and index["instanceId"] and index["hostname"]
    assert [m["name"] for m in api.get("/meshes").json()["items"]] == ["default"]


def test_mesh_lifecycle_brings_and_takes_its_resources(api) -> None:
    r = api.put("/meshes/demo", {"type": "Mesh", "name": "demo"})
    assert r.status_code == 201 and r.json() == {}
    assert api.put("/meshes/demo", {"type": "Mesh", "name": "demo", "mtls": {
        "enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}}).status_code == 200
    assert api.get("/meshes/demo").json()["mtls"]["enabledBackend"] == "ca-1"
    secrets = [s["name"] for s in api.get("/meshes/demo/secrets").json()["items"]]
    # the builtin CA is created with the backend, as two Secrets named as Kuma names them
    assert secrets == ["dataplane-token-signing-key-demo-1", "demo.ca-builtin-cert-ca-1", "demo.ca-builtin-key-ca-1"]
    timeouts = [p["name"] for p in api.get("/meshes/demo/meshtimeouts").json()["items"]]
    assert "mesh-timeout-all-demo" in timeouts
    assert api.get("/meshes/demo/meshretries/mesh-retry-all-demo").status_code == 200
    assert api.get("/meshes/demo/meshcircuitbreakers/mesh-circuit-breaker-all-demo").status_code == 200

    dp = dict(DP, mesh="demo")
    assert api.put("/meshes/demo/dataplanes/web-1", dp).status_code == 201
    r = api.delete("/meshes/demo")
    assert r.status_code == 400
    assert r.json()["invalid_parameters"] == [
        {"field": "mesh", "reason": "unable to delete mesh, there are still some dataplanes attached"}]
    assert api.delete("/meshes/demo/dataplanes/web-1").status_code == 200
    assert api.delete("/meshes/demo").status_code == 200
    assert api.get("/meshes/demo").status_code == 404
    assert {p["mesh"] for p in api.get("/meshtimeouts").json()["items"]} == {"default"}
    assert all(s["mesh"] != "demo" for s in api.get("/secrets").json()["items"])


def test_skip_creating_initial_policies(api) -> None:
    api.put("/meshes/bare", {"type": "Mesh", "name": "bare", "skipCreatingInitialPolicies": ["*"]})
    assert api.get("/meshes/bare/meshtimeouts").json()["total"] == 0
    api.put("/meshes/some", {"type": "Mesh", "name": "some", "skipCreatingInitialPolicies": ["MeshRetry"]})
    assert api.get("/meshes/some/meshretries").json()["total"] == 0
    assert api.get("/meshes/some/meshtimeouts").json()["total"] >= 1


def test_computed_labels_and_kri(api) -> None:
    assert api.put("/meshes/default/dataplanes/web-1", DP).status_code == 201
    dp = api.get("/meshes/default/dataplanes/web-1").json()
    assert dp["labels"] == {"kuma.io/env": "universal", "kuma.io/mesh": "default", "kuma.io/origin": "zone",
                            "kuma.io/proxy-type": "sidecar", "kuma.io/zone": "default"}
    assert dp["kri"] == "kri_dp_default_default__web-1_"
    assert api.get("/_kri/kri_dp_default_default__web-1_").json()["name"] == "web-1"
    assert api.get("/dataplanes").json()["total"] == 1


def test_yaml_body_is_accepted(api) -> None:
    body = "type: Mesh\nname: from-yaml\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n"
    r = api.http.put(api.url + "/meshes/from-yaml", data=body, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 201, r.text
    assert api.get("/meshes/from-yaml").json()["mtls"]["backends"][0]["type"] == "builtin"


@pytest.mark.parametrize("body, detail", [
    (b"[1, 2]", "invalid Mesh object"),
    (b'"just a string"', "invalid Mesh object"),
    (b"{\"type\": \"Mesh\", \"name\": true}", "cannot unmarshal bool into Go struct field ResourceMeta.name"),
    (b"{\"type\": \"Mesh\", \"name\": \"x\", \"labels\": {\"a\": 1}}", "ResourceMeta.labels"),
    (b"\xff\xfe\x00garbage", "invalid Mesh object"),
    (b"", "invalid Mesh object"),
])
def test_malformed_bodies_are_400_never_500(api, body: bytes, detail: str) -> None:
    r = api.http.put(api.url + "/meshes/x", data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert detail in r.json()["detail"]
    assert r.json()["type"] == "/std-errors"


def test_huge_body_is_400(api) -> None:
    body = b'{"type": "Mesh", "name": "big", "padding": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    r = api.http.put(api.url + "/meshes/big", data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "larger than" in r.json()["detail"]
    assert api.get("/meshes/big").status_code == 404


def test_mesh_scoped_resource_in_missing_mesh(api) -> None:
    r = api.put("/meshes/nope/dataplanes/web-1", dict(DP, mesh="nope"))
    assert r.status_code == 404 and r.json()["title"] == "Failed to retrieve Mesh"


def test_unknown_path_and_method(api) -> None:
    r = api.get("/no-such-thing")
    assert r.status_code == 404 and r.json()["type"] == "/std-errors"
    r = api.http.post(api.url + "/meshes/default")
    assert r.status_code == 405 and r.json()["status"] == 405


def test_if_match_makes_put_compare_and_swap_for_8_threads(api) -> None:
    api.put("/meshes/counter", {"type": "Mesh", "name": "counter", "constraints": {}})
    outcome = {"ok": 0, "conflict": 0}
    unexpected: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        http = requests.Session()
        done = 0
        while done < 10:
            r = http.get(api.url + "/meshes/counter")
            body = r.json()
            n = int(body.get("logging", {}).get("defaultBackend", "n0")[1:])
            new = {"type": "Mesh", "name": "counter", "logging": {"defaultBackend": f"n{n + 1}",
                                                                  "backends": [{"name": f"n{n + 1}", "type": "file",
                                                                               "conf": {"path": "/tmp/log"}}]}}
            put = http.put(api.url + "/meshes/counter", json=new, headers={"If-Match": r.headers["ETag"]})
            with lock:
                if put.status_code == 200:
                    outcome["ok"] += 1
                    done += 1
                elif put.status_code == 409 and put.json()["title"] == "Conflict":
                    outcome["conflict"] += 1
                else:
                    unexpected.append(put.text)
                    return

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert unexpected == []
    final = api.get("/meshes/counter").json()
    assert final["logging"]["defaultBackend"] == "n80"  # every acknowledged increment is there
    assert outcome["ok"] == 80 and outcome["conflict"] > 0  # the losers were told, not overwritten


def test_stale_if_match_is_409(api) -> None:
    etag = api.get("/meshes/default").headers["ETag"]
    assert api.put("/meshes/default", {"type": "Mesh", "name": "default"}, headers={"If-Match": etag}).status_code == 200
    r = api.put("/meshes/default", {"type": "Mesh", "name": "default"}, headers={"If-Match": etag})
    assert r.status_code == 409 and "stale" in r.json()["detail"]


def test_auth_when_localhost_is_not_admin(tmp_path: Path) -> None:
    with live_api(tmp_path, env={"KUMA_API_SERVER_AUTHN_LOCALHOST_IS_ADMIN": "false"}, defaults=True) as api:
        assert api.get("/meshes").status_code == 200
        r = api.put("/meshes/demo", {"type": "Mesh", "name": "demo"})
        assert r.status_code == 403 and r.json()["title"] == "Access Denied"
        r = api.get("/global-secrets")
        assert r.status_code == 403
        assert r.json()["detail"] == ('user "mesh-system:anonymous/mesh-system:unauthenticated" cannot access the '
                                      'resource of type "GlobalSecret"')
        assert api.get("/config").status_code == 200   # Kuma's access.static.controlPlaneMetadata: anyone
        assert api.post("/tokens/user", {"name": "x"}).status_code == 403

        admin_token = base64.b64decode(api.store.get("GlobalSecret", "", "admin-user-token").content["data"]).decode()
        admin = {"Authorization": f"Bearer {admin_token}"}
        assert api.get("/global-secrets", headers=admin).status_code == 200
        assert api.get("/who-am-i", headers=admin).json()["name"] == "mesh-system:admin"
        r = api.post("/tokens/user", {"name": "alice", "groups": ["team-a"], "validFor": "1h"}, headers=admin)
        assert r.status_code == 200, r.text
        alice = {"Authorization": f"Bearer {r.text}"}
        assert api.put("/meshes/demo", {"type": "Mesh", "name": "demo"}, headers=alice).status_code == 201
        assert api.get("/meshes/demo/secrets", headers=alice).status_code == 403
        bad = {"Authorization": "Bearer not-a-token"}
        r = api.get("/meshes", headers=bad)
        assert r.status_code == 401 and r.json()["type"] == "/std-errors"


def test_token_issuer_can_be_disabled(tmp_path: Path) -> None:
    with live_api(tmp_path, env={"KUMA_API_SERVER_AUTHN_TOKENS_ENABLE_ISSUER": "false"}, defaults=True) as api:
        r = api.post("/tokens/user", {"name": "alice"})
        assert r.status_code == 400 and "disabled" in r.json()["detail"]


def test_cors_allowed_domains(tmp_path: Path) -> None:
    with live_api(tmp_path, env={"KUMA_API_SERVER_CORS_ALLOWED_DOMAINS": "http://gui.example"}) as api:
        r = api.get("/", headers={"Origin": "http://gui.example"})
        assert r.headers.get("Access-Control-Allow-Origin") == "http://gui.example"
        r = api.get("/", headers={"Origin": "http://evil.example"})
        assert "Access-Control-Allow-Origin" not in r.headers


def test_read_only_api(tmp_path: Path) -> None:
    with live_api(tmp_path, env={"KUMA_API_SERVER_READ_ONLY": "true"}, defaults=True) as api:
        assert api.get("/meshes").status_code == 200
        r = api.put("/meshes/demo", {"type": "Mesh", "name": "demo"})
        assert r.status_code == 405 and "read-only" in r.json()["detail"]


def test_dataplane_and_zone_tokens(api) -> None:
    from appliance.tokens import issuer
    r = api.post("/tokens/dataplane", {"name": "web-1", "mesh": "default", "tags": {"kuma.io/service": ["web"]},
                                       "validFor": "1h"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    claims = issuer.verify_dataplane_token(api.store, "default", r.text)
    assert (claims["Name"], claims["Mesh"], claims["Tags"]) == ("web-1", "default", {"kuma.io/service": ["web"]})
    r = api.post("/tokens/dataplane", {"name": "x", "validFor": "forever", "type": "robot"})
    assert r.status_code == 400
    assert [p["field"] for p in r.json()["invalid_parameters"]] == ["mesh", "validFor", "type"]
    r = api.post("/tokens/dataplane", {"name": "x", "mesh": "nope"})
    assert r.status_code == 404 and "dataplane-token-signing-key-nope-1" in r.json()["detail"]
    r = api.post("/tokens/zone", {"zone": "default", "scope": ["egress"]})
    assert r.status_code == 200
    assert issuer.verify_zone_token(api.store, r.text)["Scope"] == ["egress"]
    assert api.post("/tokens/zone", {"zone": "default"}).status_code == 400


def test_mesh_insights(api) -> None:
    assert api.put("/meshes/default/dataplanes/web-1", DP).status_code == 201
    insight = api.get("/mesh-insights/default").json()
    assert insight["dataplanes"] == {"total": 1, "online": 0, "offline": 1, "partiallyDegraded": 0}
    assert insight["policies"]["MeshTimeout"]["total"] >= 1
    assert [i["name"] for i in api.get("/mesh-insights").json()["items"]] == ["default"]
    assert api.get("/mesh-insights/nope").status_code == 404


def test_a_policy_type_without_plugin_is_stored_with_a_warning(tmp_path: Path) -> None:
    """Nothing accepted silently does nothing: the answer says the policy does not reach proxies yet."""
    access_log = {"type": "MeshAccessLog", "name": "al", "mesh": "default",
                  "spec": {"targetRef": {"kind": "Mesh"},
                           "to": [{"targetRef": {"kind": "Mesh"},
                                   "default": {"backends": [{"type": "Tcp", "tcp": {"address": "127.0.0.1:5000"}}]}}]}}
    timeout = {"type": "MeshTimeout", "name": "mt", "mesh": "default",
               "spec": {"targetRef": {"kind": "Mesh"},
                        "to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"requestTimeout": "2s"}}}]}}
    with live_api(tmp_path, defaults=True) as api:
        created = api.put("/meshes/default/meshaccesslogs/al", access_log)
        assert created.status_code == 201, created.text
        assert created.json()["warnings"] == [
            "MeshAccessLog is stored but not yet applied to proxies by this control plane"]
        assert api.put("/meshes/default/meshaccesslogs/al", access_log).json()["warnings"]   # update: the same
        applied = api.put("/meshes/default/meshtimeouts/mt", timeout)
        assert applied.status_code == 201 and "warnings" not in applied.json()


def test_a_policy_under_a_top_level_mesh_http_route_is_stored_with_a_warning(tmp_path: Path) -> None:
    timeout = {"type": "MeshTimeout", "name": "per-route", "mesh": "default",
               "spec": {"targetRef": {"kind": "MeshHTTPRoute", "name": "r"},
                        "to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"requestTimeout": "2s"}}}]}}
    with live_api(tmp_path, defaults=True) as api:
        warnings = api.put("/meshes/default/meshtimeouts/per-route", timeout).json()["warnings"]
        assert any("is stored but not yet applied" in w for w in warnings)


def test_routes_to_backends_without_a_route_here_are_stored_with_a_warning(tmp_path: Path) -> None:
    """A backendRef or a destination this control plane has nowhere to send to says so; MeshService ones do not."""
    route = {"type": "MeshHTTPRoute", "name": "r", "mesh": "default", "spec": {
        "targetRef": {"kind": "Mesh"},
        "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "default": {"backendRefs": [
                {"kind": "MeshService", "name": "backend", "weight": 50},
                {"kind": "MeshExternalService", "name": "httpbin", "weight": 50}]}}]}]}}
    timeout = {"type": "MeshTimeout", "name": "ext", "mesh": "default", "spec": {
        "targetRef": {"kind": "Mesh"},
        "to": [{"targetRef": {"kind": "MeshExternalService", "name": "httpbin"},
                "default": {"http": {"requestTimeout": "2s"}}}]}}
    with live_api(tmp_path, defaults=True) as api:
        r = api.put("/meshes/default/meshhttproutes/r", route)
        assert r.status_code == 201
        assert r.json()["warnings"] == [
            "'spec.to[0].rules[0].default.backendRefs[1]' of kind MeshExternalService is stored but not yet applied "
            "to proxies by this control plane: use a MeshService or MeshServiceSubset backend"]
        route["spec"]["to"][0]["rules"][0]["default"]["backendRefs"].pop()
        assert "warnings" not in api.put("/meshes/default/meshhttproutes/r", route).json()
        assert api.put("/meshes/default/meshtimeouts/ext", timeout).json()["warnings"] == [
            "'spec.to[0].targetRef' of kind MeshExternalService is stored but not yet applied to proxies by this "
            "control plane"]
