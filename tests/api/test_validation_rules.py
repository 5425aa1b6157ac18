"""Values Kuma's decoders refuse, and set-ups that would run a mesh without what it asks for, get a
400 naming the field: Go durations, token lifetimes, provided CAs, a CA's Secrets, shared inbound ports."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import live_api


@pytest.fixture
def api(tmp_path: Path):
    with live_api(tmp_path, defaults=True) as a:
        yield a


def _timeout(value: str) -> dict:
    return {"type": "MeshTimeout", "name": "t", "mesh": "default", "spec": {
        "targetRef": {"kind": "Mesh"},
        "to": [{"targetRef": {"kind": "Mesh"}, "default": {"connectionTimeout": value}}]}}


@pytest.mark.parametrize("value,message", [
    ("abc", 'time: invalid duration "abc"'),
    ("5 s", 'time: unknown unit " s" in duration "5 s"'),
    ("1e308s", 'time: unknown unit "e" in duration "1e308s"'),
    ("99999999999h", 'time: invalid duration "99999999999h"'),
])
def test_policy_durations_go_cannot_parse_are_refused(api, value: str, message: str) -> None:
    r = api.put("/meshes/default/meshtimeouts/t", _timeout(value))
    assert r.status_code == 400, r.text
    body = r.json()
    quoted = message.replace("\\", "\\\\").replace('"', '\\"')
    assert body["detail"] == f'invalid MeshTimeout object: "{quoted}"'
    assert body["invalid_parameters"] == [{"field": "spec.to[0].default.connectionTimeout", "reason": message}]
    assert api.get("/meshes/default/meshtimeouts/t").status_code == 404


def test_a_duration_no_validator_looked_at_is_refused_too(api) -> None:
    retry = {"type": "MeshRetry", "name": "r", "mesh": "default", "spec": {
        "targetRef": {"kind": "Mesh"},
        "to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"perTryTimeout": "1 minute"}}}]}}
    r = api.put("/meshes/default/meshretries/r", retry)
    assert r.status_code == 400, r.text
    assert r.json()["invalid_parameters"] == [{"field": "spec.to[0].default.http.perTryTimeout",
                                               "reason": 'time: unknown unit " minute" in duration "1 minute"'}]


def test_go_durations_that_are_fine_are_kept_as_written(api) -> None:
    assert api.put("/meshes/default/meshtimeouts/t", _timeout("1.5h")).status_code == 201
    assert api.get("/meshes/default/meshtimeouts/t").json()["spec"]["to"][0]["default"]["connectionTimeout"] == "1.5h"


def test_token_validity_beyond_what_go_can_hold_is_refused(api) -> None:
    r = api.post("/tokens/dataplane", {"mesh": "default", "name": "dp", "validFor": "99999999999h"})
    assert r.status_code == 400, r.text
    assert r.json()["invalid_parameters"] == [
        {"field": "validFor", "reason": 'is invalid: time: invalid duration "99999999999h"'}]
    r = api.post("/tokens/user", {"name": "alice", "validFor": "99999999999h"})
    assert r.status_code == 400
    assert {"field": "validFor", "reason": 'is invalid: time: invalid duration "99999999999h"'} in \
        r.json()["invalid_parameters"]
    # the longest a Go time.Duration holds (about 292 years) is still issued
    assert api.post("/tokens/dataplane", {"mesh": "default", "name": "dp",
                                          "validFor": "2562047h"}).status_code == 200


def test_a_user_token_needs_a_validity_as_in_kuma(api) -> None:
    r = api.post("/tokens/user", {"name": "alice"})
    assert r.status_code == 400
    assert r.json()["invalid_parameters"] == [{"field": "validFor", "reason": "cannot be empty"}]


@pytest.mark.parametrize("conf, expected", [
    ({"cert": {"secret": "does-not-exist"}, "key": {"secret": "does-not-exist-either"}},
     [{"field": f"mtls.backends[0].conf.{part}", "reason": 'could not load data: resource not found: type="Secret" '
                                                           'name="does-not-exist-either" mesh="p"'}
      for part in ("cert", "key")]),
    ({"cert": {"inlineString": "x"}, "key": {"inlineString": "y"}},
     [{"field": "mtls.backends[0].conf.cert",
       "reason": "not a valid TLS key pair: tls: failed to find any PEM data in certificate input"}]),
], ids=["missing-secrets", "not-pem"])
def test_a_mesh_with_a_provided_ca_it_cannot_use_is_refused(api, conf: dict, expected: list) -> None:
    mesh = {"type": "Mesh", "name": "p", "mtls": {
        "enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "provided", "conf": conf}]}}
    r = api.put("/meshes/p", mesh)
    assert r.status_code == 400, r.text
    assert r.json()["invalid_parameters"] == expected
    assert api.get("/meshes/p").status_code == 404


def test_an_enabled_backend_that_does_not_exist_is_refused(api) -> None:
    r = api.put("/meshes/p", {"type": "Mesh", "name": "p", "mtls": {
        "enabledBackend": "nope", "backends": [{"name": "ca-1", "type": "builtin"}]}})
    assert r.status_code == 400
    assert r.json()["invalid_parameters"] == [
        {"field": "mtls.enabledBackend", "reason": "has to be set to one of the backends in the mesh"}]


def test_the_secrets_of_a_builtin_ca_in_use_cannot_be_deleted(api) -> None:
    assert api.put("/meshes/m", {"type": "Mesh", "name": "m", "mtls": {
        "enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}}).status_code == 201
    for name in ("m.ca-builtin-cert-ca-1", "m.ca-builtin-key-ca-1"):
        r = api.delete(f"/meshes/m/secrets/{name}")
        assert r.status_code == 400, r.text
        assert r.json()["invalid_parameters"] == [{"field": "name", "reason": (
            f'The secret "{name}" that you are trying to remove is currently in use in Mesh "m" in mTLS backend '
            '"ca-1". Please remove the reference from the "ca-1" backend before removing the secret.')}]
        assert api.get(f"/meshes/m/secrets/{name}").status_code == 200
    # once the mesh no longer names the backend, its Secrets may go
    assert api.put("/meshes/m", {"type": "Mesh", "name": "m"}).status_code == 200
    assert api.delete("/meshes/m/secrets/m.ca-builtin-cert-ca-1").status_code == 200


def test_two_inbounds_on_one_address_and_port_are_refused(api) -> None:
    dp = {"type": "Dataplane", "mesh": "default", "name": "web-1", "networking": {"address": "10.0.0.1", "inbound": [
        {"port": 8080, "tags": {"kuma.io/service": "web"}},
        {"port": 8080, "tags": {"kuma.io/service": "admin"}},
        {"port": 8080, "address": "10.0.0.2", "tags": {"kuma.io/service": "other"}}]}}
    r = api.put("/meshes/default/dataplanes/web-1", dp)
    assert r.status_code == 400, r.text
    assert r.json()["invalid_parameters"] == [
        {"field": "networking.inbound[1].port", "reason": "address:port 10.0.0.1:8080 is already used by another inbound"}]
