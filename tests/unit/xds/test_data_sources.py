"""What a resource's data sources may put in a proxy's config, whatever the store holds (the second
line behind validation): never a file of the control plane's host, never one of its own Secrets."""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Iterator

import pytest

from appliance.ca.builtin import ca_secret_names
from appliance.core.manager import ResourceManager
from appliance.core.resources.model import Resource
from appliance.core.resources.secret import is_system_secret
from appliance.runtime.defaults import ADMIN_TOKEN_SECRET
from appliance.store.sqlite import SQLiteStore
from appliance.tokens import issuer, signing
from appliance.xds.generate import generate_sidecar
from appliance.xds.generate.egress import EgressProxy, generate_egress
from appliance.model.proxy import Identity
from appliance.xds.snapshot import build_snapshot, proxy_from_dataplane

MTLS = {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}


def test_every_secret_the_control_plane_makes_is_a_system_secret() -> None:
    for name in (signing.signing_key_name(signing.DATAPLANE_TOKEN_SIGNING_KEY_PREFIX + "default"),
                 signing.signing_key_name(signing.USER_TOKEN_SIGNING_KEY_PREFIX),
                 signing.signing_key_name(issuer.ZONE_TOKEN_SIGNING_KEY_PREFIX),
                 ADMIN_TOKEN_SECRET, *ca_secret_names("default", "ca-1")):
        assert is_system_secret(name), name
    for name in ("payments-ca", "default.client-key", "token-signing"):
        assert not is_system_secret(name), name


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "kuma.db")
    yield store
    store.close()


def _serialized(resources: dict) -> bytes:
    return b"".join(m.SerializeToString() for items in resources.values() for m in items.values())


@pytest.mark.parametrize("tls", [
    {"caCert": {"secret": "dataplane-token-signing-key-default-1"}},
    {"clientCert": {"inlineString": "c"}, "clientKey": {"secret": "default.ca-builtin-key-ca-1"}},
    {"clientCert": {"inlineString": "c"}, "clientKey": {"file": "KEY_FILE"}},
    {"caCert": {"secret": "not-there"}},
], ids=["signing-key", "ca-key", "file", "missing-secret"])
def test_an_external_service_naming_what_proxies_may_not_get_is_left_out(tmp_path: Path, store: SQLiteStore,
                                                                         tls: dict) -> None:
    manager = ResourceManager(store)
    manager.ensure_mesh("default")
    manager.update(Resource("Mesh", "", "default", {"mtls": MTLS}), store.get("Mesh", "", "default").version)
    key_file = tmp_path / "cp.key"
    key_file.write_bytes(b"-----BEGIN PRIVATE KEY-----\nhost file\n-----END PRIVATE KEY-----\n")
    tls = {k: {kind: str(key_file) if value == "KEY_FILE" else value for kind, value in v.items()}
           for k, v in tls.items()}
    # straight into the store, as an older version or a direct database write could have left it
    store.create(Resource("ExternalService", "default", "payments", {
        "networking": {"address": "payments.example:443", "tls": {"enabled": True, **tls}},
        "tags": {"kuma.io/service": "payments"}}))
    store.create(Resource("ExternalService", "default", "plain", {
        "networking": {"address": "plain.example:80"}, "tags": {"kuma.io/service": "plain"}}))
    web = Resource("Dataplane", "default", "web-1", {"networking": {
        "address": "127.0.0.1", "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}],
        "outbound": [{"port": 10001, "tags": {"kuma.io/service": "payments"}}]}})
    store.create(web)

    snapshot = build_snapshot(store, "default", store.revision())
    assert snapshot is not None
    assert set(snapshot.external_services) == {"plain"}
    forbidden = [key_file.read_bytes()] + [base64.b64decode(s.content["data"]) for s in (
        store.get("Secret", "default", "dataplane-token-signing-key-default-1"),
        store.get("Secret", "default", "default.ca-builtin-key-ca-1"))]
    identity = Identity(b"cert", b"key", 0.0)
    sidecar = _serialized(generate_sidecar(snapshot, proxy_from_dataplane(web), identity))
    egress = _serialized(generate_egress(EgressProxy("egress-1", "127.0.0.1", 10002), [snapshot],
                                         {"default": identity}))
    for data in forbidden:
        assert data not in sidecar and data not in egress


def test_a_secret_of_the_mesh_still_reaches_the_proxies(store: SQLiteStore) -> None:
    ResourceManager(store).ensure_mesh("default")
    store.create(Resource("Secret", "default", "payments-ca", {"data": base64.b64encode(b"the CA").decode()}))
    store.create(Resource("ExternalService", "default", "payments", {
        "networking": {"address": "payments.example:443", "tls": {"enabled": True,
                                                                  "caCert": {"secret": "payments-ca"}}},
        "tags": {"kuma.io/service": "payments"}}))
    snapshot = build_snapshot(store, "default", store.revision())
    assert snapshot is not None and snapshot.external_services["payments"].tls.ca_cert == b"the CA"


def test_a_mesh_external_service_naming_a_signing_key_is_left_out(store: SQLiteStore) -> None:
    ResourceManager(store).ensure_mesh("default")
    for name, source in (("bank", {"secret": "dataplane-token-signing-key-default-1"}), ("shop", {"inlineString": "ca"})):
        store.create(Resource("MeshExternalService", "default", name, {"spec": {
            "match": {"type": "HostnameGenerator", "port": 443, "protocol": "tcp"},
            "endpoints": [{"address": f"{name}.example", "port": 443}],
            "tls": {"enabled": True, "verification": {"caCert": source}}}}))
    snapshot = build_snapshot(store, "default", store.revision())
    assert snapshot is not None
    assert {m.name for m in snapshot.mesh_external_services.values()} == {"shop"}
