"""kuma-dp's settings (flags, KUMA_* environment, durations) and the checks on the proxy's resource
and token made before the control plane is contacted."""
from __future__ import annotations

import base64
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.dp.cli import _parser, config_from
from appliance.dp.config import DpConfig, DpError, validate
from appliance.dp.resource import check_token, identity, load_resource, resource_json


def _cfg(argv: list[str], env: dict[str, str] | None = None) -> DpConfig:
    return config_from(_parser().parse_args(argv), env or {})


def test_defaults_are_kumas() -> None:
    cfg = _cfg(["run"])
    assert (cfg.cp_address, cfg.proxy_type, cfg.drain_time, cfg.retry_backoff, cfg.retry_max_duration,
            cfg.log_level, cfg.skip_verify) == ("https://localhost:5678", "dataplane", 30.0, 3.0, 300.0, "info", False)


def test_flags_win_over_environment() -> None:
    env = {"KUMA_CONTROL_PLANE_URL": "https://env:5678", "KUMA_DATAPLANE_NAME": "env-name",
           "KUMA_DATAPLANE_MESH": "env-mesh", "KUMA_CONTROL_PLANE_RETRY_BACKOFF": "100ms",
           "KUMA_DATAPLANE_RUNTIME_TOKEN_PATH": "/env/token", "KUMA_CONTROL_PLANE_TLS_SKIP_VERIFY": "true"}
    cfg = _cfg(["run", "--cp-address", "https://flag:5678", "--name", "flag-name"], env)
    assert (cfg.cp_address, cfg.name, cfg.mesh, cfg.retry_backoff, cfg.token_file, cfg.skip_verify) == (
        "https://flag:5678", "flag-name", "env-mesh", 0.1, "/env/token", True)


def test_flags_map_to_settings() -> None:
    cfg = _cfg(["--log-level", "debug", "run", "-d", "dp.yaml", "-v", "name=a", "--dataplane-var", "b=1,c=2",
                "--dataplane-token-file", "t", "--skip-verify", "--drain-time", "1m", "--config-dir", "/cfg",
                "--concurrency", "2", "--envoy-log-level", "warning", "--proxy-type", "egress"])
    assert cfg.dataplane_file == "dp.yaml" and cfg.dataplane_vars == {"name": "a", "b": "1", "c": "2"}
    assert (cfg.token_file, cfg.skip_verify, cfg.drain_time, cfg.work_dir, cfg.concurrency) == ("t", True, 60.0,
                                                                                                 "/cfg", 2)
    assert (cfg.log_level, cfg.envoy_log_level, cfg.proxy_type) == ("debug", "warning", "egress")
    assert _cfg(["run", "--log-level", "off"]).log_level == "off"
    assert _cfg(["run", "--skip-verify=false"]).skip_verify is False


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(DpError, match="KUMA_DATAPLANE_DRAIN_TIME"):
        _cfg(["run"], {"KUMA_DATAPLANE_DRAIN_TIME": "soon"})


@pytest.mark.parametrize("change,message", [
    ({"proxy_type": "gateway"}, "invalid proxy type"),
    ({"drain_time": 0.0}, "--drain-time must be positive"),
    ({"retry_max_duration": 0.0}, "KUMA_CONTROL_PLANE_RETRY_MAX_DURATION"),
])
def test_validate(change: dict, message: str) -> None:
    with pytest.raises(DpError, match=message):
        validate(replace(DpConfig(), **change))


DP = """type: Dataplane
mesh: {{ mesh }}
name: {{ name }}
networking:
  address: 127.0.0.1
  inbound: [{port: 8080, tags: {kuma.io/service: web}}]
"""


def test_resource_from_file_with_vars(tmp_path: Path) -> None:
    (tmp_path / "dp.yaml").write_text(DP)
    cfg = DpConfig(dataplane_file=str(tmp_path / "dp.yaml"), dataplane_vars={"name": "web-1", "mesh": "default"})
    resource = load_resource(cfg)
    assert resource is not None and resource["name"] == "web-1"
    ident = identity(cfg, resource)
    assert (ident.name, ident.mesh) == ("web-1", "default")
    assert json.loads(resource_json(resource)) == resource


def test_resource_inline_json_and_stdin() -> None:
    cfg = DpConfig(dataplane='{"type": "Dataplane", "mesh": "m", "name": "{{ n }}"}', dataplane_vars={"n": "x"})
    assert load_resource(cfg) == {"type": "Dataplane", "mesh": "m", "name": "x"}
    stdin = io.StringIO("type: ZoneEgress\nname: egress-1\n")
    assert load_resource(DpConfig(dataplane_file="-", proxy_type="egress"), stdin)["name"] == "egress-1"
    assert load_resource(DpConfig()) is None


@pytest.mark.parametrize("cfg,message", [
    (DpConfig(dataplane="type: ZoneEgress\nname: e"), "invalid proxy resource type 'ZoneEgress', expected Dataplane"),
    (DpConfig(dataplane="type: Dataplane\nname: Web_1\nmesh: default"), "name: invalid characters"),
    (DpConfig(dataplane="type: Dataplane\nname: web"), "mesh: cannot be empty"),
    (DpConfig(dataplane="type: Dataplane\nname: [unclosed"), "not valid YAML or JSON"),
    (DpConfig(dataplane="just a string"), "must be a YAML or JSON object"),
    (DpConfig(dataplane_file="/nonexistent/dp.yaml"), "cannot read --dataplane-file /nonexistent/dp.yaml"),
])
def test_resource_errors(cfg: DpConfig, message: str) -> None:
    with pytest.raises(DpError, match=message):
        load_resource(cfg)


def test_identity_rules() -> None:
    resource = {"type": "Dataplane", "mesh": "default", "name": "web-1"}
    with pytest.raises(DpError, match="--name and --mesh cannot be specified"):
        identity(DpConfig(name="x"), resource)
    with pytest.raises(DpError, match="--name is required"):
        identity(DpConfig(mesh="default"), None)
    with pytest.raises(DpError, match="--mesh is required"):
        identity(DpConfig(name="web-1"), None)
    assert identity(DpConfig(name="egress-1", proxy_type="egress"), None).mesh == ""


def _jwt(header: dict) -> str:
    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    return f"{b64(header)}.{b64({'Name': 'web-1', 'Mesh': 'default'})}.c2ln"


def test_token_checks() -> None:
    token = _jwt({"alg": "RS256", "kid": "1"})
    assert check_token(f"\n {token}\n", "test") == token
    for bad, why in [("", "it is empty"), ("not-a-jwt", "it is not a JWT"), (f"{token}\n{token}", "line breaks"),
                     (_jwt({"typ": "JWT"}), "no alg"), ("-----BEGIN RSA PRIVATE KEY-----", "not a JWT")]:
        with pytest.raises(DpError, match=why):
            check_token(bad, "--dataplane-token-file t")
