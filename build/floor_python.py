"""The release's CPython: 3.11 with a shared libpython, and the C libraries its modules link (OpenSSL,
SQLite, libffi, zlib, bzip2, xz), all compiled by `zig cc -target x86_64-linux-gnu.2.28`, so every ELF
file of it needs glibc 2.28 or older whatever the build host's glibc is (Debian 12's is 2.36).

    python3 build/floor_python.py [--check]   # prints the path of its python3; builds it first if missing

Built once per machine into build/out/floor-python/<key>/ where <key> hashes build/floor-sources.txt
(every input pinned by sha256) and the build recipe below: a later `make binary` finds it and pays
nothing. The first build takes ~8 minutes on 2 cores. Sources come from PyPI (the ziglang wheel, through pip)
and from the Debian package pool of the mirror this host's apt is set up with: upstream's tarballs,
and of Debian's python3.11 patches only its backported security and crash fixes. Needs make, perl,
patch, tclsh (SQLite's amalgamation is generated) and a host C compiler for SQLite's build tools:
`make build-deps`.
zlib, bzip2, xz, libffi and SQLite are linked statically into the one extension module that uses
each; OpenSSL is shared (libssl/libcrypto serve both _ssl and _hashlib, found through the rpath),
so the frozen file carries one copy of each.
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

BUILD = Path(__file__).resolve().parent
OUT = BUILD / "out" / "floor-python"
SOURCES = BUILD / "floor-sources.txt"
GLIBC = "2.28"
TARGET = f"x86_64-linux-gnu.{GLIBC}"
JOBS = str(os.cpu_count() or 2)
# SQLite as Debian builds it (sqlite-utils' full-text search needs FTS4/5; Debian's variable limit).
# Debian's patch series for python3.11 first adapts CPython to Debian's layout (multiarch, dist-packages,
# ...: not wanted here), then, from this patch on, carries upstream's fixes backported to 3.11.2 (the
# CVEs of 3.11.3-3.11.x and two crash fixes): those are applied, in the series' order.
DEBIAN_FIXES_FROM = "shutdown-deadlock.diff"
SQLITE_FLAGS = ("-DSQLITE_ENABLE_FTS3 -DSQLITE_ENABLE_FTS3_PARENTHESIS -DSQLITE_ENABLE_FTS4 -DSQLITE_ENABLE_FTS5 "
                "-DSQLITE_ENABLE_RTREE -DSQLITE_ENABLE_DBSTAT_VTAB -DSQLITE_ENABLE_COLUMN_METADATA "
                "-DSQLITE_ENABLE_UNLOCK_NOTIFY -DSQLITE_SECURE_DELETE -DSQLITE_MAX_VARIABLE_NUMBER=250000 "
                "-DSQLITE_ENABLE_LOAD_EXTENSION")


class BuildError(Exception):
    """A reason the toolchain build stops, said in one line (the log says the rest)."""


def say(message: str) -> None:
    print(f"floor-python: {message}", flush=True)


def pins() -> dict[str, tuple[str, str]]:
    """{name: (where, sha256)} from build/floor-sources.txt."""
    result = {}
    for line in SOURCES.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            name, where, digest = fields
            result[name] = (where, digest)
    return result


def cache_key() -> str:
    """Hashes the pins and the recipe (not the rest of this file: a change to the checks or the
    messages keeps the build)."""
    recipe = "".join(inspect.getsource(f) for f in (install_zig, debian_fixes, build_all))
    recipe += TARGET + SQLITE_FLAGS + DEBIAN_FIXES_FROM
    return hashlib.sha256(SOURCES.read_bytes() + recipe.encode()).hexdigest()[:16]


def prefix() -> Path:
    return OUT / cache_key()


def python_path() -> Path:
    return prefix() / "bin" / "python3"


def is_built() -> bool:
    return (prefix() / "COMPLETE").exists()


def debian_mirror() -> str:
    """The Debian mirror this host's apt uses (deb822 or one-line format)."""
    texts = [p.read_text() for p in sorted(Path("/etc/apt").glob("sources.list.d/*.sources"))]
    for text in texts:
        for stanza in text.split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            if uris and re.search(r"^Suites:.*\bbookworm\b", stanza, re.M) and "security" not in uris.group(1):
                return uris.group(1).rstrip("/") + "/"
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt").glob("sources.list.d/*.list"))]:
        if path.exists():
            m = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", path.read_text(), re.M)
            if m:
                return m.group(1).rstrip("/") + "/"
    raise BuildError("no Debian bookworm mirror in /etc/apt/sources.list*: the sources come from its pool")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(name: str, where: str, digest: str) -> Path:
    """The pinned file in build/out/floor-python/sources, downloaded once and checked every time."""
    folder = OUT / "sources"
    folder.mkdir(parents=True, exist_ok=True)
    if "==" in where:
        found = [p for p in folder.glob(f"{name}-*.whl") if _sha256(p) == digest]
        if not found:
            run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
                 "--only-binary=:all:", "-d", str(folder), where], OUT / "fetch.log")
            found = [p for p in folder.glob(f"{name}-*.whl") if _sha256(p) == digest]
        if not found:
            raise BuildError(f"{where}: no downloaded wheel has the pinned sha256 {digest}")
        return found[0]
    path = folder / where.rsplit("/", 1)[1]
    if not path.exists() or _sha256(path) != digest:
        run(["curl", "--fail", "--silent", "--show-error", "--location", "-o", f"{path}.part",
             debian_mirror() + where], OUT / "fetch.log")
        os.replace(f"{path}.part", path)
    actual = _sha256(path)
    if actual != digest:
        raise BuildError(f"{path.name}: sha256 {actual}, pinned {digest}")
    return path


def run(args: list[str], log: Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(args)}\n")
        f.flush()
        done = subprocess.run(args, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        raise BuildError(f"`{' '.join(args[:3])} ...` failed (exit {done.returncode}); end of {log}:\n{tail}")


def install_zig(wheel: Path, tools: Path) -> Path:
    """Unpack the ziglang wheel (no venv needed: it is the zig binary and its lib/) and write the
    compiler wrappers configure scripts call as CC; returns the folder of the wrappers."""
    zig_home = tools / "zig"
    if not (zig_home / "ziglang" / "zig").exists():
        with zipfile.ZipFile(wheel) as z:
            z.extractall(zig_home)
        (zig_home / "ziglang" / "zig").chmod(0o755)
    zig = zig_home / "ziglang" / "zig"
    bin_dir = tools / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    # No UBSan traps (zig cc adds them when a configure test compiles without -O); clang 18 makes an
    # implicit declaration an error, which libffi 3.4.4 has (tramp.c).
    for tool, command in (("zcc", "cc"), ("zcxx", "c++")):
        wrapper = bin_dir / tool
        flags = "-fno-sanitize=undefined -Wno-error=implicit-function-declaration"
        wrapper.write_text(f'#!/bin/sh\nexec "{zig}" {command} -target {TARGET} {flags} "$@"\n')
        wrapper.chmod(0o755)
    return bin_dir


def unpack(archive: Path, work: Path) -> Path:
    """A fresh source tree of `archive` under `work`."""
    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/", 1)[0]
        target = work / top
        if target.exists():
            shutil.rmtree(target)
        tar.extractall(work, filter="tar")
    return target


def debian_fixes(archive: Path, work: Path) -> list[Path]:
    """The patches of Debian's python3.11 from DEBIAN_FIXES_FROM on, unpacked under `work`."""
    with tarfile.open(archive) as tar:
        tar.extractall(work / "python-fixes", filter="tar")
    folder = work / "python-fixes" / "debian" / "patches"
    series = [line.strip() for line in (folder / "series").read_text().splitlines() if line.strip()]
    if DEBIAN_FIXES_FROM not in series:
        raise BuildError(f"{archive.name}: no {DEBIAN_FIXES_FROM} in its patch series")
    return [folder / name for name in series[series.index(DEBIAN_FIXES_FROM):]]


def build_all(sources: dict[str, Path], tools: Path, dest: Path, log: Path) -> None:
    cc = str(tools / "zcc")
    work = OUT / "work"
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CC": cc, "CXX": str(tools / "zcxx"), "AR": "ar", "RANLIB": "ranlib",
           "ZIG_GLOBAL_CACHE_DIR": str(OUT / "zig-cache"), "ZIG_LOCAL_CACHE_DIR": str(OUT / "zig-cache"),
           "CFLAGS": "-O2 -fPIC", "PKG_CONFIG_PATH": str(dest / "lib" / "pkgconfig"),
           "PKG_CONFIG_LIBDIR": str(dest / "lib" / "pkgconfig"), "SOURCE_DATE_EPOCH": "0"}
    static = ["--disable-shared", "--enable-static", "--with-pic", f"--prefix={dest}", f"--libdir={dest}/lib"]

    def step(name: str, commands: list[list[str]], extra_env: dict[str, str] | None = None) -> None:
        started = time.monotonic()
        tree = unpack(sources[name], work)
        for args in commands:
            run(args, log, cwd=tree, env={**env, **(extra_env or {})})
        say(f"{name} built in {time.monotonic() - started:.0f} s")

    step("zlib", [["./configure", "--static", f"--prefix={dest}"], ["make", f"-j{JOBS}"], ["make", "install"]])
    step("bzip2", [["make", f"-j{JOBS}", f"CC={cc}", "CFLAGS=-O2 -fPIC -D_FILE_OFFSET_BITS=64", "libbz2.a"],
                   ["install", "-D", "-m644", "libbz2.a", f"{dest}/lib/libbz2.a"],
                   ["install", "-D", "-m644", "bzlib.h", f"{dest}/include/bzlib.h"]])
    step("xz", [["./configure", *static, "--disable-xz", "--disable-xzdec", "--disable-lzmadec",
                 "--disable-lzmainfo", "--disable-scripts", "--disable-doc", "--disable-nls"],
                ["make", f"-j{JOBS}"], ["make", "install"]])
    step("libffi", [["./configure", *static, "--disable-docs", "--disable-multi-os-directory"],
                    ["make", f"-j{JOBS}"], ["make", "install"]])
    step("sqlite", [["./configure", *static, "--disable-tcl", "--disable-readline", "--disable-editline"],
                    ["make", f"-j{JOBS}"], ["make", "install"]],
         {"CFLAGS": f"-O2 -fPIC {SQLITE_FLAGS}", "BCC": "cc"})
    # OpenSSL looks for CA certificates in OPENSSLDIR at run time: where Debian, Ubuntu and RHEL
    # (/etc/ssl/certs links to /etc/pki/tls/certs there) keep them, never the build folder.
    step("openssl", [["./Configure", "linux-x86_64", "shared", "no-tests", "no-engine", "no-legacy",
                      f"--prefix={dest}", "--libdir=lib", "--openssldir=/etc/ssl",
                      f"-Wl,-rpath,{dest}/lib"], ["make", f"-j{JOBS}", "build_libs"], ["make", "install_dev"]])
    # zig's linker takes -soname but not its short form -h; setup.py would add the host's
    # /usr/include/<multiarch> and /usr/local (Debian 12's glibc headers) to every module's -I.
    host_paths = [r"s/^        self\.add_multiarch_paths()$/        pass/",
                  r"s|^            add_dir_to_list(self\.compiler\.\w*_dirs, '/usr/local/\w*')$|            pass|"]
    fixes = [["patch", "-p1", "--forward", "--batch", "-i", str(patch)]
             for patch in debian_fixes(sources["python-fixes"], work)]
    # Debian's pyexpat fix calls an internal API, which needs what upstream's pyexpat.c defines from 3.12 on.
    core_module = r"1i #ifndef Py_BUILD_CORE_BUILTIN\n#  define Py_BUILD_CORE_MODULE 1\n#endif"
    step("python", [*fixes, ["sed", "-i", core_module, "Modules/pyexpat.c"],
                    ["sed", "-i", r"s/-Wl,-h\$/-Wl,-soname,$/g", "Makefile.pre.in"],
                    ["sed", "-i", *(arg for expr in host_paths for arg in ("-e", expr)), "setup.py"],
                    ["./configure", f"--prefix={dest}", "--enable-shared", f"--with-openssl={dest}",
                     "--with-openssl-rpath=auto", "--with-ensurepip=no", "--without-readline",
                     f"LDFLAGS=-L{dest}/lib -Wl,-rpath,{dest}/lib", f"CPPFLAGS=-I{dest}/include"],
                    ["make", f"-j{JOBS}"], ["make", "install"]],
         {"CFLAGS": "", "LIBS": ""})


def check(dest: Path) -> None:
    """The built python imports the modules the frozen file needs, and no ELF file in it needs a
    glibc newer than GLIBC."""
    python = dest / "bin" / "python3"
    out = subprocess.run([str(python), "-c", "import ssl, sqlite3, ctypes, lzma, bz2, zlib, hashlib, uuid, "
                          "decimal, json, pyexpat; print(ssl.OPENSSL_VERSION, '/ sqlite', sqlite3.sqlite_version)"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise BuildError(f"{python} cannot import what the build needs:\n{out.stderr}")
    say(f"{python}: {out.stdout.strip()}")
    newest, worst = (0,), ""
    for path in [*dest.rglob("*.so*"), python.resolve()]:
        if not path.is_file() or path.is_symlink() or not path.read_bytes()[:4] == b"\x7fELF":
            continue
        text = subprocess.run(["objdump", "-T", str(path)], capture_output=True, text=True).stdout
        for m in re.finditer(r"\(GLIBC_(\d+(?:\.\d+)+)\)", text):
            version = tuple(int(p) for p in m.group(1).split("."))
            if version > newest:
                newest, worst = version, path.name
    floor = tuple(int(p) for p in GLIBC.split("."))
    shown = ".".join(map(str, newest))
    if newest > floor:
        raise BuildError(f"{worst} needs glibc {shown}, over the floor {GLIBC}")
    say(f"every ELF file needs glibc {shown} or older ({worst}); floor {GLIBC}: ok")


def build() -> Path:
    dest = prefix()
    missing = [tool for tool in ("make", "perl", "tclsh", "cc", "ar", "curl", "objdump", "patch")
               if not shutil.which(tool)]
    if missing:
        raise BuildError(f"{', '.join(missing)} not found: apt-get install build-essential tcl curl")
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / f"{dest.name}.log"
    log.write_text("")
    started = time.monotonic()
    say(f"building CPython and its libraries against glibc {GLIBC} into {dest} (once per machine; "
        f"~8 min on 2 cores; log: {log})")
    sources = {name: fetch(name, where, digest) for name, (where, digest) in pins().items()}
    if dest.exists():
        shutil.rmtree(dest)
    tools = OUT / "tools" / cache_key()
    bin_dir = install_zig(sources.pop("ziglang"), tools)
    build_all(sources, bin_dir, dest, log)
    check(dest)
    (dest / "COMPLETE").write_text(f"built in {time.monotonic() - started:.0f} s\n")
    # What only the build needed (zig alone is ~300 MB), and builds for other pins or recipes.
    others = [p for p in OUT.iterdir() if re.fullmatch(r"[0-9a-f]{16}(\.log)?", p.name) and dest.name not in p.name]
    for path in [OUT / "work", OUT / "tools", OUT / "zig-cache", *others]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
    say(f"done in {time.monotonic() - started:.0f} s")
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="check the built python again (imports, glibc)")
    p.add_argument("--if-built", action="store_true", help="print its path only if it is built; never build")
    args = p.parse_args(argv)
    try:
        if not is_built():
            if args.if_built:
                return 1
            build()
        elif args.check:
            check(prefix())
    except BuildError as e:
        print(f"floor-python: {e}", file=sys.stderr)
        return 1
    print(python_path())
    return 0


if __name__ == "__main__":
    sys.exit(main())
