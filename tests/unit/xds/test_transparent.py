"""Transparent proxying: capture listeners, VIP outbounds and the `/dns` records (the golden of the usual case is
CASES["transparent-proxy"], with the other generator cases)."""
from __future__ import annotations

import json

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from appliance.model import names
from appliance.model.proxy import TransparentProxy
from appliance.xds.generate import generate_sidecar
from tests.unit.xds.golden import assert_golden, resources_yaml
from tests.unit.xds.scenarios import IDENTITY, TRANSPARENT, transparent_proxy, transparent_snapshot, web_proxy

TP = TRANSPARENT


def _snapshot(mtls: str | None = "STRICT", **changes: object):
    return transparent_snapshot(mtls, **changes)


def _proxy(tp: TransparentProxy = TP):
    return transparent_proxy(tp)


def _dns(resources: dict) -> dict:
    listener = resources[names.LISTENER][names.DYNAMIC_CONFIG_LISTENER]
    hcm = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    route = next(r for r in hcm.route_config.virtual_hosts[0].routes if r.name == "_kuma:dynamicconfig:/dns")
    return json.loads(route.direct_response.body.inline_string)


def test_golden_transparent_dual_stack_without_passthrough() -> None:
    tp = TransparentProxy(inbound_port=15006, outbound_port=15001, ipv6=True, reachable_services=("backend",))
    resources = generate_sidecar(_snapshot(None, passthrough=False), _proxy(tp), IDENTITY)
    assert_golden("transparent-proxy-ipv6-no-passthrough.yaml", resources_yaml(resources))


def test_every_service_is_reachable_at_its_vip_on_port_80_without_binding() -> None:
    listeners = generate_sidecar(_snapshot(), _proxy(), IDENTITY)[names.LISTENER]
    vip = {d.domains[0]: d.address for d in _snapshot().vip_domains}
    for service in ("backend.mesh", "db.mesh", "web.mesh", "my_svc.mesh", "httpbin.mesh"):
        listener: listener_pb2.Listener = listeners[f"outbound:{vip[service]}:80"]
        assert listener.bind_to_port.value is False
    # an ExternalService on its own port too, and its host name at a VIP of its own
    assert f"outbound:{vip['httpbin.mesh']}:443" in listeners
    assert f"outbound:{vip['httpbin.org']}:443" in listeners
    # the Dataplane's own outbounds give way to the VIP ones, as in Kuma
    assert "outbound:127.0.0.1:10001" not in listeners
    assert listeners["inbound:10.0.0.1:8080"].bind_to_port.value is False
    assert listeners["outbound:passthrough:ipv4"].use_original_dst.value is True
    assert "outbound:passthrough:ipv6" not in listeners


def test_reachable_services_limit_the_outbounds_and_the_names() -> None:
    tp = TransparentProxy(inbound_port=15006, outbound_port=15001, ipv6=False, reachable_services=("backend",),
                          dns_port=15053)
    resources = generate_sidecar(_snapshot(), _proxy(tp), IDENTITY)
    outbound = {n for n in resources[names.LISTENER] if n.startswith("outbound:2")}
    backend = next(d.address for d in _snapshot().vip_domains if d.domains[0] == "backend.mesh")
    assert outbound == {f"outbound:{backend}:80"}
    assert _dns(resources)["records"] == [{"name": "backend.mesh", "ips": [backend]}]


def test_dns_records_in_kumas_format() -> None:
    dns = _dns(generate_sidecar(_snapshot(), _proxy(), IDENTITY))
    assert dns["ttl"] == 30 and dns["extraLabels"] == {"mesh": "default"}
    by_name = {r["name"]: r["ips"] for r in dns["records"]}
    # a service with `_` answers under both spellings; names sorted, as Kuma sorts them
    assert by_name["my_svc.mesh"] == by_name["my.svc.mesh"]
    assert [r["name"] for r in dns["records"]] == sorted(by_name)
    assert by_name["backend.mesh"] == ["240.0.0.0"]


def test_dns_names_carry_ipv6_mapped_addresses_when_ipv6_is_captured() -> None:
    tp = TransparentProxy(inbound_port=15006, outbound_port=15001, ipv6=True, dns_port=15053)
    by_name = {r["name"]: r["ips"] for r in _dns(generate_sidecar(_snapshot(), _proxy(tp), IDENTITY))["records"]}
    assert by_name["backend.mesh"] == ["240.0.0.0", "::ffff:f000:0"]


def test_no_dns_route_without_kuma_dp_dns_and_nothing_without_transparent_proxying() -> None:
    no_dns = generate_sidecar(_snapshot(), web_proxy(transparent_proxy=TransparentProxy(15006, 15001)), IDENTITY)
    assert names.DYNAMIC_CONFIG_LISTENER not in no_dns[names.LISTENER]
    plain = generate_sidecar(_snapshot(), web_proxy(), IDENTITY)
    assert "outbound:passthrough:ipv4" not in plain[names.LISTENER]
    assert "outbound:127.0.0.1:10001" in plain[names.LISTENER]
    assert not plain[names.LISTENER]["inbound:10.0.0.1:8080"].HasField("bind_to_port")


def test_ipv4_only_capture_needs_an_ipv4_address() -> None:
    tp = TransparentProxy(inbound_port=15006, outbound_port=15001, ipv6=False)
    assert web_proxy(transparent_proxy=tp).transparent == tp
    assert web_proxy(address="fd00::1", transparent_proxy=tp).transparent is None


def test_dataplane_transparent_proxying_is_read() -> None:
    tp = TransparentProxy.from_dataplane({"redirectPortInbound": 15006, "redirectPortOutbound": 15001, "ipFamilyMode": "IPv4",
                               "reachableServices": ["backend"]})
    assert tp == TransparentProxy(15006, 15001, False, ("backend",))
    assert TransparentProxy.from_dataplane(None) is None


def _node(**metadata: object):
    from envoy.config.core.v3 import base_pb2
    node = base_pb2.Node(id="default.web-1")
    node.metadata.update(metadata)
    return node


def test_kuma_dps_transparent_proxy_config_overrides_the_dataplanes() -> None:
    from appliance.xds.watch import node_metadata
    config = {"ipFamilyMode": "ipv4", "redirect": {"inbound": {"enabled": True, "port": 15106},
                                                   "outbound": {"enabled": True, "port": 15101},
                                                   "dns": {"enabled": True, "port": 15053}}}
    announced = node_metadata(_node(transparentProxy=config, features=[
        "feature-transparent-proxy-in-dataplane-metadata", "feature-embedded-dns"], **{"dataplane.dns.port": "15054"}))
    proxy = announced.apply(web_proxy())
    assert proxy.transparent == TransparentProxy(15106, 15101, False, dns_port=15054)
    # the feature without a config: Kuma's defaults; without the feature the metadata config is not used
    assert node_metadata(_node(features=["feature-transparent-proxy-in-dataplane-metadata"])).apply(
        web_proxy()).transparent == TransparentProxy(15006, 15001, True)
    assert node_metadata(_node(transparentProxy=config)).apply(web_proxy()).transparent is None
    # a broken port redirects nothing rather than breaking the stream
    broken = {"redirect": {"inbound": {"enabled": True, "port": "x"}}}
    assert node_metadata(_node(transparentProxy=broken)).transparent_proxy == (0, 0, True)
