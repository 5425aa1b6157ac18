"""Entry point of the frozen executable: the same dispatch as `python -m appliance`.

`KUMA_FROZEN_SELFCHECK=1` makes the executable import every `appliance` module and the native
pieces it depends on, print one line and exit: the freeze script runs it so that a module the
analysis missed fails the build instead of a user's start-up.
"""
from __future__ import annotations

import os
import sys


def _selfcheck() -> int:
    import importlib
    import pkgutil

    import appliance

    failed = []
    names = [m.name for m in pkgutil.walk_packages(appliance.__path__, "appliance.")]
    names += ["grpc", "grpc.aio", "sqlite3", "ssl", "cryptography.hazmat.bindings._rust", "google._upb._message"]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - every failure is reported, none is fatal here
            failed.append(f"{name}: {type(e).__name__}: {e}")
    from google.protobuf.internal import api_implementation
    if api_implementation.Type() != "upb":
        failed.append(f"protobuf backend is {api_implementation.Type()!r}, expected 'upb'")
    for line in failed:
        print(f"selfcheck: {line}", file=sys.stderr)
    print(f"selfcheck: {len(names) - len(failed)}/{len(names)} modules imported, protobuf backend "
          f"{api_implementation.Type()}")
    return 1 if failed else 0


if __name__ == "__main__":
    if os.environ.get("KUMA_FROZEN_SELFCHECK") == "1":
        sys.exit(_selfcheck())
    from appliance.__main__ import main
    sys.exit(main())
