from __future__ import annotations

import re
from pathlib import Path

import pytest

from appliance.config import ConfigError, load_config
from appliance.config.kuma import DOC_HEADER, KUMA, KUMA_VERSION, not_applied_doc
from appliance.config.schema import BY_PATH, SETTINGS
from tests.support import ROOT, kuma_reference

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
    ("apiServer:\n  htp:\n    port: 1\n", r"c.yaml:2: unknown setting 'apiServer.htp'; did you mean 'apiServer.http'\?"),
    ("apiServer:\n  http:\n    prot: 1\n", r"c.yaml:3: unknown setting 'apiServer.http.prot'; did you mean 'apiServer.http.port'\?"),
    ("dnsServr:\n  domain: x\n", r"c.yaml:1: unknown setting 'dnsServr'; did you mean 'dnsServer'\?"),
    ("apiServer:\n  https:\n    port: abc\n", r"apiServer.https.port \(.*c.yaml:3\): 'abc' is not an integer"),
    ("xdsServer:\n  nackBackoff: soon\n", r"xdsServer.nackBackoff \(.*c.yaml:2\): 'soon' is not a duration"),
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


def test_documented_file_ends_with_every_kuma_setting_we_do_not_apply() -> None:
    text = DOC.read_text()
    header = DOC_HEADER.format(version=KUMA_VERSION)
    assert header in text, f"{DOC.name} lacks the section starting with {header!r}"
    documented = text[text.index(header):]
    assert documented == not_applied_doc(), (
        f"{DOC.name}'s last section is out of date; replace it with the output of "
        "python -c 'from appliance.config.kuma import not_applied_doc; print(not_applied_doc(), end=\"\")'")


def test_a_setting_we_apply_reads_kumas_variable() -> None:
    for setting in SETTINGS:
        if setting.path in KUMA:
            assert setting.env == KUMA[setting.path].env, setting.path


