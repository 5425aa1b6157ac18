"""MeshProxyPatch through real Envoys: what a caller of a patched service sees.

`web` calls `backend` through its outbound; a MeshProxyPatch on backend's Dataplane adds a header-mutation
HTTP filter before the router of its inbound and a response header on its inbound virtual host (served by
RDS), and the caller gets both headers. A patch Envoy refuses (Lua that does not compile) is NACKed: the
insights count the rejection and the proxy keeps its last good config, so traffic keeps flowing, patched.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.harness import Mesh, version_app
from tests.support import eventually, free_port

pytestmark = pytest.mark.slow

PATH = "/meshes/default/meshproxypatches/backend-patch"
HEADER_FILTER = (
    "name: envoy.filters.http.header_mutation\ntypedConfig:\n"
    "  '@type': type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation\n"
    "  mutations:\n    responseMutations:\n    - append:\n        header: {key: x-patched, value: by-filter}\n")
BAD_LUA = (
    "name: envoy.filters.http.lua\ntypedConfig:\n"
    "  '@type': type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua\n"
    "  defaultSourceCode:\n    inlineString: 'this is not lua ('\n")
GOOD_MODS = [
    {"httpFilter": {"operation": "AddBefore", "match": {"name": "envoy.filters.http.router", "origin": "inbound"},
                    "value": HEADER_FILTER}},
    {"virtualHost": {"operation": "Patch", "match": {"origin": "inbound"},
                     "value": "responseHeadersToAdd:\n- header: {key: x-vhost, value: inbound}\n"}},
]


def _policy(modifications: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "MeshProxyPatch", "mesh": "default", "name": "backend-patch",
            "spec": {"targetRef": {"kind": "Dataplane", "name": "backend-1"},
                     "default": {"appendModifications": modifications}}}


@pytest.fixture(params=["sotw", "delta"])
def mesh(request, tmp_path: Path):
    mesh = Mesh(tmp_path, {"KUMA_EXPERIMENTAL_DELTA_XDS": "true"} if request.param == "delta" else None)
    mesh.cp.start()
    yield mesh
    mesh.close()


def _lds(mesh: Mesh, name: str) -> dict[str, int]:
    """The listener counts of the proxy's current subscription (GET .../_overview), {} before the first."""
    overview = requests.get(f"{mesh.cp.url}/meshes/default/dataplanes/{name}/_overview", timeout=5).json()
    subscriptions = overview["dataplaneInsight"].get("subscriptions") or []
    if not subscriptions:
        return {}
    newest = max(subscriptions, key=lambda s: s.get("connectTime", ""))
    return {k: int(v) for k, v in newest.get("status", {}).get("lds", {}).items()}


def test_a_patch_adds_response_headers_and_a_rejected_patch_keeps_the_last_good_config(mesh: Mesh) -> None:
    out_port = free_port()
    mesh.kuma_dp("backend-1", mesh.token("backend-1"), port=free_port(), servicePort=version_app("v1"),
                 service="backend", protocol="http", outPort=free_port(), outService="nothing")
    mesh.kuma_dp("web-1", mesh.token("web-1"), port=free_port(), servicePort=free_port(),
                 service="web", protocol="http", outPort=out_port, outService="backend")

    def get() -> requests.Response:
        return requests.get(f"http://127.0.0.1:{out_port}/", timeout=10)

    eventually(lambda: get().status_code == 200, timeout=40)
    assert "x-patched" not in get().headers

    created = requests.put(mesh.cp.url + PATH, json=_policy(GOOD_MODS), timeout=10)
    assert created.status_code == 201, created.text
    assert "warnings" not in created.json()
    eventually(lambda: all((r := get()).headers.get("x-patched") == "by-filter" and
                           r.headers.get("x-vhost") == "inbound" for _ in range(5)))
    eventually(lambda: _lds(mesh, "backend-1").get("responsesAcknowledged", 0) >= 2, "the patch ACKed in the insights")
    assert _lds(mesh, "backend-1")["responsesRejected"] == 0

    # Valid for the API (a filter whose config is Lua), refused by Envoy (the Lua does not compile)
    bad = {"httpFilter": {"operation": "AddFirst", "match": {"origin": "inbound"}, "value": BAD_LUA}}
    updated = requests.put(mesh.cp.url + PATH, json=_policy([*GOOD_MODS, bad]), timeout=10)
    assert updated.status_code == 200, updated.text
    eventually(lambda: _lds(mesh, "backend-1").get("responsesRejected", 0) >= 1,
               "the NACK of the listener in the insights")
    for _ in range(10):   # the last good listener serves on, patched as before
        r = get()
        assert (r.status_code, r.headers.get("x-patched"), r.headers.get("x-vhost")) == (200, "by-filter", "inbound")

    assert requests.delete(mesh.cp.url + PATH, timeout=10).ok
    eventually(lambda: all("x-patched" not in (r := get()).headers and r.status_code == 200 for _ in range(5)))
