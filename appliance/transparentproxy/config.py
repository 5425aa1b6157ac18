"""The transparent proxy's options: Kuma 2.14's TransparentProxyConfig (defaults, its YAML/JSON file
and the values of its flags), and the parsers for ports, UID and IP exclusions with Kuma's messages.

Precedence, as in Kuma: defaults < the config file(s) < flags. Every key Kuma's file accepts is either
applied or refused by name: nothing read is silently dropped.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence, TextIO

import yaml

from appliance.gocompat import parse_duration

__all__ = [
    "DEFAULT_UID", "DEFAULT_USERNAME", "CHAIN_PREFIX", "COMMENT_PREFIX", "ConfigError", "Dns", "Exclusion",
    "TrafficFlow", "TransparentProxyConfig", "apply_document", "load_documents", "parse_port", "parse_ports",
    "parse_uid_exclusions", "parse_ip_exclusions", "parse_ip_family_mode", "parse_vnet",
]

DEFAULT_UID = "5678"
DEFAULT_USERNAME = "kuma-dp"
CHAIN_PREFIX = "KUMA_MESH"
# Every rule we write carries a comment starting with this: uninstall finds our rules by it.
COMMENT_PREFIX = "kuma/mesh/transparent/proxy"
IP_FAMILY_MODES = ("dualstack", "ipv4")


class ConfigError(ValueError):
    """A value Kuma would refuse, in Kuma's words."""


@dataclass(frozen=True)
class Exclusion:
    """One RETURN rule in nat OUTPUT (or KUMA_MESH_INBOUND for addresses): by protocol, ports and UIDs,
    or by address. Ports and UIDs are in iptables' notation (`1000:2000`, `53,80`)."""
    protocol: str = ""
    ports: str = ""
    uids: str = ""
    address: str = ""


@dataclass(frozen=True)
class TrafficFlow:
    port: int
    enabled: bool = True
    include_ports: tuple[int, ...] = ()
    exclude_ports: tuple[int, ...] = ()
    exclude_ports_for_uids: tuple[str, ...] = ()
    exclude_ports_for_ips: tuple[str, ...] = ()
    insert_redirect_instead_of_append: bool = False


@dataclass(frozen=True)
class Dns:
    enabled: bool = False
    port: int = 15053
    capture_all: bool = False
    skip_conntrack_zone_split: bool = False
    resolv_config_path: str = "/etc/resolv.conf"


@dataclass(frozen=True)
class TransparentProxyConfig:
    kuma_dp_user: str = ""
    ip_family_mode: str = "dualstack"
    inbound: TrafficFlow = field(default_factory=lambda: TrafficFlow(port=15006))
    outbound: TrafficFlow = field(default_factory=lambda: TrafficFlow(port=15001))
    dns: Dns = field(default_factory=Dns)
    drop_invalid_packets: bool = False
    verbose: bool = False
    dry_run: bool = False
    log_enabled: bool = False
    log_level: int = 7            # netfilter's debug level, Kuma's default for --iptables-logs
    wait: int = 5                 # seconds iptables-restore (legacy) waits for the xtables lock
    wait_interval: int = 0        # microseconds between its tries
    max_retries: int = 4          # retries after the first iptables-restore, five tries in all
    sleep_between_retries: float = 2.0
    comments_disabled: bool = False
    # `interface:CIDR` (the name may end in "+", a prefix): traffic of containers or VMs behind a bridge
    vnet_networks: tuple[str, ...] = ()

    def finalized(self) -> TransparentProxyConfig:
        """`redirect.dns.captureAll` implies DNS redirection, as Kuma settles it after all sources."""
        if self.dns.capture_all and not self.dns.enabled:
            return replace(self, dns=replace(self.dns, enabled=True))
        return self


# --- value parsers (Kuma's messages) -----------------------------------------------------------