def _leaves(node: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        if isinstance(value, dict) and value and not (prefix + key).endswith(("exceptions.labels", "envVars")):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_kumas_defaults_file_loads_without_a_warning_and_knows_every_setting() -> None:
    import yaml
    path = kuma_reference("kuma-cp.defaults.yaml")
    leaves = _leaves(yaml.safe_load(path.read_text()))
    assert len(leaves) > 300
    assert set(leaves) <= set(KUMA), set(leaves) - set(KUMA)
    c = load_config(path, env={})
    assert c.warnings == () and c.not_applied == ()
    # Kuma's defaults differ from ours in three places; the file's values are the ones applied.
    assert (c["mode"], c["store.type"], c["dpServer.authn.dpProxy.type"]) == ("zone", "memory", "")
    for key, value in leaves.items():
        if key in BY_PATH and value is not None:
            assert c[key] == value, key


def test_kuma_settings_we_do_not_apply_are_accepted_and_reported_when_not_default(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("apiServer:\n  auth:\n    clientCertsDir: /etc/kuma/certs\n  readTimeout: 10s\n"
                 "xdsServer:\n  nackBackoff: 7s\n  dataplaneConfigurationRefreshInterval: 1000ms\n"
                 "multizone:\n  zone:\n    globalAddress: grpcs://global:5685\n")
    c = load_config(f, env={"KUMA_DNS_SERVER_DOMAIN": "mesh", "KUMA_REPORTS_ENABLED": "true"})
    # readTimeout 10s, 1000ms (= 1s) and domain "mesh" are Kuma's defaults: nothing to say about them.
    assert [(n.path, n.value, n.source) for n in c.not_applied] == [
        ("apiServer.auth.clientCertsDir", "/etc/kuma/certs", f"{f}:3"),
        ("xdsServer.nackBackoff", "7s", f"{f}:6"),
        ("multizone.zone.globalAddress", "grpcs://global:5685", f"{f}:10"),
        ("reports.enabled", "true", "env KUMA_REPORTS_ENABLED"),
    ]
    assert len(c.warnings) == 4
    assert c.warnings[0].startswith(f"setting apiServer.auth.clientCertsDir ({f}:3) is set to \"/etc/kuma/certs\" but kuma-appliance "
                                    "does not apply it")
    assert c.as_nested()["notApplied"][2] == {"setting": "multizone.zone.globalAddress",
                                              "value": "grpcs://global:5685", "source": f"{f}:10"}


def test_environment_overrides_the_file_for_a_setting_we_do_not_apply(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("xdsServer:\n  nackBackoff: 7s\n")
    assert load_config(f, env={"KUMA_XDS_SERVER_NACK_BACKOFF": "5s"}).not_applied == ()


@pytest.mark.parametrize("text, expected", [
    ("dpServer:\n  tlsMinVersion: TLSv1_3\n", r"dpServer.tlsMinVersion .* less protection"),
    ("apiServer:\n  authn:\n    tokens:\n      validator:\n        useSecrets: false\n",
     r"apiServer.authn.tokens.validator.useSecrets .* keep Kuma's default true"),
])
def test_a_setting_that_asks_for_more_protection_is_refused_not_ignored(tmp_path: Path, text: str,
                                                                         expected: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f, env={})
    assert re.search(expected, str(e.value)), str(e.value)


def test_access_lists_are_applied_from_file_and_environment(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("access:\n  static:\n    viewConfigDump:\n      groups: [mesh-system:authenticated]\n"
                 "    generateDpToken:\n      users: []\n")
    c = load_config(f, env={"KUMA_ACCESS_STATIC_GENERATE_DP_TOKEN_GROUPS": "mesh-system:admin, ops"})
    assert c.not_applied == () and c.warnings == ()
    assert c["access.static.viewConfigDump.groups"] == ["mesh-system:authenticated"]
    assert c["access.static.generateDpToken.users"] == []
    assert c["access.static.generateDpToken.groups"] == ["mesh-system:admin", "ops"]
    assert c["access.static.adminResources.groups"] == ["mesh-system:admin"]
    with pytest.raises(ConfigError, match=r"access.type \(env KUMA_ACCESS_TYPE\): 'rbac', expected one of static"):
        load_config(env={"KUMA_ACCESS_TYPE": "rbac"})


def test_keys_match_regardless_of_case_as_in_kuma(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("APIServer:\n  HTTP:\n    port: 7000\ndefaults:\n  SkipHostnameGenerators: true\n"
                 "Experimental:\n  SidecarContainers: false\n")
    c = load_config(f, env={})
    assert c["apiServer.http.port"] == 7000 and c["defaults.skipHostnameGenerators"] is True
    assert [n.path for n in c.not_applied] == ["experimental.sidecarContainers"]


def test_an_empty_value_means_the_default(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("dpServer:\n  tlsCertFile:\n  tlsKeyFile:\ngeneral:\n  tlsMaxVersion:\n")
    c = load_config(f, env={})
    assert c["dpServer.tlsCertFile"] == "" and c.warnings == ()


def test_unknown_kuma_cp_variable_gets_a_warning_with_a_suggestion() -> None:
    c = load_config(env={"KUMA_API_SERVER_HTTP_PROT": "1", "KUMA_API_SEVER_HTTP_PORT": "2", "KUMA_STORE_KIND": "x"})
    assert c.warnings == (
        "environment variable KUMA_API_SERVER_HTTP_PROT is not a kuma-cp setting and is ignored; "
        "did you mean KUMA_API_SERVER_HTTP_PORT?",
        "environment variable KUMA_API_SEVER_HTTP_PORT is not a kuma-cp setting and is ignored; "
        "did you mean KUMA_API_SERVER_HTTP_PORT?",
        "environment variable KUMA_STORE_KIND is not a kuma-cp setting and is ignored; did you mean KUMA_STORE_TYPE?",
    )


def test_variables_of_kuma_dp_and_other_tools_are_left_alone() -> None:
    others = {name: "x" for name in (
        "KUMA_DATAPLANE_RUNTIME_TOKEN_PATH", "KUMA_CONTROL_PLANE_URL", "KUMA_DNS_ENABLED", "KUMA_READINESS_PORT",
        "KUMA_DP_ARGS", "KUMA_REFERENCE_DIR", "KUMA_REQUIRE_REFERENCE", "KUMA_TEST_BINARY", "KUMA_GLIBC_FLOOR",
        "KUMA_FROZEN_SELFCHECK", "KUMA_MESH", "KUMA_ZONE", "KUMA_DATAPLANE_SOMETHING_NEW")}
    assert load_config(env=others).warnings == ()


@pytest.mark.parametrize("env, expected", [
    ({"KUMA_API_SERVER_HTTPS_TLS_CERT_FILE": "/c.pem"},
     "apiServer.https.tlsCertFile and apiServer.https.tlsKeyFile must be given together"),
    ({"KUMA_GENERAL_TLS_KEY_FILE": "/k.pem"}, "general.tlsCertFile and general.tlsKeyFile must be given together"),
    ({"KUMA_API_SERVER_HTTPS_REQUIRE_CLIENT_CERT": "true"},
     "apiServer.https.requireClientCert needs apiServer.https.tlsCaFile"),
    ({"KUMA_API_SERVER_HTTPS_TLS_CIPHER_SUITES": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA265"},
     "unsupported TLS cipher suite 'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA265'; "
     "did you mean 'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256'?"),
    ({"KUMA_API_SERVER_HTTPS_TLS_MIN_VERSION": "TLSv1_1"}, "'TLSv1_1', expected one of \"\", TLSv1_2, TLSv1_3"),
])
def test_https_settings_are_checked_as_kuma_checks_them(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(env=env)
    assert expected in str(e.value)


def test_https_api_is_on_by_default_as_in_kuma() -> None:
    c = load_config(env={})
    assert (c["apiServer.https.enabled"], c["apiServer.https.port"], c["apiServer.https.tlsMinVersion"]) == (
        True, 5682, "TLSv1_2")


def test_hds_settings_are_applied_and_must_be_positive() -> None:
    from appliance.runtime.run import _hds_settings
    c = load_config(env={"KUMA_DP_SERVER_HDS_INTERVAL": "1s", "KUMA_DP_SERVER_HDS_CHECK_UNHEALTHY_THRESHOLD": "3",
                         "KUMA_DP_SERVER_HDS_ENABLED": "false"})
    assert not c.not_applied and not c.warnings
    settings = _hds_settings(c)
    assert (settings.enabled, settings.interval, settings.unhealthy_threshold) == (False, 1_000_000_000, 3)
    assert _hds_settings(load_config(env={})).timeout == 2_000_000_000   # Kuma's checkDefaults.timeout
    with pytest.raises(ConfigError, match=r"dpServer.hds.interval: '0s', must be greater than 0s"):
        load_config(env={"KUMA_DP_SERVER_HDS_INTERVAL": "0s"})
    with pytest.raises(ConfigError, match=r"dpServer.hds.checkDefaults.healthyThreshold: 0"):
        load_config(env={"KUMA_DP_SERVER_HDS_CHECK_HEALTHY_THRESHOLD": "0"})


@pytest.mark.parametrize("env, message", [
    ({"KUMA_API_SERVER_GUI_ROOT_URL": "mesh.example.com/gui"}, "apiServer.gui.rootUrl: 'mesh.example.com/gui' is not"),
    ({"KUMA_API_SERVER_GUI_BASE_PATH": "/"}, "apiServer.gui.basePath: the GUI needs a path of its own"),
])
def test_a_gui_location_that_cannot_work_stops_start_up(env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(env=env)
