"""Outbounds to MeshServices (model/destinations.py, xds/generate/meshservices.py): what a transparent proxy gets
for the MeshServices of its mesh, named as Kuma 2.14 names them, and the policies that target them. The mesh is
built through the store and the leader's MeshService round, as a running control plane builds it."""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from appliance.core.resources.model import Resource
from appliance.model import destinations, hostnames, names, vips
from appliance.model.proxy import Inbound, MeshSnapshot, Mtls, Outbound, Proxy, TransparentProxy
from appliance.runtime.meshservice_sync import MeshServiceSync
from appliance.store import ListQuery
from appliance.store.memory import MemoryStore
from appliance.xds.generate import generate_sidecar
from appliance.xds.generate.transparent import dns_records
from appliance.xds.snapshot import build_snapshot
from tests.unit.xds.golden import assert_golden, resources_yaml
from tests.unit.xds.scenarios import CA_PEM, IDENTITY, served_dns_records

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
TP = TransparentProxy(inbound_port=15006, outbound_port=15001, ipv6=False, dns_port=15053)
BACKEND = "default_backend__zone-1_msvc_8080"          # <mesh>_<name>_<namespace>_<zone>_msvc_<port>
BACKEND_KRI = "kri_msvc_default_zone-1__backend_8080"  # kri_msvc_<mesh>_<zone>_<namespace>_<name>_<port name>


def _dp(name: str, address: str, service: str, port: int, protocol: str = "http", **tp: Any) -> Resource:
    networking = {"address": address, "inbound": [
        {"port": port, "tags": {"kuma.io/service": service, "kuma.io/protocol": protocol}}]}
    if tp:
        networking["transparentProxying"] = tp
    return Resource("Dataplane", "default", name, {"networking": networking})


def _store(mode: str = "Exclusive", policies: tuple[Resource, ...] = ()) -> MemoryStore:
    store = MemoryStore()
    store.create(Resource("Mesh", "", "default", {"meshServices": {"mode": mode}}))
    for name, spec in hostnames.DEFAULTS:
        store.create(Resource("HostnameGenerator", "", name, {"spec": spec}, dict(hostnames.DEFAULT_LABELS)))
    store.create(_dp("backend-1", "10.0.0.2", "backend", 8080))
    store.create(_dp("db-1", "10.0.0.3", "db", 5432, "tcp"))
    store.create(_dp("web-1", "10.0.0.1", "web", 8080))
    for policy in policies:
        store.create(policy)
    MeshServiceSync(store, "zone-1").sync(NOW)
    # the kuma.io/service VIPs the leader keeps beside them (vips_sync)
    view = vips.allocate({}, vips.wanted([dp.content for dp in store.list(ListQuery(type="Dataplane")).items], []))
    store.create(Resource("Config", "", vips.config_name("default"), {"config": vips.to_json(view)}))
    return store


def _snapshot(store: MemoryStore, mtls: str | None = "STRICT") -> MeshSnapshot:
    """The mesh as built from the store, with the scenarios' CA (a fixed one: goldens hold its certificate)."""
    found = build_snapshot(store, "default", store.revision())
    assert found is not None
    return replace(found, mtls=Mtls("ca-1", mtls, CA_PEM) if mtls else None)


def _web(tp: TransparentProxy | None = TP) -> Proxy:
    return Proxy(mesh="default", name="web-1", address="10.0.0.1",
                 inbounds=(Inbound(8080, 8080, "10.0.0.1", "127.0.0.1", {"kuma.io/service": "web",
                                                                       "kuma.io/protocol": "http"}, "http"),),
                 outbounds=(), transparent_proxy=tp, features=frozenset({"feature-embedded-dns"}), work_dir="/tmp/web")


def test_golden_exclusive_mode_outbounds_to_meshservices() -> None:
    resources = generate_sidecar(_snapshot(_store()), _web(), IDENTITY)
    assert_golden("meshservice-outbounds-exclusive.yaml", resources_yaml(resources))


def _policy(kind: str, name: str, spec: dict) -> Resource:
    return Resource(kind, "default", name, {"spec": {"targetRef": {"kind": "Mesh"}, **spec}})


def _timeout(name: str, ref: dict, request: str) -> Resource:
    return _policy("MeshTimeout", name, {"to": [{"targetRef": {"kind": "MeshService", **ref},
                                                 "default": {"connectionTimeout": "3s",
                                                             "http": {"requestTimeout": request}}}]})


def _hcm(resources: dict, listener: str) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager()
    resources[names.LISTENER][listener].filter_chains[0].filters[0].typed_config.Unpack(hcm)
    return hcm


def _routes(resources: dict, listener: str) -> list:
    return list(_hcm(resources, listener).route_config.virtual_hosts[0].routes)


