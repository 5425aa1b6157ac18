"""generate_sidecar: golden output, consistency, determinism, sharing and speed."""
from __future__ import annotations

from dataclasses import replace

import pytest

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from appliance.model import names
from appliance.xds.generate import generate_sidecar, load_assignment_for, serialize
from appliance.xds.generate.consistency import check_consistency
from appliance.model.proxy import Identity
from tests.unit.xds.cases import CASES, CUSTOM_POLICIES
from tests.unit.xds.golden import assert_golden, resources_yaml
from tests.unit.xds.scenarios import IDENTITY, default_policies, endpoint, snapshot, web_proxy


def _bytes(resources: dict) -> dict[tuple[str, str], bytes]:
    return {(t, n): serialize(m) for t, by_name in resources.items() for n, m in by_name.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    assert_golden(f"{case}.yaml", resources_yaml(generate_sidecar(*CASES[case])))


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_name_a_resource_uses_exists(case: str) -> None:
    assert check_consistency(generate_sidecar(*CASES[case])) == []


def test_consistency_check_reports_what_is_missing() -> None:
    resources = generate_sidecar(snapshot("STRICT"), web_proxy(), IDENTITY)
    del resources[names.ENDPOINT]["db"]
    del resources[names.SECRET][names.identity_secret("default")]
    problems = check_consistency(resources)
    assert "EDS cluster 'db' has no ClusterLoadAssignment" in problems
    assert any("uses missing secret 'identity_cert:secret:default'" in p for p in problems)


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_input_gives_the_same_bytes(case: str) -> None:
    assert _bytes(generate_sidecar(*CASES[case])) == _bytes(generate_sidecar(*CASES[case]))


def test_order_of_endpoints_does_not_matter() -> None:
    snap = snapshot("STRICT")
    reordered = replace(snap, endpoints={k: tuple(reversed(v)) for k, v in reversed(snap.endpoints.items())})
    assert _bytes(generate_sidecar(snap, web_proxy(), IDENTITY)) == \
        _bytes(generate_sidecar(reordered, web_proxy(), IDENTITY))


def test_listeners_and_clusters_do_not_change_with_endpoints_or_certificates() -> None:
    before = generate_sidecar(snapshot("STRICT"), web_proxy(), IDENTITY)
    moved = snapshot("STRICT", endpoints={"backend": (endpoint("10.9.9.9", 9, "backend", "backend-9"),)})
    rotated = Identity(b"new cert", b"new key", 1.0)
    after = generate_sidecar(moved, web_proxy(), rotated)
    for type_url in (names.LISTENER, names.CLUSTER):
        assert _bytes({type_url: before[type_url]}) == _bytes({type_url: after[type_url]})
    assert _bytes({names.ENDPOINT: before[names.ENDPOINT]}) != _bytes({names.ENDPOINT: after[names.ENDPOINT]})
    assert _bytes({names.SECRET: before[names.SECRET]}) != _bytes({names.SECRET: after[names.SECRET]})


def test_a_service_without_endpoints_still_gets_an_empty_load_assignment() -> None:
    resources = generate_sidecar(snapshot(endpoints={}), web_proxy(), None)
    assert set(resources[names.ENDPOINT]) == {"backend", "db"}
    assert not resources[names.ENDPOINT]["db"].endpoints
    assert load_assignment_for(snapshot(endpoints={}), "db").cluster_name == "db"


def test_all_five_types_are_always_present() -> None:
    resources = generate_sidecar(snapshot(), web_proxy(), None)
    assert list(resources) == list(names.TYPE_ORDER)
    assert resources[names.SECRET] == {}
    assert list(resources[names.ROUTE]) == ["inbound:web"]   # inbound routes come by RDS


def test_mtls_without_identity_references_the_secret_it_cannot_send() -> None:
    """Fail closed: Envoy waits for the identity rather than serving the inbound in plaintext."""
    resources = generate_sidecar(snapshot("STRICT"), web_proxy(), None)
    assert list(resources[names.SECRET]) == [names.mesh_ca_secret("default")]
    assert any("identity_cert:secret:default" in p for p in check_consistency(resources))


def test_a_cache_shares_outbound_clusters_and_load_assignments_between_proxies() -> None:
    snap, cache = snapshot("STRICT"), {}
    first = generate_sidecar(snap, web_proxy(), IDENTITY, cache)
    other = web_proxy(name="web-2", address="10.0.0.7",
                      inbounds=tuple(replace(i, address="10.0.0.7") for i in web_proxy().inbounds))
    second = generate_sidecar(snap, other, IDENTITY, cache)
    assert first[names.CLUSTER]["backend"] is second[names.CLUSTER]["backend"]
    assert first[names.ENDPOINT]["db"] is second[names.ENDPOINT]["db"]
    assert _bytes(first) == _bytes(generate_sidecar(snap, web_proxy(), IDENTITY))


def test_the_cache_keeps_proxies_with_different_policies_apart() -> None:
    snap, cache = snapshot("STRICT", policies=default_policies(extra=CUSTOM_POLICIES)), {}
    web = generate_sidecar(snap, web_proxy(), IDENTITY, cache)  # selected by the custom policies
    other = web_proxy(name="web-2", inbounds=tuple(replace(i, tags={"kuma.io/service": "web2"})
                                                   for i in web_proxy().inbounds))
    plain = generate_sidecar(snap, other, IDENTITY, cache)
    assert web[names.CLUSTER]["backend"].connect_timeout.seconds == 2
    assert plain[names.CLUSTER]["backend"].connect_timeout.seconds == 5


def test_a_shared_outbound_carries_each_callers_own_tags() -> None:
    """Proxies share an outbound's resources (one cache) only when they send the same x-kuma-tags: the header
    names the caller, and inbound policies (MeshFaultInjection `from`) pick clients by it. A proxy of `api`
    once got the listener built for `web`, and its requests passed as web's (found by tests/perf/soak.py)."""
    snap, cache = snapshot("STRICT"), {}
    api_inbound = replace(web_proxy().inbounds[0], tags={"kuma.io/service": "api", "kuma.io/protocol": "http"})
    web = generate_sidecar(snap, web_proxy(), IDENTITY, cache)
    api = generate_sidecar(snap, web_proxy(name="api-1", inbounds=(api_inbound,)), IDENTITY, cache)
    web_2 = generate_sidecar(snap, web_proxy(name="web-2", address="10.0.0.7"), IDENTITY, cache)

    def sent_tags(resources) -> str:
        listener = resources[names.LISTENER]["outbound:127.0.0.1:10001"]
        hcm = hcm_pb2.HttpConnectionManager()
        listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
        return {h.header.key: h.header.value for h in hcm.route_config.request_headers_to_add}[names.TAGS_HEADER]

    assert sent_tags(web) == "&kuma.io/protocol=http&&kuma.io/service=web&&team=frontend&"
    assert sent_tags(api) == "&kuma.io/protocol=http&&kuma.io/service=api&"
    # the same tags: one copy
    assert web[names.LISTENER]["outbound:127.0.0.1:10001"] is web_2[names.LISTENER]["outbound:127.0.0.1:10001"]