def _uint16(text: str) -> int:
    text = text.strip() if isinstance(text, str) else str(text)
    if not text.isdigit() or int(text) > 65535:
        raise ConfigError(f"invalid uint16 value: '{text}'")
    return int(text)


def parse_port(text: Any) -> int:
    try:
        port = _uint16(str(text))
    except ConfigError:
        port = 0
    if port == 0:
        raise ConfigError(f"value '{text}' is not a valid port (uint16 in the range [1, 65535])")
    return port


def parse_ports(value: Any) -> tuple[int, ...]:
    """A comma-separated list (flag), or a YAML list / number / string (file)."""
    if isinstance(value, list):
        value = ",".join(str(v) for v in value if isinstance(v, (str, int, float)) and not isinstance(v, bool))
    return tuple(parse_port(p.strip()) for p in str(value).split(",") if p.strip())


def parse_ip_family_mode(text: str) -> str:
    mode = (text or "dualstack").lower()
    if mode not in IP_FAMILY_MODES:
        raise ConfigError("must be one of 'dualstack' or 'ipv4'")
    return mode


def _value_or_range(text: str) -> None:
    for element in (e for e in text.split(",") if e.strip()):
        for part in element.split("-"):
            try:
                _uint16(part)
            except ConfigError as e:
                raise ConfigError(f"validation failed for value or range '{text}': {e}") from None


def parse_uid_exclusions(entries: tuple[str, ...] | list[str]) -> list[Exclusion]:
    """`--exclude-outbound-ports-for-uids`: `[protocol:][ports:]uids`, e.g. `tcp:22,1000-2000:106-108`."""
    out: list[Exclusion] = []
    for entry in entries:
        parts = entry.split(":")
        if len(parts) > 3:
            raise ConfigError(f"invalid format for excluding ports by UIDs: '{entry}'. "
                              "Expected format: <protocol:>?<ports:>?<uids>")
        protocols, ports, uids = (["*", "*"] + parts)[-3:]
        if uids == "*":
            raise ConfigError("wildcard '*' is not allowed for UIDs")
        if ports in ("*", ""):
            ports = "1-65535"
        try:
            _value_or_range(ports)
        except ConfigError as e:
            raise ConfigError(f"invalid port range: {e}") from None
        if "," in uids:
            raise ConfigError(f"invalid UID entry: '{uids}'. It should either be a single item or a range")
        try:
            _value_or_range(uids)
        except ConfigError as e:
            raise ConfigError(f"invalid UID range: {e}") from None
        if protocols in ("", "*"):
            chosen = ["tcp", "udp"]
        else:
            chosen = []
            for name in (p for p in protocols.split(",") if p.strip()):
                if name.strip().lower() not in ("tcp", "udp"):
                    raise ConfigError(f"invalid or unsupported protocol: '{name}'")
                chosen.append(name.strip().lower())
        out.extend(Exclusion(protocol=p, ports=ports.replace("-", ":"), uids=uids.replace("-", ":"))
                   for p in chosen)
    return out


def parse_ip_exclusions(entries: tuple[str, ...] | list[str], ipv6: bool) -> list[Exclusion]:
    """`--exclude-{in,out}bound-ips`: addresses or CIDRs, comma-separated or repeated; those of the other
    IP family are skipped (they belong to the other table)."""
    out: list[Exclusion] = []
    for entry in entries:
        if entry == "":
            raise ConfigError("invalid exclusion rule: the rule cannot be empty")
        for address in (a for a in entry.split(",") if a.strip()):
            try:
                ip = ipaddress.ip_interface(address.strip()).ip
            except ValueError:
                raise ConfigError(
                    f"invalid exclusion rule: invalid IP address: '{address.strip()}'. Expected format: <ip> or "
                    "<ip>/<cidr> (e.g., 10.0.0.1, 172.16.0.0/16, fe80::1, fe80::/10)") from None
            if (ip.version == 6) == ipv6:
                out.append(Exclusion(address=address))
    return out


