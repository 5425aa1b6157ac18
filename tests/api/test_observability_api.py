"""MeshAccessLog and MeshTrace over the API: applied (no "not applied" warning), validated with Kuma's messages,
MeshTrace served at Kuma's path, and a `file` access log (Envoy writes that path on the proxy's host) for
admins only."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support import LiveApi, live_api

MAL_PATH = "/meshes/default/meshaccesslogs/logs"
TRACE_PATH = "/meshes/default/meshtraces/trace"


def _access_log(*backends: dict[str, Any], section: str = "to") -> dict[str, Any]:
    return {"type": "MeshAccessLog", "name": "logs", "mesh": "default",
            "spec": {"targetRef": {"kind": "Mesh"},
                     section: [{"targetRef": {"kind": "Mesh"}, "default": {"backends": list(backends)}}]}}


def _trace(**conf: Any) -> dict[str, Any]:
    return {"type": "MeshTrace", "name": "trace", "mesh": "default", "spec": {"default": conf}}


ZIPKIN = {"type": "Zipkin", "zipkin": {"url": "http://zipkin.local:9411/api/v2/spans"}}
TCP = {"type": "Tcp", "tcp": {"address": "127.0.0.1:5000"}}
FILE = {"type": "File", "file": {"path": "/home/kuma-dp/.bashrc"}}


def _user(api: LiveApi, name: str) -> dict[str, str]:
    r = api.post("/tokens/user", {"name": name, "groups": ["team-a"], "validFor": "1h"})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.text}"}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LiveApi]:
    with live_api(tmp_path, defaults=True) as a:
        yield a


def test_access_logs_and_traces_are_applied_without_a_warning(api: LiveApi) -> None:
    created = api.put(MAL_PATH, _access_log(TCP))
    assert created.status_code == 201, created.text
    assert "warnings" not in created.json()
    traced = api.put(TRACE_PATH, _trace(backends=[ZIPKIN], sampling={"overall": 50}))
    assert traced.status_code == 201, traced.text
    assert "warnings" not in traced.json()


def test_a_trace_is_served_at_kumas_path_with_its_defaults(api: LiveApi) -> None:
    assert api.put(TRACE_PATH, _trace(backends=[ZIPKIN])).status_code == 201
    got = api.get(TRACE_PATH)
    assert got.status_code == 200, got.text
    assert got.json()["spec"]["default"]["backends"][0]["zipkin"] == {
        "url": "http://zipkin.local:9411/api/v2/spans", "apiVersion": "httpJson", "sharedSpanContext": True,
        "traceId128bit": False}
    assert [i["name"] for i in api.get("/meshes/default/meshtraces").json()["items"]] == ["trace"]
    kinds = {r["name"]: r for r in api.get("/_resources").json()["resources"]}
    assert kinds["MeshTrace"]["path"] == "meshtraces" and kinds["MeshTrace"]["shortName"] == "mtr"


@pytest.mark.parametrize(("conf", "field", "reason"), [
    ({}, "spec.default.backends", "must be defined"),
    ({"backends": [{"type": "Zipkin", "zipkin": {"url": "not a url"}}]},
     "spec.default.backends[0].zipkin.url", "must be a valid url"),
    ({"backends": [{"type": "Datadog", "datadog": {"url": "https://agent:8126/path"}}]},
     "spec.default.backends[0].datadog.url", "scheme must be http"),
    ({"backends": [{"type": "OpenTelemetry", "openTelemetry": {}}]},
     "spec.default.backends[0].openTelemetry", "openTelemetry must have exactly one defined: endpoint, backendRef"),
    ({"backends": [], "sampling": {"random": 101}}, "spec.default.sampling.random", "must be between 0 and 100"),
    ({"backends": [], "tags": [{"name": "t", "literal": "a", "header": {"name": "h"}}]},
     "spec.default.tags[0]", "tag must have only one type defined: header, literal"),
])
def test_a_bad_trace_is_refused_naming_the_field(api: LiveApi, conf: dict, field: str, reason: str) -> None:
    r = api.put(TRACE_PATH, _trace(**conf))
    assert r.status_code == 400, r.text
    assert {"field": field, "reason": reason} in r.json()["invalid_parameters"]


def test_a_collector_named_by_a_backend_resource_is_stored_with_a_warning(api: LiveApi) -> None:
    ref = {"type": "OpenTelemetry", "openTelemetry": {"backendRef": {"kind": "MeshOpenTelemetryBackend",
                                                                     "labels": {"app": "otel"}}}}
    warnings = api.put(MAL_PATH, _access_log(ref)).json()["warnings"]
    assert warnings == ["'spec.to[0].default.backends[0].openTelemetry.backendRef' is stored but not applied to "
                        "proxies by this control plane (MeshOpenTelemetryBackend is not served): use "
                        "openTelemetry.endpoint"]
    assert any("backendRef" in w for w in api.put(TRACE_PATH, _trace(backends=[ref])).json()["warnings"])


def test_only_admins_may_make_proxies_write_an_access_log_file(api: LiveApi) -> None:
    alice, remote = _user(api, "alice"), api.remote()
    r = remote.put(MAL_PATH, _access_log(TCP, FILE, section="from"), headers=alice)
    assert r.status_code == 403, r.text
    assert r.json()["detail"] == ('user "alice/team-a,mesh-system:authenticated" cannot set '
                                  'spec.from[0].default.backends[1].file.path: only admins may make proxies write a '
                                  'file on their hosts')
    assert api.get(MAL_PATH).status_code == 404                       # nothing stored
    assert remote.put(MAL_PATH, _access_log(TCP), headers=alice).status_code == 201   # without it: fine
    assert api.put(MAL_PATH, _access_log(FILE)).status_code == 200     # the local admin may
    assert remote.put(MAL_PATH, _access_log(FILE), headers=alice).status_code == 403


def test_observability_policies_for_a_gateway_are_applied_without_a_warning(api: LiveApi) -> None:
    """MeshTrace and MeshAccessLog for a MeshGateway are applied to its listeners: no warning about gateways."""
    gateway = {"kind": "MeshGateway", "name": "edge"}
    trace = _trace(backends=[ZIPKIN])
    trace["spec"]["targetRef"] = gateway
    assert not any("MeshGateway" in w for w in api.put(TRACE_PATH, trace).json().get("warnings", []))
    access_log = _access_log(TCP)
    access_log["spec"]["targetRef"] = gateway
    assert not any("MeshGateway" in w for w in api.put(MAL_PATH, access_log).json().get("warnings", []))
