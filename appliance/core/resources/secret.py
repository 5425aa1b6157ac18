"""Secret (mesh-scoped) and GlobalSecret: a base64 `data` field; also Kuma's DataSource checks and ours.

Kuma gives Secret no semantic validator at all, so the only thing that can go wrong is the
decoding of `data` (a google.protobuf.BytesValue: standard, padded base64).

A DataSource (ExternalService and MeshExternalService TLS, a provided CA) is read by the control
plane, so what it may name is restricted (`refused_source_errors`): never a Secret the control plane
keeps for itself (`is_system_secret`), and no `file` where the data would go to proxies (Kuma 2.14's
xDS never loads a file either: its static loader refuses them). Which writers may use `secret` and
`file` at all is the API's rule (api/auth.py).
"""
from __future__ import annotations

import base64
from typing import Any, Callable, Iterable

from appliance.core.validation import Violations, join
from appliance.gocompat import go_quote
from appliance.tokens import signing

_STRING: dict[str, Any] = {"type": "string", "nullable": True}

SHAPE: dict[str, Any] = {"type": "object", "properties": {"data": _STRING}}

# system.v1alpha1.DataSource: a oneof, so the last member present (in field order) is the one set.
DATA_SOURCE: dict[str, Any] = {"type": "object", "nullable": True, "properties": {
    "secret": _STRING, "file": _STRING, "inline": _STRING, "inlineString": _STRING}}
_SOURCES = ("secret", "file", "inline", "inlineString")

_B64 = {c: i for i, c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def validate(content: dict[str, Any], out: Violations) -> None:
    data = content.get("data")
    if isinstance(data, str) and (problem := base64_error(data)):
        out.add("data", problem)


def base64_error(text: str) -> str | None:
    """Go's base64.StdEncoding error for `text` (what encoding/json says about bad []byte), or None."""
    src = text.encode()
    si = 0
    while si < len(src):
        j = 0
        while j < 4:
            if si == len(src):
                return None if j == 0 else f"illegal base64 data at input byte {si - j}"
            c = src[si]
            si += 1
            if c in _B64:
                j += 1
            elif c in b"\r\n":
                continue
            elif c != ord("=") or j < 2:
                return f"illegal base64 data at input byte {si - 1}"
            else:
                if j == 2:  # a second '=' must follow, newlines aside
                    while si < len(src) and src[si] in b"\r\n":
                        si += 1
                    if si == len(src):
                        return f"illegal base64 data at input byte {len(src)}"
                    if src[si] != ord("="):
                        return f"illegal base64 data at input byte {si - 1}"
                    si += 1
                while si < len(src) and src[si] in b"\r\n":
                    si += 1
                return f"illegal base64 data at input byte {si}" if si < len(src) else None
    return None


def decoded_length(text: str) -> int:
    return (len(text.replace("\r", "").replace("\n", "").rstrip("=")) * 3) // 4


def data_source_errors(path: str, source: dict[str, Any] | None, out: Violations) -> None:
    """Kuma's system.ValidateDataSource (ExternalService TLS): a present source must hold something."""
    if source is None:
        return
    if (not decoded_length(source.get("inline") or "") and not source.get("inlineString")
            and not source.get("secret") and not source.get("file")):
        out.add(path, "data source cannot be empty")


# Secrets the control plane makes for itself: token signing keys, the builtin CAs, the admin token.
# Names as Kuma 2.14 gives them (pkg/core/resources/apis/system/constants.go) and ours
# (runtime/defaults.ADMIN_TOKEN_SECRET); a unit test keeps this list and their creators in step.
_SYSTEM_PREFIXES = (signing.DATAPLANE_TOKEN_SIGNING_KEY_PREFIX, "dataplane-token-revocations-",
                    signing.USER_TOKEN_SIGNING_KEY_PREFIX, "zone-token-signing-key", "zone-ingress-token-signing-key",
                    "admin-user-token", "user-token-revocations", "zone-token-revocations")
_BUILTIN_CA_PART = ".ca-builtin-"   # "<mesh>.ca-builtin-cert-<backend>", "<mesh>.ca-builtin-key-<backend>"

SourceList = Iterable[tuple[str, dict[str, Any]]]


def is_system_secret(name: str) -> bool:
    """A Secret only the control plane uses: no resource may make it read one for a proxy."""
    return name.startswith(_SYSTEM_PREFIXES) or _BUILTIN_CA_PART in name


def refused_source_errors(sources: SourceList, out: Violations, allow_file: bool = False) -> None:
    """Our rule for (path, DataSource) pairs, for every writer: no system Secret; no `file` unless `allow_file`."""
    for path, source in sources:
        if not isinstance(source, dict):
            continue
        secret = source.get("secret")
        if isinstance(secret, str) and is_system_secret(secret):
            out.add(join(path, "secret"), f"{go_quote(secret)} is a secret of the control plane (signing key, CA or "
                                          "token) and cannot be used as a data source")
        if source.get("file") is not None and not allow_file:
            out.add(join(path, "file"), "a file data source is not supported here: the control plane does not "
                                        "read files for proxies; use secret, inline or inlineString")


def chosen_source_errors(path: str, source: dict[str, Any], out: Violations) -> None:
    """Kuma's datasource.Validate (provided CA): one source chosen, and not an empty one."""
    chosen = [name for name in _SOURCES if source.get(name) is not None]
    if not chosen:
        out.add(path, "data source has to be chosen. Available sources: secret, file, inline")
        return
    kind = chosen[-1]
    value = source[kind]
    if kind in ("secret", "file") and value == "" or kind == "inline" and not decoded_length(value):
        out.add(join(path, kind), "cannot be empty")


class DataSourceError(Exception):
    """A DataSource that cannot be read; the message is Kuma's (its dynamic loader's)."""


def load_data_source(source: dict[str, Any], mesh: str, secret_data: Callable[[str], str | None]) -> bytes:
    """A DataSource's bytes, read as Kuma's dynamic loader reads them, `secret_data(name)` giving a
    Secret's base64 `data` (None: no such Secret). `file` is never read: refused by validation where
    the bytes would reach proxies or sign their certificates."""
    if source.get("inlineString") is not None:
        return str(source["inlineString"]).encode()
    if source.get("inline") is not None:
        return base64.b64decode(str(source["inline"]))
    if source.get("file") is not None:
        raise DataSourceError("could not load data: the control plane does not read files")
    name = source.get("secret")
    if name is None:
        raise DataSourceError("unsupported type of the DataSource")
    data = secret_data(str(name))
    if data is None:
        raise DataSourceError(f'could not load data: resource not found: type="Secret" name={go_quote(str(name))} '
                              f'mesh={go_quote(mesh)}')
    return base64.b64decode(data)