def test_meshtimeout_to_a_meshservice_by_name_section_or_labels_configures_its_outbound() -> None:
    for ref in ({"name": "backend"}, {"name": "backend", "sectionName": "8080"},
                {"labels": {"kuma.io/display-name": "backend"}}):
        resources = generate_sidecar(_snapshot(_store(policies=(_timeout("mt", ref, "2s"),))), _web(), IDENTITY)
        [route] = _routes(resources, "outbound:241.0.0.0:8080")
        assert route.route.timeout.seconds == 2, ref
        assert resources[names.CLUSTER][BACKEND].connect_timeout.seconds == 3, ref
        [other] = _routes(resources, "outbound:241.0.0.2:8080")            # web's own MeshService: untouched
        assert other.route.timeout.seconds == 0
    # a port name the MeshService does not have selects nothing
    resources = generate_sidecar(_snapshot(_store(policies=(_timeout("mt", {"name": "backend", "sectionName": "http"},
                                                                     "2s"),))), _web(), IDENTITY)
    assert _routes(resources, "outbound:241.0.0.0:8080")[0].route.timeout.seconds == 0


def test_meshhttproute_routes_an_outbound_to_a_meshservice_port() -> None:
    backend = {"kind": "MeshService", "name": "backend"}
    route = _policy("MeshHTTPRoute", "to-web", {"to": [{"targetRef": backend, "rules": [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/web"}}],
         "default": {"backendRefs": [{"kind": "MeshService", "name": "web", "port": 8080}]}}]}]})
    timeout = _timeout("mt", {"name": "web"}, "4s")
    resources = generate_sidecar(_snapshot(_store(policies=(route, timeout))), _web(), IDENTITY)
    routes = _routes(resources, "outbound:241.0.0.0:8080")
    assert [(r.match.path or r.match.prefix, r.route.cluster) for r in routes] == [
        ("/web", "default_web__zone-1_msvc_8080"), ("/web/", "default_web__zone-1_msvc_8080"), ("/", BACKEND)]
    # the cluster of the other MeshService port gets that port's policies
    assert resources[names.CLUSTER]["default_web__zone-1_msvc_8080"].connect_timeout.seconds == 3


