"""One entry point for the three programs; the name we are called by picks the program."""
from __future__ import annotations

import os
import sys


def kuma_cp(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["dp"]:
        return kuma_dp(args[1:])
    if args[:1] == ["ctl"]:
        return kumactl(args[1:])
    from appliance.cli.kuma_cp import main
    return main(args)


def kuma_dp(argv: list[str] | None = None) -> int:
    from appliance.dp.cli import main
    return main(sys.argv[1:] if argv is None else argv)


def kumactl(argv: list[str] | None = None) -> int:
    from appliance.kumactl import main
    return main(argv)


def main() -> int:
    name = os.path.basename(sys.argv[0])
    if name.startswith("kuma-dp"):
        return kuma_dp()
    if name.startswith("kumactl"):
        return kumactl()
    return kuma_cp()


if __name__ == "__main__":
    sys.exit(main())


def kuma_cp_entry() -> None:
    sys.exit(kuma_cp())


def kuma_dp_entry() -> None:
    sys.exit(kuma_dp())


def kumactl_entry() -> None:
    sys.exit(kumactl())
