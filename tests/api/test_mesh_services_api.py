"""Over the API: a Mesh asking for MeshServices is applied without a warning, the MeshServices the leader
generates from its Dataplanes are served as Kuma serves them, with the hostnames of the default
HostnameGenerator, and `_hostnames` answers, to a user who is not an admin."""
from __future__ import annotations

from pathlib import Path

from appliance.runtime.meshservice_sync import MeshServiceSync
from tests.support import live_api


def test_generated_mesh_services_are_served_with_status_and_vip(tmp_path: Path) -> None:
    with live_api(tmp_path, defaults=True) as api:
        r = api.put("/meshes/default", {"type": "Mesh", "name": "default", "meshServices": {"mode": "Exclusive"}})
        assert r.ok and not r.json().get("warnings"), r.text
        dp = {"type": "Dataplane", "mesh": "default", "name": "backend-1", "networking": {
            "address": "10.0.0.2", "inbound": [{"port": 8080, "tags": {"kuma.io/service": "backend",
                                                                        "kuma.io/protocol": "http"}}]}}
        assert api.put("/meshes/default/dataplanes/backend-1", dp).status_code == 201
        MeshServiceSync(api.manager.store, "default").sync()     # the leader's round
        token = api.post("/tokens/user", {"name": "alice", "groups": ["team-a"], "validFor": "1h"})
        alice = {"Authorization": f"Bearer {token.text}"}       # not an admin, and not on localhost
        r = api.remote().get("/meshes/default/meshservices/backend", headers=alice)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["labels"] == {"kuma.io/display-name": "backend", "kuma.io/env": "universal",
                                  "kuma.io/managed-by": "meshservice-generator", "kuma.io/mesh": "default",
                                  "kuma.io/origin": "zone", "kuma.io/zone": "default"}
        assert body["spec"] == {"selector": {"dataplaneTags": {"kuma.io/service": "backend"}},
                                "ports": [{"name": "8080", "port": 8080, "targetPort": 8080, "appProtocol": "http"}],
                                "identities": [{"type": "ServiceTag", "value": "backend"}],
                                "state": "Available"}
        assert body["status"]["vips"] == [{"ip": "241.0.0.0"}]
        assert body["status"]["dataplaneProxies"] == {"healthy": 1, "total": 1}   # its kuma-dp is not connected
        assert body["status"]["tls"] == {"status": "NotReady"}                   # no mTLS in the mesh
        ref = {"coreName": "local-universal-mesh-service"}
        assert body["status"]["addresses"] == [{"hostname": "backend.svc.mesh.local", "origin": "HostnameGenerator",
                                                "hostnameGeneratorRef": ref}]
        assert body["status"]["hostnameGenerators"] == [{"hostnameGeneratorRef": ref, "conditions": [
            {"type": "Generated", "status": "True", "reason": "Generated", "message": ""}]}]
        listed = api.remote().get("/meshes/default/meshservices", headers=alice).json()
        assert [item["name"] for item in listed["items"]] == ["backend"]


def test_hostname_generators_and_hostnames_of_a_service(tmp_path: Path) -> None:
    with live_api(tmp_path, defaults=True) as api:
        token = api.post("/tokens/user", {"name": "alice", "groups": ["team-a"], "validFor": "1h"})
        alice = {"Authorization": f"Bearer {token.text}"}       # not an admin, and not on localhost
        remote = api.remote()
        listed = remote.get("/hostnamegenerators", headers=alice).json()
        assert [(g["name"], g["labels"]["kuma.io/origin"], g["spec"]["template"]) for g in listed["items"]] == [
            ("local-mesh-external-service", "zone", "{{ .DisplayName }}.extsvc.mesh.local"),
            ("local-universal-mesh-service", "zone", "{{ .DisplayName }}.svc.mesh.local")]
        bad = {"type": "HostnameGenerator", "name": "bad", "spec": {"template": "{{ .DisplayName }}_x",
                                                                     "selector": {}}}
        r = remote.put("/hostnamegenerators/bad", bad, headers=alice)
        assert r.status_code == 400, r.text
        assert [(v["field"], v["reason"]) for v in r.json()["invalid_parameters"]] == [
            ("spec.selector", "exact one selector (meshService, meshExternalService) must be defined"),
            ("spec.template", "template renders to 'displayname_x' which is not a valid DNS name: a lowercase "
             "RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start "
             "and end with an alphanumeric character")]
        by_zone = {"type": "HostnameGenerator", "name": "by-zone", "spec": {
            "template": '{{ .DisplayName }}.{{ label "team" }}.{{ .Zone }}.mesh',
            "selector": {"meshService": {"matchLabels": {"team": "a"}}}}}
        assert remote.put("/hostnamegenerators/by-zone", by_zone, headers=alice).status_code == 201
        ms = {"type": "MeshService", "mesh": "default", "name": "redis", "labels": {"team": "a"},
              "spec": {"ports": [{"port": 6379}], "selector": {"dataplaneTags": {"kuma.io/service": "redis"}}}}
        assert api.put("/meshes/default/meshservices/redis", ms).status_code == 201
        r = remote.get("/meshes/default/meshservices/redis/_hostnames", headers=alice)
        assert r.status_code == 200, r.text
        assert r.json() == {"items": [{"hostname": "redis.a.default.mesh", "zones": [{"name": "default"}]},
                                      {"hostname": "redis.svc.mesh.local", "zones": [{"name": "default"}]}],
                            "total": 2}
        r = remote.get("/meshes/default/invalidservice/redis/_hostnames", headers=alice)
        assert r.status_code == 400 and r.json()["title"] == (
            'only "meshservices,meshexternalservices,meshmultizoneservices" are available for inspection')
        r = remote.get("/meshes/default/meshservices/nope/_hostnames", headers=alice)
        assert r.status_code == 404 and r.json()["title"] == "could not retrieve service"
