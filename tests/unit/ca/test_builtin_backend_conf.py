"""The builtin CA backend's settings take effect: `caCert.RSAbits` and `caCert.expiration` shape the mesh CA
made when the backend appears, `dpCert.rotation.expiration` the lifetime of the workload certificates;
values the CA cannot be made with are a 400 naming the field."""
from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509

from appliance.core.manager import ResourceManager
from appliance.core.resources import mesh
from appliance.core.resources.model import Resource
from appliance.core.validation import Violations
from appliance.store.sqlite import SQLiteStore
from appliance.xds.identity import IdentityProvider
from appliance.xds.snapshot import build_snapshot, proxy_from_dataplane


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[ResourceManager]:
    store = SQLiteStore(tmp_path / "kuma.db")
    yield ResourceManager(store)
    store.close()


def test_the_ca_and_workload_certificates_follow_the_backend(manager: ResourceManager) -> None:
    backend = {"name": "ca-1", "type": "builtin", "dpCert": {"rotation": {"expiration": "2h"}},
               "conf": {"caCert": {"RSAbits": 3072, "expiration": "2d"}}}
    manager.create(Resource("Mesh", "", "default", {"mtls": {"enabledBackend": "ca-1", "backends": [backend]}}))
    now = time.time()
    ca = x509.load_pem_x509_certificate(base64.b64decode(
        manager.get("Secret", "default", "default.ca-builtin-cert-ca-1").content["data"]))
    assert ca.public_key().key_size == 3072
    assert abs(ca.not_valid_after_utc.timestamp() - (now + 2 * 86400)) < 60

    snapshot = build_snapshot(manager.store, "default", manager.store.revision())
    assert snapshot is not None
    web = proxy_from_dataplane(Resource("Dataplane", "default", "web-1", {"networking": {
        "address": "127.0.0.1", "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}]}}))
    identity = IdentityProvider(manager.store).get(snapshot, web)
    assert identity is not None
    workload = x509.load_pem_x509_certificate(identity.cert_pem)
    assert abs(workload.not_valid_after_utc.timestamp() - (now + 2 * 3600)) < 60


@pytest.mark.parametrize("ca_cert, expected", [
    ({"RSAbits": 512}, [("mtls.backends[0].conf.caCert.RSAbits", "must be between 1024 and 8192 (or unset: 2048)")]),
    ({"RSAbits": 100000}, [("mtls.backends[0].conf.caCert.RSAbits", "must be between 1024 and 8192 (or unset: 2048)")]),
    ({"expiration": "10 years"}, [("mtls.backends[0].conf.caCert.expiration",
                                   "has to be a valid format (a number and one of y, w, d, h, m, s, ms)")]),
    ({"RSAbits": 4096, "expiration": "5y"}, []),
])
def test_values_the_ca_cannot_be_made_with_are_refused(ca_cert: dict, expected: list) -> None:
    out = Violations()
    mesh.validate({"mtls": {"backends": [{"name": "ca-1", "type": "builtin", "conf": {"caCert": ca_cert}}]}}, out)
    assert [(v.field, v.reason) for v in out.items] == expected
