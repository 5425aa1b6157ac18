"""MeshFaultInjection and MeshRateLimit on generated resources: Kuma 2.14's Envoy shapes, in goldens,
and the real Envoy accepts them."""
from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from appliance.model import names
from appliance.model.proxy import Identity
from appliance.policies.meshfaultinjection import plugin as mfi
from appliance.policies.meshfaultinjection import schema as mfi_schema
from appliance.policies.meshratelimit import schema as mrl_schema
from appliance.xds.generate import generate_sidecar
from tests.unit.xds.golden import assert_golden, to_dict
from tests.unit.xds.scenarios import IDENTITY, db_proxy, default_policies, policy, snapshot, web_proxy

WEB_INBOUND = "inbound:10.0.0.1:8080"
DB_INBOUND = "inbound:10.0.0.4:5432"
MFI, MRL = "MeshFaultInjection", "MeshRateLimit"

FAULTS_FROM = policy(MFI, "faults", {"targetRef": {"kind": "Mesh"}, "from": [
    {"targetRef": {"kind": "MeshService", "name": "demo-client"},
     "default": {"http": [{"abort": {"httpStatus": 444, "percentage": "12"},
                           "delay": {"value": "55s", "percentage": 55},
                           "responseBandwidth": {"limit": "111Mbps", "percentage": "62.9"}}]}},
]})
FAULTS_RULES = policy(MFI, "mfi-1", {"targetRef": {"kind": "Mesh"}, "rules": [
    {"matches": [{"spiffeID": {"type": "Prefix", "value": "spiffe://default/"}}],
     "default": {"http": [{"abort": {"httpStatus": 444, "percentage": 12}},
                          {"delay": {"value": "55s", "percentage": 55}}]}},
    {"default": {"http": [{"abort": {"httpStatus": 503, "percentage": 100}}]}},
]})
LIMITS = policy(MRL, "limits", {"targetRef": {"kind": "Mesh"}, "from": [{"targetRef": {"kind": "Mesh"}, "default": {
    "local": {"http": {"requestRate": {"num": 100, "interval": "10s"},
                       "onRateLimit": {"status": 429, "headers": {
                           "add": [{"name": "x-kuma-rate-limit-header", "value": "test-value"}],
                           "set": [{"name": "x-kuma-rate-limit-header-set", "value": "a,b"}]}}},
              "tcp": {"connectionRate": {"num": 5, "interval": "1s"}}}}}]})


def _generate(*extra, mtls: str | None = None, proxy=None):
    identity = IDENTITY if mtls else None
    return generate_sidecar(snapshot(mtls, policies=default_policies(extra=extra)), proxy or web_proxy(), identity)


def _hcm(resources: dict, listener: str = WEB_INBOUND) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager()
    resources[names.LISTENER][listener].filter_chains[0].filters[-1].typed_config.Unpack(hcm)
    return hcm


def _golden(name: str, resources: dict, listener: str = WEB_INBOUND) -> None:
    """The inbound listener and the route configuration it gets by RDS (where per-route limits live)."""
    dumped = {"listener": to_dict(resources[names.LISTENER][listener])}
    rds = _hcm(resources, listener).rds.route_config_name if listener == WEB_INBOUND else ""
    if rds:
        dumped["routeConfiguration"] = to_dict(resources[names.ROUTE][rds])
    assert_golden(name, yaml.safe_dump(dumped, sort_keys=True, width=120))


# --- MeshFaultInjection ------------------------------------------------------------------------------

def test_without_a_policy_the_inbound_has_only_the_router() -> None:
    assert [f.name for f in _hcm(_generate()).http_filters] == [names.ROUTER_FILTER]


def test_from_entries_become_fault_filters_before_the_router_matched_on_the_callers_tags() -> None:
    resources = _generate(FAULTS_FROM)
    assert [f.name for f in _hcm(resources).http_filters] == [mfi.FAULT_FILTER, names.ROUTER_FILTER]
    _golden("mfi-from-inbound.yaml", resources)


def test_rules_become_kri_named_filters_skipped_unless_the_client_identity_matches() -> None:
    resources = _generate(FAULTS_RULES, mtls="STRICT")
    filters = _hcm(resources).http_filters
    # mTLS on: MeshTrafficPermission's RBAC comes first, the faults right before the router.
    assert [f.name for f in filters][1:] == ["kri_mfi_default___mfi-1_"] * 3 + [names.ROUTER_FILTER]
    _golden("mfi-rules-inbound.yaml", resources)