def test_meshretry_and_meshcircuitbreaker_apply_to_meshservice_outbounds() -> None:
    retry = _policy("MeshRetry", "mr", {"to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                                               "default": {"http": {"numRetries": 7}}}]})
    breaker = _policy("MeshCircuitBreaker", "mcb", {"to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                                                          "default": {"connectionLimits": {"maxConnections": 9}}}]})
    resources = generate_sidecar(_snapshot(_store(policies=(retry, breaker))), _web(), IDENTITY)
    [route] = _routes(resources, "outbound:241.0.0.0:8080")
    assert route.route.retry_policy.num_retries.value == 7
    assert resources[names.CLUSTER][BACKEND].circuit_breakers.thresholds[0].max_connections.value == 9
    other = resources[names.CLUSTER]["default_web__zone-1_msvc_8080"]
    assert all(t.max_connections.value != 9 for t in other.circuit_breakers.thresholds)


def test_upstream_tls_presents_the_meshservice_sni_and_checks_its_identities() -> None:
    cluster = generate_sidecar(_snapshot(_store()), _web(), IDENTITY)[names.CLUSTER][BACKEND]
    context = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(context)
    # tls.SNIForResource: the hash Kuma's goldens show for MeshService `backend` of mesh `default`
    assert context.sni == "a601e0c00295a9fbe.backend.8080.default.ms"
    sans = context.common_tls_context.combined_validation_context.default_validation_context
    assert [m.matcher.exact for m in sans.match_typed_subject_alt_names] == ["spiffe://default/backend"]


def test_modes_decide_which_outbounds_and_names_a_proxy_gets() -> None:
    exclusive = generate_sidecar(_snapshot(_store("Exclusive")), _web(), IDENTITY)
    assert "backend.mesh" not in served_dns_records(exclusive) and served_dns_records(exclusive)["backend.svc.mesh.local"] == ["241.0.0.0"]
    assert not [n for n in exclusive[names.LISTENER] if n.startswith("outbound:240.")]
    everywhere = generate_sidecar(_snapshot(_store("Everywhere")), _web(), IDENTITY)
    records = served_dns_records(everywhere)
    assert records["backend.svc.mesh.local"] == ["241.0.0.0"] and records["backend.mesh"][0].startswith("240.")
    assert f"outbound:{records['backend.mesh'][0]}:80" in everywhere[names.LISTENER]
    assert "outbound:241.0.0.0:8080" in everywhere[names.LISTENER]
    # ReachableBackends: only what a proxy lists in reachableBackends
    reachable = _snapshot(_store("ReachableBackends"))
    assert "backend.svc.mesh.local" not in served_dns_records(generate_sidecar(reachable, _web(), IDENTITY))
    listed = replace(TP, reachable_backends=(("MeshService", "backend", 0, ()),))
    # (the kuma.io/service names stay but with Exclusive)
    assert {n for n in served_dns_records(generate_sidecar(reachable, _web(listed), IDENTITY)) if n.endswith(".local")} == {
        "backend.svc.mesh.local"}
    # reachableServices without reachableBackends: no MeshService outbounds (Kuma keeps them off for performance)
    services_only = replace(TP, reachable_services=("backend",))
    assert served_dns_records(generate_sidecar(_snapshot(_store("Exclusive")), _web(services_only), IDENTITY)) == {}


def test_dns_records_follow_the_outbounds() -> None:
    snapshot = _snapshot(_store())
    assert json.loads(dns_records(snapshot, replace(_web(), outbounds=()), TP))["records"] == []


def test_a_dataplanes_backend_ref_with_a_port_is_an_outbound_to_that_meshservice_port() -> None:
    snapshot = _snapshot(_store())
    listed = replace(_web(None), outbounds=(Outbound(10001, "127.0.0.1", "backend", backend_port=8080),
                                            Outbound(10002, "127.0.0.1", "db", backend_port=1)))   # no such port
    resources = generate_sidecar(snapshot, listed, IDENTITY)
    assert _hcm(resources, "outbound:127.0.0.1:10001").route_config.virtual_hosts[0].routes[0].route.cluster == BACKEND
    assert BACKEND in resources[names.ENDPOINT]
    # a port the MeshService does not have: the kuma.io/service, as before
    assert {"db", BACKEND} <= set(resources[names.CLUSTER])


def test_names_are_kumas_for_a_meshservice_without_zone_or_namespace() -> None:
    """The values of Kuma 2.14's golden basic-real-meshservice-and-mzms-labels (meshhttproute plugin testdata):
    MeshService `backend` of mesh `default`, port 80 named `test-port`."""
    ms = Resource("MeshService", "default", "backend", {"spec": {
        "ports": [{"name": "test-port", "port": 80, "targetPort": 8084, "appProtocol": "http"}],
        "identities": [{"type": "ServiceTag", "value": "backend"}]}, "status": {"vips": [{"ip": "10.0.0.1"}]}})
    [found] = destinations.of_services([ms]).values()
    assert found.name == "default_backend___msvc_80"               # cluster, virtual host, stat prefix
    assert found.kri == "kri_msvc_default___backend_test-port"     # route configuration, io.kuma.tags
    assert found.sni == "a601e0c00295a9fbe.backend.80.default.ms"
    assert found.identities == ("spiffe://default/backend",)


def test_health_checks_and_load_balancing_apply_to_meshservice_clusters() -> None:
    ref = {"kind": "MeshService", "name": "backend"}
    check = _policy("MeshHealthCheck", "mhc", {"to": [{"targetRef": ref, "default": {
        "interval": "10s", "timeout": "2s", "unhealthyThreshold": 3, "healthyThreshold": 1, "http": {"path": "/h"}}}]})
    balance = _policy("MeshLoadBalancingStrategy", "mlbs", {"to": [{"targetRef": ref, "default": {
        "loadBalancer": {"type": "RoundRobin"}}}, {"targetRef": {"kind": "MeshService", "name": "web"}, "default": {
            "loadBalancer": {"type": "Random"}}}]})
    clusters = generate_sidecar(_snapshot(_store(policies=(check, balance))), _web(), IDENTITY)[names.CLUSTER]
    assert clusters[BACKEND].health_checks[0].http_health_check.path == "/h"
    assert not clusters["default_web__zone-1_msvc_8080"].health_checks
    assert clusters["default_web__zone-1_msvc_8080"].lb_policy == clusters["default_web__zone-1_msvc_8080"].RANDOM
    assert clusters[BACKEND].lb_policy == clusters[BACKEND].ROUND_ROBIN


def test_hostnames_of_a_users_hostnamegenerator_answer_with_the_vip() -> None:
    store = _store()
    spec = {"selector": {"meshService": {"matchLabels": {"kuma.io/display-name": "backend"}}},
            "template": "{{ .DisplayName }}.{{ .Mesh }}.internal"}
    store.create(Resource("HostnameGenerator", "", "internal", {"spec": spec}))
    MeshServiceSync(store, "zone-1").sync(NOW)
    records = served_dns_records(generate_sidecar(_snapshot(store), _web(), IDENTITY))
    assert records["backend.default.internal"] == records["backend.svc.mesh.local"] == ["241.0.0.0"]
    assert "db.default.internal" not in records
