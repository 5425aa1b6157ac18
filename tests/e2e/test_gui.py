"""The web GUI in a real browser (headless Chromium through selenium) against a live kuma-cp with two real
kuma-dp proxies: navigate overview -> mesh -> proxy -> policy, watch a killed proxy turn offline on the open
page (no reload), and no console errors. Screenshots of each page go to the test's tmp dir.

Needs Debian's `chromium` and `chromium-driver` (apt-get install -y chromium chromium-driver); without them
the module is skipped with that reason. selenium is a dev dependency (pyproject.toml).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import requests

from tests.e2e.harness import Mesh
from tests.support import eventually, free_port, system_tool

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = system_tool("needs headless Chromium: `make test-deps` (apt-get install -y chromium "
                                     "chromium-driver)", "chromium", "chromedriver")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

TIMEOUT = {"type": "MeshTimeout", "mesh": "default", "name": "web-timeouts",
           "spec": {"targetRef": {"kind": "MeshService", "name": "web"},
                    "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "42s"}}]}}


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    mesh = Mesh(tmp_path)
    mesh.cp.start()
    r = requests.put(f"{mesh.cp.url}/meshes/default/meshtimeouts/web-timeouts", json=TIMEOUT)
    assert r.status_code == 201, r.text
    yield mesh
    mesh.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # the system's chromedriver: selenium must not go looking for one on the network
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _proxy_statuses(mesh: Mesh) -> dict[str, str]:
    items = requests.get(f"{mesh.cp.url}/meshes/default/dataplanes/_overview", timeout=5).json()["items"]
    subs = {i["name"]: i["dataplaneInsight"]["subscriptions"] for i in items}
    return {name: "online" if any(not s.get("disconnectTime") for s in s_list) else "offline"
            for name, s_list in subs.items()}


def _row(driver: webdriver.Chrome, section: str, first_cell: str) -> list[str]:
    """The cells of the row of a section's table that starts with `first_cell` ([] when there is none)."""
    for _ in range(3):
        try:
            for row in driver.find_elements(By.CSS_SELECTOR, f"#{section} tbody tr"):
                cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
                if cells and cells[0] == first_cell:
                    return cells
            return []
        except StaleElementReferenceException:
            continue   # the script swapped the section in while we read it: read the new one
    return []


def test_browse_the_mesh_and_see_a_proxy_go_offline(mesh: Mesh, browser: webdriver.Chrome, tmp_path: Path) -> None:
    web = mesh.kuma_dp("web-1", mesh.token("web-1"), port=free_port(), servicePort=free_port(), service="web",
                       protocol="http", outPort=free_port(), outService="backend")
    backend = mesh.kuma_dp("backend-1", mesh.token("backend-1"), port=free_port(), servicePort=free_port(),
                           service="backend", protocol="http", outPort=free_port(), outService="web")
    eventually(lambda: _proxy_statuses(mesh) == {"web-1": "online", "backend-1": "online"},
               lambda: f"proxies not online: {_proxy_statuses(mesh)}", timeout=60)
    shots = tmp_path / "screenshots"
    shots.mkdir()

    # the overview: the default mesh with both proxies online
    browser.get(f"{mesh.cp.url}/gui/")
    assert _row(browser, "meshes", "default")[1:5] == ["2", "2", "0", "0"], browser.page_source
    browser.save_screenshot(str(shots / "overview.png"))

    # the mesh: both proxies listed, with their Envoy and kuma-dp versions
    browser.find_element(By.LINK_TEXT, "default").click()
    eventually(lambda: "/gui/meshes/default" in browser.current_url)
    for name in ("web-1", "backend-1"):
        cells = _row(browser, "proxies", name)
        assert cells[1] == "Online" and cells[4] and cells[5], cells
    browser.save_screenshot(str(shots / "mesh.png"))

    # a proxy: the policy that applies to it, linked to the policy's page
    browser.find_element(By.LINK_TEXT, "web-1").click()
    eventually(lambda: browser.current_url.endswith("/gui/meshes/default/dataplanes/web-1"))
    rules = browser.find_element(By.ID, "rules").text
    assert "MeshTimeout" in rules and "idleTimeout: 42s" in rules, rules
    browser.save_screenshot(str(shots / "dataplane.png"))
    browser.find_element(By.LINK_TEXT, "web-timeouts").click()
    eventually(lambda: browser.current_url.endswith("/policies/meshtimeouts/web-timeouts"))
    assert _row(browser, "dataplanes", "web-1"), browser.page_source
    assert not _row(browser, "dataplanes", "backend-1")
    browser.save_screenshot(str(shots / "policy.png"))
    browser.get(f"{mesh.cp.url}/gui/meshes/default/policies/meshtimeouts")
    assert _row(browser, "policies", "web-timeouts")
    browser.save_screenshot(str(shots / "policies.png"))
    browser.get(f"{mesh.cp.url}/gui/zoneegresses")
    browser.save_screenshot(str(shots / "zoneegresses.png"))

    # back on the mesh page, kill a proxy: it turns offline there without a reload
    browser.get(f"{mesh.cp.url}/gui/meshes/default")
    browser.execute_script("window.notReloaded = true;")
    assert _row(browser, "proxies", "backend-1")[1] == "Online"
    backend.terminate()
    backend.wait(timeout=30)
    eventually(lambda: _row(browser, "proxies", "backend-1")[1:2] == ["Offline"],
               lambda: f"still {_row(browser, 'proxies', 'backend-1')}", timeout=30)
    assert browser.execute_script("return window.notReloaded === true;"), "the page was reloaded"
    assert _row(browser, "proxies", "web-1")[1] == "Online"
    assert "updated" in browser.find_element(By.ID, "live-status").text
    browser.save_screenshot(str(shots / "mesh-after-kill.png"))
    assert web.poll() is None

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    assert sorted(p.name for p in shots.iterdir()) == sorted(
        ["overview.png", "mesh.png", "dataplane.png", "policy.png", "policies.png", "zoneegresses.png",
         "mesh-after-kill.png"])
