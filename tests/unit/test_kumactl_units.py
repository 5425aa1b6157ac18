"""kumactl's pieces without a control plane: the config file (against Kuma's config goldens), YAML
and table output, durations, apply's document splitting and errors, and the inspect fallbacks."""
from __future__ import annotations

import argparse
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from appliance.gocompat import format_seconds
from appliance.kumactl import apply, flags, main, printers
from appliance.kumactl.client import ApiError, CliError
from appliance.kumactl.config import Configuration
from appliance.kumactl.resources import TYPES
from tests.unit.test_kumactl_fixtures import NOT_FOUND, CannedClient, canned_context

CONFIGS = Path(__file__).parent / "kumactl_fixtures" / "config-files"
NOW = datetime(2020, 1, 1, tzinfo=timezone.utc)
ADDED = 'added Control Plane "example"\nswitched active Control Plane to "example"\n'


# --- the config file: Kuma's config-control-planes-{add,remove,use} goldens --------------------

@pytest.mark.parametrize("number,extra", [("01", []), ("02", []), ("03", ["--overwrite"]),
                                          ("04", ["--overwrite", "--headers", "abc=xyz", "--headers", "def=pqr"]),
                                          ("05", ["--overwrite", "--headers", "abc=xyz"])])
def test_config_add_goldens(number: str, extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "config"
    shutil.copy(CONFIGS / f"config-control-planes-add.{number}.initial.yaml", cfg)
    assert main(["--config-file", str(cfg), "config", "control-planes", "add", "--name", "example", "--address",
                 "http://placeholder-address", "--ca-cert-file", "/tmp/ca-cert.pem", "--client-cert-file",
                 "/tmp/client.cert.pem", "--client-key-file", "/tmp/client.key.pem", "--skip-check", *extra]) == 0
    assert capsys.readouterr().out == ADDED
    golden = yaml.safe_load((CONFIGS / f"config-control-planes-add.{number}.golden.yaml").read_text())
    assert yaml.safe_load(cfg.read_text()) == golden


@pytest.mark.parametrize("command,number,out", [
    ("remove", "11", 'removed Control Plane "example"\nswitched active Control Plane to "other"\n'),
    ("remove", "12", 'removed Control Plane "example"\nswitched active Control Plane to "other"\n'),
    ("remove", "13", 'removed Control Plane "example"\nthere is no active Control Plane left. Use `kumactl config '
                     'control-planes add` to add a Control Plane and make it active\n'),
    ("switch", "11", 'switched active Control Plane to "example"\n'),
    ("switch", "12", 'switched active Control Plane to "example"\n'),
])
def test_config_remove_and_switch_goldens(command: str, number: str, out: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    prefix = "config-control-planes-" + ("use" if command == "switch" else command)
    cfg = tmp_path / "config"
    shutil.copy(CONFIGS / f"{prefix}.{number}.initial.yaml", cfg)
    assert main(["--config-file", str(cfg), "config", "control-planes", command, "--name", "example"]) == 0
    assert capsys.readouterr().out == out
    assert yaml.safe_load(cfg.read_text()) == yaml.safe_load((CONFIGS / f"{prefix}.{number}.golden.yaml").read_text())


def test_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    shutil.copy(CONFIGS / "config-control-planes-remove.01.initial.yaml", empty)
    assert main(["--config-file", str(empty), "config", "control-planes", "remove", "--name", "example"]) == 1
    assert capsys.readouterr().err == 'Error: there is no Control Plane with name "example"\n'
    assert main(["--config-file", str(empty), "config", "control-planes", "add", "--address", "http://x",
                 "--name", "e", "--auth-type", "unknown"]) == 1
    assert capsys.readouterr().err == 'Error: authentication plugin of type "unknown" is not found\n'
    broken = tmp_path / "broken"
    broken.write_text("controlPlanes: [\n")
    assert main(["--config-file", str(broken), "config", "view"]) == 1
    assert capsys.readouterr().err.startswith(f'Error: Failed to parse configuration from file "{broken}": ')
    assert main(["--config-file", str(tmp_path / "absent" / "config"), "config", "view"]) == 0
    assert "http://localhost:5681" in capsys.readouterr().out


def test_config_reads_snake_case_and_drops_unknown_fields() -> None:
    cfg = Configuration.parse("control_planes:\n- name: a\n  coordinates:\n    api_server:\n      url: http://a\n"
                              "      auth_type: tokens\n      auth_conf: {token: t}\n      add_headers: [x]\n"
                              "current_context: a\ncontexts:\n- {name: a, control_plane: a}\n")
    assert cfg.current_control_plane()["coordinates"]["apiServer"] == {
        "url": "http://a", "authType": "tokens", "authConf": {"token": "t"}}
    assert yaml.safe_load(cfg.to_yaml())["currentContext"] == "a"
    assert Configuration().to_yaml() == "{}\n"


# --- output ------------------------------------------------------------------------------------

def test_yaml_quotes_what_would_read_back_as_something_else() -> None:
    out = printers.to_yaml({"a": "0001-01-01T00:00:00Z", "b": "1.0", "c": "true", "d": "y", "e": "",
                            "f": "plain", "g": "1e3", "h": "a: b", "i": "line1\nline2\n", "j": None, "k": []})
    assert out == ('a: "0001-01-01T00:00:00Z"\nb: "1.0"\nc: "true"\nd: "y"\ne: ""\nf: plain\ng: "1e3"\n'
                   "h: 'a: b'\ni: |\n  line1\n  line2\nj: null\nk: []\n")


def test_yaml_key_order_is_go_yamls() -> None:
    assert list(printers.sort_keys({"port10": 1, "port9": 2, "b_x": 3, "bA": 4, "A": 5})) == [
        "A", "b_x", "bA", "port9", "port10"]


def test_table_pads_every_cell_but_the_last() -> None:
    table = printers.Table(["A", "BB", "C"], [["x", "", "z"], ["long", "y", ""]], footer="more")
    assert table.render() == "A      BB   C\nx           z\nlong   y    \n\nmore\n"


@pytest.mark.parametrize("seconds,text", [(-5, "never"), (-0.5, "0s"), (59, "59s"), (61, "1m"), (7200, "2h"),
                                          (86400 * 3, "3d"), (86400 * 800, "2y"), (1e12, "292y")])
def test_duration_column(seconds: float, text: str) -> None:
    assert printers.duration(seconds) == text


def test_json_escapes_like_go() -> None:
    assert printers.to_json({"a": "<&>", "b": []}) == '{\n  "a": "\\u003c\\u0026\\u003e",\n  "b": []\n}\n'


@pytest.mark.parametrize("text,seconds,shown", [("24h", 86400, "24h0m0s"), ("1h30m", 5400, "1h30m0s"),
                                                ("90s", 90, "1m30s"), ("1.5s", 1.5, "1.5s"), ("300ms", 0.3, "300ms"),
                                                ("0", 0, "0s")])
def test_go_durations(text: str, seconds: float, shown: str) -> None:
    assert flags.duration(text) == pytest.approx(seconds)
    assert format_seconds(seconds) == shown


def test_bad_duration() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match='invalid argument "10": time: missing unit in duration "10"'):
        flags.duration("10")


def test_api_error_format() -> None:
    err = ApiError(400, {"title": "Could not create", "detail": "Resource is not valid",
                         "invalid_parameters": [{"field": "name", "reason": "bad"}]})
    assert str(err) == "Could not create (Resource is not valid)\n* name: bad"


# --- apply -------------------------------------------------------------------------------------

def test_split_documents_tracks_lines_and_drops_comments() -> None:
    text = ("# Just a starting comment\n---\nname: a\n# --- not a separator\ntype: Mesh\n---\n\n"
            "type: Mesh\nname: b\n---\n")
    docs = apply.split_documents(text)
    assert [(d.index, d.line, d.text.splitlines()[0]) for d in docs] == [(0, 3, "name: a"), (1, 8, "type: Mesh")]


def test_parse_errors_name_the_line() -> None:
    doc = apply.split_documents("type: Mesh\nname: a\n---\ntype: Mesh\nname: b\nmtls: [1,\n")[1]
    with pytest.raises(CliError, match=r'^resource\[1\]: failed to parse resource: invalid meta type: '
                                       r'"error converting YAML to JSON: yaml: line 6: '):
        apply.parse_document(doc, doc.text)
    doc = apply.split_documents("- a\n- b\n")[0]
    with pytest.raises(CliError, match="cannot unmarshal array into Go value of type v1alpha1.ResourceMeta"):
        apply.parse_document(doc, doc.text)
    doc = apply.split_documents("type: Mesh\nname: Bad_Name\n")[0]
    with pytest.raises(CliError, match=r"^resource\[0\]: failed to read meta: name: invalid characters"):
        apply.parse_document(doc, doc.text)


def test_templates() -> None:
    assert apply.render("a: {{ x }}\nb: {{x}}\nc: {{ y.z }}\nd: {{ missing }}\ne: {{{ h }}}\nf: {{ h }}",
                        {"x": "1", "y.z": "2", "h": "<&>"}) == "a: 1\nb: 1\nc: 2\nd: \ne: <&>\nf: &lt;&amp;&gt;"


def test_dry_run_needs_no_control_plane(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mtp.yaml").write_text("type: MeshTrafficPermission\nmesh: default\nname: mtp\nspec:\n  targetRef:\n"
                                       "    kind: Mesh\n")
    assert main(["--no-config", "apply", "-f", str(tmp_path / "mtp.yaml"), "--dry-run"]) == 0
    assert capsys.readouterr().out == (
        'creationTime: "0001-01-01T00:00:00Z"\nkri: kri_mtp_default___mtp_\nmesh: default\n'
        'modificationTime: "0001-01-01T00:00:00Z"\nname: mtp\nspec:\n  targetRef:\n    kind: Mesh\n'
        "type: MeshTrafficPermission\n")


# --- inspect without insights ------------------------------------------------------------------

def _dataplane(name: str, service: str) -> dict:
    return {"type": "Dataplane", "mesh": "default", "name": name, "creationTime": "2019-01-01T00:00:00Z",
            "modificationTime": "2019-01-01T00:00:00Z",
            "networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "tags": {"kuma.io/service": service}}]}}


def test_inspect_dataplanes_without_the_overview_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    routes = {"/meshes/default/dataplanes": json.dumps(
        {"total": 1, "items": [_dataplane("web-1", "web")], "next": None}).encode()}
    context = canned_context(routes, NOW)
    assert main(["--no-config", "inspect", "dataplanes", "--tag", "kuma.io/service=web"], make_context=context) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[:6] == ["default", "web-1", "kuma.io/service=web", "Offline", "never", "never"]
    assert main(["--no-config", "inspect", "dataplanes", "-o", "yaml"], make_context=context) == 0
    item = yaml.safe_load(capsys.readouterr().out)["items"][0]
    assert item["type"] == "DataplaneOverview" and item["dataplane"]["networking"]["address"] == "10.0.0.1"


def test_inspect_dataplanes_sends_kumas_query() -> None:
    client = CannedClient({"/meshes/demo/dataplanes/_overview": b'{"total": 0, "items": [], "next": null}'})
    from appliance.kumactl.inspect import dataplane_overviews
    assert dataplane_overviews(client, "demo", {"kuma.io/service": "web"}, True, False) == []
    assert client.requests[-1] == ("GET", "/meshes/demo/dataplanes/_overview",
                                   [("tag", "kuma.io/service:web"), ("gateway", "true"), ("size", "1000")])


def test_inspect_meshes_counts_resources_without_mesh_insights(capsys: pytest.CaptureFixture[str]) -> None:
    page = {"total": 1, "items": [{"type": "Mesh", "name": "default"}], "next": None}
    routes = {"/meshes": json.dumps(page).encode(),
              "/dataplanes": json.dumps({"total": 2, "items": [_dataplane("a", "a"), _dataplane("b", "b")]}).encode(),
              "/external-services": json.dumps({"total": 1, "items": [{"mesh": "default", "name": "es"}]}).encode()}
    empty = json.dumps({"total": 0, "items": [], "next": None}).encode()
    routes.update({f"/{t.path}": empty for t in TYPES if t.is_policy})
    assert main(["--no-config", "inspect", "meshes"], make_context=canned_context(routes, NOW)) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["default", "0/2", "0", "0", "0", "0", "0", "1",
                                                               "0", "0", "0", "0"]


# --- inspect zoneegress: the Envoy admin views of a zone egress -------------------------------

@pytest.mark.parametrize("args, path, query", [
    ([], "/zoneegresses/egress-1/xds", [("include_eds", "false")]),
    (["--type", "config-dump", "--include-eds"], "/zoneegresses/egress-1/xds", [("include_eds", "true")]),
    (["--type", "stats"], "/zoneegresses/egress-1/stats", []),
    (["--type", "clusters"], "/zoneegresses/egress-1/clusters", []),
])
def test_inspect_zoneegress_prints_what_the_control_plane_answers(args: list[str], path: str, query: list,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    context = canned_context({path: b"cluster.egress.upstream_rq_total: 3\n"}, NOW)
    assert main(["--no-config", "inspect", "zoneegress", "egress-1", *args], context) == 0
    assert capsys.readouterr().out == "cluster.egress.upstream_rq_total: 3\n"


@pytest.mark.parametrize("args, error", [
    (["--type", "policies"], "Error: Policies are not applied on ZoneEgress, please use '--config-dump' flag to get "
                             "envoy config dump of the ZoneEgress"),
    (["--type", "stats", "--include-eds"], "Error: flag '--include-eds' can be used only when '--type=config-dump'"),
    (["--type", "nope"], "Error: invalid inspection type"),
    (["--type", "stats"], "Error: (404): " + NOT_FOUND.decode()),   # Kuma's inspect client: status and body
])
def test_inspect_zoneegress_errors(args: list[str], error: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--no-config", "inspect", "zoneegress", "egress-1", *args], canned_context({}, NOW)) == 1
    assert capsys.readouterr().err.strip() == error
