"""What a dataplane token allows, at bootstrap and on the ADS stream, and how a proxy's several
streams keep its registration.

A real DP server (TLS front, bootstrap, ADS) on 127.0.0.1 over a real SQLite store, with dataplane
auth on; tokens are issued with the mesh's real signing key.
"""
from __future__ import annotations

import http.client
import json
import ssl
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import grpc
import pytest
import requests

from appliance.api.app import create_app
from appliance.ca.server_cert import ensure_server_cert
from appliance.config import load_config
from appliance.core.manager import ResourceManager
from appliance.core.resources.model import Resource
from appliance.runtime import dp_bootstrap, dp_lifecycle
from appliance.runtime.dataplanes import DataplaneServer
from appliance.runtime.http import HttpServer
from appliance.store.sqlite import SQLiteStore
from appliance.tokens import issuer
from appliance.tokens.claims import TokenMismatch, check_dataplane
from appliance.xds.generate import generate_sidecar
from tests.ads_proxy import Proxy
from tests.support import eventually, free_port

HOUR = 3600.0


def _dataplane(name: str, *services: str, labels: dict[str, str] | None = None) -> dict:
    return {"type": "Dataplane", "mesh": "default", "name": name, "labels": labels or {}, "networking": {
        "address": "127.0.0.1",
        "inbound": [{"port": 8080 + i, "servicePort": 18080 + i, "tags": {"kuma.io/service": s}}
                    for i, s in enumerate(services)]}}


# --- the claims, as Kuma's authenticator table (pkg/xds/auth/universal/auth_test.go) ---------------
WEB = _dataplane("dp-1", "web", "web-api")["networking"]
WITH_WORKLOAD = {"kuma.io/workload": "backend"}


@pytest.mark.parametrize("claims, labels", [
    ({"Mesh": "default"}, {}),
    ({"Mesh": "default", "Name": "dp-1"}, {}),
    ({"Mesh": "default", "Tags": {"kuma.io/service": ["web", "web-api"]}}, {}),
    ({"Mesh": "default", "Workload": "backend"}, WITH_WORKLOAD),
    ({"Mesh": "default", "Type": "dataplane"}, {}),
])
def test_claims_that_allow_the_dataplane(claims: dict, labels: dict) -> None:
    check_dataplane(claims, "default", "dp-1", {"networking": WEB}, labels)


@pytest.mark.parametrize("claims, labels, message", [
    ({"Mesh": "default", "Name": "dp-2"}, {}, "proxy name from requestor: dp-1 is different than in token: dp-2"),
    ({"Mesh": "demo"}, {}, "proxy mesh from requestor: default is different than in token: demo"),
    ({"Mesh": "default", "Tags": {"kuma.io/service": ["backend"]}}, {},
     'dataplane contains tag "kuma.io/service" with value "web" which is not allowed with this token. '
     'Allowed values in token are ["backend"]'),
    ({"Mesh": "default", "Tags": {"kuma.io/zone": ["east"]}}, {},
     'dataplane has no tag "kuma.io/zone" required by the token'),
    ({"Mesh": "default", "Tags": {"kuma.io/service": ["web"]}}, {},
     'dataplane contains tag "kuma.io/service" with value "web-api" which is not allowed with this token. '
     'Allowed values in token are ["web"]'),
    ({"Mesh": "default", "Workload": "frontend"}, WITH_WORKLOAD,
     'dataplane workload "backend" is not allowed with this token. Allowed workload in token is "frontend"'),
    ({"Mesh": "default", "Workload": "backend"}, {}, "dataplane has no workload label required by the token"),
    ({"Mesh": "default", "Type": "ingress"}, {},
     "proxy type from requestor: dataplane is different than in token: ingress"),
])
def test_claims_that_refuse_the_dataplane(claims: dict, labels: dict, message: str) -> None:
    with pytest.raises(TokenMismatch) as e:
        check_dataplane(claims, "default", "dp-1", {"networking": WEB}, labels)
    assert str(e.value) == message


def test_gateway_tags_count_as_the_dataplanes_tags() -> None:
    gateway = {"networking": {"address": "127.0.0.1", "gateway": {"tags": {"kuma.io/service": "edge"}}}}
    check_dataplane({"Tags": {"kuma.io/service": ["edge"]}}, "default", "gw-1", gateway, {})
    with pytest.raises(TokenMismatch):
        check_dataplane({"Tags": {"kuma.io/service": ["web"]}}, "default", "gw-1", gateway, {})


# --- a real DP server --------------------------------------------------------------------------------
@pytest.fixture
def dp_server(tmp_path: Path) -> Iterator[tuple[SQLiteStore, ResourceManager, bytes, DataplaneServer]]:
    with running_dp_server(tmp_path) as found:
        yield found