def parse_vnet(networks: tuple[str, ...], ipv6: bool) -> dict[str, str]:
    """`--vnet docker0:172.17.0.0/16`: interface -> CIDR, for this IP family (split at the first colon,
    so `iface:::1/64` is IPv6)."""
    out: dict[str, str] = {}
    for network in networks:
        name, sep, cidr = network.partition(":")
        if not sep:
            raise ConfigError(f"invalid virtual network definition: {network}")
        try:
            if "/" not in cidr:
                raise ValueError
            version = ipaddress.ip_interface(cidr).version
        except ValueError:
            raise ConfigError(f"invalid CIDR definition for {cidr}: invalid CIDR address: {cidr}") from None
        if (version == 6) == ipv6:
            out[name] = cidr
    return out


# --- the config file --------------------------------------------------------------------------

def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: cannot unmarshal {type(value).__name__} into a boolean")
    return value


def _uint(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key}: must be a non-negative integer")
    return value


def _strings(value: Any, key: str) -> tuple[str, ...]:
    """A list of strings; a bare number in it (`- 1`, a UID) is read as its text, as Kuma's loader does."""
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{key}: must be a list of strings")
    return tuple(str(v) for v in value)


def _flow_fields(flow: TrafficFlow, doc: dict, key: str) -> TrafficFlow:
    setters = {
        "enabled": lambda v, k: {"enabled": _bool(v, k)},
        "port": lambda v, k: {"port": parse_port(v)},
        "includePorts": lambda v, k: {"include_ports": parse_ports(v)},
        "excludePorts": lambda v, k: {"exclude_ports": parse_ports(v)},
        "excludePortsForUIDs": lambda v, k: {"exclude_ports_for_uids": _strings(v, k)},
        "excludePortsForIPs": lambda v, k: {"exclude_ports_for_ips": _strings(v, k)},
        "insertRedirectInsteadOfAppend": lambda v, k: {"insert_redirect_instead_of_append": _bool(v, k)},
    }
    changes: dict[str, Any] = {}
    for name, value in _mapping(doc, key).items():
        if name not in setters:
            raise ConfigError(f"unknown field {key}.{name}")
        changes.update(setters[name](value, f"{key}.{name}"))
    if key == "redirect.inbound" and changes.get("exclude_ports_for_uids"):
        # Kuma would turn these into RETURN rules matching every inbound packet: refuse, never guess.
        raise ConfigError("redirect.inbound.excludePortsForUIDs is not supported (UID exclusions apply to "
                          "outbound traffic: use redirect.outbound.excludePortsForUIDs)")
    return replace(flow, **changes)


