"""MeshProxyPatch on generated resources: one golden per modification kind, Kuma's matching (name, origin,
listener tags, route configuration), inbound routes patched before they go to RDS, shared outbound
messages left alone, all-or-nothing on failure, and the real Envoy accepts what the goldens show."""
from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from appliance.model import names
from appliance.model.proxy import GenerationError, Identity
from appliance.xds.generate import generate_sidecar
from tests.unit.xds.golden import assert_golden, to_dict
from tests.unit.xds.scenarios import IDENTITY, default_policies, policy, snapshot, web_proxy

MPP = "MeshProxyPatch"
WEB_INBOUND = "inbound:10.0.0.1:8080"
BACKEND_OUTBOUND = "outbound:127.0.0.1:10001"
DB_OUTBOUND = "outbound:127.0.0.1:10002"


def patch(name: str, *modifications: dict[str, Any], target: dict[str, Any] | None = None):
    return policy(MPP, name, {"targetRef": target or {"kind": "Mesh"},
                              "default": {"appendModifications": list(modifications)}})


def _generate(*patches, proxy=None, mtls: str | None = None, cache=None):
    return generate_sidecar(snapshot(mtls, policies=default_policies(extra=patches)), proxy or web_proxy(),
                            IDENTITY if mtls else None, cache=cache)


def _hcm(resources: dict, listener: str) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager()
    for network_filter in resources[names.LISTENER][listener].filter_chains[0].filters:
        if network_filter.name == names.HCM_FILTER:
            network_filter.typed_config.Unpack(hcm)
    return hcm


def _golden(name: str, resources: dict, **picked: list[str]) -> None:
    """The resources a test is about, by type (listeners, clusters, routes) and name."""
    type_urls = {"listeners": names.LISTENER, "clusters": names.CLUSTER, "routes": names.ROUTE}
    dumped = {kind: {n: to_dict(resources[type_urls[kind]][n]) for n in wanted} for kind, wanted in picked.items()}
    assert_golden(name, yaml.safe_dump(dumped, sort_keys=True, width=120))


# --- cluster ------------------------------------------------------------------------------------------------

CLUSTER_MODS = patch(
    "clusters",
    {"cluster": {"operation": "Add", "value": "name: xyz\nconnectTimeout: 5s\ntype: STATIC\n"}},
    {"cluster": {"operation": "Patch", "match": {"origin": "inbound"}, "value": "connectTimeout: 7s\n"}},
    {"cluster": {"operation": "Patch", "match": {"name": "backend"},
                 "jsonPatches": [{"op": "replace", "path": "/connectTimeout", "value": "9s"},
                                 {"op": "add", "path": "/perConnectionBufferLimitBytes", "value": 1024}]}},
    {"cluster": {"operation": "Remove", "match": {"name": "db", "origin": "outbound"}}},
)


def test_cluster_add_patch_and_remove() -> None:
    resources = _generate(CLUSTER_MODS)
    clusters = resources[names.CLUSTER]
    assert sorted(clusters) == ["backend", "localhost:8081", "xyz"]
    assert clusters["localhost:8081"].connect_timeout.seconds == 7     # a Duration is replaced, not merged
    assert (clusters["backend"].connect_timeout.seconds, clusters["backend"].per_connection_buffer_limit_bytes.value) \
        == (9, 1024)
    _golden("mpp-cluster.yaml", resources, clusters=sorted(clusters))


def test_origin_of_an_added_cluster_is_kumas() -> None:
    resources = _generate(patch(
        "added", {"cluster": {"operation": "Add", "value": "name: xyz\nconnectTimeout: 5s\n"}},
        {"cluster": {"operation": "Patch", "match": {"origin": "proxy-template-modifications"},
                     "value": "connectTimeout: 1s\n"}}))
    assert resources[names.CLUSTER]["xyz"].connect_timeout.seconds == 1
    assert resources[names.CLUSTER]["backend"].connect_timeout.seconds != 1


# --- listener -----------------------------------------------------------------------------------------------

LISTENER_MODS = patch(
    "listeners",
    {"listener": {"operation": "Add", "value": "name: extra\naddress:\n  socketAddress:\n"
                                               "    address: 127.0.0.1\n    portValue: 9999\n"}},
    {"listener": {"operation": "Patch", "match": {"tags": {"kuma.io/service": "web"}},
                  "jsonPatches": [{"op": "add", "path": "/perConnectionBufferLimitBytes", "value": 32768}]}},
    {"listener": {"operation": "Patch", "match": {"name": BACKEND_OUTBOUND},
                  "value": "perConnectionBufferLimitBytes: 16384\n"}},
    {"listener": {"operation": "Remove", "match": {"name": DB_OUTBOUND}}},
)


