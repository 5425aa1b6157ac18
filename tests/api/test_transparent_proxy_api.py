"""Over the API: a Dataplane with transparentProxying shows its VIP outbounds and capture listeners in its
config view; MeshPassthrough is served at Kuma's path and validated, for a user who is not an admin."""
from __future__ import annotations

from pathlib import Path

from appliance.runtime.vips_sync import VipSync
from tests.support import live_api

MP_PATH = "/meshes/default/meshpassthroughs/mp-1"
PASSTHROUGH = {"type": "MeshPassthrough", "mesh": "default", "name": "mp-1", "spec": {
    "targetRef": {"kind": "Mesh"},
    "default": {"passthroughMode": "Matched", "appendMatch": [{"type": "Domain", "value": "httpbin.org",
                                                                 "port": 443, "protocol": "tls"}]}}}


def _dataplane(name: str, service: str, port: int, **networking: object) -> dict:
    return {"type": "Dataplane", "mesh": "default", "name": name, "networking": {
        "address": "10.0.0.1", "inbound": [{"port": port, "servicePort": port + 1,
                                            "tags": {"kuma.io/service": service, "kuma.io/protocol": "http"}}],
        **networking}}


def test_a_transparent_proxy_config_shows_its_vip_outbounds(tmp_path: Path) -> None:
    with live_api(tmp_path, defaults=True, dp_server=True) as api:
        tp = {"redirectPortInbound": 15006, "redirectPortOutbound": 15001, "ipFamilyMode": "IPv4"}
        assert api.put("/meshes/default/dataplanes/web-1", _dataplane("web-1", "web", 8080,
                                                                      transparentProxying=tp)).status_code == 201
        assert api.put("/meshes/default/dataplanes/backend-1", _dataplane("backend-1", "backend", 9090)).ok
        # what it would not get is said
        r = api.put("/meshes/default/dataplanes/other-1", _dataplane(
            "other-1", "other", 7070, transparentProxying={**tp, "directAccessServices": ["*"]},
            outbound=[{"port": 10001, "tags": {"kuma.io/service": "backend"}}]))
        assert r.status_code == 201 and len(r.json()["warnings"]) == 2, r.text
        assert api.delete("/meshes/default/dataplanes/other-1").ok
        VipSync(api.manager.store).sync()     # the leader's pass
        r = api.remote().get("/meshes/default/dataplanes/web-1/_config")   # a non-admin client elsewhere
        assert r.status_code == 200, r.text
        listeners = {item["name"]: item for item in r.json()["xds"]["Listener"]}
        assert listeners["outbound:240.0.0.0:80"]["bindToPort"] is False      # backend, first by name
        assert "outbound:240.0.0.1:80" in listeners                           # web
        assert listeners["outbound:passthrough:ipv4"]["address"]["socketAddress"]["portValue"] == 15001
        assert listeners["inbound:passthrough:ipv4"]["address"]["socketAddress"]["portValue"] == 15006


def test_meshpassthrough_is_validated_and_stored(tmp_path: Path) -> None:
    with live_api(tmp_path, defaults=True) as api:
        token = api.post("/tokens/user", {"name": "alice", "groups": ["team-a"], "validFor": "1h"})
        assert token.status_code == 200, token.text
        alice = {"Authorization": f"Bearer {token.text}"}   # not an admin, and not on localhost
        remote = api.remote()
        bad = {**PASSTHROUGH, "spec": {"default": {"appendMatch": [{"type": "IP", "value": "nope"}]}}}
        r = remote.put(MP_PATH, bad, headers=alice)
        assert r.status_code == 400, r.text
        assert [(v["field"], v["reason"]) for v in r.json()["invalid_parameters"]] == \
            [("spec.default.appendMatch[0].value", "provided IP has incorrect value")]
        r = remote.put(MP_PATH, PASSTHROUGH, headers=alice)
        assert r.status_code == 201, r.text
        assert not r.json().get("warnings")
        assert remote.get(MP_PATH, headers=alice).json()["spec"] == PASSTHROUGH["spec"]
