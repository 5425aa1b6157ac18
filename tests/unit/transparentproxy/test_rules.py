"""The rule generator against Kuma 2.14.3's rules for the same flags.

testdata/kuma-*.ipv4.txt hold the rules of Kuma's kumactl goldens (app/kumactl/cmd/install/testdata/
install-transparent-proxy.<name>.txt at v2.14.3). Kuma's test strips the comments and writes the loopback
interface as `ifPlaceholder`; these files say `lo`, and they are compared with our output for a host
without the comment module (what Kuma's test host is). multiple-flags.dualstack.txt is the full output,
comments included, for the flags of Kuma's "with-multiple-flags" container test; the rules it makes in
the kernel are Kuma's test/transparentproxy/testdata/debian-12-with-multiple-flags.ip{,6}tables-nft.golden
(tests/e2e/test_transparent_proxy.py checks that with a real iptables).
"""
from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.kumactl import _defaults, build_parser
from appliance.kumactl.context import Context
from appliance.kumactl.transparent_proxy import _config
from appliance.transparentproxy.config import ConfigError, TransparentProxyConfig
from appliance.transparentproxy.rules import HostFacts, build, dry_run_text

DATA = Path(__file__).parent / "testdata"
NO_COMMENTS = HostFacts(kuma_dp_uid="0", comment_module=False)


def config_from_flags(*flags: str) -> TransparentProxyConfig:
    """What `kumactl install transparent-proxy FLAGS` asks for (flags only, nothing of the host)."""
    args = _defaults()
    build_parser().parse_args(["install", "transparent-proxy", *flags], namespace=args)
    return _config(Context(args, io.StringIO(), io.StringIO(), stdin=io.StringIO()))


def dry_run(cfg: TransparentProxyConfig, facts: HostFacts = NO_COMMENTS, ipv6: bool = False) -> str:
    families = [build(cfg, facts)] + ([build(cfg, facts, ipv6=True)] if ipv6 else [])
    return dry_run_text(*families) + "\n"


@pytest.mark.parametrize("golden, flags", [
    # Kuma: "should generate defaults with username" / "... with user id" (--kuma-dp-user root / 0)
    ("kuma-defaults.ipv4.txt", []),
    # Kuma: "should generate defaults with overrides and log deprecate", "should generate when ipv6 disabled"
    ("kuma-overrides.ipv4.txt", ["--redirect-outbound-port", "12345", "--redirect-inbound-port", "12346",
                                 "--exclude-outbound-ports", "2000,2001", "--exclude-inbound-ports", "1000,1001"]),
    # Kuma: "should generate defaults with outbound exclude ports"
    ("kuma-excludedports.ipv4.txt", ["--exclude-outbound-ports-for-uids", "tcp:1900,1902,1000-2000:106-108",
                                     "--exclude-outbound-ports-for-uids", "tcp:2900,2902,3000-5000:203",
                                     "--exclude-outbound-ports-for-uids", "udp:3900,3902,4000-6000:303"]),
    # Kuma: "... outbound exclude ports for uids wildcard"
    ("kuma-excludedports-wildcards.ipv4.txt", ["--exclude-outbound-ports-for-uids", "*:*:0"]),
    # Kuma: "... outbound exclude ports for uids only uid"
    ("kuma-excludedports-onlyuid.ipv4.txt", ["--exclude-outbound-ports-for-uids", "123"]),
    # Kuma: "... DNS redirected without conntrack zone splitting" (install-transparent-proxy.dns.no-conntrack)
    ("kuma-dns-all-no-conntrack.ipv4.txt", ["--redirect-all-dns-traffic", "--redirect-dns-port", "12345",
                                            "--skip-dns-conntrack-zone-split"]),
])
def test_rules_are_kumas_for_the_same_flags(golden: str, flags: list[str]) -> None:
    cfg = config_from_flags("--dry-run", "--ip-family-mode", "ipv4", "--kuma-dp-user", "0", *flags)
    assert dry_run(cfg) == (DATA / golden).read_text()


def test_dns_capture_all_with_conntrack_zones_adds_kumas_raw_table() -> None:
    # Kuma: install-transparent-proxy.dns.golden (its raw table; its nat part predates the TCP/53 rule,
    # which the no-conntrack golden and Kuma's container goldens show)
    cfg = config_from_flags("--redirect-all-dns-traffic", "--redirect-dns-port", "12345")
    assert dry_run(cfg, replace(NO_COMMENTS, conntrack_zone_split=True)) == (DATA / "kuma-dns-all.ipv4.txt").read_text()


def test_without_the_conntrack_module_dns_is_redirected_without_zones_and_says_so() -> None:
    cfg = config_from_flags("--redirect-all-dns-traffic", "--redirect-dns-port", "12345")
    rules = build(cfg, replace(NO_COMMENTS, conntrack_zone_split=False))
    assert "* raw" not in rules.text and "-j REDIRECT --to-ports 12345" in rules.text
    assert rules.warnings == ("conntrack zone splitting is disabled. This requires the 'conntrack' iptables module",)


