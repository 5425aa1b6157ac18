"""Who may do what: Kuma's static access lists (access.static.*) over the REST API, with Kuma's 403s."""
from __future__ import annotations

from pathlib import Path

from tests.support import LiveApi, live_api

ANONYMOUS = "mesh-system:anonymous/mesh-system:unauthenticated"
SECRET = {"type": "Secret", "mesh": "default", "name": "db-password", "data": "c2VjcmV0"}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _user_token(api: LiveApi, name: str, *groups: str) -> dict[str, str]:
    """A user token issued by the local admin."""
    r = api.post("/tokens/user", {"name": name, "groups": list(groups), "validFor": "1h"})
    assert r.status_code == 200, r.text
    return _bearer(r.text)


def _denied(r, detail: str) -> None:
    assert r.status_code == 403, r.text
    body = r.json()
    assert (body["title"], body["detail"]) == ("Access Denied", detail)


def test_kumas_defaults_give_admins_everything_and_others_the_views(tmp_path: Path) -> None:
    with live_api(tmp_path, defaults=True) as api:
        remote = api.remote()
        ops = _user_token(api, "carol", "ops")
        _denied(remote.get("/global-secrets"), f'user "{ANONYMOUS}" cannot access the resource of type "GlobalSecret"')
        _denied(remote.get("/meshes/default/secrets", headers=ops),
                'user "carol/ops,mesh-system:authenticated" cannot access the resource of type "Secret"')
        _denied(remote.post("/tokens/dataplane", {"mesh": "default", "name": "web-1"}, headers=ops),
                'user "carol/ops,mesh-system:authenticated" cannot access generate dataplane token')
        _denied(remote.post("/tokens/zone", {"zone": "default", "scope": ["egress"]}),
                f"user \"{ANONYMOUS}\" cannot access generate zone token for zone 'default'")
        _denied(remote.post("/tokens/user", {"name": "mallory", "groups": ["mesh-system:admin"], "validFor": "1h"},
                            headers=ops), "action not allowed")
        # Kuma's defaults let anyone see the control plane's metadata (secrets masked)
        r = remote.get("/config")
        assert r.status_code == 200 and r.json()["access"]["type"] == "static"
        # the local admin (mesh-system:admin) may do all of it
        assert api.put("/meshes/default/secrets/db-password", SECRET).status_code == 201
        assert api.post("/tokens/dataplane", {"mesh": "default", "name": "web-1"}).status_code == 200
        assert api.post("/tokens/zone", {"zone": "default", "scope": ["egress"]}).status_code == 200


def test_access_lists_grant_by_user_name_and_by_group(tmp_path: Path) -> None:
    env = {"KUMA_ACCESS_STATIC_ADMIN_RESOURCES_GROUPS": "mesh-system:admin,secret-keepers",
           "KUMA_ACCESS_STATIC_GENERATE_DP_TOKEN_USERS": "mesh-system:admin,ci-bot",
           "KUMA_ACCESS_STATIC_GENERATE_ZONE_TOKEN_GROUPS": "mesh-system:admin,zone-ops",
           "KUMA_ACCESS_STATIC_GENERATE_USER_TOKEN_USERS": "mesh-system:admin,iam"}
    with live_api(tmp_path, env=env, defaults=True) as api:
        remote = api.remote()
        keeper = _user_token(api, "dave", "secret-keepers")
        ci_bot = _user_token(api, "ci-bot")
        zone_op = _user_token(api, "erin", "zone-ops")
        iam = _user_token(api, "iam")
        assert remote.put("/meshes/default/secrets/db-password", SECRET, headers=keeper).status_code == 201
        assert remote.get("/meshes/default/secrets/db-password", headers=keeper).status_code == 200
        _denied(remote.get("/meshes/default/secrets/db-password", headers=ci_bot),
                'user "ci-bot/mesh-system:authenticated" cannot access the resource of type "Secret"')
        r = remote.post("/tokens/dataplane", {"mesh": "default", "name": "web-1", "validFor": "1h"}, headers=ci_bot)
        assert r.status_code == 200, r.text
        _denied(remote.post("/tokens/dataplane", {"mesh": "default", "name": "web-1"}, headers=keeper),
                'user "dave/secret-keepers,mesh-system:authenticated" cannot access generate dataplane token')
        assert remote.post("/tokens/zone", {"zone": "default", "scope": ["egress"]}, headers=zone_op).status_code == 200
        _denied(remote.post("/tokens/zone", {"zone": "default", "scope": ["egress"]}, headers=ci_bot),
                "user \"ci-bot/mesh-system:authenticated\" cannot access generate zone token for zone 'default'")
        r = remote.post("/tokens/user", {"name": "frank", "groups": ["dev"], "validFor": "1h"}, headers=iam)
        assert r.status_code == 200, r.text
        assert remote.get("/who-am-i", headers=_bearer(r.text)).json()["name"] == "frank"
        _denied(remote.post("/tokens/user", {"name": "frank", "validFor": "1h"}, headers=zone_op), "action not allowed")


