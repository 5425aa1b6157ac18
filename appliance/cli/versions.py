"""`kuma-dp` and `kumactl` until their issues (#3, #5) land: only `version` is served."""
from __future__ import annotations

import argparse

from appliance import KUMA_COMPAT_VERSION, __version__


def version_only(prog: str, issue: int, argv: list[str] | None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=f"{prog} (kuma-appliance); more commands come with issue "
                                                        f"#{issue}.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("version", help="print the version")
    args = p.parse_args(argv)
    if args.command == "version":
        print(f"{prog}: {__version__} (Kuma {KUMA_COMPAT_VERSION} compatible)")
        return 0
    p.print_help()
    return 2
