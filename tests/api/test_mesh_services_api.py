"""Over the API: a Mesh asking for MeshServices is told what is applied, and the MeshServices the leader
generates from its Dataplanes are served as Kuma serves them, to a user who is not an admin."""
from __future__ import annotations

from pathlib import Path

from appliance.runtime.meshservice_sync import MeshServiceSync
from tests.support import live_api


def test_generated_mesh_services_are_served_with_status_and_vip(tmp_path: Path) -> None:
    with live_api(tmp_path, defaults=True) as api:
        r = api.put("/meshes/default", {"type": "Mesh", "name": "default", "meshServices": {"mode": "Exclusive"}})
        assert r.ok and r.json()["warnings"][0].startswith("meshServices.mode: Exclusive is applied in part"), r.text
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
        listed = api.remote().get("/meshes/default/meshservices", headers=alice).json()
        assert [item["name"] for item in listed["items"]] == ["backend"]