def test_listener_add_patch_and_remove() -> None:
    resources = _generate(LISTENER_MODS)
    listeners = resources[names.LISTENER]
    assert sorted(listeners) == ["extra", WEB_INBOUND, BACKEND_OUTBOUND]
    assert listeners[WEB_INBOUND].per_connection_buffer_limit_bytes.value == 32768
    assert listeners[BACKEND_OUTBOUND].per_connection_buffer_limit_bytes.value == 16384
    _golden("mpp-listener.yaml", resources, listeners=sorted(listeners))


def test_listener_tags_that_do_not_match_select_nothing() -> None:
    resources = _generate(patch("none", {"listener": {"operation": "Remove", "match": {"tags": {"team": "other"}}}}))
    assert WEB_INBOUND in resources[names.LISTENER]


# --- networkFilter ------------------------------------------------------------------------------------------

NETWORK_FILTER_MODS = patch(
    "network-filters",
    {"networkFilter": {"operation": "AddFirst", "match": {"origin": "inbound"}, "value": (
        "name: envoy.filters.network.connection_limit\ntypedConfig:\n"
        "  '@type': type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit\n"
        "  statPrefix: limit\n  maxConnections: 100\n")}},
    {"networkFilter": {"operation": "Patch", "match": {"name": names.TCP_PROXY_FILTER, "listenerName": DB_OUTBOUND},
                       "value": ("name: envoy.filters.network.tcp_proxy\ntypedConfig:\n"
                                 "  '@type': type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n"
                                 "  idleTimeout: 30s\n")}},
    {"networkFilter": {"operation": "AddAfter",
                       "match": {"name": names.TCP_PROXY_FILTER, "listenerName": DB_OUTBOUND},
                       "value": "name: never.added.after.the.terminal.filter\n"}},
    {"networkFilter": {"operation": "Remove",
                       "match": {"name": "never.added.after.the.terminal.filter", "listenerName": DB_OUTBOUND}}},
)


def test_network_filter_add_patch_and_remove() -> None:
    resources = _generate(NETWORK_FILTER_MODS)
    listeners = resources[names.LISTENER]
    assert [f.name for f in listeners[WEB_INBOUND].filter_chains[0].filters] == \
        ["envoy.filters.network.connection_limit", names.HCM_FILTER]
    assert [f.name for f in listeners[DB_OUTBOUND].filter_chains[0].filters] == [names.TCP_PROXY_FILTER]
    _golden("mpp-network-filter.yaml", resources, listeners=[WEB_INBOUND, DB_OUTBOUND])


