"""kuma-dp's --transparent-proxy / --transparent-proxy-config and --dns-* flags: Kuma 2.14's DataplaneConfig
in the bootstrap request, the DNS proxy's addresses, and CoreDNS's settings refused by name."""
from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.dp.bootstrap import build_request
from appliance.dp.cli import _parser, config_from
from appliance.dp.config import DpConfig, DpError, validate
from appliance.dp.envoy import EnvoyVersion
from appliance.dp.resource import Identity
from appliance.dp.tproxy import dataplane_config, dns_addresses, dns_port, dns_runs

ENVOY = EnvoyVersion("1.40.0", "x/1.40.0/Clean/RELEASE/BoringSSL", True)
# Kuma 2.14's DefaultDataplaneConfig with DNS from kuma-dp's defaults (dns.enabled, envoyDnsPort 15054)
DEFAULT = {"ipFamilyMode": "dualstack", "redirect": {
    "inbound": {"enabled": True, "port": 15006}, "outbound": {"enabled": True, "port": 15001},
    "dns": {"enabled": True, "port": 15054}, "vnet": {}}}


def _cfg(argv: list[str], env: dict[str, str] | None = None) -> DpConfig:
    return config_from(_parser().parse_args(["run", *argv]), env or {})


def test_no_transparent_proxy_flag_no_dataplane_config() -> None:
    cfg = _cfg([])
    assert dataplane_config(cfg) is None and not dns_runs(cfg, None)
    assert (cfg.dns_enabled, cfg.dns_proxy_port, cfg.dns_coredns_port, cfg.dns_envoy_port) == (True, 0, 15053, 15054)


def test_transparent_proxy_defaults_are_kumas() -> None:
    cfg = _cfg(["--transparent-proxy"])
    tp = dataplane_config(cfg)
    assert tp == DEFAULT and dns_runs(cfg, tp)
    assert dns_addresses(tp, dns_port(cfg)) == [("127.0.0.1", 15053), ("::1", 15053)]
    assert dataplane_config(_cfg(["--transparent-proxy=false"])) is None


def test_config_files_in_order_then_kuma_dps_dns_settings(tmp_path: Path) -> None:
    # the file `kumactl install transparent-proxy --config` reads: kuma-dp takes what the proxy needs
    (tmp_path / "a.yaml").write_text("kumaDPUser: kuma-dp\nipFamilyMode: ipv4\nredirect:\n  inbound:\n    port: 16006\n"
                                     "  outbound:\n    port: 16001\n  dns:\n    enabled: true\n    port: 15053\n")
    (tmp_path / "b.yaml").write_text("redirect:\n  outbound:\n    port: 17001\n"
                                     "  vnet:\n    networks: [docker0:172.17.0.0/16]\n")
    cfg = _cfg([f"--transparent-proxy-config={tmp_path / 'a.yaml'},{tmp_path / 'b.yaml'}", "--dns-enabled=false",
                "--dns-envoy-port", "25054"])
    tp = dataplane_config(cfg)
    assert tp == {"ipFamilyMode": "ipv4", "redirect": {
        "inbound": {"enabled": True, "port": 16006}, "outbound": {"enabled": True, "port": 17001},
        "dns": {"enabled": False, "port": 25054}, "vnet": {"networks": ["docker0:172.17.0.0/16"]}}}
    assert not dns_runs(cfg, tp)
    assert dns_addresses(tp, 15053) == [("0.0.0.0", 15053)]             # vnet: every interface, IPv4 only
    stdin = dataplane_config(_cfg(["--transparent-proxy-config", "-"]), io.StringIO("ipFamilyMode: ipv4\n"))
    assert stdin is not None and stdin["ipFamilyMode"] == "ipv4"
    (tmp_path / "bad.yaml").write_text("redirect:\n  inbound:\n    prot: 1\n")
    with pytest.raises(DpError, match="failed to load transparent proxy configuration from provided input: "
                                      "unknown field redirect.inbound.prot"):
        dataplane_config(_cfg([f"--transparent-proxy-config={tmp_path / 'bad.yaml'}"]))


def test_bootstrap_request_carries_the_dataplane_config_as_kuma_does(tmp_path: Path) -> None:
    cfg = _cfg(["--transparent-proxy", "--name", "web", "--mesh", "default"])
    tp = dataplane_config(cfg)
    req = build_request(cfg, Identity("web", "default", None), "", "", ENVOY, tmp_path, "", tp, embedded_dns=True)
    # app/kuma-dp/pkg/dataplane/envoy/testdata/bootstrap-request-transparent-proxy.golden.json: the order of keys
    assert [k for k in req if k in ("dynamicMetadata", "dnsPort", "features", "dataplaneConfig", "ipv6Enabled")] == [
        "dynamicMetadata", "dnsPort", "features", "dataplaneConfig", "ipv6Enabled"]
    assert req["dataplaneConfig"] == DEFAULT and req["dnsPort"] == 15054
    assert {"feature-transparent-proxy-in-dataplane-metadata", "feature-embedded-dns"} <= set(req["features"])
    plain = build_request(_cfg([]), Identity("web", "default", None), "", "", ENVOY, tmp_path, "")
    assert "dataplaneConfig" not in plain
    assert not {"feature-transparent-proxy-in-dataplane-metadata", "feature-embedded-dns"} & set(plain["features"])


def test_dns_settings_from_flags_and_kumas_environment() -> None:
    env = {"KUMA_DNS_ENABLED": "false", "KUMA_DNS_PROXY_PORT": "25053", "KUMA_DNS_CORE_DNS_PORT": "1",
           "KUMA_DNS_ENVOY_DNS_PORT": "2"}
    cfg = _cfg([], env)
    assert (cfg.dns_enabled, cfg.dns_proxy_port, cfg.dns_coredns_port, cfg.dns_envoy_port) == (False, 25053, 1, 2)
    cfg = _cfg(["--dns-enabled", "--dns-proxy-port", "35053"], env)
    assert (cfg.dns_enabled, dns_port(cfg)) == (True, 35053)
    assert dns_port(_cfg(["--dns-coredns-port", "16053"])) == 16053      # no proxy port: CoreDNS's port
    with pytest.raises(DpError, match="both 0"):
        dns_port(_cfg(["--dns-coredns-port", "0"]))
    with pytest.raises(DpError, match=r"--dns-proxy-port has to be in \[0, 65353\] range"):
        validate(replace(DpConfig(), dns_proxy_port=65354))


@pytest.mark.parametrize("argv, env, named", [
    (["--dns-coredns-path", "/usr/bin/coredns"], {}, "--dns-coredns-path (KUMA_DNS_CORE_DNS_BINARY_PATH)"),
    (["--dns-coredns-config-template-path", "/etc/Corefile"], {}, "--dns-coredns-config-template-path"),
    (["--dns-enable-logging"], {}, "--dns-enable-logging"),
    ([], {"KUMA_DNS_PROMETHEUS_PORT": "19153"}, "--dns-prometheus-port (KUMA_DNS_PROMETHEUS_PORT)"),
    ([], {"KUMA_DNS_CONFIG_DIR": "/tmp/dns"}, "--dns-server-config-dir (KUMA_DNS_CONFIG_DIR)"),
])
def test_corednss_own_settings_are_refused_by_name(argv: list[str], env: dict[str, str], named: str) -> None:
    with pytest.raises(DpError, match="CoreDNS is not part of kuma-appliance") as e:
        validate(_cfg(argv, env))
    assert str(e.value).startswith(named)
