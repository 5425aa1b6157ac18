"""Which glibc does a one-file executable need? `objdump -T` over its bootloader and every ELF file
bundled inside it (read from the archive with PyInstaller's reader, never unpacked to run); any
other ELF executable (Envoy) is checked alone.

    python build/glibc_check.py dist/kuma-cp [--floor 2.35] [--verbose]

Prints the floor (the newest GLIBC_x.y symbol version any of them needs) and, with --floor, fails
listing each file that needs a newer glibc than the stated floor. Needs PyInstaller (the build
venv has it) and objdump (binutils).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from PyInstaller.archive.readers import CArchiveReader

_GLIBC = re.compile(r"\(GLIBC_(\d+(?:\.\d+)+)\)")

Version = tuple[int, ...]


def _parse(text: str) -> Version:
    return tuple(int(part) for part in text.split("."))


def _show(version: Version | None) -> str:
    return ".".join(map(str, version)) if version else "none"


def needed_glibc(elf: Path) -> Version | None:
    """The newest glibc symbol version `elf` imports, or None when it imports no versioned symbol."""
    out = subprocess.run(["objdump", "-T", str(elf)], capture_output=True, text=True, check=True).stdout
    versions = [_parse(m.group(1)) for m in _GLIBC.finditer(out)]
    return max(versions) if versions else None


def bundled_glibc(executable: Path) -> dict[str, Version | None]:
    """{file name: glibc it needs} for the bootloader and every ELF file inside the archive; for
    a plain executable (Envoy), just that file."""
    try:
        archive = CArchiveReader(str(executable))
    except Exception:  # noqa: BLE001 - not a PyInstaller executable: check the file alone
        return {executable.name: needed_glibc(executable)}
    result = {"(bootloader)": needed_glibc(executable)}
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(archive.toc):
            data = archive.extract(name)
            if not data or not data.startswith(b"\x7fELF"):
                continue
            path = Path(tmp) / name.replace("/", "__")
            path.write_bytes(data)
            result[name] = needed_glibc(path)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("executable", type=Path)
    p.add_argument("--floor", help="fail if any bundled file needs a newer glibc than this, e.g. 2.35")
    p.add_argument("--verbose", action="store_true", help="list every file with the glibc it needs")
    args = p.parse_args(argv)
    needs = bundled_glibc(args.executable)
    if args.verbose:
        for name, version in sorted(needs.items(), key=lambda kv: (kv[1] or (), kv[0])):
            print(f"  {_show(version):>6}  {name}")
    floor = max((v for v in needs.values() if v), default=None)
    print(f"glibc floor of {args.executable}: {_show(floor)} ({len(needs)} ELF files checked)")
    if args.floor:
        stated = _parse(args.floor)
        above = {name: v for name, v in needs.items() if v and v > stated}
        if above:
            listed = ", ".join(f"{name} needs {_show(v)}" for name, v in sorted(above.items()))
            print(f"glibc check failed: the stated floor is {args.floor} but {listed}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
