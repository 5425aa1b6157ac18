"""Virtual IPs: Kuma's allocation, its stored JSON, stability across restarts and instances."""
from __future__ import annotations

import json

from appliance.core.resources.model import Resource
from appliance.model import vips
from appliance.runtime.vips_sync import VipSync
from appliance.store.memory import MemoryStore
from appliance.store.sqlite import SQLiteStore


def _dp(service: str, port: int = 8080, **inbound: object) -> dict:
    return {"networking": {"address": "10.0.0.1", "inbound": [{"port": port, "tags": {"kuma.io/service": service},
                                                                **inbound}]}}


def _addresses(view: vips.View) -> dict[str, str]:
    return {name: vo.address for (_, name), vo in view.items()}


def test_services_get_the_lowest_free_addresses_in_entry_order() -> None:
    view = vips.allocate({}, vips.wanted([_dp("web"), _dp("backend"), _dp("backend", 9090)], []))
    assert _addresses(view) == {"backend": "240.0.0.0", "web": "240.0.0.1"}


def test_an_entry_keeps_its_address_and_a_freed_one_is_reused() -> None:
    first = vips.allocate({}, vips.wanted([_dp("web"), _dp("backend")], []))
    # a new service sorted first does not move the others
    second = vips.allocate(first, vips.wanted([_dp("web"), _dp("backend"), _dp("api")], []))
    assert _addresses(second) == {"api": "240.0.0.2", "backend": "240.0.0.0", "web": "240.0.0.1"}
    third = vips.allocate(second, vips.wanted([_dp("web"), _dp("api"), _dp("zeta")], []))
    assert _addresses(third) == {"api": "240.0.0.2", "web": "240.0.0.1", "zeta": "240.0.0.0"}


def test_ignored_and_portless_inbounds_and_disabled_service_vips_get_none() -> None:
    wanted = vips.wanted([_dp("a", state="Ignored"), _dp("b", 49151), _dp("c")], [])
    assert list(wanted) == [(vips.SERVICE, "c")]
    assert vips.wanted([_dp("c")], [], service_vips=False) == {}


def test_exhausted_range_is_an_error() -> None:
    try:
        vips.allocate({}, vips.wanted([_dp("a"), _dp("b"), _dp("c")], []), "240.0.0.0/31")
    except ValueError as e:
        assert "240.0.0.0/31" in str(e)
    else:
        raise AssertionError("a third address in a /31")


def test_json_is_kumas() -> None:
    view = vips.allocate({}, vips.wanted([_dp("backend")], [
        ("es", {"networking": {"address": "httpbin.org:443"}, "tags": {"kuma.io/service": "httpbin"}})]))
    text = vips.to_json(view)
    assert text == (
        '{"0:backend":{"address":"240.0.0.0","outbounds":[{"Port":0,"TagSet":{"kuma.io/service":"backend"},'
        '"Origin":"service"}]},"0:httpbin":{"address":"240.0.0.1","outbounds":[{"Port":443,"TagSet":'
        '{"kuma.io/service":"httpbin"},"Origin":"service"}]},"1:httpbin.org":{"address":"240.0.0.2","outbounds":'
        '[{"Port":443,"TagSet":{"kuma.io/service":"httpbin"},"Origin":"external-service:es"}]}}')
    assert vips.from_json(text) == view
    assert vips.from_json("not json") == {}


def test_vip_outbounds_and_names() -> None:
    view = vips.allocate({}, vips.wanted([_dp("my_svc")], []))
    domains, outbounds = vips.vip_outbounds(view)
    assert domains == (vips.VipDomains("240.0.0.0", ("my_svc.mesh", "my.svc.mesh")),)
    assert outbounds == (vips.VipOutbound("240.0.0.0", 80, "my_svc", (("kuma.io/service", "my_svc"),)),)


def _mesh_with(store, *services: str) -> None:
    store.create(Resource("Mesh", "", "default", {}))
    for service in services:
        store.create(Resource("Dataplane", "default", f"{service}-1", _dp(service)))


def _stored(store) -> dict[str, str]:
    config = store.get("Config", "", "kuma-default-dns-vips")
    return {k: v["address"] for k, v in json.loads(config.content["config"]).items()}


def test_the_leader_stores_them_and_writes_only_changes() -> None:
    store = MemoryStore()
    _mesh_with(store, "web", "backend")
    sync = VipSync(store)
    sync.sync_if_changed()
    assert _stored(store) == {"0:backend": "240.0.0.0", "0:web": "240.0.0.1"}
    revision = store.revision()
    sync.sync()                       # nothing changed: nothing written
    assert store.revision() == revision
    store.delete("Mesh", "", "default")
    sync.sync_if_changed()
    assert store.get("Config", "", "kuma-default-dns-vips") is None


def test_addresses_survive_a_restart_and_are_shared_by_instances(tmp_path) -> None:
    path = tmp_path / "kuma.db"
    first = SQLiteStore(str(path))
    _mesh_with(first, "web", "backend")
    VipSync(first).sync()
    before = _stored(first)
    first.close()
    # a restarted (or another) instance leading on the same database: a new service gets a new address,
    # the others keep theirs
    second = SQLiteStore(str(path))
    second.create(Resource("Dataplane", "default", "api-1", _dp("api")))
    VipSync(second).sync()
    assert _stored(second) == {**before, "0:api": "240.0.0.2"}
    second.close()
