"""Bodies and parameters built to break a parser (deep nesting, huge numbers, huge offsets) get a 400
in Kuma's error body from the REST API and from the DP server's /bootstrap, and at most one log line
each: never a 500 with a traceback."""
from __future__ import annotations

import json

import pytest
import requests

from tests.support import CpProcess

DEEP_JSON = "[" * 10_000 + "]" * 10_000
BAD_BODIES = {
    "json nested 10,000 deep": ('{"type": "Mesh", "name": "m", "x": ' + DEEP_JSON + "}", "application/json",
                                "exceeded max depth of 100"),
    "yaml nested 10,000 deep (flow)": ("type: Mesh\nname: m\nx: " + "[" * 10_000 + "]" * 10_000, "application/yaml",
                                       "exceeded max depth of 100"),
    "yaml nested 10,000 deep (block)": ("type: Mesh\nname: m\nx:\n" + "- " * 10_000 + "1\n", "application/yaml",
                                        "exceeded max depth of 100"),
    "json 5,000-digit integer": ('{"type": "Mesh", "name": "m", "x": ' + "9" * 5_000 + "}", "application/json",
                                 "json: cannot unmarshal number 999"),
    "yaml 5,000-digit integer": ("type: Mesh\nname: m\nx: " + "9" * 5_000 + "\n", "application/yaml",
                                 "a number has more than"),
    "yaml alias that contains itself": ("type: Mesh\nname: m\nx: &a [*a]\n", "application/yaml",
                                        "a YAML alias refers to a node that contains it"),
    "yaml aliases expanding to 387 million values": (
        "type: Mesh\nname: m\na: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")),
        "application/yaml", "YAML aliases expanded"),
}


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory):
    proc = CpProcess(tmp_path_factory.mktemp("cp")).start()
    try:
        yield proc
    finally:
        proc.stop()


def _log_lines(cp: CpProcess) -> int:
    return len(cp.read_log().splitlines())


def _assert_kuma_400(r: requests.Response, detail: str) -> None:
    assert r.status_code == 400, r.text[:500]
    body = r.json()
    assert body["type"] == "/std-errors" and body["status"] == 400
    assert detail in body["detail"], body["detail"][:300]
    assert "Traceback" not in r.text


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_rest_api_refuses_bodies_built_to_break_the_parser(cp: CpProcess, case: str) -> None:
    text, content_type, detail = BAD_BODIES[case]
    before = _log_lines(cp)
    r = requests.put(f"{cp.url}/meshes/m", data=text.encode(), headers={"Content-Type": content_type}, timeout=30)
    _assert_kuma_400(r, detail)
    assert requests.get(f"{cp.url}/meshes/m", timeout=5).status_code == 404
    assert _log_lines(cp) - before <= 1, cp.read_log().splitlines()[before:before + 5]


@pytest.mark.parametrize("offset,detail", [
    ("99999999999999999999", 'invalid: invalid offset: strconv.Atoi: parsing "99999999999999999999": value out of range'),
    ("9" * 5_000, "value out of range"),
    ("9223372036854775807", "invalid: invalid offset: exceeds maximum value"),
    ("-1", "invalid: invalid offset: must be non-negative"),
])
def test_rest_api_refuses_offsets_beyond_an_int64(cp: CpProcess, offset: str, detail: str) -> None:
    before = _log_lines(cp)
    r = requests.get(f"{cp.url}/meshes", params={"offset": offset, "size": "10"}, timeout=10)
    _assert_kuma_400(r, detail)
    assert r.json()["title"] == "Could not retrieve resources"
    assert _log_lines(cp) - before <= 1


def test_rest_api_refuses_a_page_size_of_5000_digits(cp: CpProcess) -> None:
    r = requests.get(f"{cp.url}/meshes", params={"size": "9" * 5_000}, timeout=10)
    assert r.status_code == 400 and r.json()["invalid_parameters"] == [{"field": "size", "reason": "invalid format"}]


def test_an_offset_just_inside_the_limit_is_an_empty_page(cp: CpProcess) -> None:
    r = requests.get(f"{cp.url}/meshes", params={"offset": str(2**63 - 1 - 10), "size": "10"}, timeout=10)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["items"] == []


@pytest.mark.parametrize("case", ["json nested 10,000 deep", "yaml nested 10,000 deep (flow)",
                                  "yaml nested 10,000 deep (block)", "yaml 5,000-digit integer"])
def test_bootstrap_refuses_a_dataplane_resource_built_to_break_the_parser(cp: CpProcess, case: str) -> None:
    text, _, detail = BAD_BODIES[case]
    dp_port = int(cp.env["KUMA_DP_SERVER_PORT"])
    token = requests.post(f"{cp.url}/tokens/dataplane", json={"name": "m", "mesh": "default"}, timeout=10).text
    before = _log_lines(cp)
    r = requests.post(f"https://127.0.0.1:{dp_port}/bootstrap", verify=False, timeout=30,
                      data=json.dumps({"mesh": "default", "name": "m", "proxyType": "dataplane",
                                       "dataplaneToken": token,
                                       "dataplaneResource": text.replace("Mesh", "Dataplane")}))
    _assert_kuma_400(r, detail)
    assert _log_lines(cp) - before <= 1


def test_bootstrap_refuses_a_request_nested_10000_deep(cp: CpProcess) -> None:
    dp_port = int(cp.env["KUMA_DP_SERVER_PORT"])
    r = requests.post(f"https://127.0.0.1:{dp_port}/bootstrap", verify=False, timeout=30,
                      data='{"mesh": "default", "name": "m", "x": ' + DEEP_JSON + "}")
    _assert_kuma_400(r, "exceeded max depth of 100")
