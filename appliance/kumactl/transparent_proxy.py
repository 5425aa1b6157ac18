"""`kumactl install transparent-proxy` and `kumactl uninstall transparent-proxy`: Kuma 2.14's flags and
config file mapped onto `appliance.transparentproxy` (which writes and removes the iptables rules).

Precedence as in Kuma: defaults < `--config-file` / `--config` files < flags. Kuma's flags for what
this kumactl lacks (eBPF, firewalld, custom executables) and KUMA_TRANSPARENT_PROXY_* variables
are refused by name, never ignored.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Sequence

from appliance.gocompat import parse_seconds
from appliance.kumactl.client import CliError
from appliance.transparentproxy.config import (
    ConfigError, TransparentProxyConfig, apply_document, load_documents, parse_ip_family_mode, parse_port, parse_ports,
)
from appliance.transparentproxy.setup import HostError, install, uninstall

if TYPE_CHECKING:
    from appliance.kumactl.context import Context

_ENV_PREFIX = "KUMA_TRANSPARENT_PROXY_"

_INSTALL_HELP = """Install Transparent Proxy by modifying the host's iptables.

 1) create a dedicated user for the Kuma data plane proxy, e.g. 'kuma-dp' (UID 5678 is the default)
 2) run this command as root; all changes are revertible with 'kumactl uninstall transparent-proxy'

 sudo kumactl install transparent-proxy --kuma-dp-user kuma-dp --exclude-inbound-ports 22

 3) run kuma-dp as that user (in a systemd unit: User=kuma-dp). Traffic of every other user is
    redirected: outbound TCP to port 15001, inbound TCP to port 15006 (Envoy's listeners), DNS to
    port 15053 with --redirect-dns or --redirect-all-dns-traffic.

Kuma's eBPF mode, --store-firewalld and --iptables-executables are not supported: they are refused.
"""


def _bool(text: str) -> bool:
    """pflag's bool (strconv.ParseBool)."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise argparse.ArgumentTypeError(f'invalid argument "{text}": strconv.ParseBool: parsing "{text}": invalid syntax')


def _checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def typed(text: str) -> Any:
        try:
            return parse(text)
        except (ConfigError, ValueError) as e:
            raise argparse.ArgumentTypeError(f'invalid argument "{text}": {e}') from None
    return typed


def _uint(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    return int(text)


# Kuma's flags for features this kumactl does not have, and what they are for.
_UNSUPPORTED = {
    **{f"--ebpf-{name}": "eBPF mode" for name in ("enabled", "programs-source-path", "instance-ip", "bpffs-path",
                                                   "cgroup-path", "tc-attach-iface")},
    "--store-firewalld": "storing the rules with firewalld",
    "--iptables-executables": "custom iptables executables",
}


class _Unsupported(argparse.Action):
    """A Kuma flag for a feature this kumactl does not have: an error naming it, never silence."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        raise CliError(f"flag {option_string} is not supported by this kumactl ({_UNSUPPORTED[str(option_string)]}); "
                       f"run '{parser.prog} --help' for the supported flags")


def _unsupported_flags(p: argparse.ArgumentParser, names: Sequence[str]) -> None:
    for name in names:
        p.add_argument(name, action=_Unsupported, nargs="?", help=argparse.SUPPRESS)


def _flag_bool(group: Any, name: str, help_text: str) -> None:
    group.add_argument(name, nargs="?", const=True, type=_bool, default=None, metavar="bool", help=help_text)


def _install_flags(p: argparse.ArgumentParser) -> None:
    add = p.add_argument
    _flag_bool(p, "--dry-run", "dry run")
    _flag_bool(p, "--verbose", "verbose")
    add("--ip-family-mode", type=_checked(parse_ip_family_mode), metavar="string",
        help="The IP family mode to enable traffic redirection for. Can be 'dualstack' or 'ipv4' (default dualstack)")
    add("--redirect-outbound-port", type=_checked(parse_port), metavar="uint16",
        help='outbound port redirected to Envoy, as specified in dataplane\'s '
             '"networking.transparentProxying.redirectPortOutbound" (default 15001)')
    _flag_bool(p, "--redirect-inbound", "redirect the inbound traffic to the Envoy. Should be disabled for Gateway "
                                        "data plane proxies. (default true)")
    add("--redirect-inbound-port", type=_checked(parse_port), metavar="uint16",
        help='inbound port redirected to Envoy, as specified in dataplane\'s '
             '"networking.transparentProxying.redirectPortInbound" (default 15006)')
    add("--exclude-inbound-ports", type=_checked(parse_ports), metavar="uint16[,...]",
        help="a comma separated list of inbound ports to exclude from redirect to Envoy")
    add("--exclude-outbound-ports", type=_checked(parse_ports), metavar="uint16[,...]",
        help="a comma separated list of outbound ports to exclude from redirect to Envoy")
    add("--kuma-dp-user", metavar="string",
        help="the username or UID of the user that will run kuma-dp. If not provided, the system will search for a "
             "user with the default UID ('5678') or the default username ('kuma-dp')")
    add("--kuma-dp-uid", metavar="string", help="the uid of the user that will run kuma-dp (deprecated: please use "
                                                "--kuma-dp-user, which accepts both UIDs and usernames)")
    _flag_bool(p, "--redirect-dns", "redirect only DNS requests targeted to the servers listed in /etc/resolv.conf "
                                    "to a specified port")
    _flag_bool(p, "--redirect-all-dns-traffic", "redirect all DNS traffic to a specified port, unlike --redirect-dns "
                                                "this will not be limited to the dns servers identified in "
                                                "/etc/resolve.conf")
    add("--redirect-dns-port", type=_checked(parse_port), metavar="uint16",
        help="the port where the DNS agent is listening (default 15053)")
    _flag_bool(p, "--skip-dns-conntrack-zone-split", "Disables the conntrack zone splitting feature, which is used to "
                                                     "avoid DNS resolution errors when applications make numerous DNS "
                                                     "UDP requests")
    _flag_bool(p, "--drop-invalid-packets", "drop packets in invalid conntrack states (mangle table)")
    add("--exclude-outbound-ports-for-uids", action="append", metavar="stringArray",
        help="outbound ports to exclude for specific uids in a format of protocol:ports:uids, e.g. "
             "53,3000-5000:106-108")
    add("--exclude-inbound-ips", action="append", metavar="stringArray",
        help="IP addresses (IPv4 or IPv6, with or without CIDR notation) to be excluded from transparent proxy inbound "
             "redirection; repeat the flag or separate addresses with commas")
    add("--exclude-outbound-ips", action="append", metavar="stringArray",
        help="IP addresses (IPv4 or IPv6, with or without CIDR notation) to be excluded from transparent proxy "
             "outbound redirection; repeat the flag or separate addresses with commas")
    add("--vnet", action="append", metavar="stringArray",
        help="virtual networks in a format of interfaceNameRegex:CIDR split by ':' where interface name doesn't have "
             "to be exact name e.g. docker0:172.17.0.0/16, br+:172.18.0.0/16, iface:::1/64")
    add("--wait", type=_checked(_uint), metavar="uint",
        help="seconds to wait for the xtables lock (legacy iptables) before exiting (default 5)")
    add("--wait-interval", type=_checked(_uint), metavar="uint",
        help="microseconds iptables waits between tries for the xtables lock")
    add("--max-retries", type=_checked(_uint), metavar="uint",
        help="retries of a failed iptables-restore before giving up (default 4)")
    add("--sleep-between-retries", type=_checked(parse_seconds), metavar="duration",
        help="time to sleep between retries (default 2s)")
    _flag_bool(p, "--iptables-logs", "enable logs for iptables rules using the LOG chain (see dmesg(1))")
    _flag_bool(p, "--disable-comments", "Disable the addition of comments to iptables rules (uninstall then cannot "
                                        "tell our rules apart)")
    _flag_bool(p, "--redirect-inbound-insert-instead-of-append",
               "insert the PREROUTING jump to KUMA_MESH_INBOUND at the top of the chain instead of appending it")
    _flag_bool(p, "--redirect-outbound-insert-instead-of-append",
               "insert the OUTPUT jump to KUMA_MESH_OUTBOUND at the top of the chain instead of appending it")
    add("--config", action="append", dest="tp_config", metavar="stringArray",
        help="Transparent proxy configuration. This flag can be repeated. Each value can be a comma-separated list "
             "of file paths or a dash '-' to read from STDIN. Later values override earlier ones")
    add("--config-file", dest="tp_config_file", metavar="string",
        help="path to the file containing the transparent proxy configuration in YAML or JSON format (deprecated: "
             "please use --config)")
    _unsupported_flags(p, list(_UNSUPPORTED))


def _config(ctx: Context) -> TransparentProxyConfig:
    a = ctx.args
    if a.redirect_dns and a.redirect_all_dns_traffic:
        raise CliError("only one of '--redirect-dns' or '--redirect-all-dns-traffic' should be specified")
    env = sorted(k for k in os.environ if k.startswith(_ENV_PREFIX))
    if env:
        raise CliError(f"environment variables are not supported by this kumactl ({', '.join(env)}): "
                       "use --config or the flags instead")
    if a.tp_config_file is not None:
        ctx.err.write("Flag --config-file has been deprecated, please use --config\n")
    if a.kuma_dp_uid is not None:
        ctx.err.write("Flag --kuma-dp-uid has been deprecated, please use --kuma-dp-user, which accepts both UIDs and "
                      "usernames\n")
    cfg = TransparentProxyConfig()
    try:
        for doc in load_documents([a.tp_config_file or "", *(a.tp_config or [])], ctx.stdin):
            cfg = apply_document(cfg, doc)
    except ConfigError as e:
        raise CliError(f"failed to load configuration from provided input: {e}") from None
    given = lambda name: getattr(a, name) is not None  # noqa: E731
    top = {"dry_run": "dry_run", "verbose": "verbose", "ip_family_mode": "ip_family_mode",
           "drop_invalid_packets": "drop_invalid_packets", "wait": "wait", "wait_interval": "wait_interval",
           "max_retries": "max_retries", "sleep_between_retries": "sleep_between_retries",
           "iptables_logs": "log_enabled", "disable_comments": "comments_disabled", "vnet": "vnet_networks"}
    cfg = replace(cfg, **{field: (tuple(v) if isinstance(v := getattr(a, flag), list) else v)
                          for flag, field in top.items() if given(flag)})
    for user_flag in ("kuma_dp_uid", "kuma_dp_user"):   # both given: --kuma-dp-user wins
        if given(user_flag):
            cfg = replace(cfg, kuma_dp_user=getattr(a, user_flag))
    inbound = {"redirect_inbound": "enabled", "redirect_inbound_port": "port", "exclude_inbound_ports": "exclude_ports",
               "exclude_inbound_ips": "exclude_ports_for_ips",
               "redirect_inbound_insert_instead_of_append": "insert_redirect_instead_of_append"}
    outbound = {"redirect_outbound_port": "port", "exclude_outbound_ports": "exclude_ports",
                "exclude_outbound_ips": "exclude_ports_for_ips",
                "exclude_outbound_ports_for_uids": "exclude_ports_for_uids",
                "redirect_outbound_insert_instead_of_append": "insert_redirect_instead_of_append"}
    dns = {"redirect_dns": "enabled", "redirect_all_dns_traffic": "capture_all", "redirect_dns_port": "port",
           "skip_dns_conntrack_zone_split": "skip_conntrack_zone_split"}

    def pick(names: dict[str, str]) -> dict[str, Any]:
        return {field: (tuple(v) if isinstance(v := getattr(a, flag), list) else v)
                for flag, field in names.items() if given(flag)}

    return replace(cfg, inbound=replace(cfg.inbound, **pick(inbound)),
                   outbound=replace(cfg.outbound, **pick(outbound)), dns=replace(cfg.dns, **pick(dns)))


def _install(ctx: Context) -> None:
    cfg = _config(ctx)
    try:
        install(cfg, ctx.out, ctx.err)
    except (HostError, ConfigError) as e:
        raise CliError(str(e)) from None


def _uninstall(ctx: Context) -> None:
    try:
        uninstall(bool(ctx.args.dry_run), bool(ctx.args.verbose), ctx.out, ctx.err)
    except HostError as e:
        raise CliError(str(e)) from None


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """`install` and `uninstall`, each with `transparent-proxy` (Kuma's other install targets are for
    Kubernetes). Kuma hides kumactl's global flags here; its own --config-file is the proxy's config."""
    for verb, short, run in (("install", "Install various Kuma components.", _install),
                             ("uninstall", "Uninstall various Kuma components.", _uninstall)):
        group = sub.add_parser(verb, parents=[common], help=short.rstrip("."), description=short)
        what = group.add_subparsers(dest=f"{verb}_command", metavar="COMMAND")
        group.set_defaults(run=lambda ctx, parser=group: parser.print_help(ctx.out))
        if verb == "install":
            tp = what.add_parser("transparent-proxy", help="Install Transparent Proxy pre-requisites on the host",
                                 description=_INSTALL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
            _install_flags(tp)
        else:
            tp = what.add_parser("transparent-proxy", help="Uninstall Transparent Proxy pre-requisites on the host",
                                 description="Uninstall Transparent Proxy by removing the iptables rules and chains "
                                             "'kumactl install transparent-proxy' added.")
            _flag_bool(tp, "--dry-run", "dry run")
            _flag_bool(tp, "--verbose", "verbose")
            _unsupported_flags(tp, ["--ebpf-enabled", "--ebpf-bpffs-path"])
        tp.set_defaults(run=run)
