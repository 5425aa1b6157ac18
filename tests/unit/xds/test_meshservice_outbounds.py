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
from appliance.model import hostnames, names, vips
from appliance.model.proxy import Inbound, MeshSnapshot, Mtls, Proxy, TransparentProxy
from appliance.runtime.meshservice_sync import MeshServiceSync
from appliance.store import ListQuery
from appliance.store.memory import MemoryStore
from appliance.xds.generate import generate_sidecar
from appliance.xds.generate.transparent import dns_records
from appliance.xds.snapshot import build_snapshot
from tests.unit.xds.golden import assert_golden, resources_yaml
from tests.unit.xds.scenarios import CA_PEM, IDENTITY

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


def _web(tp: TransparentProxy = TP) -> Proxy:
    return Proxy(mesh="default", name="web-1", address="10.0.0.1",
                 inbounds=(Inbound(8080, 8080, "10.0.0.1", "127.0.0.1", {"kuma.io/service": "web",
                                                                       "kuma.io/protocol": "http"}, "http"),),
                 outbounds=(), transparent_proxy=tp, features=frozenset({"feature-embedded-dns"}), work_dir="/tmp/web")


def test_golden_exclusive_mode_outbounds_to_meshservices() -> None:
    resources = generate_sidecar(_snapshot(_store()), _web(), IDENTITY)
    assert_golden("meshservice-outbounds-exclusive.yaml", resources_yaml(resources))
