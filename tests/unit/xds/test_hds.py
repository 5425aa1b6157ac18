"""Health discovery: the checks a proxy is given, what its reports do to the Dataplane, and the HDS stream.

The stream tests run a real grpc.aio server and client on a unix socket over a real SQLite store.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from pathlib import Path

import grpc
import pytest
import yaml
from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.service.health.v3 import hds_pb2, hds_pb2_grpc

from appliance.core.events import ChangeHub
from appliance.core.manager import ResourceManager
from appliance.core.resources.dataplane import inbound_ready, keep_probed_health, not_ready_until_probed
from appliance.core.resources.model import Resource
from appliance.store.sqlite import SQLiteStore
from appliance.xds import bootstrap
from appliance.xds.hds import HdsServer
from appliance.xds.health import (ENVOY_ADMIN_CLUSTER, EnvoyAdmin, HdsSettings, Report, apply_report, read_report,
                                  specifier)
from appliance.xds.snapshot import build_snapshot

PROBE = {"interval": "3s", "timeout": "500ms", "unhealthyThreshold": 4, "healthyThreshold": 2, "tcp": {}}
SETTINGS = HdsSettings(interval=2_000_000_000)


def _dataplane(*inbounds: dict, **networking: object) -> dict:
    return {"networking": {"address": "10.0.0.1", "inbound": list(inbounds), **networking}}


def _inbound(port: int, service_port: int | None = None, **extra: object) -> dict:
    out: dict = {"port": port, "tags": {"kuma.io/service": "backend"}, **extra}
    if service_port:
        out["servicePort"] = service_port
    return out


# --- the checks ---------------------------------------------------------------------------------
def test_a_probe_becomes_a_tcp_check_of_the_application_with_the_probes_values() -> None:
    dp = _dataplane(_inbound(10001, 8080, serviceProbe=PROBE), _inbound(10002, 8081))
    out = specifier(dp, EnvoyAdmin(pipe="/work/dp/envoy-admin.sock"), SETTINGS)
    assert out.interval.seconds == 2
    admin, app = out.cluster_health_checks   # the inbound without a probe is not checked
    assert admin.cluster_name == ENVOY_ADMIN_CLUSTER
    assert admin.locality_endpoints[0].endpoints[0].address.pipe.path == "/work/dp/envoy-admin.sock"
    assert admin.health_checks[0].http_health_check.path == "/ready"
    assert app.cluster_name == "localhost:8080"
    socket = app.locality_endpoints[0].endpoints[0].address.socket_address
    assert (socket.address, socket.port_value) == ("10.0.0.1", 8080)
    check = app.health_checks[0]
    assert check.WhichOneof("health_checker") == "tcp_health_check"
    assert (check.interval.seconds, check.timeout.ToMilliseconds()) == (3, 500)
    assert (check.unhealthy_threshold.value, check.healthy_threshold.value) == (4, 2)
    assert check.no_traffic_interval.seconds == 1


def test_what_a_probe_leaves_out_comes_from_the_check_defaults() -> None:
    settings = HdsSettings(timeout=7_000_000_000, check_interval=9_000_000_000, healthy_threshold=5,
                           unhealthy_threshold=6)
    dp = _dataplane(_inbound(10001, serviceProbe={"tcp": {}}, serviceAddress="127.0.0.2"), admin={"port": 9902})
    out = specifier(dp, EnvoyAdmin(port=9902), settings)
    admin, app = out.cluster_health_checks
    socket = admin.locality_endpoints[0].endpoints[0].address.socket_address
    assert (socket.address, socket.port_value) == ("127.0.0.1", 9902)
    assert app.cluster_name == "localhost:10001"   # no servicePort: the application is on the inbound's port
    assert app.locality_endpoints[0].endpoints[0].address.socket_address.address == "127.0.0.2"
    check = app.health_checks[0]
    assert (check.timeout.seconds, check.interval.seconds) == (7, 9)
    assert (check.healthy_threshold.value, check.unhealthy_threshold.value) == (5, 6)


def _report(**health: int) -> hds_pb2.EndpointHealthResponse:
    out = hds_pb2.EndpointHealthResponse()
    for cluster, status in health.items():
        c = out.cluster_endpoints_health.add(cluster_name=ENVOY_ADMIN_CLUSTER if cluster == "admin"
                                             else cluster.replace("_", ":"))
        c.locality_endpoints_health.add().endpoints_health.add(health_status=status)
    return out


def test_a_report_is_read_per_application_port_and_for_envoy() -> None:
    report = read_report(_report(admin=health_check_pb2.HEALTHY, localhost_8080=health_check_pb2.UNHEALTHY,
                                 localhost_8081=health_check_pb2.UNKNOWN, localhost_8082=health_check_pb2.TIMEOUT))
    assert report == Report({8080: False, 8081: True, 8082: False}, envoy=True)
    assert read_report(_report(admin=health_check_pb2.DRAINING)).envoy is False
    assert read_report(hds_pb2.EndpointHealthResponse()) == Report({}, envoy=True)


# --- what a report does to the Dataplane ------------------------------------------------------------
def test_a_failed_probe_marks_its_inbound_not_ready_and_a_passed_one_ready_again() -> None:
    dp = _dataplane(_inbound(10001, 8080, serviceProbe=PROBE), _inbound(10002, 8081, serviceProbe=PROBE))
    down = apply_report(dp, Report({8080: False, 8081: True}, envoy=True))
    first, second = down["networking"]["inbound"]
    assert (first["state"], first["health"]) == ("NotReady", {"ready": False})
    assert second == dp["networking"]["inbound"][1]                         # ready already: left as it is
    assert "state" not in dp["networking"]["inbound"][0]                    # the input is left as it was
    assert apply_report(down, Report({8080: False, 8081: True}, envoy=True)) is None   # nothing new: no write
    up = apply_report(down, Report({8080: True, 8081: True}, envoy=True))
    assert "state" not in up["networking"]["inbound"][0] and up["networking"]["inbound"][0]["health"] == {"ready": True}


def test_a_draining_envoy_takes_every_inbound_out_and_external_health_of_unprobed_ones_stays() -> None:
    external = _inbound(10002, 8081, health={"ready": False})   # set by an external health checker
    dp = _dataplane(_inbound(10001, 8080, serviceProbe=PROBE, health={"ready": True}), external,
                    _inbound(10003, 8082, state="Ignored"))
    assert apply_report(dp, Report({8080: True}, envoy=True)) is None
    drained = apply_report(dp, Report({8080: True}, envoy=False))
    assert [ib.get("state") for ib in drained["networking"]["inbound"]] == ["NotReady", "NotReady", "Ignored"]


def test_readiness_is_state_and_health_as_kuma_reads_it() -> None:
    assert inbound_ready({}) and inbound_ready({"health": {"ready": True}})
    assert not inbound_ready({"health": {}}) and not inbound_ready({"state": "NotReady"})
    assert not inbound_ready({"state": "Ignored"})


def test_probed_inbounds_of_a_new_dataplane_start_not_ready() -> None:
    dp = _dataplane(_inbound(10001, serviceProbe=PROBE), _inbound(10002))
    created = not_ready_until_probed(dp)
    assert [inbound_ready(ib) for ib in created["networking"]["inbound"]] == [False, True]
    assert created["networking"]["inbound"][0]["health"] == {"ready": False}
    assert not_ready_until_probed(_dataplane(_inbound(10002))) == _dataplane(_inbound(10002))


def test_kuma_dp_registering_again_keeps_the_health_found_for_the_same_probed_application() -> None:
    stored = not_ready_until_probed(_dataplane(_inbound(10001, 8080, serviceProbe=PROBE), _inbound(10002)))
    again = _dataplane(_inbound(10001, 8080, serviceProbe=PROBE), _inbound(10002))
    assert keep_probed_health(again, stored) == stored   # unchanged: nothing to write
    ready = apply_report(stored, Report({8080: True}, envoy=True))
    assert keep_probed_health(again, ready) == ready
    moved = _dataplane(_inbound(10001, 9090, serviceProbe=PROBE))   # another application: probed anew
    assert keep_probed_health(moved, ready) == not_ready_until_probed(moved)
    reprobed = _dataplane(_inbound(10001, 8080, serviceProbe={**PROBE, "timeout": "2s"}))
    assert keep_probed_health(reprobed, ready)["networking"]["inbound"][0]["health"] == {"ready": True}
    assert keep_probed_health(_dataplane(_inbound(10002)), ready) == _dataplane(_inbound(10002))


@pytest.fixture
def env(tmp_path: Path):
    store = SQLiteStore(tmp_path / "kuma.db", ChangeHub())
    manager = ResourceManager(store)
    manager.ensure_mesh("default")
    yield store, manager
    store.close()


def test_not_ready_inbounds_are_not_endpoints(env) -> None:
    store, manager = env
    manager.create(Resource("Dataplane", "default", "backend-1", _dataplane(_inbound(10001, serviceProbe=PROBE))))
    manager.create(Resource("Dataplane", "default", "backend-2", _dataplane(_inbound(10002))))
    snapshot = build_snapshot(store, "default", store.revision())
    assert [e.dataplane for e in snapshot.endpoints["backend"]] == ["backend-2"]
    stored = store.get("Dataplane", "default", "backend-1")
    assert stored.content["networking"]["inbound"][0]["state"] == "NotReady"


# --- the bootstrap ------------------------------------------------------------------------------
def _bootstrap(hds: bool, proxy_type: str = "dataplane") -> dict:
    params = bootstrap.BootstrapParams("cp.example", 5678, b"CA", delta=True, hds=hds)
    out = bootstrap.render({"dataplaneToken": "tok", "proxyType": proxy_type, "workdir": "/w"}, "default", "dp-1",
                           "backend", params, None)
    return yaml.safe_load(base64.b64decode(out["bootstrap"]))


def test_the_bootstrap_has_kumas_hds_config_on_the_ads_cluster_with_the_token() -> None:
    config = _bootstrap(hds=True)
    assert config["hdsConfig"] == {
        "apiType": "GRPC", "transportApiVersion": "V3", "setNodeOnFirstMessageOnly": True,
        "grpcServices": [{"envoyGrpc": {"clusterName": "ads_cluster"},
                          "initialMetadata": [{"key": "authorization", "value": "tok"}]}]}
    assert config["admin"]["address"]["pipe"]["path"] == bootstrap.admin_socket("/w")
    assert "hdsConfig" not in _bootstrap(hds=False)
    assert "hdsConfig" not in _bootstrap(hds=True, proxy_type="egress")


# --- the stream ---------------------------------------------------------------------------------
async def _serve(manager: ResourceManager, settings: HdsSettings = SETTINGS, refuse: str = ""):
    def authenticate(node, metadata):
        if refuse:
            raise PermissionError(refuse)
        return tuple(node.id.split(".", 1))

    hds = HdsServer(manager, settings, authenticate, lambda dp, node: EnvoyAdmin(pipe="/w/envoy-admin.sock"),
                    asyncio.get_running_loop())
    server = grpc.aio.server()
    hds_pb2_grpc.add_HealthDiscoveryServiceServicer_to_server(hds, server)
    name = f"unix-abstract:hds-test-{secrets.token_hex(4)}"
    server.add_insecure_port(name)
    await server.start()
    return server, hds, grpc.aio.insecure_channel(name)


class Proxy:
    """One Envoy's HDS stream."""

    def __init__(self, channel: grpc.aio.Channel, name: str) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.call = hds_pb2_grpc.HealthDiscoveryServiceStub(channel).StreamHealthCheck(self._requests())
        self.queue.put_nowait(hds_pb2.HealthCheckRequestOrEndpointHealthResponse(
            health_check_request=hds_pb2.HealthCheckRequest(node=base_pb2.Node(id=f"default.{name}"))))

    async def _requests(self):
        while (item := await self.queue.get()) is not None:
            yield item

    async def recv(self) -> hds_pb2.HealthCheckSpecifier:
        return await asyncio.wait_for(self.call.read(), 5)

    def report(self, **health: int) -> None:
        self.queue.put_nowait(hds_pb2.HealthCheckRequestOrEndpointHealthResponse(
            endpoint_health_response=_report(**health)))