def test_many_flags_with_comments_in_both_families() -> None:
    cfg = config_from_flags(
        "--redirect-all-dns-traffic", "--vnet", "docker0:172.17.0.0/16", "--vnet", "br+:172.18.0.0/16",
        "--vnet", "iface:::1/64", "--exclude-outbound-ports-for-uids", "53,3000-5000:106-108",
        "--exclude-outbound-ips", "10.0.0.1,192.168.0.0/24,fe80::1", "--exclude-outbound-ips", "fd00::/8",
        "--exclude-outbound-ports", "1,22,333", "--exclude-inbound-ports", "4444,55555",
        "--exclude-inbound-ips", "192.168.0.1,172.32.16.8/16,fe80::/10",
        "--exclude-inbound-ips", "a81b:a033:6399:73c7:72b6:aa8c:6f22:7098")
    assert dry_run(cfg, HostFacts(kuma_dp_uid="5678"), ipv6=True) == (DATA / "multiple-flags.dualstack.txt").read_text()


def test_redirect_dns_only_to_the_resolvers_of_each_family() -> None:
    cfg = config_from_flags("--redirect-dns")
    facts = HostFacts(kuma_dp_uid="5678", dns_servers=("10.255.255.53", "fd00::53", "not-an-ip"))
    v4, v6 = build(cfg, facts), build(cfg, facts, ipv6=True)
    assert ('-I OUTPUT 2 -m comment --comment "kuma/mesh/transparent/proxy/redirect DNS requests to 10.255.255.53 '
            'to the kuma-dp DNS proxy (listening on port 15053)" -d 10.255.255.53 -p udp --dport 53 -j REDIRECT '
            '--to-ports 15053') in v4.text
    assert "-d fd00::53 -p udp --dport 53 -j REDIRECT --to-ports 15053" in v6.text and "10.255" not in v6.text
    only_v4 = build(cfg, replace(facts, dns_servers=("10.255.255.53",)), ipv6=True)
    assert "--dport 53" not in only_v4.text and "* raw" not in only_v4.text
    assert only_v4.warnings == ("no IPv6 DNS servers found in /etc/resolv.conf. DNS traffic capture for IPv6 will "
                                "be disabled",)


def test_verbose_writes_long_flags_and_sections() -> None:
    text = build(config_from_flags("--verbose"), HostFacts(kuma_dp_uid="5678")).text
    assert text.startswith("* nat\n\n# Custom Chains:\n--new-chain KUMA_MESH_INBOUND\n--new-chain KUMA_MESH_OUTBOUND\n")
    assert ('--append KUMA_MESH_OUTBOUND_REDIRECT --match comment --comment "kuma/mesh/transparent/proxy/redirect TCP '
            'traffic to envoy (port 15001)" --protocol tcp --jump REDIRECT --to-ports 15001\n\nCOMMIT\n') in text


def test_disabled_redirection_and_drop_invalid_and_logs() -> None:
    cfg = config_from_flags("--redirect-inbound=false", "--drop-invalid-packets", "--iptables-logs",
                            "--disable-comments")
    text = build(cfg, HostFacts(kuma_dp_uid="5678")).text
    assert "-A KUMA_MESH_INBOUND -p tcp -j RETURN\n" in text
    assert "-I OUTPUT 1 -j LOG --log-prefix OUTPUT: --log-level 7\n" in text
    assert "-A PREROUTING -j LOG --log-prefix PREROUTING: --log-level 7\n" in text
    assert text.endswith("* mangle\n-A PREROUTING -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n")


@pytest.mark.parametrize("entry, message", [   # Kuma's own error table (install_transparent_proxy_test.go)
    ("a3000-5000:1", "invalid port range: validation failed for value or range 'a3000-5000': invalid uint16 value: "
                     "'a3000'"),
    ("http:3000-5000:1", "invalid or unsupported protocol: 'http'"),
    ("3000-5000:1:*", "wildcard '*' is not allowed for UIDs"),
    ("3000-5000:1:1,2,3", "invalid UID entry: '1,2,3'. It should either be a single item or a range"),
    ("tcp,http:1:1", "invalid or unsupported protocol: 'http'"),
])
def test_bad_uid_exclusions_are_refused_in_kumas_words(entry: str, message: str) -> None:
    cfg = config_from_flags("--exclude-outbound-ports-for-uids", entry)
    with pytest.raises(ConfigError) as e:
        build(cfg, NO_COMMENTS)
    assert str(e.value) == f"unable to initialize .Outbound: parsing excluded outbound ports for uids failed: {message}"


def test_bad_ip_exclusion_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"invalid IP address: '10\.0\.0\.300'"):
        build(config_from_flags("--exclude-inbound-ips", "10.0.0.300"), NO_COMMENTS)
