"""The I/O edge of the transparent proxy: find iptables (nft or legacy backend, as `iptables --version`
says), learn what the host supports, apply the rules with iptables-restore and remove them again.

Removal is Kuma's: read everything with iptables-save, drop every line naming a KUMA_MESH chain or
carrying our comment prefix, check the rest with `iptables-restore --test` and restore it, so rules
and chains of anyone else stay as they were.
"""
from __future__ import annotations

import ipaddress
import os
import pwd
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from appliance.transparentproxy.config import CHAIN_PREFIX, COMMENT_PREFIX, DEFAULT_UID, DEFAULT_USERNAME

__all__ = ["HostError", "Executables", "Functionality", "find_executables", "probe", "resolve_kuma_dp_user",
           "loopback_interface", "has_local_ipv6", "add_ipv6_passthrough_address", "nameservers", "restore",
           "remove_rules", "is_root"]

# Kuma's places to look when PATH has no iptables (sbin is often missing from a user's PATH)
_FALLBACK_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
_VERSION = re.compile(r"(?m)^ip6?tables[\w-]*? v(\d+(?:\.\d+)+)(?: \((.*?)\))?")
_MODES = {"": "legacy", "legacy": "legacy", "nf_tables": "nft"}
_TIMEOUT = 120.0
Log = Callable[[str], None]


class HostError(Exception):
    """Something about the host that stops the command, said so the user knows what to do."""


def is_root() -> bool:
    return os.geteuid() == 0


@dataclass(frozen=True)
class Executables:
    """iptables, iptables-save and iptables-restore (or the ip6tables ones) of one backend."""
    ipv6: bool
    mode: str                  # "nft" or "legacy"
    iptables: str
    save: str
    restore: str
    restore_args: tuple[str, ...] = ()   # --wait for the legacy backend's xtables lock

    @property
    def prefix(self) -> str:
        return "ip6tables" if self.ipv6 else "iptables"


@dataclass(frozen=True)
class Functionality:
    comment: bool = False
    conntrack_zone_split: bool = False
    docker_output: bool = False
    mangle: bool = False


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in _FALLBACK_DIRS:
        path = Path(directory, name)
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise HostError(f"{' '.join(argv)} did not finish within {_TIMEOUT:.0f}s") from None
    except OSError as e:
        raise HostError(f"cannot run {argv[0]}: {e}") from None


def _mode(path: str) -> str:
    done = _run([path, "--version"])
    text = done.stdout + done.stderr
    if "unrecognized option '--version'" in text:  # iptables older than 1.6 has no --version: legacy
        return "legacy"
    match = _VERSION.search(done.stdout)
    if done.returncode != 0 or not match:
        raise HostError(f"{path} --version: {' '.join(text.split()) or f'exit status {done.returncode}'}")
    return _MODES.get(match.group(2) or "", match.group(2) or "")


def find_executables(ipv6: bool, wait: int = 5, wait_interval: int = 0, mode: str | None = None) -> Executables:
    """The backend the host uses: `iptables --version` says nf_tables or legacy (for IPv6, pass the
    IPv4 mode so both families use one backend); then that backend's save and restore."""
    prefix = "ip6tables" if ipv6 else "iptables"
    if mode is None:
        plain = _which(prefix)
        if plain is None:
            raise HostError(f"could not locate executable '{prefix}' (searched PATH and {', '.join(_FALLBACK_DIRS)}): "
                            "install iptables (Debian, Ubuntu: apt-get install iptables; RHEL: dnf install iptables)")
        mode = _mode(plain)
    if mode not in ("nft", "legacy"):
        raise HostError(f"{prefix} uses an unknown backend '{mode}' (expected nf_tables or legacy)")
    paths: dict[str, str] = {}
    for name in ("", "save", "restore"):
        candidates = ["-".join(p for p in (prefix, mode, name) if p), "-".join(p for p in (prefix, name) if p)]
        for candidate in candidates:
            path = _which(candidate)
            if path and _mode(path) == mode:
                paths[name] = path
                break
        else:
            wanted = "-".join(p for p in (prefix, name) if p)
            raise HostError(f"could not locate executable '{wanted}' with mode '{mode}' (searched PATH and "
                            f"{', '.join(_FALLBACK_DIRS)})")
    args: list[str] = []
    if mode == "legacy":  # iptables-nft takes no lock
        args += [f"--wait={wait}"] if wait > 0 else []
        args += [f"--wait-interval={wait_interval}"] if wait_interval > 0 else []
    return Executables(ipv6=ipv6, mode=mode, iptables=paths[""], save=paths["save"], restore=paths["restore"],
                       restore_args=tuple(args))


def _save(exe: Executables, table: str | None = None) -> subprocess.CompletedProcess[str]:
    return _run([exe.save] + (["-t", table] if table else []))


def _has_module(exe: Executables, name: str) -> bool:
    return _run([exe.iptables, "-m", name, "-h"]).returncode == 0


def probe(exe: Executables, raw: bool, mangle: bool) -> Functionality:
    """What this backend supports, as Kuma checks it. Only the tables the rules need are listed (with
    nft, listing a table creates it). HostError when the nat table, `tcp` or `owner` is missing."""
    nat = _save(exe, "nat")
    missing = [] if nat.returncode == 0 else ['missing table: "nat"']
    missing += [f'missing module: "{m}"' for m in ("tcp", "owner") if not _has_module(exe, m)]
    if missing:
        raise HostError("functionality verification failed: unmet minimal requirements: " + ", ".join(missing))
    zone_split = (raw and _save(exe, "raw").returncode == 0 and _has_module(exe, "conntrack")
                  and _has_module(exe, "udp"))
    return Functionality(comment=_has_module(exe, "comment"), conntrack_zone_split=zone_split,
                         docker_output=re.search(r"(?m)^:DOCKER_OUTPUT", nat.stdout) is not None,
                         mangle=mangle and _save(exe, "mangle").returncode == 0)


