"""MeshTLS over the REST API and kumactl: served at Kuma's path, with Kuma's defaults, errors and warnings."""
from __future__ import annotations

from pathlib import Path

import pytest

from appliance.kumactl import main
from appliance.kumactl.client import ApiClient, ApiServer
from appliance.kumactl.context import Context
from tests.support import live_api

PATH = "/meshes/default/meshtlses"


@pytest.fixture
def api(tmp_path: Path):
    with live_api(tmp_path, defaults=True) as a:
        yield a


def _policy(name: str, spec: dict) -> dict:
    return {"type": "MeshTLS", "mesh": "default", "name": name, "spec": spec}


STRICT_TLS13 = {"targetRef": {"kind": "Mesh"}, "rules": [{"default": {"mode": "Strict", "tlsVersion": {"min": "TLS13"},
                                                                      "tlsCiphers": ["ECDHE-RSA-AES128-GCM-SHA256"]}}]}


def test_create_read_list_and_delete_with_kumas_defaults(api) -> None:
    r = api.put(f"{PATH}/strict", _policy("strict", STRICT_TLS13))
    assert r.status_code == 201, r.text
    assert r.json() == {}
    stored = api.get(f"{PATH}/strict").json()
    assert stored["type"] == "MeshTLS" and stored["kri"].startswith("kri_mtls_default_")
    # kubebuilder's default fills the bound left out, as Kuma stores it
    assert stored["spec"]["rules"][0]["default"]["tlsVersion"] == {"min": "TLS13", "max": "TLSAuto"}
    listed = api.get(PATH).json()
    assert listed["total"] == 1 and [i["name"] for i in listed["items"]] == ["strict"]
    assert api.delete(f"{PATH}/strict").status_code == 200
    assert api.get(f"{PATH}/strict").status_code == 404


def test_from_entries_are_accepted_with_kumas_deprecation_warning(api) -> None:
    spec = {"targetRef": {"kind": "Mesh"}, "from": [{"targetRef": {"kind": "Mesh"}, "default": {"mode": "Permissive"}}]}
    r = api.put(f"{PATH}/permissive", _policy("permissive", spec))
    assert r.status_code == 201, r.text
    assert r.json() == {"warnings": ["'from' field is deprecated, use 'rules' instead"]}


def test_resource_descriptor_as_kuma(api) -> None:
    found = [t for t in api.get("/_resources").json()["resources"] if t["name"] == "MeshTLS"]
    assert found == [{
        "name": "MeshTLS", "path": "meshtlses", "pluralDisplayName": "Mesh TLSes", "readOnly": False,
        "scope": "Mesh", "singularDisplayName": "Mesh TLS", "includeInFederation": True,
        "policy": {"hasFromTargetRef": True, "hasRulesTargetRef": True, "hasToTargetRef": False,
                   "isFromAsRules": True, "isTargetRef": True},
        "shortName": "mtls"}]


@pytest.mark.parametrize("spec, field, reason", [
    ({"rules": [{"default": {"mode": "Sometimes"}}]}, "spec.rules[0].default.mode",
     "in body should be one of [Permissive Strict]"),
    ({"rules": [{"default": {"tlsVersion": {"min": "TLS15"}}}]}, "spec.rules[0].default.tlsVersion.min",
     "in body should be one of [TLSAuto TLS10 TLS11 TLS12 TLS13]"),
    ({"rules": [{"default": {"tlsCiphers": ["RC4"]}}]}, "spec.rules[0].default.tlsCiphers[0]",
     "in body should be one of [ECDHE-ECDSA-AES128-GCM-SHA256 ECDHE-ECDSA-AES256-GCM-SHA384 "
     "ECDHE-ECDSA-CHACHA20-POLY1305 ECDHE-RSA-AES128-GCM-SHA256 ECDHE-RSA-AES256-GCM-SHA384 "
     "ECDHE-RSA-CHACHA20-POLY1305]"),
])
def test_values_the_schema_does_not_know_are_refused(api, spec: dict, field: str, reason: str) -> None:
    r = api.put(f"{PATH}/bad", _policy("bad", spec))
    assert r.status_code == 400, r.text
    assert r.json()["invalid_parameters"] == [{"field": field, "reason": reason}]


@pytest.mark.parametrize("spec, expected", [
    ({"targetRef": {"kind": "Dataplane", "labels": {"app": "demo"}},
      "rules": [{"default": {"tlsVersion": {"min": "TLS12"}, "tlsCiphers": ["ECDHE-RSA-AES128-GCM-SHA256"]}}]},
     [{"field": "spec.rules[0].default.tlsCiphers",
       "reason": "tlsCiphers can only be defined with top level targetRef kind: Mesh"},
      {"field": "spec.rules[0].default.tlsVersion",
       "reason": "tlsVersion can only be defined with top level targetRef kind: Mesh"}]),
    ({"rules": [{"default": {"tlsVersion": {"min": "TLS13", "max": "TLS12"}}}]},
     [{"field": "spec.rules[0].default.tlsVersion.min", "reason": "min version must be lower than max"}]),
    ({"targetRef": {"kind": "MeshService", "name": "web"}, "rules": [{"default": {"mode": "Strict"}}]},
     [{"field": "spec.targetRef.kind", "reason": "value 'MeshService' is not supported"}]),
])
def test_kumas_rules_refuse_with_the_field_named(api, spec: dict, expected: list) -> None:
    r = api.put(f"{PATH}/bad", _policy("bad", spec))
    assert r.status_code == 400, r.text
    assert r.json()["invalid_parameters"] == expected
    assert api.get(f"{PATH}/bad").status_code == 404


def test_kumactl_gets_meshtlses(api, capsys: pytest.CaptureFixture[str]) -> None:
    assert api.put(f"{PATH}/strict", _policy("strict", STRICT_TLS13)).status_code == 201

    class LiveContext(Context):
        def client(self) -> ApiClient:
            return ApiClient(ApiServer(url=api.url))

    assert main(["--no-config", "get", "meshtlses"], make_context=LiveContext) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["MESH", "NAME", "AGE"] and lines[1].split()[:2] == ["default", "strict"]
    assert main(["--no-config", "get", "meshtls", "strict", "-o", "yaml"], make_context=LiveContext) == 0
    assert "mode: Strict" in capsys.readouterr().out
