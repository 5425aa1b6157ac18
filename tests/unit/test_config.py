from __future__ import annotations

import re
from pathlib import Path

import pytest

from appliance.config import ConfigError, load_config
from appliance.config.schema import SETTINGS
from tests.support import ROOT

DOC = ROOT / "config" / "kuma-cp.conf.yaml"


def test_documented_file_lists_every_setting_with_its_env_name_and_default() -> None:
    text = DOC.read_text()
    documented = set(re.findall(r"# ENV: (KUMA_\w+)", text))
    for setting in SETTINGS:
        assert setting.env in documented, f"{setting.path} ({setting.env}) is not in {DOC.name}"
    config = load_config(DOC, env={})
    for setting in SETTINGS:
        assert config[setting.path] == setting.default, setting.path


def test_defaults_are_kumas() -> None:
    c = load_config(env={})
    assert (c["apiServer.http.port"], c["dpServer.port"], c["diagnostics.serverPort"]) == (5681, 5678, 5680)
    assert c["mode"] == "standalone" and c["store.type"] == "sqlite"
    assert c.sqlite_path == c.work_dir / "kuma.db"


def test_env_overrides_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("apiServer:\n  http:\n    port: 7000\nstore:\n  type: memory\n")
    c = load_config(f, env={"KUMA_API_SERVER_HTTP_PORT": "7001", "KUMA_DEFAULTS_SKIP_MESH_CREATION": "true",
                            "KUMA_MODE": "zone", "KUMA_STORE_SQLITE_PATH": "/x/y.db"})
    assert c["apiServer.http.port"] == 7001
    assert c["store.type"] == "memory"
    assert c["defaults.skipMeshCreation"] is True
    assert c["mode"] == "zone"
    assert str(c.sqlite_path) == "/x/y.db"


@pytest.mark.parametrize("text, expected", [
    ("apiServer:\n  htp:\n    port: 1\n", r"c.yaml:2: unknown setting 'apiServer.htp'"),
    ("store:\n  type: mysql\n", r"store.type \(.*c.yaml:2\): 'mysql', expected one of sqlite, memory"),
    ("apiServer:\n  http:\n    port: abc\n", r"apiServer.http.port \(.*c.yaml:3\): 'abc' is not an integer"),
    ("apiServer:\n  http:\n    port: 70000\n", r"apiServer.http.port .* is not a port"),
    ("defaults:\n  skipMeshCreation: maybe\n", r"defaults.skipMeshCreation .* 'maybe' is not a boolean"),
    ("store: [1\n", r"c.yaml:\d+: not valid YAML"),
])
def test_bad_file_names_key_and_value(tmp_path: Path, text: str, expected: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f, env={})
    assert re.search(expected, str(e.value)), str(e.value)
    assert "\n" not in str(e.value)


def test_bad_env_value_names_variable() -> None:
    with pytest.raises(ConfigError, match=r"dpServer.port \(env KUMA_DP_SERVER_PORT\): 'x' is not an integer"):
        load_config(env={"KUMA_DP_SERVER_PORT": "x"})
    with pytest.raises(ConfigError, match=r"mode \(env KUMA_MODE\): 'global'"):
        load_config(env={"KUMA_MODE": "global"})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read config file /nonexistent.yaml"):
        load_config("/nonexistent.yaml", env={})
