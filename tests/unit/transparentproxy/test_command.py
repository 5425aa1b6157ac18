"""`kumactl install/uninstall transparent-proxy`: flags, config files and their precedence, and the
errors a user meets before anything on the host changes."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from appliance.kumactl import _defaults, build_parser, main
from appliance.kumactl.context import Context
from appliance.kumactl.transparent_proxy import _config
from appliance.transparentproxy import host
from appliance.transparentproxy.config import Dns
from tests.unit.transparentproxy.test_rules import config_from_flags


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_defaults_are_kumas() -> None:
    cfg = config_from_flags()
    assert (cfg.inbound.port, cfg.outbound.port, cfg.dns, cfg.ip_family_mode, cfg.kuma_dp_user) == \
        (15006, 15001, Dns(enabled=False, port=15053), "dualstack", "")
    assert cfg.inbound.enabled and cfg.outbound.enabled and not cfg.dry_run


def test_config_files_then_stdin_then_flags(tmp_path: Path) -> None:
    # the files of Kuma's "with-multiple-config-flags" container test: later sources override earlier ones
    (tmp_path / "1.yaml").write_text("redirect:\n  dns:\n    enabled: false\n    port: 7777\n")
    (tmp_path / "2.yaml").write_text("redirect:\n  dns:\n    enabled: true\n    port: 8888\n  outbound:\n"
                                     "    excludePortsForIPs:\n    - 10.11.12.13\n  inbound:\n"
                                     "    excludePorts:\n    - 10000\n    - 20000\n")
    args = _defaults()
    build_parser().parse_args(["install", "transparent-proxy", "--config", f"{tmp_path}/1.yaml,{tmp_path}/2.yaml",
                               "--config", "-", "--redirect-inbound-port", "2222"], namespace=args)
    cfg = _config(Context(args, io.StringIO(), io.StringIO(), stdin=io.StringIO(
        "redirect:\n  dns:\n    captureAll: true\n  inbound:\n    excludePorts: [4444, 55555]\n"
        "  outbound:\n    excludePortsForUIDs:\n    - 1\n    - 2-3:4-5\n    excludePorts: '6,77'\n")))
    assert cfg.dns == Dns(enabled=True, port=8888, capture_all=True)
    assert cfg.inbound.exclude_ports == (4444, 55555) and cfg.inbound.port == 2222
    assert cfg.outbound.exclude_ports_for_ips == ("10.11.12.13",)
    assert cfg.outbound.exclude_ports_for_uids == ("1", "2-3:4-5") and cfg.outbound.exclude_ports == (6, 77)


def test_config_file_flag_is_kumas_deprecated_alias(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "tp.yaml").write_text("kumaDPUser: nobody-such-user-here\nipFamilyMode: ipv4\n")
    code, _, err = run(capsys, "install", "transparent-proxy", "--dry-run", "--config-file", str(tmp_path / "tp.yaml"))
    assert code == 1
    assert err == ("Flag --config-file has been deprecated, please use --config\n"
                   "Error: the specified UID or username ('nobody-such-user-here') does not refer to a valid user on "
                   "the host\n")


@pytest.mark.parametrize("document, message", [
    ("redirect:\n  inbound:\n    prot: 1\n", "unknown field redirect.inbound.prot"),
    ("ebpf:\n  enabled: true\n", "ebpf: eBPF mode is not supported by this kumactl"),
    ("ipFamilyMode: ipv5\n", "ipFamilyMode: value 'ipv5' is not a valid IPFamilyMode: must be one of 'dualstack' or "
                             "'ipv4'"),
    ("redirect:\n  outbound:\n    port: 0\n", "value '0' is not a valid port (uint16 in the range [1, 65535])"),
])
def test_a_config_file_key_is_applied_or_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         document: str, message: str) -> None:
    (tmp_path / "tp.yaml").write_text(document)
    code, out, err = run(capsys, "install", "transparent-proxy", "--dry-run", "--config", str(tmp_path / "tp.yaml"))
    assert (code, out, err) == (1, "", f"Error: failed to load configuration from provided input: {message}\n")


@pytest.mark.parametrize("argv, message", [
    (["--ebpf-enabled"], "flag --ebpf-enabled is not supported by this kumactl (eBPF mode)"),
    (["--store-firewalld"],
     "flag --store-firewalld is not supported by this kumactl (storing the rules with firewalld)"),
    (["--redirect-dns", "--redirect-all-dns-traffic"],
     "only one of '--redirect-dns' or '--redirect-all-dns-traffic' should be specified"),
])
def test_unsupported_or_conflicting_flags_are_errors(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                     message: str) -> None:
    code, out, err = run(capsys, "install", "transparent-proxy", "--dry-run", *argv)
    assert code == 1 and out == ""
    assert err.startswith(f"Error: {message}")


def test_an_unknown_flag_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "install", "transparent-proxy", "--redirect-everything")
    assert code == 1 and "--redirect-everything" in err


def test_environment_variables_are_refused_not_ignored(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUMA_TRANSPARENT_PROXY_REDIRECT_DNS_ENABLED", "true")
    code, _, err = run(capsys, "install", "transparent-proxy", "--dry-run")
    assert code == 1
    assert "KUMA_TRANSPARENT_PROXY_REDIRECT_DNS_ENABLED" in err and "not supported" in err


@pytest.mark.parametrize("verb", ["install", "uninstall"])
def test_not_root_is_a_clear_error(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                   verb: str) -> None:
    monkeypatch.setattr(host, "is_root", lambda: False)
    assert run(capsys, verb, "transparent-proxy") == \
        (1, "", "Error: you need to have root privileges to run this command\n")


def test_missing_iptables_is_a_clear_error(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(host, "_FALLBACK_DIRS", ())
    monkeypatch.setattr(host, "is_root", lambda: True)
    code, out, err = run(capsys, "install", "transparent-proxy", "--kuma-dp-user", "0")
    assert (code, out) == (1, "")
    assert err == ("Error: failed to initialize config: unable to initialize IPv4 executables: could not locate "
                   "executable 'iptables' (searched PATH and ): install iptables (Debian, Ubuntu: apt-get install "
                   "iptables; RHEL: dnf install iptables)\n")
