"""No secret leaves the control plane through the API: the `_config` views hold placeholders, and a
resource cannot make the control plane read a file or a Secret on behalf of someone who may not."""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support import LiveApi, live_api

MTLS_MESH = {"type": "Mesh", "name": "default",
             "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}}


def _dataplane(name: str, service: str, port: int, outbound: str | None = None) -> dict[str, Any]:
    networking: dict[str, Any] = {"address": "127.0.0.1",
                                  "inbound": [{"port": port, "tags": {"kuma.io/service": service}}]}
    if outbound:
        networking["outbound"] = [{"port": port + 1000, "tags": {"kuma.io/service": outbound}}]
    return {"type": "Dataplane", "mesh": "default", "name": name, "networking": networking}


def _inline_data(node: Any) -> Iterator[bytes]:
    """Every `inlineBytes` (decoded) and `inlineString` in an answer: where Envoy config carries data."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "inlineBytes":
                yield base64.b64decode(v)
            elif k == "inlineString":
                yield v.encode()
            else:
                yield from _inline_data(v)
    elif isinstance(node, list):
        for item in node:
            yield from _inline_data(item)


def _store_secret(api: LiveApi, mesh: str, name: str) -> bytes:
    return base64.b64decode(api.store.get("Secret", mesh, name).content["data"])


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LiveApi]:
    with live_api(tmp_path, defaults=True, dp_server=True) as a:
        assert a.put("/meshes/default", MTLS_MESH).status_code == 200
        yield a


def test_config_of_a_dataplane_holds_placeholders_for_anyone(api: LiveApi) -> None:
    assert api.put("/meshes/default/dataplanes/web-1", _dataplane("web-1", "web", 8080, "backend")).status_code == 201
    assert api.put("/meshes/default/dataplanes/backend-1", _dataplane("backend-1", "backend", 9090)).status_code == 201
    ca_key = _store_secret(api, "default", "default.ca-builtin-key-ca-1")
    assert api.remote().get("/meshes/default/secrets").status_code == 403   # the remote client is not admin
    for client in (api.remote(), api):        # an anonymous remote client, then the local admin
        r = client.get("/meshes/default/dataplanes/web-1/_config")
        assert r.status_code == 200, r.text
        secrets = {s["name"]: s for s in r.json()["xds"]["Secret"]}
        identity = secrets["identity_cert:secret:default"]["tlsCertificate"]
        # Kuma 2.14's inspector placeholders, base64 as protobuf JSON puts bytes
        assert identity == {"certificateChain": {"inlineBytes": "Q0VSVA=="}, "privateKey": {"inlineBytes": "S0VZ"}}
        assert secrets["mesh_ca:secret:default"]["validationContext"] == {"trustedCa": {"inlineBytes": "Q0E="}}
        data = list(_inline_data(r.json()))
        assert not [d for d in data if b"-----BEGIN" in d]
        assert ca_key not in r.content and base64.b64encode(ca_key) not in r.content
        # the rest of the view is the real thing: the listeners and clusters the proxy gets
        assert {c["name"] for c in r.json()["xds"]["Cluster"]} >= {"backend", "localhost:8080"}


def test_config_of_a_zone_egress_holds_placeholders(api: LiveApi, tmp_path: Path) -> None:
    key_pem = (tmp_path / "kuma-cp.key").read_bytes()   # any private key: the DP server's
    assert b"PRIVATE KEY" in key_pem
    es = {"type": "ExternalService", "mesh": "default", "name": "payments",
          "networking": {"address": "payments.example:443",
                         "tls": {"enabled": True, "clientKey": {"inline": base64.b64encode(key_pem).decode()},
                                 "clientCert": {"inlineString": "client certificate"}}},
          "tags": {"kuma.io/service": "payments"}}
    assert api.put("/meshes/default/external-services/payments", es).status_code == 201
    egress = {"type": "ZoneEgress", "name": "egress-1", "networking": {"address": "127.0.0.1", "port": 10002}}
    assert api.put("/zoneegresses/egress-1", egress).status_code == 201
    r = api.remote().get("/zoneegresses/egress-1/_config")
    assert r.status_code == 200, r.text
    secrets = {s["name"]: s for s in r.json()["xds"]["Secret"]}
    assert secrets["identity_cert:secret:default"]["tlsCertificate"]["privateKey"] == {"inlineBytes": "S0VZ"}
    data = list(_inline_data(r.json()))
    assert b"KEY" in data and b"CERT" in data            # the external service's client pair, as placeholders
    assert not [d for d in data if b"-----BEGIN" in d or d == b"client certificate"]


def _external_service(tls: dict[str, Any]) -> dict[str, Any]:
    return {"type": "ExternalService", "mesh": "default", "name": "payments",
            "networking": {"address": "payments.example:443", "tls": {"enabled": True, **tls}},
            "tags": {"kuma.io/service": "payments"}}


def _user(api: LiveApi, name: str) -> dict[str, str]:
    r = api.post("/tokens/user", {"name": name, "groups": ["team-a"], "validFor": "1h"})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.text}"}


def _fields(r: Any) -> list[str]:
    return [p["field"] for p in r.json().get("invalid_parameters") or []]


def test_no_writer_can_make_the_control_plane_read_a_file_or_its_own_secrets(api: LiveApi, tmp_path: Path) -> None:
    alice = _user(api, "alice")
    remote = api.remote()
    attempts = {
        "networking.tls.clientCert.file": {"clientCert": {"file": "/etc/shadow"}},
        "networking.tls.clientKey.file": {"clientCert": {"inlineString": "c"},
                                          "clientKey": {"file": str(tmp_path / "kuma-cp.key")}},
        "networking.tls.caCert.secret": {"caCert": {"secret": "dataplane-token-signing-key-default-1"}},
    }
    for field, tls in attempts.items():
        for who, client, headers in (("alice", remote, alice), ("admin", api, {})):
            r = client.put("/meshes/default/external-services/payments", _external_service(tls), headers=headers)
            assert r.status_code == 400, (who, field, r.text)
            assert field in _fields(r), (who, r.text)
    r = api.put("/meshes/default/external-services/payments",
                _external_service({"caCert": {"secret": "default.ca-builtin-key-ca-1"}}))
    assert r.status_code == 400 and _fields(r) == ["networking.tls.caCert.secret"]
    assert "secret of the control plane" in r.json()["invalid_parameters"][0]["reason"]
    assert api.get("/meshes/default/external-services/payments").status_code == 404

    mes = {"type": "MeshExternalService", "mesh": "default", "name": "bank",
           "spec": {"match": {"type": "HostnameGenerator", "port": 443, "protocol": "tcp"},
                    "endpoints": [{"address": "bank.example", "port": 443}],
                    "tls": {"enabled": True, "verification": {"caCert": {"file": "/etc/shadow"}}}}}
    r = api.put("/meshes/default/meshexternalservices/bank", mes)
    assert r.status_code == 400 and _fields(r) == ["spec.tls.verification.caCert.file"]
    mes["spec"]["tls"]["verification"]["caCert"] = {"secret": "dataplane-token-signing-key-default-1"}
    r = api.put("/meshes/default/meshexternalservices/bank", mes)
    assert r.status_code == 400 and _fields(r) == ["spec.tls.verification.caCert.secret"]


def test_only_admins_may_reference_a_secret_or_a_file(api: LiveApi) -> None:
    alice = _user(api, "alice")
    remote = api.remote()
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n...").decode()
    assert api.put("/meshes/default/secrets/payments-ca", {"type": "Secret", "mesh": "default",
                                                           "name": "payments-ca", "data": ca}).status_code == 201
    by_secret = _external_service({"caCert": {"secret": "payments-ca"}})
    r = remote.put("/meshes/default/external-services/payments", by_secret, headers=alice)
    assert r.status_code == 403, r.text
    assert r.json()["title"] == "Access Denied"
    assert r.json()["detail"] == ('user "alice/team-a,mesh-system:authenticated" cannot use networking.tls.caCert.secret: '
                                  'only admins may make the control plane read a Secret; give the data inline '
                                  '(inline or inlineString)')
    assert api.get("/meshes/default/external-services/payments").status_code == 404
    inline = _external_service({"caCert": {"inlineString": "-----BEGIN CERTIFICATE-----\n..."}})
    assert remote.put("/meshes/default/external-services/payments", inline, headers=alice).status_code == 201
    # an admin may name the mesh's Secret; a user may not change the service while it does
    assert api.put("/meshes/default/external-services/payments", by_secret).status_code == 200
    r = remote.put("/meshes/default/external-services/payments", by_secret, headers=alice)
    assert r.status_code == 403
    # a provided CA's files would be read on the control plane's host: refused to everyone, and nothing stored
    provided = {"type": "Mesh", "name": "other", "mtls": {"backends": [
        {"name": "ca-1", "type": "provided", "conf": {"cert": {"file": "/etc/shadow"}, "key": {"file": "/etc/shadow"}}}]}}
    r = remote.put("/meshes/other", provided, headers=alice)
    assert r.status_code == 400 and "mtls.backends[0].conf.cert.file" in {p["field"] for p in r.json()["invalid_parameters"]}
    assert api.get("/meshes/other").status_code == 404
