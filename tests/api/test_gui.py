"""The read-only web GUI (/gui) over real HTTP: every page, its content, escaping and access.

The browser side (the refresh script, navigation, a proxy going offline) is tests/e2e/test_gui.py.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from appliance.core.resources.model import Resource
from tests.support import LiveApi, live_api

DP = {"type": "Dataplane", "mesh": "default", "name": "web-1", "labels": {"team": "shop"},
      "networking": {"address": "127.0.0.1", "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}],
                     "outbound": [{"port": 9000, "tags": {"kuma.io/service": "backend"}}]}}
TIMEOUT = {"type": "MeshTimeout", "mesh": "default", "name": "web-timeouts",
           "spec": {"targetRef": {"kind": "MeshService", "name": "web"},
                    "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "42s"}}]}}
# a policy whose spec carries markup (header values are free text): it must show as text
HOSTILE_SPEC = {"type": "MeshHTTPRoute", "mesh": "default", "name": "hostile",
                "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": "web"},
                         "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                                    "default": {"requestHeaderModifier": {"add": [
                                        {"name": "x-evil", "value": "<script>alert(1)</script>"}]}}}]}]}}
SECRET = {"type": "Secret", "mesh": "default", "name": "db-password", "data": "c3VwZXItc2VjcmV0LXBheWxvYWQ="}
PAGES = ["/gui", "/gui/meshes/default", "/gui/meshes/default/dataplanes/web-1",
         "/gui/meshes/default/policies/meshtimeouts", "/gui/meshes/default/policies/meshtimeouts/web-timeouts",
         "/gui/zoneegresses"]


class _Tags(HTMLParser):
    """Every element and attribute of a page, to tell markup from escaped text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(page)
    return parser.tags


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    with live_api(tmp_path_factory.mktemp("gui"), defaults=True, dp_server=True) as api:
        for body, path in [(DP, "dataplanes/web-1"), (TIMEOUT, "meshtimeouts/web-timeouts"),
                           (HOSTILE_SPEC, "meshhttproutes/hostile"), (SECRET, "secrets/db-password")]:
            r = api.put(f"/meshes/default/{path}", body)
            assert r.status_code == 201, r.text
        yield api


def test_index_reports_the_gui_path_as_kuma(api: LiveApi) -> None:
    assert api.get("/").json()["gui"] == "/gui"


@pytest.mark.parametrize("path", PAGES + [p + "/" for p in PAGES])
def test_every_page_is_html_served_with_our_own_files_only(api: LiveApi, path: str) -> None:
    r = api.get(path)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    tags = _tags(r.text)
    # nothing from the network (an air-gapped host), no inline script
    sources = [a.get("src") or a.get("href") for t, a in tags if t in ("script", "link")]
    assert sources and all(s.startswith("/gui/static/") for s in sources), sources
    assert all(a.get("src") for t, a in tags if t == "script")
    for source in sources:
        assert api.get(source).status_code == 200, source


def test_overview_lists_meshes_counts_and_the_control_plane(api: LiveApi) -> None:
    page = api.get("/gui").text
    assert ("a", {"href": "/gui/meshes/default"}) in _tags(page)
    text = _text(page)
    # one proxy, never connected: offline (the mesh row: proxies, online, degraded, offline)
    assert re.search(r"default 1 0 0 1 ", text), text
    assert "test-0000" in text and "2.14.3" in text


def test_mesh_page_shows_services_proxies_and_policy_counts(api: LiveApi) -> None:
    page = api.get("/gui/meshes/default").text
    text = _text(page)
    assert re.search(r"web offline 0 1 web\.mesh:80", text), text
    assert re.search(r"web-1 Offline web 127\.0\.0\.1", text), text
    assert ("a", {"href": "/gui/meshes/default/dataplanes/web-1"}) in _tags(page)
    # ours and the two default MeshTimeouts (created with the default mesh)
    assert re.search(r"MeshTimeout 3 ", text) and re.search(r"MeshHTTPRoute 1 ", text), text


def test_proxy_page_shows_its_policies_by_origin_and_its_envoy_config(api: LiveApi) -> None:
    page = api.get("/gui/meshes/default/dataplanes/web-1").text
    text = _text(page)
    assert "8080" in text and "kuma.io/service=web" in text and "kuma.io/service=backend" in text
    # from `_rules`: the MeshTimeout conf and a link to the policy it comes from
    assert ("a", {"href": "/gui/meshes/default/policies/meshtimeouts/web-timeouts"}) in _tags(page)
    assert "idleTimeout: 42s" in page
    # from `_config`: the listeners the DP server generates for it
    assert "type.googleapis.com/envoy.config.listener.v3.Listener" in page
    # the periodic refresh does not ask for the Envoy config again
    refreshed = api.get("/gui/meshes/default/dataplanes/web-1", headers={"X-Kuma-Gui-Refresh": "1"}).text
    assert "idleTimeout: 42s" in refreshed and "envoy.config.listener.v3.Listener" not in refreshed


