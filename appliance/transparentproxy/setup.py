"""Install and uninstall, in Kuma's steps: learn the host (kuma-dp user, loopback, iptables backend and
what it supports, resolv.conf, IPv6), build the rules, remove any of ours, restore the new ones.
Everything the rules need is known and checked before the first change to the host."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

from appliance.transparentproxy import host
from appliance.transparentproxy.config import ConfigError, TransparentProxyConfig
from appliance.transparentproxy.host import Executables, Functionality, HostError
from appliance.transparentproxy.rules import HostFacts, RuleSet, build, dry_run_text

__all__ = ["install", "uninstall", "HostError", "ConfigError", "NO_IPTABLES_DRY_RUN"]

NO_IPTABLES_DRY_RUN = ("[dry-run]: no valid iptables executables found; the generated iptables rules may differ "
                       "from those generated in an environment with valid iptables executables")
NON_ROOT_DRY_RUN = "# [WARNING] [dry-run]: running this command as a non-root user may lead to unpredictable results"


@dataclass(frozen=True)
class _Planned:
    exe: Executables | None   # None: a dry run on a host without iptables
    rules: RuleSet


class _Output:
    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err

    def info(self, line: str) -> None:
        self.out.write(line + "\n")

    def warn(self, prefix: str, message: str) -> None:
        self.err.write(f"# [{prefix}] [WARNING] {message}\n")


def _check_root(dry_run: bool, say: _Output) -> None:
    if host.is_root():
        return
    if not dry_run:
        raise HostError("you need to have root privileges to run this command")
    say.err.write(NON_ROOT_DRY_RUN + "\n")


def _executables(cfg: TransparentProxyConfig, ipv6: bool, mode: str | None, say: _Output) -> Executables | None:
    prefix = "ip6tables" if ipv6 else "iptables"
    try:
        return host.find_executables(ipv6, cfg.wait, cfg.wait_interval, mode)
    except HostError as e:
        if ipv6:   # as in Kuma, IPv6 is best effort: the IPv4 rules still go in
            say.warn(prefix, f"failed to initialize IPv6 executables: {e}")
            return None
        if cfg.dry_run:
            say.warn(prefix, NO_IPTABLES_DRY_RUN)
            return None
        raise HostError(f"failed to initialize config: unable to initialize IPv4 executables: {e}") from None


def _functionality(cfg: TransparentProxyConfig, exe: Executables | None, say: _Output) -> Functionality:
    if exe is None:
        return Functionality()
    needs_raw = cfg.dns.enabled and not cfg.dns.skip_conntrack_zone_split
    try:
        return host.probe(exe, raw=needs_raw, mangle=cfg.drop_invalid_packets)
    except HostError as e:
        if cfg.dry_run:   # e.g. not root: nothing can be listed
            say.warn(exe.prefix, f"{e}; {NO_IPTABLES_DRY_RUN}")
            return Functionality()
        raise HostError(f"failed to initialize config: {e}") from None


def _family(cfg: TransparentProxyConfig, exe: Executables | None, ipv6: bool, uid: str, loopback: str,
            servers: tuple[str, ...], say: _Output) -> _Planned:
    found = _functionality(cfg, exe, say)
    facts = HostFacts(kuma_dp_uid=uid, loopback=loopback, comment_module=found.comment,
                      conntrack_zone_split=found.conntrack_zone_split, docker_output=found.docker_output,
                      mangle_table=found.mangle, dns_servers=servers)
    try:
        rules = build(cfg, facts, ipv6)
    except ConfigError as e:
        family = "IPv6" if ipv6 else "IPv4"
        raise ConfigError(f"failed to initialize config: unable to initialize {family} redirect configuration: "
                          f"{e}") from None
    for warning in rules.warnings:
        say.warn("ip6tables" if ipv6 else "iptables", warning)
    return _Planned(exe, rules)


def _ipv6_wanted(ip_family_mode: str, dry_run: bool, verbose: bool, say: _Output) -> bool:
    if ip_family_mode == "ipv4":
        return False
    if not host.has_local_ipv6():
        if verbose:
            say.warn("ip6tables", "IPv6 initialization skipped due to missing or faulty IPv6 support: no local IPv6 "
                                  "addresses detected")
        return False
    if not dry_run:
        try:
            host.add_ipv6_passthrough_address()
        except HostError as e:
            say.warn("ip6tables", f"failed to configure IPv6 outbound address; IPv6 rules will be skipped: {e}")
            return False
    return True


def install(cfg: TransparentProxyConfig, out: TextIO, err: TextIO) -> None:
    """`kumactl install transparent-proxy`: print the rules (dry run) or put them in place."""
    cfg = cfg.finalized()
    say = _Output(out, err)
    _check_root(cfg.dry_run, say)
    uid = host.resolve_kuma_dp_user(cfg.kuma_dp_user)
    loopback = host.loopback_interface()
    servers: tuple[str, ...] = ()
    if cfg.dns.enabled and not cfg.dns.capture_all:
        servers = tuple(host.nameservers(cfg.dns.resolv_config_path))
    exe4 = _executables(cfg, False, None, say)
    families = [_family(cfg, exe4, False, uid, loopback, servers, say)]
    if _ipv6_wanted(cfg.ip_family_mode, cfg.dry_run, cfg.verbose, say):
        exe6 = _executables(cfg, True, exe4.mode if exe4 else None, say)
        if exe6 is not None:
            try:
                families.append(_family(cfg, exe6, True, uid, loopback, servers, say))
            except HostError as e:   # e.g. no ip6table_nat: as in Kuma, the IPv4 rules still go in
                say.warn("ip6tables", f"failed to initialize IPv6 executables: {e}")
    if cfg.dry_run:
        say.info(dry_run_text(*(f.rules for f in families)))
        return
    say.info("# cleaning up any existing transparent proxy iptables rules")
    for family in families:
        assert family.exe is not None   # a host without iptables stops above unless this is a dry run
        try:
            host.remove_rules(family.exe, say.info)
        except HostError as e:
            raise HostError(f"failed to setup transparent proxy: cleanup failed during setup: {e}") from None
    say.info("# kumactl is about to apply the iptables rules that will enable transparent proxying on the machine. "
             "The SSH connection may drop. If that happens, just reconnect again")
    for family in families:
        assert family.exe is not None
        say.info(f"# [{family.exe.prefix}] the following rules will be restored ({family.exe.mode} backend):")
        say.info(family.rules.text.strip())
        try:
            host.restore(family.exe, family.rules.text, say.info, tries=cfg.max_retries + 1,
                         sleep=cfg.sleep_between_retries)
        except HostError as e:
            raise HostError(f"failed to setup transparent proxy: unable to restore "
                            f"{family.exe.prefix} rules: {e}") from None
    say.info("# transparent proxy setup completed successfully. You can now run kuma-dp with the transparent-proxy "
             "feature enabled")


def uninstall(dry_run: bool, verbose: bool, out: TextIO, err: TextIO) -> None:
    """`kumactl uninstall transparent-proxy`: remove our rules and chains of both families."""
    say = _Output(out, err)
    _check_root(dry_run, say)
    try:
        exes = [host.find_executables(False)]
    except HostError as e:
        raise HostError(f"failed to initialize config: unable to initialize IPv4 executables: {e}") from None
    if host.has_local_ipv6():
        try:
            exes.append(host.find_executables(True, mode=exes[0].mode))
        except HostError as e:
            say.warn("ip6tables", f"failed to initialize IPv6 executables: {e}")
    elif verbose:
        say.warn("ip6tables", "IPv6 cleanup skipped: no local IPv6 addresses detected")
    for exe in exes:
        try:
            host.remove_rules(exe, say.info, dry_run=dry_run)
        except HostError as e:
            family = "IPv6" if exe.ipv6 else "IPv4"
            raise HostError(f"transparent proxy cleanup failed: failed to cleanup {family} rules: {e}") from None
    if not dry_run:
        say.info("# transparent proxy cleanup completed successfully")