async def _until(check, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not in time"
        await asyncio.sleep(0.02)


def _ready(store, name: str) -> bool:
    return inbound_ready(store.get("Dataplane", "default", name).content["networking"]["inbound"][0])


def test_reports_on_the_stream_mark_the_inbound_and_a_changed_dataplane_gets_new_checks_at_once(env) -> None:
    store, manager = env
    manager.create(Resource("Dataplane", "default", "backend-1",
                            _dataplane(_inbound(10001, 8080, serviceProbe=PROBE))))

    async def scenario() -> None:
        server, hds, channel = await _serve(manager)
        proxy = Proxy(channel, "backend-1")
        checks = await proxy.recv()
        assert [c.cluster_name for c in checks.cluster_health_checks] == [ENVOY_ADMIN_CLUSTER, "localhost:8080"]
        assert not _ready(store, "backend-1")            # not ready until its probe passes
        proxy.report(admin=health_check_pb2.HEALTHY, localhost_8080=health_check_pb2.HEALTHY)
        await _until(lambda: _ready(store, "backend-1"))
        proxy.report(admin=health_check_pb2.HEALTHY, localhost_8080=health_check_pb2.UNHEALTHY)
        await _until(lambda: not _ready(store, "backend-1"))
        # the probe is changed: the proxy gets its new checks without waiting for the refresh interval
        dp = store.get("Dataplane", "default", "backend-1")
        dp.content["networking"]["inbound"][0]["serviceProbe"] = {**PROBE, "interval": "7s"}
        manager.update(dp, dp.version)
        changed = await proxy.recv()
        assert changed.cluster_health_checks[1].health_checks[0].interval.seconds == 7
        proxy.queue.put_nowait(None)
        await server.stop(None)

    asyncio.run(scenario())


def test_only_the_newest_stream_of_a_proxy_is_believed(env, caplog) -> None:
    """A restarted kuma-dp's new Envoy serves while the old one drains (and reports itself not ready)."""
    store, manager = env
    manager.create(Resource("Dataplane", "default", "backend-1", _dataplane(_inbound(10001, 8080))))
    caplog.set_level(logging.DEBUG, logger="appliance.hds")

    def ignored() -> int:
        return sum("from an older stream is ignored" in r.getMessage() for r in caplog.records)

    async def scenario() -> None:
        server, hds, channel = await _serve(manager)
        old = Proxy(channel, "backend-1")
        await old.recv()
        new = Proxy(channel, "backend-1")
        await new.recv()
        old.report(admin=health_check_pb2.DRAINING)
        await _until(lambda: ignored() == 1)
        assert _ready(store, "backend-1")
        new.report(admin=health_check_pb2.DRAINING)
        await _until(lambda: not _ready(store, "backend-1"))   # the newest is believed
        new.report(admin=health_check_pb2.HEALTHY)
        await _until(lambda: _ready(store, "backend-1"))
        new.queue.put_nowait(None)   # the new one's stream ends first: then the old one is the newest
        await _until(lambda: len(hds._streams[("default", "backend-1")]) == 1)
        old.report(admin=health_check_pb2.DRAINING)
        await _until(lambda: not _ready(store, "backend-1"))
        assert ignored() == 1
        old.queue.put_nowait(None)
        await server.stop(None)

    asyncio.run(scenario())


def test_a_stream_that_fails_authentication_is_refused(env) -> None:
    store, manager = env

    async def scenario() -> None:
        server, hds, channel = await _serve(manager, refuse="authentication failed: no dataplane token")
        proxy = Proxy(channel, "backend-1")
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await proxy.recv()
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "no dataplane token" in e.value.details()
        await server.stop(None)

    asyncio.run(scenario())


def test_while_the_store_is_down_nothing_is_read_or_written_and_the_next_report_after_is(env) -> None:
    store, manager = env
    manager.create(Resource("Dataplane", "default", "backend-1",
                            _dataplane(_inbound(10001, 8080, serviceProbe=PROBE))))
    down, asked = [True], []

    def healthy() -> bool:
        asked.append(down[0])
        return not down[0]
    store.healthy = healthy   # PostgreSQL unreachable: the store says so at once, instead of timing out

    async def scenario() -> None:
        server, hds, channel = await _serve(manager, HdsSettings(refresh_interval=200_000_000))
        proxy = Proxy(channel, "backend-1")
        proxy.report(admin=health_check_pb2.HEALTHY, localhost_8080=health_check_pb2.HEALTHY)
        await _until(lambda: asked.count(True) >= 2)   # the checks and the report met a store that is down
        assert not _ready(store, "backend-1")
        down[0] = False

        async def reporting() -> None:   # Envoy goes on reporting meanwhile (what changes nothing)
            while True:
                proxy.report(admin=health_check_pb2.HEALTHY, localhost_8080=health_check_pb2.UNHEALTHY)
                await asyncio.sleep(0.05)
        reporter = asyncio.ensure_future(reporting())
        checks = await proxy.recv()   # at the next refresh
        reporter.cancel()
        assert [c.cluster_name for c in checks.cluster_health_checks] == [ENVOY_ADMIN_CLUSTER, "localhost:8080"]
        proxy.report(admin=health_check_pb2.HEALTHY, localhost_8080=health_check_pb2.HEALTHY)
        await _until(lambda: _ready(store, "backend-1"))
        proxy.queue.put_nowait(None)
        await server.stop(None)

    asyncio.run(scenario())


def test_a_stream_whose_token_no_longer_passes_is_closed_and_its_reports_stop_counting(env) -> None:
    """As the ADS streams: a revoked token loses its HDS stream at once (DataplaneAuth.watch rechecks both)."""
    store, manager = env
    for name in ("backend-1", "backend-2"):
        manager.create(Resource("Dataplane", "default", name, _dataplane(_inbound(10001, 8080))))

    def check(key, metadata) -> None:
        if key == ("default", "backend-1"):
            raise PermissionError("authentication failed: token is revoked")

    async def scenario() -> None:
        server, hds, channel = await _serve(manager)
        revoked, kept = Proxy(channel, "backend-1"), Proxy(channel, "backend-2")
        await revoked.recv()
        await kept.recv()
        assert hds.recheck(check, {"other-mesh"}) == 0     # streams of other meshes are not looked at
        assert hds.recheck(check, {"default"}) == 1
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await revoked.recv()
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "token is revoked" in e.value.details()
        assert ("default", "backend-1") not in hds._streams
        kept.report(admin=health_check_pb2.DRAINING)        # the other proxy's stream goes on
        await _until(lambda: not _ready(store, "backend-2"))
        assert _ready(store, "backend-1")
        kept.queue.put_nowait(None)
        revoked.queue.put_nowait(None)
        await server.stop(None)

    asyncio.run(scenario())
