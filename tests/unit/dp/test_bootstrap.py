"""`POST /bootstrap` against a stub control plane: the request's shape, TLS, and Kuma's retry rules."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from appliance.dp.bootstrap import BootstrapClient, build_request
from appliance.dp.config import DpConfig, DpError
from appliance.dp.envoy import EnvoyVersion
from appliance.dp.resource import Identity
from tests.support import free_port
from tests.unit.dp.stub import StubCp, bootstrap_response, envoy_bootstrap

ENVOY = EnvoyVersion("1.40.0", "9e55/1.40.0/Clean/RELEASE/BoringSSL", True)
DATAPLANE = {"type": "Dataplane", "mesh": "default", "name": "web-1",
             "networking": {"address": "127.0.0.1", "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}]}}
OK = bootstrap_response(envoy_bootstrap(listener_port=10001, admin_port=9901))


def _request(cfg: DpConfig, work_dir: Path, ca_pem: str = "") -> dict:
    return build_request(cfg, Identity("web-1", "default", DATAPLANE), "tok.en.x", "/w/token", ENVOY, work_dir, ca_pem)


def _client(stub: StubCp, **kw) -> BootstrapClient:
    cfg = DpConfig(cp_address=stub.url, retry_backoff=0.05, retry_max_duration=kw.pop("max_duration", 2.0), **kw)
    return BootstrapClient(cfg, Path(stub.cert).read_text() if "ca_cert_file" in kw else "")


def test_request_is_kumas_bootstrap_request(tmp_path: Path) -> None:
    req = _request(DpConfig(), tmp_path, ca_pem="PEM")
    # pkg/xds/bootstrap/types/bootstrap_request.go: the fields and their JSON names
    assert list(req) == ["mesh", "name", "proxyType", "dataplaneToken", "dataplaneTokenPath", "dataplaneResource",
                         "version", "caCert", "dynamicMetadata", "dnsPort", "operatingSystem", "features", "resources",
                         "workdir", "metricsResources", "systemCaPath", "ipv6Enabled", "spireResources"]
    assert (req["mesh"], req["name"], req["proxyType"], req["dataplaneToken"], req["caCert"]) == (
        "default", "web-1", "dataplane", "tok.en.x", "PEM")
    assert json.loads(req["dataplaneResource"]) == DATAPLANE          # the resource as a JSON string
    assert req["version"]["envoy"] == {"version": "1.40.0", "build": ENVOY.build, "kumaDpCompatible": True}
    assert set(req["version"]["kumaDp"]) == {"version", "gitTag", "gitCommit", "buildDate"}
    assert req["workdir"] == str(tmp_path) and req["operatingSystem"] == "linux"
    assert set(req["resources"]) == {"maxHeapSizeBytes"} and isinstance(req["ipv6Enabled"], bool)
    assert req["dynamicMetadata"] == {} and req["features"]
    bare = build_request(DpConfig(name="web-1", mesh="default"), Identity("web-1", "default", None), "", "", ENVOY,
                         tmp_path, "")
    assert not {"dataplaneToken", "dataplaneTokenPath", "dataplaneResource"} & set(bare)


def test_fetch_with_ca_cert_file(stub: StubCp, tmp_path: Path) -> None:
    stub.script = [OK]
    client = _client(stub, ca_cert_file=str(stub.cert))
    boot = client.fetch(_request(client.cfg, tmp_path))
    assert boot.config["admin"]["address"]["socketAddress"]["portValue"] == 9901
    assert "hello from envoy" in boot.yaml_text and boot.sidecar["networking"]["address"] == "127.0.0.1"
    got = stub.received[0]
    assert got.path == "/bootstrap" and got.headers["content-type"] == "application/json"
    assert got.headers["accept"] == "application/json" and got.body["name"] == "web-1"


def test_skip_verify(stub: StubCp, tmp_path: Path) -> None:
    stub.script = [OK]
    client = _client(stub, skip_verify=True)
    assert client.fetch(_request(client.cfg, tmp_path)).config["node"]["id"] == "default.web-1"


def test_untrusted_certificate_stops_at_once_and_says_what_to_do(stub: StubCp, tmp_path: Path) -> None:
    client = _client(stub, max_duration=30.0)   # the system trust store does not know the stub's CA
    start = time.monotonic()
    with pytest.raises(DpError) as e:
        client.fetch(_request(client.cfg, tmp_path))
    assert time.monotonic() - start < 5 and not stub.received
    assert "not trusted by this system" in str(e.value) and "--ca-cert-file" in str(e.value)
    assert "--skip-verify" in str(e.value)


def test_not_found_is_retried_until_the_dataplane_exists(stub: StubCp, tmp_path: Path) -> None:
    stub.script = [(404, b""), (404, b""), OK]
    client = _client(stub, skip_verify=True)
    client.fetch(_request(client.cfg, tmp_path))
    assert len(stub.received) == 3


def test_not_found_gives_up_after_max_duration(stub: StubCp, tmp_path: Path) -> None:
    stub.script = [(404, b"")]
    client = _client(stub, skip_verify=True, max_duration=0.3)
    start = time.monotonic()
    with pytest.raises(DpError, match="does not know dataplane default/web-1 .gave up after 300ms.*--dataplane-file"):
        client.fetch(_request(client.cfg, tmp_path))
    assert 0.3 <= time.monotonic() - start < 2 and len(stub.received) >= 3


def test_server_errors_are_retried(stub: StubCp, tmp_path: Path) -> None:
    stub.script = [(500, b""), (503, b"busy"), OK]
    client = _client(stub, skip_verify=True)
    client.fetch(_request(client.cfg, tmp_path))
    assert len(stub.received) == 3


@pytest.mark.parametrize("status,body,expected", [
    (401, json.dumps({"type": "/std-errors", "status": 401, "title": "Unauthorized",
                      "detail": "invalid dataplane token: signature is invalid"}).encode(),
     "(HTTP 401): Unauthorized: invalid dataplane token: signature is invalid; check the dataplane token"),
    (403, json.dumps({"title": "Forbidden", "detail": "Forbidden"}).encode(), "(HTTP 403): Forbidden; check"),
    (422, b"Dataplane Token is required. Generate token using 'kumactl generate dataplane-token > /path/file'\n",
     "(HTTP 422): Dataplane Token is required. Generate token using"),
    (400, json.dumps({"title": "Could not process a resource", "detail": "Resource is not valid",
                      "invalid_parameters": [{"field": "networking.address", "reason": "address can't be empty"}]}
                     ).encode(),
     "(HTTP 400): Could not process a resource: Resource is not valid (networking.address: address can't be empty)"),
    (404, b'{"title": "404 Not Found"}', "(HTTP 404): 404 Not Found; is --cp-address the DP server"),
])
def test_client_errors_are_not_retried(stub: StubCp, tmp_path: Path, status: int, body: bytes, expected: str) -> None:
    stub.script = [(status, body)]
    client = _client(stub, skip_verify=True)
    with pytest.raises(DpError) as e:
        client.fetch(_request(client.cfg, tmp_path))
    assert len(stub.received) == 1
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_unreachable_control_plane_is_retried_then_named(tmp_path: Path) -> None:
    cfg = DpConfig(cp_address=f"https://127.0.0.1:{free_port()}", retry_backoff=0.05, retry_max_duration=0.3)
    sleeps: list[float] = []
    client = BootstrapClient(cfg, "", sleep=lambda s: (sleeps.append(s), time.sleep(s)))
    with pytest.raises(DpError) as e:
        client.fetch(_request(cfg, tmp_path))
    message = str(e.value)
    assert message.startswith(f"could not fetch the Envoy bootstrap from {cfg.cp_address}/bootstrap for 300ms")
    assert "connection refused" in message and "\n" not in message
    assert len(sleeps) >= 3 and all(s <= 0.05 for s in sleeps)


def test_last_wait_is_cut_to_the_deadline(tmp_path: Path) -> None:
    """go-retry's WithMaxDuration over a constant backoff: attempts at 0, 3 s, 6 s, ... and one at the end."""
    now = [0.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    cfg = DpConfig(cp_address=f"http://127.0.0.1:{free_port()}", retry_backoff=3.0, retry_max_duration=10.0)
    client = BootstrapClient(cfg, "", sleep=sleep, clock=lambda: now[0])
    with pytest.raises(DpError, match="for 10s"):
        client.fetch(_request(cfg, tmp_path))
    assert sleeps == [3.0, 3.0, 3.0, 1.0]


def test_plain_http_and_bad_addresses(tmp_path: Path) -> None:
    stub = StubCp(tmp_path, script=[OK], tls=False).start()
    try:
        client = BootstrapClient(DpConfig(cp_address=stub.url + "/ignored/path"), "")
        assert client.fetch(_request(client.cfg, tmp_path)).config["node"]["cluster"] == "web"
        assert stub.received[0].path == "/bootstrap"
    finally:
        stub.stop()
    with pytest.raises(DpError, match="unsupported URL scheme 'grpcs'"):
        BootstrapClient(DpConfig(cp_address="grpcs://cp:5678"), "")
    with pytest.raises(DpError, match="could not add the certificate"):
        BootstrapClient(DpConfig(ca_cert_file="x.pem"), "not a pem")


def test_response_that_is_not_a_bootstrap(stub: StubCp, tmp_path: Path) -> None:
    stub.script = [(200, b"admin: {}\n")]
    client = _client(stub, skip_verify=True)
    with pytest.raises(DpError, match="sent a response that is not a bootstrap"):
        client.fetch(_request(client.cfg, tmp_path))
