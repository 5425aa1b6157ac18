"""Pack the air-gapped install tarball from a built `kuma-cp` (called by build/freeze.py).

    python3 packaging/tarball.py --binary dist/kuma-cp [--envoy PATH|none] [--envoy-license PATH] --out dist

Writes OUT/kuma-appliance-<version>-linux-<arch>.tar.gz and its .sha256 beside it:

    kuma-appliance-<version>-linux-<arch>/
      kuma-cp  kuma-dp -> kuma-cp  kumactl -> kuma-cp  envoy (unless --envoy none)
      config/kuma-cp.conf.yaml   systemd/kuma-cp.service   systemd/kuma-dp@.service
      install.sh   INSTALL.md   licenses/   SHA256SUMS

Reproducible: sorted entries, owner root, every mtime SOURCE_DATE_EPOCH (else the binary's).
Standard library only.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import platform
import re
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def version() -> str:
    text = (ROOT / "appliance" / "__init__.py").read_text()
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M)
    if not match:
        raise SystemExit("tarball: no __version__ in appliance/__init__.py")
    return match.group(1)


def contents(binary: Path, envoy: Path | None, envoy_license: Path | None) -> dict[str, Path | str]:
    """{path in the tarball: source file, or 'link:TARGET' for a symlink}."""
    files: dict[str, Path | str] = {
        "kuma-cp": binary,
        "kuma-dp": "link:kuma-cp",
        "kumactl": "link:kuma-cp",
        "config/kuma-cp.conf.yaml": ROOT / "config" / "kuma-cp.conf.yaml",
        "systemd/kuma-cp.service": PACKAGING / "kuma-cp.service",
        "systemd/kuma-dp@.service": PACKAGING / "kuma-dp@.service",
        "install.sh": PACKAGING / "install.sh",
        "INSTALL.md": PACKAGING / "INSTALL.md",
    }
    if envoy:
        files["envoy"] = envoy
        if envoy_license:
            files["licenses/envoy-LICENSE"] = envoy_license
    return files


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _entry(name: str, mtime: int, mode: int, kind: bytes = tarfile.REGTYPE, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.size = kind, mode, mtime, size
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def build(binary: Path, envoy: Path | None, envoy_license: Path | None, out: Path) -> Path:
    top = f"kuma-appliance-{version()}-linux-{ARCH.get(platform.machine(), platform.machine())}"
    files = contents(binary, envoy, envoy_license)
    for name, src in files.items():
        if isinstance(src, Path) and not src.is_file():
            raise SystemExit(f"tarball: {src} (for {name}) does not exist")
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", binary.stat().st_mtime))
    sums = "".join(f"{_sha256(src)}  {name}\n" for name, src in sorted(files.items()) if isinstance(src, Path))
    tarball = out / f"{top}.tar.gz"
    out.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial")
    with open(partial, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=mtime) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = {top} | {f"{top}/{d}" for name in files for d in _parents(name)}
        for d in sorted(dirs):
            tar.addfile(_entry(d, mtime, 0o755, tarfile.DIRTYPE))
        for name, src in sorted(files.items()):
            path = f"{top}/{name}"
            if isinstance(src, str):
                info = _entry(path, mtime, 0o777, tarfile.SYMTYPE)
                info.linkname = src.removeprefix("link:")
                tar.addfile(info)
                continue
            executable = os.access(src, os.X_OK) or name.endswith(".sh")
            with open(src, "rb") as f:
                tar.addfile(_entry(path, mtime, 0o755 if executable else 0o644, size=src.stat().st_size), f)
        data = sums.encode()
        tar.addfile(_entry(f"{top}/SHA256SUMS", mtime, 0o644, size=len(data)), io.BytesIO(data))
    partial.replace(tarball)
    (out / f"{tarball.name}.sha256").write_text(f"{_sha256(tarball)}  {tarball.name}\n")
    return tarball


def _parents(name: str) -> list[str]:
    parts = name.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", type=Path, required=True, help="the one-file kuma-cp")
    p.add_argument("--envoy", default="none", help="the Envoy binary to ship beside kuma-cp, or none")
    p.add_argument("--envoy-license", type=Path, help="Envoy's licence text, shipped as licenses/envoy-LICENSE")
    p.add_argument("--out", type=Path, required=True, help="folder for the tarball and its .sha256")
    args = p.parse_args(argv)
    envoy = None if args.envoy == "none" else Path(args.envoy)
    tarball = build(args.binary, envoy, args.envoy_license, args.out)
    print(f"{tarball.relative_to(Path.cwd()) if tarball.is_relative_to(Path.cwd()) else tarball}: "
          f"{tarball.stat().st_size / 1e6:.1f} MB ({'with' if envoy else 'without'} Envoy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