def _mapping(value: Any, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: must be an object")
    return value


# Keys of Kuma's file for features this kumactl does not have: refused when they ask for something.
_UNSUPPORTED = {
    "ebpf": "eBPF mode", "storeFirewalld": "storing the rules with firewalld", "cniMode": "CNI mode",
    "iptablesExecutables": "custom iptables executables",
}


def _asks_for_something(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_asks_for_something(v) for v in value.values())
    return bool(value)


def load_documents(values: Sequence[str], stdin: TextIO) -> list[Any]:
    """The documents of `--config` (kumactl) / `--transparent-proxy-config` (kuma-dp): each value a
    comma-separated list of files, `-` for stdin; apply them in order, later ones win."""
    docs = []
    for value in values:
        for path in (p.strip() for p in value.split(",") if p.strip()):
            try:
                text = stdin.read() if path == "-" else Path(path).read_text()
                docs.append(yaml.safe_load(text) or {})
            except OSError as e:
                raise ConfigError(f"{path}: {e.strerror}") from None
            except yaml.YAMLError as e:
                raise ConfigError(f"{path}: {e}") from None
    return docs


def apply_document(config: TransparentProxyConfig, doc: Any) -> TransparentProxyConfig:
    """Kuma's TransparentProxyConfig file (YAML or JSON) over `config`."""
    doc = _mapping(doc, "config")
    changes: dict[str, Any] = {}
    for name, value in doc.items():
        if name in _UNSUPPORTED:
            # Kuma's defaults for eBPF (paths) are there even when it is off: only `enabled` asks for it
            asked = _mapping(value, name).get("enabled") if name == "ebpf" else value
            if _asks_for_something(asked):
                raise ConfigError(f"{name}: {_UNSUPPORTED[name]} is not supported by this kumactl")
        elif name == "kumaDPUser":
            changes["kuma_dp_user"] = "" if value is None else str(value)
        elif name == "ipFamilyMode":
            try:
                changes["ip_family_mode"] = parse_ip_family_mode(str(value or ""))
            except ConfigError as e:
                raise ConfigError(f"ipFamilyMode: value '{value}' is not a valid IPFamilyMode: {e}") from None
        elif name == "redirect":
            redirect = _mapping(value, "redirect")
            for part, body in redirect.items():
                if part in ("inbound", "outbound"):
                    changes[part] = _flow_fields(changes.get(part, getattr(config, part)), body, f"redirect.{part}")
                elif part == "dns":
                    changes["dns"] = _dns_fields(config.dns, body)
                elif part == "vnet":
                    for key, networks in _mapping(body, "redirect.vnet").items():
                        if key != "networks":
                            raise ConfigError(f"unknown field redirect.vnet.{key}")
                        changes["vnet_networks"] = _strings(networks or [], "redirect.vnet.networks")
                else:
                    raise ConfigError(f"unknown field redirect.{part}")
        elif name in ("dropInvalidPackets", "verbose", "dryRun"):
            changes[{"dropInvalidPackets": "drop_invalid_packets", "verbose": "verbose",
                     "dryRun": "dry_run"}[name]] = _bool(value, name)
        elif name == "log":
            for part, body in _mapping(value, "log").items():
                if part == "enabled":
                    changes["log_enabled"] = _bool(body, "log.enabled")
                elif part == "level":
                    changes["log_level"] = _uint(body, "log.level")
                else:
                    raise ConfigError(f"unknown field log.{part}")
        elif name in ("wait", "waitInterval"):
            changes["wait" if name == "wait" else "wait_interval"] = _uint(value, name)
        elif name == "retry":
            for part, body in _mapping(value, "retry").items():
                if part == "maxRetries":
                    changes["max_retries"] = _uint(body, "retry.maxRetries")
                elif part == "sleepBetweenRetries":
                    try:
                        changes["sleep_between_retries"] = parse_duration(str(body)) / 1e9
                    except ValueError as e:
                        raise ConfigError(f"retry.sleepBetweenRetries: {e}") from None
                else:
                    raise ConfigError(f"unknown field retry.{part}")
        elif name == "comments":
            for part, body in _mapping(value, "comments").items():
                if part != "disabled":
                    raise ConfigError(f"unknown field comments.{part}")
                changes["comments_disabled"] = _bool(body, "comments.disabled")
        else:
            raise ConfigError(f"unknown field {name}")
    return replace(config, **changes)


def _dns_fields(dns: Dns, body: Any) -> Dns:
    names = {"enabled": "enabled", "port": "port", "captureAll": "capture_all",
             "skipConntrackZoneSplit": "skip_conntrack_zone_split", "resolvConfigPath": "resolv_config_path"}
    changes: dict[str, Any] = {}
    for name, value in _mapping(body, "redirect.dns").items():
        if name not in names:
            raise ConfigError(f"unknown field redirect.dns.{name}")
        key = f"redirect.dns.{name}"
        if name == "port":
            changes["port"] = parse_port(value)
        elif name == "resolvConfigPath":
            changes["resolv_config_path"] = str(value)
        else:
            changes[names[name]] = _bool(value, key)
    return replace(dns, **changes)

