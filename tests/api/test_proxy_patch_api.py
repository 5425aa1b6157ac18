"""MeshProxyPatch over the API: served at Kuma's path, refused with a 400 naming the field when a value is
not the Envoy resource it should be, and written by admins only (a patch can make Envoy read or write any
file on the proxy's host or call anywhere); reading stays open."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support import LiveApi, live_api

PATH = "/meshes/default/meshproxypatches/mpp"
HEADER_FILTER = (
    "name: envoy.filters.http.header_mutation\ntypedConfig:\n"
    "  '@type': type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation\n"
    "  mutations:\n    responseMutations:\n    - append:\n        header: {key: x-patched, value: 'yes'}\n")


def _patch(*modifications: dict[str, Any]) -> dict[str, Any]:
    return {"type": "MeshProxyPatch", "name": "mpp", "mesh": "default",
            "spec": {"targetRef": {"kind": "Mesh"}, "default": {"appendModifications": list(modifications)}}}


ADD_HEADER = _patch({"httpFilter": {"operation": "AddBefore", "match": {"name": "envoy.filters.http.router"},
                                    "value": HEADER_FILTER}})


def _user(api: LiveApi, name: str, groups: list[str]) -> dict[str, str]:
    r = api.post("/tokens/user", {"name": name, "groups": groups, "validFor": "1h"})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.text}"}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LiveApi]:
    with live_api(tmp_path, defaults=True) as a:
        yield a


def test_served_at_kumas_path_and_applied(api: LiveApi) -> None:
    created = api.put(PATH, ADD_HEADER)
    assert created.status_code == 201, created.text
    assert "warnings" not in created.json()
    got = api.get(PATH).json()
    assert got["spec"] == ADD_HEADER["spec"] and got["kri"].startswith("kri_mpp_default_")
    assert [i["name"] for i in api.get("/meshes/default/meshproxypatches").json()["items"]] == ["mpp"]
    described = {t["name"]: t for t in api.get("/_resources").json()["resources"]}["MeshProxyPatch"]
    assert (described["path"], described["shortName"], described["policy"]["hasToTargetRef"]) == \
        ("meshproxypatches", "mpp", False)


@pytest.mark.parametrize("modification, field, message", [
    ({"cluster": {"operation": "Add", "value": "{"}},
     "spec.default.appendModifications[0].cluster.value", "native Envoy resource is not valid: unexpected EOF"),
    ({"cluster": {"operation": "Add", "value": "name: c\nconnectTimeout: 0s\n"}},
     "spec.default.appendModifications[0].cluster.value",
     "native Envoy resource is not valid: invalid Cluster.ConnectTimeout: value must be greater than 0s"),
    ({"listener": {"operation": "Patch", "value": "address: {socketAddress: {portValue: many}}"}},
     "spec.default.appendModifications[0].listener.value", "native Envoy resource is not valid: "),
    ({"httpFilter": {"operation": "AddFirst", "value": "name: f\ntypedConfig:\n  '@type': type.googleapis.com/os.system\n"}},
     "spec.default.appendModifications[0].httpFilter.value",
     'native Envoy resource is not valid: unable to resolve "type.googleapis.com/os.system": "not found"'),
    ({"httpFilter": {"operation": "AddBefore", "value": HEADER_FILTER}},
     "spec.default.appendModifications[0].httpFilter.match.name",
     "must be defined. You need to pick a filter before which this one will be added"),
    ({"virtualHost": {"operation": "Patch", "match": {}}},
     "spec.default.appendModifications[0].virtualHost", "virtualHost must have exactly one defined: value, jsonPatches"),
    ({"cluster": {"operation": "AddFirst"}},
     "spec.default.appendModifications[0].cluster.operation", "should be one of [Add Remove Patch]"),
    ({"cluster": {"operation": "Patch", "jsonPatches": [
        {"op": "add", "path": "/transportSocket/typedConfig/commonTlsContext/tlsCertificates/0/privateKey",
         "value": {"inlineString": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"}}]}},
     "spec.default.appendModifications[0].cluster.jsonPatches[0].value", "must not hold a private key"),
])
def test_a_value_that_is_not_envoy_config_is_a_400_naming_the_field(api: LiveApi, modification, field,
                                                                     message) -> None:
    r = api.put(PATH, _patch(modification))
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["title"] == "Could not process a resource"
    found = {v["field"]: v["reason"] for v in body["invalid_parameters"]}
    assert field in found and message in found[field], body
    assert api.get(PATH).status_code == 404


def test_an_empty_list_of_modifications_is_refused(api: LiveApi) -> None:
    r = api.put(PATH, _patch())
    assert r.status_code == 400
    assert [(v["field"], v["reason"]) for v in r.json()["invalid_parameters"]] == \
        [("spec.default.appendModifications", "must not be empty")]


def test_only_admins_may_write_a_proxy_patch(api: LiveApi) -> None:
    """From a non-admin user on another address (127.0.0.2: not localhost, so not admin by default)."""
    alice, remote = _user(api, "alice", ["team-a"]), api.remote()
    r = remote.put(PATH, ADD_HEADER, headers=alice)
    assert r.status_code == 403, r.text
    assert r.json()["title"] == "Access Denied"
    assert r.json()["detail"] == ('user "alice/team-a,mesh-system:authenticated" cannot access the resource of '
                                  'type "MeshProxyPatch"')
    assert api.get(PATH).status_code == 404                          # nothing stored
    assert remote.put(PATH, ADD_HEADER).status_code == 403             # nor anonymously
    assert api.put(PATH, ADD_HEADER).status_code == 201                # the local admin may
    assert remote.get(PATH, headers=alice).status_code == 200          # everyone may read it
    assert remote.delete(PATH, headers=alice).status_code == 403       # nor may alice delete it
    admin = _user(api, "root", ["mesh-system:admin"])
    assert remote.put(PATH, ADD_HEADER, headers=admin).status_code == 200   # an admin token may, from anywhere
    assert remote.delete(PATH, headers=admin).status_code == 200


def test_the_config_view_shows_the_patch_or_why_it_cannot_apply(tmp_path: Path) -> None:
    dataplane = {"type": "Dataplane", "mesh": "default", "name": "web-1", "networking": {
        "address": "127.0.0.1", "inbound": [{"port": 8080, "servicePort": 8081,
                                             "tags": {"kuma.io/service": "web", "kuma.io/protocol": "http"}}]}}
    with live_api(tmp_path, defaults=True, dp_server=True) as api:
        assert api.put("/meshes/default/dataplanes/web-1", dataplane).status_code == 201
        assert api.put(PATH, ADD_HEADER).status_code == 201
        r = api.get("/meshes/default/dataplanes/web-1/_config")
        assert r.status_code == 200, r.text
        inbound = {item["name"]: item for item in r.json()["xds"]["Listener"]}["inbound:127.0.0.1:8080"]
        hcm = inbound["filterChains"][0]["filters"][0]["typedConfig"]
        assert [f["name"] for f in hcm["httpFilters"]] == ["envoy.filters.http.header_mutation",
                                                            "envoy.filters.http.router"]

        broken = _patch({"cluster": {"operation": "Patch", "match": {"name": "localhost:8081"},
                                     "jsonPatches": [{"op": "replace", "path": "/no/such/field", "value": 1}]}})
        assert api.put(PATH, broken).status_code == 200      # valid as a policy; it does not fit this proxy
        r = api.get("/meshes/default/dataplanes/web-1/_config")
        assert r.status_code == 500 and r.json()["title"] == "Could not generate the config of the proxy", r.text
        assert "MeshProxyPatch 'mpp': could not apply the cluster modification" in r.json()["detail"]
        assert "path /no/such/field does not exist" in r.json()["detail"]


def test_rules_of_a_dataplane_show_the_patches_in_the_order_they_apply(api: LiveApi) -> None:
    dataplane = {"type": "Dataplane", "mesh": "default", "name": "web-1", "networking": {
        "address": "127.0.0.1", "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}]}}
    assert api.put("/meshes/default/dataplanes/web-1", dataplane).status_code == 201
    remove = {"cluster": {"operation": "Remove", "match": {"name": "nothing"}}}
    specific = {**_patch(remove), "name": "for-web",
                "spec": {"targetRef": {"kind": "Dataplane", "name": "web-1"},
                         "default": {"appendModifications": [remove]}}}
    assert api.put("/meshes/default/meshproxypatches/for-web", specific).status_code == 201
    assert api.put(PATH, ADD_HEADER).status_code == 201
    rules = {r["type"]: r for r in api.get("/meshes/default/dataplanes/web-1/_rules").json()["rules"]}
    proxy_rule = rules["MeshProxyPatch"]["proxyRule"]
    # Kuma's merge concatenates `append*` lists: the mesh-wide patch first, the Dataplane's after it
    assert proxy_rule["conf"]["appendModifications"] == \
        ADD_HEADER["spec"]["default"]["appendModifications"] + [remove]
    assert [o["name"] for o in proxy_rule["origin"]] == ["mpp", "for-web"]
