"""MeshService generation, status and VIPs (model/meshservices.py), and the leader's round that applies them
to a store (runtime/meshservice_sync.py)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from appliance.core.resources.model import Resource
from appliance.model import hostnames, meshservices as msvc
from appliance.model.proxy import Outbound
from appliance.runtime.meshservice_sync import MeshServiceSync
from appliance.store import ListQuery
from appliance.store.memory import MemoryStore
from appliance.store.base import Store
from appliance.store.sqlite import SQLiteStore
from appliance.xds.generate.transparent import dns_records
from appliance.xds.snapshot import build_snapshot
from tests.unit.xds.scenarios import TRANSPARENT, transparent_proxy

NOW = datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=timezone.utc)
LABELS = {"kuma.io/mesh": "default", "kuma.io/managed-by": "meshservice-generator", "kuma.io/env": "universal",
          "kuma.io/zone": "zone-1", "kuma.io/origin": "zone"}


def _dp(name: str, *inbounds: dict, mesh: str = "default") -> Resource:
    return Resource("Dataplane", mesh, name, {"networking": {"address": "10.0.0.1", "inbound": list(inbounds)}})


def _inbound(service: str, port: int, **extra: object) -> dict:
    return {"port": port, "tags": {"kuma.io/service": service, **extra.pop("tags", {})}, **extra}  # type: ignore


def _mesh(store: Store, mode: str = "Exclusive", name: str = "default", **spec: object) -> None:
    content = {"meshServices": {"mode": mode}, **spec}
    current = store.get("Mesh", "", name)
    if current is None:
        store.create(Resource("Mesh", "", name, content))
    else:
        store.update(Resource("Mesh", "", name, content, version=current.version))


def _services(store: Store) -> dict[str, Resource]:
    return {s.name: s for s in store.list(ListQuery(type="MeshService")).items}


def test_one_service_per_kuma_service_with_kumas_ports_and_labels() -> None:
    dps = [_dp("web-1", _inbound("web", 8080, tags={"kuma.io/protocol": "http"}),
               _inbound("web", 8443, name="secure", protocol="GRPC")),
           _dp("odd-1", _inbound("Not_A_Label", 1234), _inbound("db", 5432, tags={"kuma.io/protocol": "bogus"}))]
    writes = msvc.generate("default", "zone-1", "Exclusive", dps, [], NOW, 3600)
    assert [(w.op, w.name) for w in writes] == [("create", "db"), ("create", "web")]
    web = writes[1]
    assert web.labels == {**LABELS, "kuma.io/display-name": "web"}
    assert web.content == {"spec": {"selector": {"dataplaneTags": {"kuma.io/service": "web"}}, "ports": [
        {"name": "8080", "port": 8080, "targetPort": 8080, "appProtocol": "http"},
        {"name": "secure", "port": 8443, "targetPort": 8443, "appProtocol": "grpc"}]}}
    assert writes[0].content["spec"]["ports"][0]["appProtocol"] == "tcp"   # an unknown protocol: tcp


def test_disagreeing_dataplanes_keep_the_stored_ports_while_one_has_them() -> None:
    stored = msvc.generate("default", "zone-1", "Exclusive", [_dp("a", _inbound("web", 1))], [], NOW, 60)[0]
    ms = Resource("MeshService", "default", "web", stored.content, stored.labels, version=1)
    both = [_dp("a", _inbound("web", 1)), _dp("b", _inbound("web", 2))]
    assert msvc.generate("default", "zone-1", "Exclusive", both, [ms], NOW, 60) == []
    [update] = msvc.generate("default", "zone-1", "Exclusive", both[1:], [ms], NOW, 60)
    assert update.op == "update" and update.content["spec"]["ports"][0]["port"] == 2


def test_user_made_and_other_zones_services_are_left_alone() -> None:
    mine = Resource("MeshService", "default", "web", {"spec": {"ports": [{"port": 1}]}}, {"team": "a"})
    synced = Resource("MeshService", "default", "db", {"spec": {}}, {**LABELS, "kuma.io/origin": "global"})
    assert msvc.generate("default", "zone-1", "Exclusive", [_dp("a", _inbound("web", 2))], [mine, synced],
                         NOW, 60) == []
    assert msvc.generate("default", "zone-1", "Disabled", [], [mine, synced], NOW, 60) == []


def test_the_leader_creates_updates_and_deletes_after_the_grace_period() -> None:
    store = MemoryStore()
    _mesh(store)
    store.create(_dp("web-1", _inbound("web", 8080)))
    sync = MeshServiceSync(store, "zone-1", grace_s=600)
    sync.sync(NOW)
    web = _services(store)["web"]
    assert web.labels == {**LABELS, "kuma.io/display-name": "web"}
    store.update(_dp("web-1", _inbound("web", 9090)), store.get("Dataplane", "default", "web-1").version)
    sync.sync(NOW)
    assert _services(store)["web"].spec["ports"][0]["port"] == 9090
    store.delete("Dataplane", "default", "web-1")
    sync.sync(NOW)
    assert _services(store)["web"].labels["kuma.io/deletion-grace-period-started-at"] == "2026-01-02T03:04:05.12Z"
    sync.sync(NOW + timedelta(seconds=600))
    assert "web" in _services(store)                        # not past the grace period yet
    store.create(_dp("web-2", _inbound("web", 9090)))       # served again: no longer scheduled for deletion
    sync.sync(NOW + timedelta(seconds=601))
    assert "kuma.io/deletion-grace-period-started-at" not in _services(store)["web"].labels
    store.delete("Dataplane", "default", "web-2")
    sync.sync(NOW + timedelta(seconds=700))
    sync.sync(NOW + timedelta(seconds=1301))
    assert "web" not in _services(store)


def test_back_to_disabled_the_generated_services_go_at_once() -> None:
    store = MemoryStore()
    _mesh(store)
    store.create(_dp("web-1", _inbound("web", 8080)))
    store.create(Resource("MeshService", "default", "manual", {"spec": {"ports": [{"port": 1}]}}))
    sync = MeshServiceSync(store, "zone-1")
    sync.sync(NOW)
    assert set(_services(store)) == {"web", "manual"}
    _mesh(store, "Disabled")
    sync.sync(NOW)
    assert set(_services(store)) == {"manual"}


def _insight(name: str, online: bool, backend: str = "") -> Resource:
    sub = {"id": "1", "connectTime": "2026-01-02T03:04:05Z", **({} if online else {"disconnectTime": "x"})}
    return Resource("DataplaneInsight", "default", name, {"subscriptions": [sub],
                                                          **({"mTLS": {"issuedBackend": backend}} if backend else {})})


def test_status_counts_proxies_and_says_when_tls_is_ready() -> None:
    store = MemoryStore()
    _mesh(store, mtls={"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]})
    store.create(_dp("web-1", _inbound("web", 8080)))
    store.create(_dp("web-2", _inbound("web", 8080, state="NotReady")))
    store.create(_insight("web-1", online=True, backend="ca-1"))
    store.create(_insight("web-2", online=False))
    sync = MeshServiceSync(store, "zone-1")
    sync.sync(NOW)
    web = _services(store)["web"]
    assert web.spec["state"] == "Available"
    assert web.spec["identities"] == [{"type": "ServiceTag", "value": "web"}]
    assert web.content["status"]["dataplaneProxies"] == {"connected": 1, "healthy": 1, "total": 2}
    assert web.content["status"]["tls"] == {"status": "NotReady"}         # web-2 has no certificate yet
    store.update(_insight("web-2", online=True, backend="ca-1"), store.get("DataplaneInsight", "default",
                                                                           "web-2").version)
    store.delete("Dataplane", "default", "web-1")
    sync.sync(NOW)
    web = _services(store)["web"]
    assert web.content["status"]["tls"] == {"status": "Ready"}
    assert web.spec["state"] == "Unavailable"                             # the one left is not ready
    assert web.content["status"]["dataplaneProxies"] == {"connected": 1, "total": 1}
    version = web.version
    sync.sync(NOW)
    assert _services(store)["web"].version == version                     # nothing changed: nothing written


def test_vips_come_from_kumas_range_and_stay_across_restarts(tmp_path: Path) -> None:
    first = SQLiteStore(tmp_path / "kuma.db")
    _mesh(first)
    _mesh(first, "Everywhere", name="other")
    first.create(_dp("web-1", _inbound("web", 8080)))
    first.create(_dp("db-1", _inbound("db", 5432)))
    first.create(_dp("api-1", _inbound("api", 80), mesh="other"))
    MeshServiceSync(first, "zone-1").sync(NOW)
    vips = {(s.mesh, s.name): s.content["status"]["vips"] for s in first.list(ListQuery(type="MeshService")).items}
    assert vips == {("default", "db"): [{"ip": "241.0.0.0"}], ("default", "web"): [{"ip": "241.0.0.1"}],
                    ("other", "api"): [{"ip": "241.0.0.2"}]}
    first.close()
    second = SQLiteStore(tmp_path / "kuma.db")
    second.delete("Dataplane", "default", "db-1")
    second.create(_dp("cache-1", _inbound("cache", 6379)))
    sync = MeshServiceSync(second, "zone-1", grace_s=0)
    sync.sync(NOW)
    sync.sync(NOW + timedelta(seconds=1))
    after = {s.name: s.content["status"]["vips"] for s in second.list(ListQuery(type="MeshService")).items}
    assert after == {"web": [{"ip": "241.0.0.1"}], "api": [{"ip": "241.0.0.2"}], "cache": [{"ip": "241.0.0.3"}]}
    second.close()


def test_hostnames_reach_the_dns_records_of_proxies_with_an_outbound_at_the_vip() -> None:
    store = MemoryStore()
    _mesh(store)
    [(name, spec)] = [d for d in hostnames.DEFAULTS if d[0] == "local-universal-mesh-service"]
    store.create(Resource("HostnameGenerator", "", name, {"spec": spec}, dict(hostnames.DEFAULT_LABELS)))
    store.create(_dp("backend-1", _inbound("backend", 8080)))
    MeshServiceSync(store, "zone-1").sync(NOW)
    assert _services(store)["backend"].content["status"]["addresses"][0]["hostname"] == "backend.svc.mesh.local"
    snapshot = build_snapshot(store, "default", store.revision())
    assert ("241.0.0.0", ("backend.svc.mesh.local",)) in [(d.address, d.domains) for d in snapshot.vip_domains]

    def records(*outbounds: Outbound) -> list:
        proxy = transparent_proxy(outbounds=tuple(outbounds))
        return json.loads(dns_records(snapshot, proxy, TRANSPARENT))["records"]
    assert records(Outbound(8080, "241.0.0.0", "backend")) == [
        {"name": "backend.svc.mesh.local", "ips": ["241.0.0.0"]}]
    assert records() == []      # no outbound at its VIP, no use resolving it (Kuma's DNSGenerator)


def test_mesh_external_services_get_a_vip_of_their_range_and_their_hostnames() -> None:
    store = MemoryStore()
    _mesh(store, "Disabled")
    for name, spec in hostnames.DEFAULTS:
        store.create(Resource("HostnameGenerator", "", name, {"spec": spec}, dict(hostnames.DEFAULT_LABELS)))
    spec = {"match": {"type": "HostnameGenerator", "port": 443, "protocol": "tcp"},
            "endpoints": [{"address": "example.com", "port": 443}]}
    store.create(Resource("MeshExternalService", "default", "example", {"spec": spec},
                          {"kuma.io/origin": "zone", "kuma.io/display-name": "example"}))
    MeshServiceSync(store, "zone-1").sync(NOW)
    status = store.get("MeshExternalService", "default", "example").content["status"]
    assert status["vip"] == {"ip": "242.0.0.0"}
    assert [a["hostname"] for a in status["addresses"]] == ["example.extsvc.mesh.local"]
    snapshot = build_snapshot(store, "default", store.revision())
    assert ("242.0.0.0", ("example.extsvc.mesh.local",)) in [(d.address, d.domains) for d in snapshot.vip_domains]