def test_lists_that_leave_people_out_are_honoured(tmp_path: Path) -> None:
    env = {"KUMA_ACCESS_STATIC_CONTROL_PLANE_METADATA_GROUPS": "mesh-system:admin",
           "KUMA_ACCESS_STATIC_GET_CONFIG_DUMP_GROUPS": "mesh-system:admin",
           # nobody by name, only the group: the local admin keeps its group, so still may
           "KUMA_ACCESS_STATIC_ADMIN_RESOURCES_USERS": "",
           # nobody at all may issue zone tokens
           "KUMA_ACCESS_STATIC_GENERATE_ZONE_TOKEN_USERS": "", "KUMA_ACCESS_STATIC_GENERATE_ZONE_TOKEN_GROUPS": ""}
    with live_api(tmp_path, env=env, defaults=True) as api:
        remote = api.remote()
        _denied(remote.get("/config"), f'user "{ANONYMOUS}" cannot access control-plane metadata')
        _denied(remote.get("/meshes/default/dataplanes/web-1/_config"),
                f'user "{ANONYMOUS}" cannot access envoy proxy info')
        _denied(remote.get("/zoneegresses/egress-1/_config"), f'user "{ANONYMOUS}" cannot access envoy proxy info')
        assert api.get("/config").status_code == 200
        assert api.get("/meshes/default/dataplanes/web-1/_config").status_code == 404   # allowed; no such proxy
        assert api.get("/global-secrets").status_code == 200
        _denied(api.post("/tokens/zone", {"zone": "default", "scope": ["egress"]}),
                "user \"mesh-system:admin/mesh-system:admin,mesh-system:authenticated\" cannot access "
                "generate zone token for zone 'default'")


def test_who_may_reference_secrets_follows_the_admin_resources_list(tmp_path: Path) -> None:
    env = {"KUMA_ACCESS_STATIC_ADMIN_RESOURCES_GROUPS": "mesh-system:admin,secret-keepers"}
    backend = {"type": "MeshExternalService", "name": "db", "mesh": "default",
               "spec": {"match": {"type": "HostnameGenerator", "port": 5432, "protocol": "tcp"},
                        "endpoints": [{"address": "10.0.0.1", "port": 5432}],
                        "tls": {"enabled": True, "verification": {"caCert": {"secret": "db-ca"}}}}}
    with live_api(tmp_path, env=env, defaults=True) as api:
        remote = api.remote()
        keeper = _user_token(api, "dave", "secret-keepers")
        dev = _user_token(api, "gina", "dev")
        r = remote.put("/meshes/default/meshexternalservices/db", backend, headers=dev)
        assert r.status_code == 403 and "spec.tls.verification.caCert.secret" in r.json()["detail"], r.text
        r = remote.put("/meshes/default/meshexternalservices/db", backend, headers=keeper)
        assert r.status_code == 201, r.text