def resolve_kuma_dp_user(user: str) -> str:
    """The UID of `--kuma-dp-user` (a UID or a name), or of the default user (UID 5678, else `kuma-dp`)."""
    def lookup(text: str) -> str | None:
        if text.isdigit():
            try:
                return str(pwd.getpwuid(int(text)).pw_uid)
            except (KeyError, OverflowError):
                pass
        try:
            return str(pwd.getpwnam(text).pw_uid)
        except KeyError:
            return None

    if user:
        if uid := lookup(user):
            return uid
        raise HostError(f"the specified UID or username ('{user}') does not refer to a valid user on the host")
    for default in (DEFAULT_UID, DEFAULT_USERNAME):
        if uid := lookup(default):
            return uid
    raise HostError(f"no UID or username provided, and user with the default UID ('{DEFAULT_UID}') or username "
                    f"('{DEFAULT_USERNAME}') could not be found")


def loopback_interface() -> str:
    iff_loopback = 0x8
    for dev in sorted(Path("/sys/class/net").iterdir()):
        try:
            if int((dev / "flags").read_text(), 16) & iff_loopback:
                return dev.name
        except (OSError, ValueError):
            continue
    raise HostError("unable to initialize loopback interface name: no loopback interface found on the system")


def has_local_ipv6() -> bool:
    """An IPv6 address other than ::1 on some interface (a link-local one counts, as in Kuma)."""
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return False
    return any(not ipaddress.IPv6Address(int(line.split()[0], 16)).is_loopback for line in lines if line.split())


def add_ipv6_passthrough_address() -> None:
    """::6/128 on lo: Envoy's inbound passthrough connects from it over IPv6 (`ip -6 addr add ::6/128 dev lo`)."""
    ip = _which("ip")
    if ip is None:
        raise HostError("the ip command (iproute2) is needed to add ::6/128 to the loopback interface")
    done = _run([ip, "-6", "addr", "add", "::6/128", "dev", "lo"])
    if done.returncode != 0 and "exists" not in done.stderr.lower():
        raise HostError(f"failed to add IPv6 address ::6/128 to loopback interface: {done.stderr.strip()}")


def nameservers(path: str) -> list[str]:
    """The `nameserver` lines of a resolv.conf."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise HostError(f"unable to read file {path}: {e.strerror}") from None
    return [fields[1] for fields in (line.split() for line in text.splitlines())
            if len(fields) >= 2 and fields[0] == "nameserver"]


def restore(exe: Executables, text: str, log: Log, flush: bool = False, tries: int = 1,
            sleep: float = 2.0) -> None:
    """iptables-restore `text` (with --noflush unless `flush`), retried as Kuma does on failure."""
    argv = [exe.restore, *exe.restore_args] + ([] if flush else ["--noflush"])
    error = ""
    for attempt in range(1, tries + 1):
        mark = f"[{attempt}/{tries}] " if tries > 1 else ""
        log(f"# [{exe.prefix}] {mark}{' '.join(argv)}")
        done = _run(argv, stdin=text)
        if done.returncode == 0:
            return
        error = ", ".join(done.stderr.strip().splitlines()) or f"exit status {done.returncode}"
        log(f"# [{exe.prefix}] {mark}restoring failed: {error}")
        if attempt < tries:
            time.sleep(sleep)
    raise HostError(f"{exe.restore} failed: {error}")


def _restore_test(exe: Executables, text: str) -> None:
    done = _run([exe.restore, "--test"], stdin=text)
    if done.returncode != 0:
        raise HostError("verification of new rules after cleanup failed: rules are invalid: "
                        + (", ".join(done.stderr.strip().splitlines()) or f"exit status {done.returncode}"))


def remove_rules(exe: Executables, log: Log, dry_run: bool = False) -> None:
    """Take out every rule and chain of ours for one family, leaving the rest as it was."""
    log(f'# [{exe.prefix}] starting cleanup of existing transparent proxy rules. Any rule found in chains with names '
        f'starting with "{CHAIN_PREFIX}" or containing comments starting with "{COMMENT_PREFIX}" will be deleted')
    saved = _save(exe)
    if saved.returncode != 0:
        raise HostError(f"failed to execute iptables-save command: {saved.stderr.strip()}")
    current = saved.stdout
    ours_by_chain, ours_by_comment = CHAIN_PREFIX in current, COMMENT_PREFIX in current
    if not ours_by_chain and not ours_by_comment:
        log(f"# [{exe.prefix}] no transparent proxy rules detected. No cleanup necessary")
        return
    if not ours_by_comment:
        raise HostError("transparent proxy rules detected, but expected comments are missing. Cleanup cannot proceed "
                        "safely without comments to identify rules. Please remove the transparent proxy iptables "
                        "rules manually")
    kept = "\n".join(line for line in current.split("\n")
                     if not (line.startswith("#") or COMMENT_PREFIX in line or CHAIN_PREFIX in line))
    _restore_test(exe, kept)
    if dry_run:
        log(f"# [{exe.prefix}] [dry-run]: rules after cleanup:")
        log(kept.strip())
        return
    try:
        restore(exe, kept, log, flush=True)
    except HostError:
        log(f"# [{exe.prefix}] restoring the rules saved before cleanup")
        try:
            restore(exe, current, log, flush=True)
        except HostError as e:
            log(f"# [{exe.prefix}] [WARNING] restoring the saved rules failed: {e}")
        raise
    log(f"# [{exe.prefix}] cleanup of existing transparent proxy rules completed successfully")
