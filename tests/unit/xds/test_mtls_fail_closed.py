"""A mesh that asks for mTLS never runs without it: when its CA cannot be used, its sidecars get no
listener at all (no plaintext inbound, no plaintext outbound), the reason is on the snapshot and logged
once per change."""
from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Iterator

import pytest

from appliance.ca import builtin
from appliance.core.resources.model import Resource
from appliance.store.sqlite import SQLiteStore
from appliance.xds.generate import generate_sidecar
from appliance.xds.generate import names
from appliance.xds.snapshot import build_snapshot, proxy_from_dataplane

WEB = Resource("Dataplane", "default", "web-1", {"networking": {
    "address": "127.0.0.1", "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}],
    "outbound": [{"port": 10001, "tags": {"kuma.io/service": "backend"}}]}})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "kuma.db")
    yield store
    store.close()


def _secret(store: SQLiteStore, name: str, data: bytes) -> None:
    store.create(Resource("Secret", "default", name, {"data": base64.b64encode(data).decode()}))


def _mesh(store: SQLiteStore, backend: dict) -> None:
    # straight into the store, as a skipValidation Mesh, an older version or a direct database write leaves it
    store.create(Resource("Mesh", "", "default", {"mtls": {"enabledBackend": backend["name"], "backends": [backend]}}))
    store.create(WEB)


def _listeners(store: SQLiteStore) -> dict:
    snapshot = build_snapshot(store, "default", store.revision())
    assert snapshot is not None
    return generate_sidecar(snapshot, proxy_from_dataplane(WEB), None)[names.LISTENER]


def test_a_builtin_backend_without_its_ca_secrets_gives_no_listener(store: SQLiteStore,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    _mesh(store, {"name": "ca-1", "type": "builtin"})
    with caplog.at_level(logging.ERROR, "appliance.xds"):
        assert _listeners(store) == {}
        assert _listeners(store) == {}   # a second revision with the same problem: not logged again
    problems = [r.getMessage() for r in caplog.records if "fails closed" in r.getMessage()]
    assert len(problems) == 1 and "default.ca-builtin-cert-ca-1" in problems[0]


def test_a_provided_backend_naming_a_missing_secret_gives_no_listener(store: SQLiteStore) -> None:
    _mesh(store, {"name": "mine", "type": "provided",
                  "conf": {"cert": {"secret": "my-ca-cert"}, "key": {"secret": "my-ca-key"}}})
    snapshot = build_snapshot(store, "default", store.revision())
    assert snapshot is not None and snapshot.mtls is None
    assert 'resource not found: type="Secret" name="my-ca-cert" mesh="default"' in (snapshot.mtls_error or "")
    assert _listeners(store) == {}


def test_a_key_that_does_not_match_the_certificate_gives_no_listener(store: SQLiteStore) -> None:
    cert, _ = builtin.new_root_ca("default", "mine", 1024)
    _, other_key = builtin.new_root_ca("default", "mine", 1024)
    _secret(store, "my-ca-cert", cert)
    _secret(store, "my-ca-key", other_key)
    _mesh(store, {"name": "mine", "type": "provided",
                  "conf": {"cert": {"secret": "my-ca-cert"}, "key": {"secret": "my-ca-key"}}})
    assert _listeners(store) == {}
    store.update(Resource("Secret", "default", "my-ca-key", {"data": base64.b64encode(
        builtin.new_root_ca("default", "mine", 1024)[1]).decode()}), store.get("Secret", "default", "my-ca-key").version)
    assert _listeners(store) == {}


def test_a_usable_ca_gives_mtls_listeners(store: SQLiteStore) -> None:
    cert, key = builtin.new_root_ca("default", "mine", 1024)
    _secret(store, "my-ca-cert", cert)
    _secret(store, "my-ca-key", key)
    _mesh(store, {"name": "mine", "type": "provided",
                  "conf": {"cert": {"secret": "my-ca-cert"}, "key": {"inlineString": key.decode()}}})
    snapshot = build_snapshot(store, "default", store.revision())
    assert snapshot is not None and snapshot.mtls_error is None and snapshot.mtls is not None
    assert snapshot.mtls.ca_cert_pem == cert and key.decode() not in repr(snapshot)
    assert set(_listeners(store)) == {"inbound:127.0.0.1:8080", "outbound:127.0.0.1:10001"}
