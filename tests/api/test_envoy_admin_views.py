"""A proxy's Envoy admin views over the API: who may ask, and Kuma's answers when there is nothing to show.
(What they show from a real Envoy: tests/e2e/test_admin_views.py.)"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from appliance.core.resources.model import Resource
from tests.support import LiveApi, free_port, live_api

VIEWS = ("xds", "stats", "clusters")
PATHS = [f"/meshes/default/dataplanes/web-1/{v}" for v in VIEWS] + [f"/zoneegresses/egress-1/{v}" for v in VIEWS]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LiveApi]:
    with live_api(tmp_path, defaults=True) as a:
        yield a


def _proxies(api: LiveApi, admin_port: int) -> None:
    """web-1 and egress-1 at 127.0.0.1 with an admin port nothing listens on."""
    networking = {"address": "127.0.0.1", "admin": {"port": admin_port},
                  "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}]}
    api.store.create(Resource("Dataplane", "default", "web-1", {"networking": networking}))
    api.store.create(Resource("ZoneEgress", "", "egress-1",
                              {"networking": {"address": "127.0.0.1", "port": 10002, "admin": {"port": admin_port}}}))


# Kuma's variable names (viewConfigDump is GET_CONFIG_DUMP there)
ADMINS_ONLY = {f"KUMA_ACCESS_STATIC_{view}_GROUPS": "mesh-system:admin"
               for view in ("GET_CONFIG_DUMP", "VIEW_STATS", "VIEW_CLUSTERS")}


@pytest.mark.parametrize("path", PATHS)
def test_the_access_lists_decide_who_sees_a_proxys_admin_views(tmp_path: Path, path: str) -> None:
    # Kuma's defaults: anybody (here the proxy is down, so the view answers 500, not 403)
    with live_api(tmp_path / "open", defaults=True) as api:
        _proxies(api, free_port())
        r = api.remote("127.0.0.2").get(path)
        assert r.status_code == 500 and r.json()["title"] == "Could not execute admin operation", r.text
    # viewConfigDump / viewStats / viewClusters limited to admins: Kuma's 403 for anyone else
    with live_api(tmp_path / "closed", env=ADMINS_ONLY, defaults=True) as api:
        _proxies(api, free_port())
        r = api.remote("127.0.0.2").get(path)
        detail = 'user "mesh-system:anonymous/mesh-system:unauthenticated" cannot access envoy proxy info'
        assert r.status_code == 403, r.text
        assert r.json() == {"type": "/std-errors", "status": 403, "title": "Access Denied", "detail": detail,
                            "details": detail}
        assert api.get(path).status_code == 500   # the local admin may: it gets as far as the proxy


@pytest.mark.parametrize("path, title", [
    ("/meshes/default/dataplanes/nope/xds", "Could not get dataplane resource"),
    ("/meshes/default/dataplanes/nope/stats", "Could not get dataplane resource"),
    ("/zoneegresses/nope/clusters", "Could not get zone ingress resource"),   # sic, Kuma 2.14's title
])
def test_an_unknown_proxy_is_kumas_404(api: LiveApi, path: str, title: str) -> None:
    r = api.get(path)
    assert r.status_code == 404, r.text
    assert r.json() == {"type": "/std-errors", "status": 404, "title": title, "detail": "Not found",
                        "details": "Not found"}


@pytest.mark.parametrize("path", PATHS)
def test_an_unreachable_proxy_is_kumas_error_saying_where(api: LiveApi, path: str) -> None:
    port = free_port()
    _proxies(api, port)
    r = api.get(path)
    assert r.status_code == 500, r.text
    body = r.json()
    assert body["title"] == "Could not execute admin operation"
    assert f"cannot reach the Envoy admin API at 127.0.0.1:{port}" in body["detail"]
    assert "Traceback" not in r.text


def test_the_envoy_admin_ca_is_an_admins_secret(api: LiveApi) -> None:
    assert api.get("/global-secrets/envoy-admin-ca").status_code == 200
    assert api.remote("127.0.0.2").get("/global-secrets/envoy-admin-ca").status_code == 403