def test_policy_page_shows_the_proxies_it_hits_and_its_yaml(api: LiveApi) -> None:
    page = api.get("/gui/meshes/default/policies/meshtimeouts/web-timeouts").text
    assert ("a", {"href": "/gui/meshes/default/dataplanes/web-1"}) in _tags(page)
    assert "type: MeshTimeout" in page and "name: web-timeouts" in page
    listing = api.get("/gui/meshes/default/policies/meshtimeouts").text
    assert ("a", {"href": "/gui/meshes/default/policies/meshtimeouts/web-timeouts"}) in _tags(listing)
    assert "MeshService web" in _text(listing)


def test_the_meshes_path_leads_to_the_overview(api: LiveApi) -> None:
    r = api.get("/gui/meshes", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"].endswith("/gui")


@pytest.mark.parametrize("path, shown", [
    ("/gui/meshes/nope", "no mesh 'nope'"),
    ("/gui/meshes/default/dataplanes/nope", "no data plane proxy 'nope'"),
    ("/gui/meshes/default/policies/secrets", "'secrets' is not a policy type"),
    ("/gui/meshes/default/policies/meshtimeouts/nope", "no meshtimeouts policy 'nope'"),
])
def test_unknown_things_are_a_404_page(api: LiveApi, path: str, shown: str) -> None:
    r = api.get(path)
    assert r.status_code == 404 and r.headers["Content-Type"].startswith("text/html")
    assert shown in _text(r.text).replace("&#x27;", "'")


def test_markup_in_a_policy_is_shown_as_text(api: LiveApi) -> None:
    for path in ["/gui/meshes/default/policies/meshhttproutes/hostile", "/gui/meshes/default/dataplanes/web-1"]:
        page = api.get(path).text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, path
        assert "<script>alert" not in page
        assert [a for t, a in _tags(page) if t == "script"] == [{"src": "/gui/static/gui.js", "defer": None}]


def test_markup_in_names_and_labels_is_inert(tmp_path: Path) -> None:
    """Names and labels are validated on the way in, but a store may hold older or foreign data: the
    GUI escapes whatever it shows, in text and in links."""
    hostile = '"><img src=x onerror=alert(1)>'
    with live_api(tmp_path, defaults=True) as api:
        api.store.create(Resource("Dataplane", "default", hostile, {"networking": {
            "address": "127.0.0.1", "inbound": [{"port": 1, "tags": {"kuma.io/service": "<b>svc</b>"}}]}},
            {"<i>label": "<script>alert(2)</script>"}))
        for path in ["/gui/meshes/default", "/gui/meshes/default/dataplanes/%22%3E%3Cimg%20src%3Dx%20onerror"
                     "%3Dalert(1)%3E"]:
            r = api.get(path)
            assert r.status_code == 200, (path, r.text)
            tags = _tags(r.text)
            assert not [t for t, _ in tags if t in ("img", "b", "i")], path
            assert [a for t, a in tags if t == "script"] == [{"src": "/gui/static/gui.js", "defer": None}]
            assert hostile in _text(r.text).replace("&quot;", '"').replace("&gt;", ">").replace("&lt;", "<")
        mesh_page = api.get("/gui/meshes/default").text
        assert ("a", {"href": "/gui/meshes/default/dataplanes/%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E"}) \
            in _tags(mesh_page)


def test_secrets_names_for_local_admin_payloads_never(api: LiveApi) -> None:
    local = api.get("/gui/meshes/default").text
    assert "db-password" in local
    for page in [api.get(p).text for p in PAGES]:
        assert "c3VwZXItc2VjcmV0LXBheWxvYWQ=" not in page and "super-secret-payload" not in page


def test_a_remote_anonymous_user_sees_no_secret(api: LiveApi) -> None:
    remote = api.remote("127.0.0.2")
    assert remote.get("/who-am-i").json()["name"] == "mesh-system:anonymous"
    page = remote.get("/gui/meshes/default")
    assert page.status_code == 200
    assert "db-password" not in page.text and "Secrets are shown to admins only." in page.text
    for path in PAGES:
        r = remote.get(path)
        assert r.status_code == 200, path
        assert "db-password" not in r.text and "c3VwZXItc2VjcmV0LXBheWxvYWQ=" not in r.text


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_the_gui_is_read_only(api: LiveApi, method: str) -> None:
    r = api.http.request(method, api.url + "/gui/meshes/default")
    assert r.status_code == 405


def test_static_files_are_our_own_and_only_ours(api: LiveApi) -> None:
    js = api.get("/gui/static/gui.js")
    assert js.status_code == 200 and js.headers["Content-Type"].startswith("text/javascript")
    assert "data-live" in js.text
    assert api.get("/gui/static/gui.css").headers["Content-Type"].startswith("text/css")
    assert api.get("/gui/static/..%2Fpages.py").status_code == 404
    assert api.get("/gui/static/nope.js").status_code == 404


def test_the_envoy_config_shown_carries_no_private_key(tmp_path: Path) -> None:
    with live_api(tmp_path, defaults=True, dp_server=True) as api:
        r = api.put("/meshes/default", {"type": "Mesh", "name": "default", "mtls": {
            "enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}})
        assert r.status_code == 200, r.text
        assert api.put("/meshes/default/dataplanes/web-1", DP).status_code == 201
        page = api.get("/gui/meshes/default/dataplanes/web-1").text
        assert "envoy.config.listener.v3.Listener" in page
        assert "tlsCertificate" in page   # the proxy's identity Secret is listed ...
        # ... with placeholders: no PEM, plain or base64 ("-----BEGIN" is LS0tLS1CRUdJTi in base64)
        assert "PRIVATE KEY" not in page and "LS0tLS1CRUdJTi" not in page


# --- apiServer.gui: where the GUI is served, how its links are written, and switching it off ------------------

def _links(page: str) -> list[str]:
    return [value for _, attrs in _tags(page) for key, value in attrs.items() if key in ("href", "src") and value]


def test_base_path_moves_the_gui_and_every_link_with_it(tmp_path: Path) -> None:
    with live_api(tmp_path, env={"KUMA_API_SERVER_GUI_BASE_PATH": "/ui"}, defaults=True) as api:
        assert api.put("/meshes/default/dataplanes/web-1", DP).status_code == 201
        assert api.get("/").json()["gui"] == "/ui"
        assert api.get("/gui").status_code == 404
        page = api.remote().get("/ui/meshes/default")
        assert page.status_code == 200 and "web-1" in page.text
        links = _links(page.text)
        assert links and all(link.startswith("/ui/") or link == "/ui" for link in links), links
        for link in set(links):   # every link answers, the stylesheet and script included
            assert api.remote().get(link).status_code == 200, link
        r = api.get("/ui/meshes", allow_redirects=False)
        assert r.status_code == 302 and r.headers["Location"].endswith("/ui")


def test_root_url_writes_links_for_the_reverse_proxy_in_front(tmp_path: Path) -> None:
    env = {"KUMA_API_SERVER_GUI_ROOT_URL": "https://mesh.example.com/kuma/gui"}
    with live_api(tmp_path, env=env, defaults=True) as api:
        assert api.get("/").json()["gui"] == "https://mesh.example.com/kuma/gui"
        page = api.remote().get("/gui")   # served at basePath; the proxy strips its /kuma prefix
        assert page.status_code == 200
        links = _links(page.text)
        assert "/kuma/gui/static/gui.js" in links and "/kuma/gui/meshes/default" in links
        assert not [link for link in links if link.startswith("/gui")], links


def test_a_disabled_gui_says_so_and_shows_nothing_of_the_mesh(tmp_path: Path) -> None:
    with live_api(tmp_path, env={"KUMA_API_SERVER_GUI_ENABLED": "false"}, defaults=True) as api:
        assert api.put("/meshes/default/dataplanes/web-1", DP).status_code == 201
        assert api.get("/").json()["gui"] == ""
        for path in ("/gui", "/gui/", "/gui/meshes/default", "/gui/meshes/default/dataplanes/web-1",
                     "/gui/static/gui.js"):
            for client in (api, api.remote()):
                r = client.get(path)
                assert r.status_code == 200 and "The GUI is disabled" in r.text, path
                assert "web-1" not in r.text and "default" not in _text(r.text)
        assert api.remote().post("/gui/meshes", {}).status_code == 405
        config = api.get("/config").json()   # applied, so not in the start-up warnings' list
        assert config["apiServer"]["gui"]["enabled"] is False
        assert "apiServer.gui.enabled" not in {n["setting"] for n in config["notApplied"]}
