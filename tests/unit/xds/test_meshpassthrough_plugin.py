"""MeshPassthrough on a transparent proxy's capture listeners. The chains, listener filters and clusters of
these cases were checked equal to Kuma 2.14.3's goldens (pkg/plugins/policies/meshpassthrough/plugin/
v1alpha1/testdata: basic, simple, cidr-http, http-domains, http-domains-aggregated, same-protocol,
mysql-protocol) when written; CASES["meshpassthrough"] (Kuma's "basic listener") keeps them from drifting."""
from __future__ import annotations

import pytest

from appliance.model import names
from appliance.model.proxy import GenerationError, Policy, TransparentProxy
from appliance.xds.generate import generate_sidecar
from tests.unit.xds.cases import PASSTHROUGH
from tests.unit.xds.scenarios import IDENTITY, snapshot, web_proxy

TP = TransparentProxy(15006, 15001, True)
BASIC = PASSTHROUGH.spec["default"]["appendMatch"]


def _generate(default: dict, passthrough: bool = True, tp: TransparentProxy | None = TP, *more: Policy) -> dict:
    policy = Policy("MeshPassthrough", "mp", {"targetRef": {"kind": "Mesh"}, "default": default}, {})
    snap = snapshot(None, policies={"MeshPassthrough": (policy, *more)}, passthrough=passthrough)
    return generate_sidecar(snap, web_proxy(transparent_proxy=tp), IDENTITY)


def test_matched_drops_the_default_passthrough() -> None:
    clusters = _generate({"passthroughMode": "Matched"})[names.CLUSTER]
    assert "outbound:passthrough:ipv4" not in clusters and "outbound:passthrough:ipv6" not in clusters


def test_none_refuses_everything_even_when_the_mesh_allows_it() -> None:
    resources = _generate({"passthroughMode": "None", "appendMatch": BASIC})
    assert not [n for n in resources[names.CLUSTER] if n.startswith(("outbound:passthrough", "meshpassthrough_"))]


def test_all_lets_everything_through_even_when_the_mesh_does_not() -> None:
    clusters = _generate({"passthroughMode": "All", "appendMatch": BASIC}, passthrough=False)[names.CLUSTER]
    assert {"outbound:passthrough:ipv4", "outbound:passthrough:ipv6"} <= set(clusters)
    assert not [n for n in clusters if n.startswith("meshpassthrough_")]


def test_only_ipv4_matches_leave_the_ipv6_listener_as_it_was() -> None:
    listeners = _generate({"appendMatch": [{"type": "IP", "value": "192.168.0.0", "port": 80,
                                            "protocol": "tcp"}]})[names.LISTENER]
    assert [c.name for c in listeners["outbound:passthrough:ipv4"].filter_chains] == ["meshpassthrough_tcp_192.168.0.0_80"]
    assert listeners["outbound:passthrough:ipv6"].filter_chains[0].name == ""   # the capture listener's own chain


def test_a_proxy_without_transparent_proxying_is_left_alone() -> None:
    resources = _generate({"passthroughMode": "None"}, tp=None)
    assert "outbound:passthrough:ipv4" not in resources[names.LISTENER]


def test_policies_that_mix_http_protocols_on_a_port_cannot_apply() -> None:
    other = Policy("MeshPassthrough", "mp-2", {"targetRef": {"kind": "Mesh"}, "default": {"appendMatch": [
        {"type": "Domain", "value": "b.com", "port": 80, "protocol": "grpc"}]}}, {})
    with pytest.raises(GenerationError, match="same port 80"):
        _generate({"appendMatch": [{"type": "Domain", "value": "a.com", "port": 80, "protocol": "http"}]}, True, TP,
                  other)