def test_a_network_filter_patch_of_another_type_fails_the_whole_patch() -> None:
    bad = patch("bad", {"listener": {"operation": "Remove", "match": {"name": DB_OUTBOUND}}},
                {"networkFilter": {"operation": "Patch", "match": {"name": names.HCM_FILTER}, "value": (
                    "name: x\ntypedConfig:\n  '@type': type.googleapis.com/"
                    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n  statPrefix: x\n")}})
    with pytest.raises(GenerationError, match="type URL of dst .* is different than src"):
        _generate(bad)


# --- httpFilter ---------------------------------------------------------------------------------------------

HEADER_MUTATION = (
    "name: envoy.filters.http.header_mutation\ntypedConfig:\n"
    "  '@type': type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation\n"
    "  mutations:\n    responseMutations:\n    - append:\n        header: {key: x-patched, value: 'yes'}\n")
HTTP_FILTER_MODS = patch(
    "http-filters",
    {"httpFilter": {"operation": "AddBefore", "match": {"name": names.ROUTER_FILTER, "origin": "inbound"},
                    "value": HEADER_MUTATION}},
    {"httpFilter": {"operation": "Patch", "match": {"name": names.ROUTER_FILTER, "listenerName": WEB_INBOUND},
                    "jsonPatches": [{"op": "add", "path": "/suppressEnvoyHeaders", "value": True}]}},
    {"httpFilter": {"operation": "AddLast", "match": {"listenerTags": {"kuma.io/service": "backend"}},
                    "value": "name: envoy.filters.http.last\n"}},
    {"httpFilter": {"operation": "Remove", "match": {"name": "envoy.filters.http.last"}}},
)


def test_http_filter_add_patch_and_remove() -> None:
    resources = _generate(HTTP_FILTER_MODS)
    hcm = _hcm(resources, WEB_INBOUND)
    assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.header_mutation", names.ROUTER_FILTER]
    assert [f.name for f in _hcm(resources, BACKEND_OUTBOUND).http_filters] == [names.ROUTER_FILTER]
    assert hcm.HasField("rds")     # inbound routes still go to RDS after the patch
    _golden("mpp-http-filter.yaml", resources, listeners=[WEB_INBOUND])


def test_http_filter_add_before_a_filter_that_is_not_there_adds_nothing() -> None:
    resources = _generate(patch("none", {"httpFilter": {"operation": "AddBefore", "match": {"name": "nope"},
                                                        "value": HEADER_MUTATION}}))
    assert [f.name for f in _hcm(resources, WEB_INBOUND).http_filters] == [names.ROUTER_FILTER]


# --- virtualHost --------------------------------------------------------------------------------------------

VIRTUAL_HOST_MODS = patch(
    "virtual-hosts",
    {"virtualHost": {"operation": "Patch", "match": {"origin": "inbound", "routeConfigurationName": "inbound:web"},
                     "value": "responseHeadersToAdd:\n- header: {key: x-patched, value: inbound}\n"}},
    {"virtualHost": {"operation": "Add", "match": {"routeConfigurationName": "outbound:backend"},
                     "value": "name: extra\ndomains: [extra.example]\nroutes:\n- match: {prefix: /}\n"
                              "  directResponse: {status: 204}\n"}},
    {"virtualHost": {"operation": "Patch", "match": {"name": "extra"},
                     "jsonPatches": [{"op": "replace", "path": "/routes/0/directResponse/status", "value": 202}]}},
    {"virtualHost": {"operation": "Remove", "match": {"name": "db"}}},
)


def test_virtual_host_add_patch_and_remove() -> None:
    resources = _generate(VIRTUAL_HOST_MODS)
    inbound_routes = resources[names.ROUTE][_hcm(resources, WEB_INBOUND).rds.route_config_name]
    assert [(h.header.key, h.header.value) for h in inbound_routes.virtual_hosts[0].response_headers_to_add] == \
        [("x-patched", "inbound")]
    outbound = _hcm(resources, BACKEND_OUTBOUND).route_config
    assert [h.name for h in outbound.virtual_hosts] == ["backend", "extra"]
    assert outbound.virtual_hosts[1].routes[0].direct_response.status == 202
    _golden("mpp-virtual-host.yaml", resources, listeners=[BACKEND_OUTBOUND], routes=["inbound:web"])


# --- selection, order, sharing, failures -------------------------------------------------------------------

def test_modifications_of_every_selecting_policy_apply_least_specific_first() -> None:
    by_mesh = patch("by-mesh", {"cluster": {"operation": "Patch", "match": {"name": "backend"},
                                            "value": "connectTimeout: 1s\n"}})
    by_dataplane = patch("by-dataplane", {"cluster": {"operation": "Patch", "match": {"name": "backend"},
                                                      "value": "connectTimeout: 2s\n"}},
                         target={"kind": "Dataplane", "name": "web-1"})
    other = patch("other-dataplane", {"cluster": {"operation": "Remove"}}, target={"kind": "Dataplane", "name": "x"})
    assert _generate(by_dataplane, by_mesh, other)[names.CLUSTER]["backend"].connect_timeout.seconds == 2


def test_shared_outbound_messages_are_not_changed_for_other_proxies() -> None:
    cache: dict = {}
    only_web1 = patch("web-1", {"cluster": {"operation": "Patch", "match": {"name": "backend"},
                                            "value": "connectTimeout: 42s\n"}},
                      target={"kind": "Dataplane", "name": "web-1"})
    snap = snapshot(policies=default_policies(extra=(only_web1,)))
    web1 = generate_sidecar(snap, web_proxy(), None, cache=cache)
    web2 = generate_sidecar(snap, web_proxy(name="web-2"), None, cache=cache)
    assert web1[names.CLUSTER]["backend"].connect_timeout.seconds == 42
    assert web2[names.CLUSTER]["backend"].connect_timeout.seconds == 5


def test_a_json_patch_that_does_not_apply_raises_and_names_the_policy() -> None:
    bad = patch("bad", {"cluster": {"operation": "Patch", "match": {"name": "backend"},
                                    "jsonPatches": [{"op": "replace", "path": "/no/such/field", "value": 1}]}})
    with pytest.raises(GenerationError, match="MeshProxyPatch 'bad': could not apply the cluster modification"):
        _generate(bad)


def test_without_a_patch_nothing_changes() -> None:
    assert _generate() == _generate(patch("elsewhere", {"cluster": {"operation": "Remove"}},
                                          target={"kind": "Dataplane", "name": "other"}))


# --- the real Envoy ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_envoy_accepts_the_patched_config(tmp_path: Path) -> None:
    from tests.unit.xds.test_envoy_validate import _envoy_binary, _pem_chain, static_bootstrap
    ca_pem, cert_pem, key_pem = _pem_chain()
    mods = [m for p in (CLUSTER_MODS, NETWORK_FILTER_MODS, HTTP_FILTER_MODS, VIRTUAL_HOST_MODS)
            for m in p.spec["default"]["appendModifications"]]
    snap = snapshot("STRICT", policies=default_policies(extra=(patch("all", *mods),)))
    snap = replace(snap, mtls=replace(snap.mtls, ca_cert_pem=ca_pem))
    resources = generate_sidecar(snap, web_proxy(), Identity(cert_pem, key_pem, 0.0))
    config = tmp_path / "envoy.json"
    config.write_text(json_format.MessageToJson(static_bootstrap(resources)))
    result = subprocess.run([str(_envoy_binary()), "--mode", "validate", "-c", str(config),
                             "--disable-hot-restart", "-l", "error"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