def test_faults_follow_the_rbac_filter() -> None:
    allow = policy("MeshTrafficPermission", "allow", {"targetRef": {"kind": "Mesh"}, "from": [
        {"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]})
    names_in_order = [f.name for f in _hcm(_generate(FAULTS_RULES, allow, mtls="STRICT")).http_filters]
    assert names_in_order[0] == "envoy.filters.http.rbac" and names_in_order[-1] == names.ROUTER_FILTER


def test_tcp_inbounds_get_no_faults() -> None:
    resources = _generate(FAULTS_FROM, proxy=db_proxy())
    assert [f.name for f in resources[names.LISTENER][DB_INBOUND].filter_chains[0].filters] == \
        [names.TCP_PROXY_FILTER]


@pytest.mark.parametrize("value, numerator, denominator", [
    (12, 12, "HUNDRED"), ("12", 12, "HUNDRED"), ("62.9", 6290, "TEN_THOUSAND"), ("33.3", 333000, "MILLION"),
    (100, 100, "HUNDRED"), (None, 0, "HUNDRED")])
def test_percentages_as_kuma_converts_them(value, numerator, denominator) -> None:
    percent = mfi.fractional_percent(value)
    assert (percent.numerator, percent.DenominatorType.Name(percent.denominator)) == (numerator, denominator)


@pytest.mark.parametrize("limit, kbps", [("10kbps", 10), ("111Mbps", 111000), ("2 Gbps", 2000000)])
def test_bandwidth_in_kbps(limit: str, kbps: int) -> None:
    assert mfi.bandwidth_kbps(limit) == kbps


def test_callers_send_their_tags_so_that_from_entries_can_match_them() -> None:
    outbound = _hcm(_generate(), "outbound:127.0.0.1:10001").route_config
    assert [(h.header.key, h.header.value) for h in outbound.request_headers_to_add] == \
        [("x-kuma-tags", "&kuma.io/protocol=http&&kuma.io/service=web&&team=frontend&")]
    assert mfi.tags_regex({"kuma.io/service": "web.v1"}) == r".*&kuma.io/service=[^&]*web\.v1[,&].*"


def test_mfi_is_applied_now() -> None:
    spec = {"targetRef": {"kind": "Mesh"}, "from": FAULTS_FROM.spec["from"]}
    assert mfi_schema.HAS_PLUGIN and all("not yet applied" not in w for w in mfi_schema.deprecations(spec))


# --- MeshRateLimit -----------------------------------------------------------------------------------

def test_http_and_tcp_limits_on_the_inbound() -> None:
    resources = _generate(LIMITS)
    chain = resources[names.LISTENER][WEB_INBOUND].filter_chains[0]
    assert [f.name for f in chain.filters] == \
        ["envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit", names.HCM_FILTER]
    assert [f.name for f in _hcm(resources).http_filters] == \
        ["envoy.filters.http.local_ratelimit", names.ROUTER_FILTER]
    _golden("mrl-inbound.yaml", resources)


def test_tcp_inbound_gets_the_connection_limit_only() -> None:
    resources = _generate(LIMITS, proxy=db_proxy())
    assert [f.name for f in resources[names.LISTENER][DB_INBOUND].filter_chains[0].filters] == \
        ["envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit", names.TCP_PROXY_FILTER]


def test_disabled_limits_add_nothing() -> None:
    disabled = policy(MRL, "off", {"targetRef": {"kind": "Mesh"}, "rules": [{"default": {"local": {
        "http": {"disabled": True, "requestRate": {"num": 1, "interval": "1s"}},
        "tcp": {"disabled": True, "connectionRate": {"num": 1, "interval": "1s"}}}}}]})
    resources = _generate(disabled)
    assert [f.name for f in resources[names.LISTENER][WEB_INBOUND].filter_chains[0].filters] == [names.HCM_FILTER]
    assert [f.name for f in _hcm(resources).http_filters] == [names.ROUTER_FILTER]


def test_identity_matched_rules_are_not_applied_and_the_api_says_so() -> None:
    spec = {"targetRef": {"kind": "Mesh"}, "rules": [
        {"matches": [{"spiffeID": {"type": "Exact", "value": "spiffe://default/web"}}],
         "default": {"local": {"http": {"requestRate": {"num": 1, "interval": "1s"}}}}}]}
    resources = _generate(policy(MRL, "per-client", spec), mtls="STRICT")
    assert "envoy.filters.http.local_ratelimit" not in [f.name for f in _hcm(resources).http_filters]
    assert "'spec.rules[0]' with matches is stored but not applied to proxies: only rules without matches " \
           "(for every client) are" in mrl_schema.deprecations(spec)


# --- the real Envoy ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_envoy_accepts_faults_and_limits(tmp_path: Path) -> None:
    from tests.unit.xds.test_envoy_validate import _envoy_binary, _pem_chain, static_bootstrap
    ca_pem, cert_pem, key_pem = _pem_chain()
    snap = snapshot("STRICT", policies=default_policies(extra=(FAULTS_RULES, LIMITS)))
    snap = replace(snap, mtls=replace(snap.mtls, ca_cert_pem=ca_pem))
    config = tmp_path / "envoy.json"
    resources = generate_sidecar(snap, web_proxy(), Identity(cert_pem, key_pem, 0.0))
    config.write_text(json_format.MessageToJson(static_bootstrap(resources)))
    result = subprocess.run([str(_envoy_binary()), "--mode", "validate", "-c", str(config),
                             "--disable-hot-restart", "-l", "error"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
