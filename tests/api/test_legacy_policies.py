"""Kuma's legacy policies: a write is refused naming the targetRef policy to use; reads are empty."""
from __future__ import annotations

from pathlib import Path

import pytest

from appliance.core.resources.legacy_policies import LEGACY_POLICIES
from tests.support import live_api

# Kuma 2.14's REST paths of the legacy policies (its resource type descriptors' WsPath).
KUMA_PATHS = {"CircuitBreaker": "circuit-breakers", "FaultInjection": "fault-injections",
              "HealthCheck": "health-checks", "MeshGatewayRoute": "meshgatewayroutes",
              "ProxyTemplate": "proxytemplates", "RateLimit": "rate-limits", "Retry": "retries",
              "Timeout": "timeouts", "TrafficLog": "traffic-logs", "TrafficPermission": "traffic-permissions",
              "TrafficRoute": "traffic-routes", "TrafficTrace": "traffic-traces",
              "VirtualOutbound": "virtual-outbounds"}
REPLACED_BY = {"TrafficPermission": "MeshTrafficPermission", "TrafficRoute": "MeshHTTPRoute",
               "TrafficLog": "MeshAccessLog", "TrafficTrace": "MeshTrace", "HealthCheck": "MeshHealthCheck",
               "CircuitBreaker": "MeshCircuitBreaker", "FaultInjection": "MeshFaultInjection",
               "RateLimit": "MeshRateLimit", "Retry": "MeshRetry", "Timeout": "MeshTimeout",
               "ProxyTemplate": "MeshProxyPatch", "VirtualOutbound": "MeshService",
               "MeshGatewayRoute": "MeshHTTPRoute"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    with live_api(Path(tmp_path_factory.mktemp("legacy")), defaults=True) as a:
        yield a


def test_every_legacy_policy_of_kuma_is_known_at_kumas_path() -> None:
    assert {p.name: p.path for p in LEGACY_POLICIES} == KUMA_PATHS


@pytest.mark.parametrize("kind, path", sorted(KUMA_PATHS.items()))
def test_a_legacy_policy_is_refused_naming_its_replacement(api, kind: str, path: str) -> None:
    body = {"type": kind, "mesh": "default", "name": "old",
            "sources": [{"match": {"kuma.io/service": "*"}}], "destinations": [{"match": {"kuma.io/service": "*"}}]}
    r = api.put(f"/meshes/default/{path}/old", body)
    assert r.status_code == 400
    error = r.json()
    assert error["type"] == "/std-errors" and error["status"] == 400
    assert error["detail"].startswith(f"{kind} is a legacy policy, which this control plane does not support: "
                                      f"use {REPLACED_BY[kind]}"), error
    assert api.get(f"/meshes/default/{path}").json() == {"total": 0, "items": [], "next": None}


@pytest.mark.parametrize("path", sorted(KUMA_PATHS.values()))
def test_reads_of_a_legacy_policy_answer_as_for_a_type_with_no_resources(api, path: str) -> None:
    assert api.get(f"/{path}").json() == {"total": 0, "items": [], "next": None}
    assert api.get(f"/meshes/default/{path}").json() == {"total": 0, "items": [], "next": None}
    one = api.get(f"/meshes/default/{path}/old")
    assert one.status_code == 404 and one.json()["detail"] == "Not found"
    assert api.get(f"/meshes/nope/{path}").status_code == 404
    assert api.get(f"/{path}", params={"size": "0"}).status_code == 400
