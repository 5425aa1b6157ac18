"""From the options and a few facts about the host to the iptables rules, as iptables-restore text per
IP family: the rules Kuma 2.14 writes, in its order, with its comments and chain names. Pure: no I/O.

The shape, as in Kuma: tables raw (DNS conntrack zones), nat (the redirection) and mangle (dropping
invalid packets); in nat, PREROUTING jumps to KUMA_MESH_INBOUND and OUTPUT to KUMA_MESH_OUTBOUND, whose
RETURN rules let through the kuma-dp user's own traffic, localhost and every exclusion, and which end in
KUMA_MESH_{IN,OUT}BOUND_REDIRECT, REDIRECTs to Envoy's inbound and outbound ports.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Union

from appliance.gocompat import go_quote
from appliance.transparentproxy.config import (
    CHAIN_PREFIX, COMMENT_PREFIX, ConfigError, Exclusion, TransparentProxyConfig, TrafficFlow, parse_ip_exclusions,
    parse_uid_exclusions, parse_vnet,
)

__all__ = ["HostFacts", "RuleSet", "build", "dry_run_text", "DNS_PORT"]

DNS_PORT = 53
_LOCALHOST = {False: "127.0.0.1/32", True: "::1/128"}
# Envoy's inbound passthrough cluster connects from this address (Kuma's constant).
_INBOUND_PASSTHROUGH = {False: "127.0.0.6/32", True: "::6/128"}

# A token is literal text, or a (short, long) flag pair: --verbose writes the long one, as Kuma does.
Token = Union[str, tuple[str, str]]
P, M, J = ("-p", "--protocol"), ("-m", "--match"), ("-j", "--jump")
S, D, O, I = ("-s", "--source"), ("-d", "--destination"), ("-o", "--out-interface"), ("-i", "--in-interface")
DPORT, SPORT = ("--dport", "--destination-port"), ("--sport", "--source-port")


@dataclass(frozen=True)
class HostFacts:
    """What the I/O edge found on the host for one IP family."""
    kuma_dp_uid: str
    loopback: str = "lo"
    comment_module: bool = True
    # conntrack zones need the raw table and the conntrack, udp and owner modules
    conntrack_zone_split: bool = True
    docker_output: bool = False      # a DOCKER_OUTPUT chain in nat: a container on a custom network
    mangle_table: bool = True
    dns_servers: tuple[str, ...] = ()   # nameservers of resolv.conf, all families


@dataclass(frozen=True)
class RuleSet:
    ipv6: bool
    text: str                         # iptables-restore input, ending in a newline
    warnings: tuple[str, ...] = ()    # what Kuma prints as "# [iptables] [WARNING] ..."


@dataclass
class _Chain:
    name: str
    rules: list[tuple[int, tuple[Token, ...], str]] = field(default_factory=list)
    position: int = 0

    def add(self, *tokens: Token, comment: str, insert: bool = False) -> None:
        """`insert`: -I at the next position of this chain's inserted rules (Kuma's counter)."""
        if insert:
            self.position += 1
        self.rules.append((self.position if insert else 0, tokens, comment))


@dataclass(frozen=True)
class _Style:
    verbose: bool
    comments: bool

    def flag(self, token: Token) -> str:
        return token if isinstance(token, str) else token[1 if self.verbose else 0]

    def rule(self, chain: str, position: int, tokens: tuple[Token, ...], comment: str) -> str:
        parts = [self.flag(("-I", "--insert") if position else ("-A", "--append")), chain]
        if position:
            parts.append(str(position))
        if self.comments and comment:
            # iptables caps a comment at 256 bytes; Kuma cuts it at 254
            parts += [self.flag(M), "comment", "--comment", go_quote(f"{COMMENT_PREFIX}/{comment}"[:254])]
        parts += [self.flag(t) for t in tokens]
        return " ".join(parts)

    def table(self, name: str, builtins: list[_Chain], custom: list[_Chain]) -> str:
        rules = [self.rule(c.name, *r) for c in [*builtins, *custom] for r in c.rules]
        if not rules:
            return ""
        chains = [f"{self.flag(('-N', '--new-chain'))} {c.name}" for c in custom]
        if self.verbose:
            chains = ["# Custom Chains:", *chains] if chains else []
            rules = ["# Rules:", *rules]
        lines = [f"* {name}"]
        if chains:
            lines.append("\n".join(chains))
        lines += ["\n".join(rules), "COMMIT"]
        return ("\n\n" if self.verbose else "\n").join(lines)


@dataclass(frozen=True)
class _Family:
    """The options initialized for one IP family (Kuma's InitializedConfigIPvX)."""
    cfg: TransparentProxyConfig
    facts: HostFacts
    ipv6: bool
    uid: str
    inbound_exclusions: list[Exclusion]
    outbound_exclusions: list[Exclusion]
    dns_enabled: bool
    dns_servers: list[str]
    zone_split: bool
    vnet: dict[str, str]

    @property
    def localhost(self) -> str:
        return _LOCALHOST[self.ipv6]


def _family_name(ipv6: bool) -> str:
    return "IPv6" if ipv6 else "IPv4"


def _exclusions(flow: TrafficFlow, name: str, ipv6: bool) -> list[Exclusion]:
    try:
        by_uid = parse_uid_exclusions(flow.exclude_ports_for_uids)
    except ConfigError as e:
        raise ConfigError(f"unable to initialize .{name}: parsing excluded outbound ports for uids failed: "
                          f"{e}") from None
    try:
        by_ip = parse_ip_exclusions(flow.exclude_ports_for_ips, ipv6)
    except ConfigError as e:
        raise ConfigError(f"unable to initialize .{name}: parsing excluded outbound ports for IPs failed: "
                          f"{e}") from None
    return by_uid + by_ip


def _initialize(cfg: TransparentProxyConfig, facts: HostFacts, ipv6: bool) -> tuple[_Family, list[str]]:
    warnings: list[str] = []
    dns = cfg.dns
    dns_enabled, zone_split, servers = dns.enabled, False, []
    if dns.enabled:
        if not dns.skip_conntrack_zone_split and not facts.conntrack_zone_split:
            warnings.append("conntrack zone splitting is disabled. This requires the 'conntrack' iptables module")
        elif not dns.skip_conntrack_zone_split and facts.docker_output and dns.capture_all:
            warnings.append("conntrack zone splitting is unsupported when capturing all DNS traffic inside Docker "
                            "containers with custom networks")
        elif not dns.skip_conntrack_zone_split:
            zone_split = True
        if not dns.capture_all:
            for server in facts.dns_servers:
                try:
                    ip = ipaddress.ip_address(server)
                except ValueError:
                    continue
                if (ip.version == 6) == ipv6:
                    servers.append(str(ip))
            if not servers:
                dns_enabled = zone_split = False
                warnings.append(f"no {_family_name(ipv6)} DNS servers found in {dns.resolv_config_path}. DNS traffic "
                                f"capture for {_family_name(ipv6)} will be disabled")
    try:
        vnet = parse_vnet(cfg.vnet_networks, ipv6)
    except ConfigError as e:
        raise ConfigError(f"unable to initialize .VNet: {e}") from None
    family = _Family(cfg=cfg, facts=facts, ipv6=ipv6, uid=facts.kuma_dp_uid, vnet=vnet,
                     inbound_exclusions=_exclusions(cfg.inbound, "Inbound", ipv6),
                     outbound_exclusions=_exclusions(cfg.outbound, "Outbound", ipv6),
                     dns_enabled=dns_enabled, dns_servers=servers, zone_split=zone_split)
    return family, warnings


def _raw(f: _Family) -> tuple[list[_Chain], list[_Chain]]:
    prerouting, output = _Chain("PREROUTING"), _Chain("OUTPUT")
    if f.zone_split:
        port = f.cfg.dns.port
        output.add(P, "udp", DPORT, str(DNS_PORT), M, "owner", "--uid-owner", f.uid, J, "CT", "--zone", "1",
                   comment=f"assign connection tracking zone 1 to DNS traffic from the kuma-dp user (UID {f.uid})")
        output.add(P, "udp", SPORT, str(port), M, "owner", "--uid-owner", f.uid, J, "CT", "--zone", "2",
                   comment="assign connection tracking zone 2 to DNS responses from the kuma-dp DNS proxy")
        if f.cfg.dns.capture_all:
            output.add(P, "udp", DPORT, str(DNS_PORT), J, "CT", "--zone", "2",
                       comment="assign connection tracking zone 2 to all DNS requests")
            prerouting.add(P, "udp", SPORT, str(DNS_PORT), J, "CT", "--zone", "1",
                           comment="assign connection tracking zone 1 to all DNS responses")
        else:
            for ip in f.dns_servers:
                output.add(D, ip, P, "udp", DPORT, str(DNS_PORT), J, "CT", "--zone", "2",
                           comment=f"assign connection tracking zone 2 to DNS requests destined for {ip}")
                if ipaddress.ip_address(ip).is_loopback:
                    # Docker's embedded resolver (127.0.0.11) answers from a DNAT-ed port
                    output.add(S, ip, D, f.localhost, P, "udp", J, "CT", "--zone", "1",
                               comment="assign conntrack zone 1 to DNS responses from the local DNS server to "
                                       "localhost, needed when the DNS query port is altered by a DNAT iptables "
                                       "rule, such as with Docker containers in a custom network")
                prerouting.add(S, ip, P, "udp", SPORT, str(DNS_PORT), J, "CT", "--zone", "1",
                               comment=f"assign connection tracking zone 1 to DNS responses from {ip}")
    return [prerouting, output], []


def _chain_name(flow: str) -> str:
    return f"{CHAIN_PREFIX}_{flow}"


def _nat_output(f: _Family, output: _Chain) -> None:
    cfg, uid = f.cfg, f.uid
    if cfg.log_enabled:
        output.add(J, "LOG", "--log-prefix", "OUTPUT:", "--log-level", str(cfg.log_level), insert=True,
                   comment="log matching packets using kernel logging")
    for ex in f.outbound_exclusions:
        tokens: list[Token] = []
        if ex.ports:
            tokens += [M, "multiport"]
        if ex.protocol:
            tokens += [P, ex.protocol] + ([DPORT, ex.ports] if ex.ports else [])
        if ex.uids:
            tokens += [M, "owner", "--uid-owner", ex.uids]
        if ex.address:
            tokens += [D, ex.address]
        output.add(*tokens, J, "RETURN", insert=True,
                   comment="skip further processing for configured IP addresses, ports and UIDs")
    if f.dns_enabled:
        port = str(cfg.dns.port)
        docker = f.facts.docker_output
        output.add(P, "udp", DPORT, str(DNS_PORT), M, "owner", "--uid-owner", uid, J,
                   "DOCKER_OUTPUT" if docker else "RETURN", insert=True,
                   comment="redirect DNS traffic from kuma-dp to the DOCKER_OUTPUT chain" if docker
                   else "return early for DNS traffic from kuma-dp")
        output.add(P, "tcp", DPORT, str(DNS_PORT), M, "owner", "!", "--uid-owner", uid, J, "RETURN",
                   comment=f"allow applications to perform DNS queries over TCP to port {DNS_PORT} without mesh "
                           f"redirection (only traffic not owned by UID {uid} (kuma-dp user))")
        if cfg.dns.capture_all:
            output.add(P, "udp", DPORT, str(DNS_PORT), J, "REDIRECT", "--to-ports", port, insert=True,
                       comment=f"redirect all DNS requests to the kuma-dp DNS proxy (listening on port {port})")
        else:
            for ip in f.dns_servers:
                output.add(D, ip, P, "udp", DPORT, str(DNS_PORT), J, "REDIRECT", "--to-ports", port, insert=True,
                           comment=f"redirect DNS requests to {ip} to the kuma-dp DNS proxy (listening on port "
                                   f"{port})")
    output.add(P, "tcp", J, _chain_name("OUTBOUND"), insert=cfg.outbound.insert_redirect_instead_of_append,
               comment="redirect outbound TCP traffic to our custom chain for processing")


def _mesh_inbound(f: _Family) -> _Chain:
    flow, chain = f.cfg.inbound, _Chain(_chain_name("INBOUND"))
    redirect = _chain_name("INBOUND_REDIRECT")
    if not flow.enabled:
        chain.add(P, "tcp", J, "RETURN", comment="inbound traffic redirection is disabled")
        return chain
    for ex in f.inbound_exclusions:
        chain.add(S, ex.address, J, "RETURN", comment="skip further processing for configured IP address")
    for port in flow.include_ports:
        chain.add(P, "tcp", DPORT, str(port), J, redirect,
                  comment=f"redirect inbound traffic from port {port} to the custom chain for processing")
    if not flow.include_ports:
        for port in flow.exclude_ports:
            chain.add(P, "tcp", DPORT, str(port), J, "RETURN",
                      comment=f"exclude inbound traffic from port {port} from redirection")
        chain.add(P, "tcp", J, redirect, comment="redirect all inbound traffic to the custom chain for processing")
    return chain


def _mesh_outbound(f: _Family) -> _Chain:
    flow, chain, uid = f.cfg.outbound, _Chain(_chain_name("OUTBOUND")), f.uid
    if not flow.enabled:
        chain.add(P, "tcp", J, "RETURN", comment="outbound traffic redirection is disabled")
        return chain
    if not flow.include_ports:
        for port in flow.exclude_ports:
            chain.add(P, "tcp", DPORT, str(port), J, "RETURN",
                      comment=f"exclude outbound traffic from port {port} from redirection")
    lo, passthrough = f.facts.loopback, _INBOUND_PASSTHROUGH[f.ipv6]
    inbound_redirect = _chain_name("INBOUND_REDIRECT")
    # Envoy's inbound passthrough reaches the app from 127.0.0.6 (::6) over lo: never capture it again;
    # the kuma-dp user's connections to a local address other than localhost are inbound traffic.
    chain.add(S, passthrough, O, lo, J, "RETURN",
              comment=f"prevent traffic loops by ensuring traffic from the sidecar proxy (using {passthrough}) to "
                      "loopback interface is not redirected again")
    chain.add(P, "tcp", O, lo, "!", D, f.localhost, M, "owner", "--uid-owner", uid, J,
              inbound_redirect,
              comment=f"redirect outbound TCP traffic destined for loopback interface, but not targeting address "
                      f"{f.localhost}, and owned by UID {uid} (kuma-dp user) to {inbound_redirect} chain for "
                      "proper handling")
    chain.add(P, "tcp", O, lo, M, "owner", "!", "--uid-owner", uid, J, "RETURN",
              comment=f"return outbound TCP traffic destined for loopback interface, owned by any UID other than "
                      f"{uid} (kuma-dp user)")
    chain.add(M, "owner", "--uid-owner", uid, J, "RETURN",
              comment=f"return outbound traffic owned by UID {uid} (kuma-dp user)")
    chain.add(D, f.localhost, J, "RETURN",
              comment=f"return traffic destined for localhost ({f.localhost}) to avoid redirection")
    outbound_redirect = _chain_name("OUTBOUND_REDIRECT")
    for port in flow.include_ports:
        chain.add(P, "tcp", DPORT, str(port), J, outbound_redirect,
                  comment=f"redirect outbound TCP traffic to port {port} to our custom chain for further processing")
    if not flow.include_ports:
        chain.add(J, outbound_redirect,
                  comment="redirect all other outbound traffic to our custom chain for further processing")
    return chain


def _redirect(flow: TrafficFlow, name: str) -> _Chain:
    chain = _Chain(_chain_name(name))
    chain.add(P, "tcp", J, "REDIRECT", "--to-ports", str(flow.port),
              comment=f"redirect TCP traffic to envoy (port {flow.port})")
    return chain


def _nat(f: _Family) -> tuple[list[_Chain], list[_Chain]]:
    prerouting, input_, output, postrouting = (_Chain(n) for n in ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"))
    _nat_output(f, output)
    if f.cfg.log_enabled:
        prerouting.add(J, "LOG", "--log-prefix", "PREROUTING:", "--log-level", str(f.cfg.log_level),
                       comment="log matching packets using kernel logging")
    if not f.vnet and not f.cfg.inbound.insert_redirect_instead_of_append:
        prerouting.add(P, "tcp", J, _chain_name("INBOUND"),
                       comment="redirect inbound TCP traffic to our custom chain for processing")
    else:
        dns_port, outbound_port = f.cfg.dns.port, f.cfg.outbound.port
        for iface in sorted(f.vnet):
            cidr = f.vnet[iface]
            prerouting.add(I, iface, M, "udp", P, "udp", DPORT, str(DNS_PORT), J, "REDIRECT", "--to-ports",
                           str(dns_port), insert=True,
                           comment=f"redirect DNS requests on interface {iface} to the kuma-dp DNS proxy (listening "
                                   f"on port {dns_port})")
            prerouting.add("!", D, cidr, I, iface, P, "tcp", J, "REDIRECT", "--to-ports", str(outbound_port),
                           insert=True,
                           comment=f"redirect TCP traffic on interface {iface}, excluding destination {cidr}, to the "
                                   f"envoy's outbound passthrough port {outbound_port}")
        prerouting.add(P, "tcp", J, _chain_name("INBOUND"), insert=True,
                       comment="redirect remaining TCP traffic to our custom chain for processing")
    custom = [_mesh_inbound(f), _mesh_outbound(f), _redirect(f.cfg.inbound, "INBOUND_REDIRECT"),
              _redirect(f.cfg.outbound, "OUTBOUND_REDIRECT")]
    return [prerouting, input_, output, postrouting], custom


def _mangle(f: _Family) -> tuple[list[_Chain], list[_Chain]]:
    chains = [_Chain(n) for n in ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")]
    if f.cfg.drop_invalid_packets and f.facts.mangle_table:
        chains[0].add(M, "conntrack", "--ctstate", "INVALID", J, "DROP",
                      comment="drop packets in the INVALID state to prevent potential issues with malformed or "
                              "out-of-order packets")
    return chains, []


def build(cfg: TransparentProxyConfig, facts: HostFacts, ipv6: bool = False) -> RuleSet:
    """The iptables-restore text for one IP family (raw, nat, mangle; empty tables left out).
    ConfigError for an exclusion Kuma would refuse."""
    family, warnings = _initialize(cfg.finalized(), facts, ipv6)
    style = _Style(verbose=cfg.verbose, comments=facts.comment_module and not cfg.comments_disabled)
    tables = [style.table("raw", *_raw(family)), style.table("nat", *_nat(family)),
              style.table("mangle", *_mangle(family))]
    text = ("\n\n" if cfg.verbose else "\n").join(t for t in tables if t) + "\n"
    return RuleSet(ipv6=ipv6, text=text, warnings=tuple(warnings))


def dry_run_text(*rule_sets: RuleSet) -> str:
    """What `--dry-run` prints: each family under a `### IPv4 ###` / `### IPv6 ###` header."""
    return "\n\n".join(part for rs in rule_sets for part in (f"### {_family_name(rs.ipv6)} ###", rs.text.strip()))