@contextmanager
def running_dp_server(tmp_path: Path) -> Iterator[tuple[SQLiteStore, ResourceManager, bytes, DataplaneServer]]:
    """A DP server with token auth on a new SQLite store, and the default mesh."""
    store = SQLiteStore(tmp_path / "kuma.db")
    manager = ResourceManager(store)
    manager.ensure_mesh("default")
    cert = ensure_server_cert(tmp_path / "dp-server", ["localhost"], ["127.0.0.1"])
    server = DataplaneServer(manager, cert, "127.0.0.1", free_port(), "cp-a", generate_sidecar, auth_enabled=True)
    server.start()
    try:
        yield store, manager, cert.ca_pem, server
    finally:
        server.stop()
        store.close()


def _token(store: SQLiteStore, name: str = "", tags: dict[str, list[str]] | None = None) -> str:
    return issuer.issue_dataplane_token(store, "default", name, tags or {}, "dataplane", "", HOUR)


def _bootstrap(server: DataplaneServer, ca_pem: bytes, request: dict) -> tuple[int, str]:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    context.set_alpn_protocols(["http/1.1"])
    conn = http.client.HTTPSConnection("localhost", server.port, context=context, timeout=10)
    try:
        conn.request("POST", "/bootstrap", body=json.dumps(request), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def _refused(server: DataplaneServer, ca_pem: bytes, **kw) -> str:
    with pytest.raises(grpc.RpcError) as e:
        Proxy(server.port, ca_pem, **kw)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    return e.value.details()


WEB_ONLY = {"kuma.io/service": ["web"]}
NOT_WEB = ('authentication failed: dataplane contains tag "kuma.io/service" with value "backend" which is not '
           'allowed with this token. Allowed values in token are ["web"]')


def test_bootstrap_refuses_a_dataplane_the_tokens_tags_do_not_allow(dp_server) -> None:
    store, _, ca_pem, server = dp_server
    status, body = _bootstrap(server, ca_pem, {"mesh": "default", "name": "backend-1",
                                               "dataplaneToken": _token(store, tags=WEB_ONLY),
                                               "dataplaneResource": json.dumps(_dataplane("backend-1", "backend"))})
    assert status == 401 and json.loads(body)["detail"] == NOT_WEB
    assert store.get("Dataplane", "default", "backend-1") is None
    # the same token registers what it allows
    status, body = _bootstrap(server, ca_pem, {"mesh": "default", "name": "web-1",
                                               "dataplaneToken": _token(store, tags=WEB_ONLY),
                                               "dataplaneResource": json.dumps(_dataplane("web-1", "web"))})
    assert status == 200, body


def test_bootstrap_cannot_take_over_a_dataplane_the_token_may_not_manage(dp_server) -> None:
    store, manager, ca_pem, server = dp_server
    manager.create(Resource("Dataplane", "default", "backend-1", {k: v for k, v in _dataplane(
        "backend-1", "backend").items() if k == "networking"}))
    status, body = _bootstrap(server, ca_pem, {"mesh": "default", "name": "backend-1",
                                               "dataplaneToken": _token(store, tags=WEB_ONLY),
                                               "dataplaneResource": json.dumps(_dataplane("backend-1", "web"))})
    assert status == 401
    assert json.loads(body)["detail"] == ("authentication failed: you are trying to override existing proxy to "
                                          "which you don't have an access.: " + NOT_WEB.split(": ", 1)[1])
    stored = store.get("Dataplane", "default", "backend-1")
    assert stored.content["networking"]["inbound"][0]["tags"]["kuma.io/service"] == "backend"


def test_bootstrap_without_a_token_is_refused_as_kuma_does(dp_server) -> None:
    store, manager, ca_pem, server = dp_server
    manager.create(Resource("Dataplane", "default", "backend-1", {"networking": _dataplane(
        "backend-1", "backend")["networking"]}))
    status, body = _bootstrap(server, ca_pem, {"mesh": "default", "name": "backend-1"})
    assert status == 422, body
    assert body == dp_bootstrap.DP_TOKEN_REQUIRED
    assert body.startswith("Dataplane Token is required. Generate token using 'kumactl generate dataplane-token")


def test_ads_refuses_a_stream_the_tokens_tags_do_not_allow(dp_server) -> None:
    store, manager, ca_pem, server = dp_server
    web_token = _token(store, tags=WEB_ONLY)
    # a definition of its own in the node metadata
    assert _refused(server, ca_pem, definition=_dataplane("backend-1", "backend"), token=web_token,
                    node_id="default.backend-1") == NOT_WEB
    assert store.get("Dataplane", "default", "backend-1") is None
    # a stored Dataplane, no definition
    manager.create(Resource("Dataplane", "default", "backend-1", {"networking": _dataplane(
        "backend-1", "backend")["networking"]}))
    assert _refused(server, ca_pem, definition=None, token=web_token, node_id="default.backend-1") == NOT_WEB
    # a definition the token allows does not make the stored one its own
    assert _refused(server, ca_pem, definition=_dataplane("backend-1", "web"), token=web_token,
                    node_id="default.backend-1") == (
        "authentication failed: you are trying to override existing proxy to which you don't have an access.: "
        + NOT_WEB.split(": ", 1)[1])
    # a definition for another proxy than the node id says
    assert "does not match proxy resource default.web-1" in _refused(
        server, ca_pem, definition=_dataplane("web-1", "web"), token=web_token, node_id="default.web-2")
    # what the token allows connects
    proxy = Proxy(server.port, ca_pem, definition=_dataplane("web-1", "web"), token=web_token)
    proxy.close()


def test_a_second_stream_that_closes_leaves_the_proxy_registered_and_online(dp_server, monkeypatch) -> None:
    store, _, ca_pem, server = dp_server
    monkeypatch.setattr(dp_lifecycle, "DEREGISTER_AFTER", 0.2)
    token = _token(store, name="web-1")
    first = Proxy(server.port, ca_pem, definition=_dataplane("web-1", "web"), token=token)
    try:
        eventually(lambda: store.get("DataplaneInsight", "default", "web-1") is not None)
        second = Proxy(server.port, ca_pem, definition=_dataplane("web-1", "web"), token=token)
        eventually(lambda: len(store.get("DataplaneInsight", "default", "web-1").content["subscriptions"]) == 2)
        second.close()
        # the second stream's end is recorded; the first one's subscription stays open
        eventually(lambda: sum(1 for s in store.get("DataplaneInsight", "default", "web-1").content[
            "subscriptions"] if s.get("disconnectTime")) == 1)
        assert server.call(lambda: dict(server.registrar.pending_removal)) == {}
        assert store.get("Dataplane", "default", "web-1") is not None
        subs = store.get("DataplaneInsight", "default", "web-1").content["subscriptions"]
        assert [bool(s.get("disconnectTime")) for s in subs] == [False, True]
        assert server.streams_active() == 1
    finally:
        first.close()
    # the last stream gone: the Dataplane goes
    eventually(lambda: store.get("Dataplane", "default", "web-1") is None)


# --- kuma-dp's definition passes the REST API's rules (one home: core/manager.check_write) -------------
@pytest.fixture
def api_url(dp_server, tmp_path: Path) -> Iterator[str]:
    """The REST API over the same store as `dp_server`, on 127.0.0.1 (the local admin)."""
    _, manager, _, _ = dp_server
    app = create_app(load_config(env={"KUMA_GENERAL_WORK_DIR": str(tmp_path)}), manager, "cp-a")
    server = HttpServer(app, "127.0.0.1", 0, threads=2).start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


BROKEN_RULES = {
    "workload label": {"kuma.io/workload": "MyWorkload"},
    "label key": {"bad key!": "x"},
    "zone label": {"kuma.io/zone": "east"},
    "origin label": {"kuma.io/origin": "elsewhere"},
}


@pytest.mark.parametrize("labels", BROKEN_RULES.values(), ids=BROKEN_RULES.keys())
def test_bootstrap_refuses_a_definition_the_api_refuses_with_the_apis_answer(dp_server, api_url, labels) -> None:
    store, _, ca_pem, server = dp_server
    definition = _dataplane("web-1", "web", labels=labels)
    api = requests.put(f"{api_url}/meshes/default/dataplanes/web-1", json=definition, timeout=10)
    assert api.status_code == 400, api.text
    status, body = _bootstrap(server, ca_pem, {"mesh": "default", "name": "web-1", "dataplaneToken": _token(store),
                                               "dataplaneResource": json.dumps(definition)})
    assert (status, json.loads(body)) == (400, api.json())
    assert store.get("Dataplane", "default", "web-1") is None


def test_bootstrap_cannot_change_an_immutable_label_the_api_keeps(dp_server, api_url) -> None:
    store, _, ca_pem, server = dp_server
    r = requests.put(f"{api_url}/meshes/default/dataplanes/web-1", json=_dataplane("web-1", "web"), timeout=10)
    assert r.status_code == 201, r.text
    changed = _dataplane("web-1", "web", labels={"kuma.io/origin": "global"})
    api = requests.put(f"{api_url}/meshes/default/dataplanes/web-1", json=changed, timeout=10)
    assert api.status_code == 400 and api.json()["title"] == "Could not update a resource", api.text
    status, body = _bootstrap(server, ca_pem, {"mesh": "default", "name": "web-1", "dataplaneToken": _token(store),
                                               "dataplaneResource": json.dumps(changed)})
    assert (status, json.loads(body)) == (400, api.json())
    assert store.get("Dataplane", "default", "web-1").labels["kuma.io/origin"] == "zone"


def test_ads_refuses_a_stream_whose_definition_the_api_refuses(dp_server) -> None:
    store, _, ca_pem, server = dp_server
    message = _refused(server, ca_pem, definition=_dataplane("web-1", "web", labels={"kuma.io/zone": "east"}),
                       token=_token(store))
    assert message == ('the Dataplane in the node metadata is not valid: Resource is not valid; '
                       'labels["kuma.io/zone"]: kuma.io/zone label should have default value')
    assert store.get("Dataplane", "default", "web-1") is None
