"""The bootstrap of a kuma-dp with `--transparent-proxy`: its config and DNS port reach the node metadata, and
a definition that still lists outbounds is refused as Kuma refuses it."""
from __future__ import annotations

import base64
import json

from pathlib import Path
from typing import Iterator

import pytest
import yaml

from tests.unit.test_dataplane_auth import _bootstrap, _dataplane, _token, running_dp_server

TP_CONFIG = {"ipFamilyMode": "ipv4", "redirect": {"inbound": {"enabled": True, "port": 15006},
                                                 "outbound": {"enabled": True, "port": 15001},
                                                 "dns": {"enabled": True, "port": 15053}, "vnet": {}}}


@pytest.fixture
def dp_server(tmp_path: Path) -> Iterator[tuple]:
    with running_dp_server(tmp_path) as found:
        yield found


def test_transparent_proxy_config_and_dns_port_reach_the_node_metadata(dp_server) -> None:
    store, _, ca_pem, server = dp_server
    status, body = _bootstrap(server, ca_pem, {
        "mesh": "default", "name": "web-1", "dataplaneToken": _token(store, "web-1"),
        "dataplaneResource": json.dumps(_dataplane("web-1", "web")), "dnsPort": 15054,
        "dataplaneConfig": TP_CONFIG, "features": ["feature-transparent-proxy-in-dataplane-metadata"]})
    assert status == 200, body
    metadata = yaml.safe_load(base64.b64decode(json.loads(body)["bootstrap"]))["node"]["metadata"]
    assert metadata["dataplane.dns.port"] == "15054"
    assert metadata["transparentProxy"] == TP_CONFIG


def test_a_transparent_proxy_definition_with_outbounds_is_refused(dp_server) -> None:
    store, _, ca_pem, server = dp_server
    definition = _dataplane("web-1", "web")
    definition["networking"]["outbound"] = [{"port": 10001, "tags": {"kuma.io/service": "backend"}}]
    status, body = _bootstrap(server, ca_pem, {
        "mesh": "default", "name": "web-1", "dataplaneToken": _token(store, "web-1"),
        "dataplaneResource": json.dumps(definition), "dataplaneConfig": TP_CONFIG})
    assert status == 400, body
    assert [(v["field"], v["reason"]) for v in json.loads(body)["invalid_parameters"]] == [
        ("outbound", "should be empty since dataplane is in Transparent Proxying mode")]
    assert store.get("Dataplane", "default", "web-1") is None
