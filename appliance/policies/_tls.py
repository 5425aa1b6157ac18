"""TLS versions and cipher suites as Kuma's policies spell them (api/common/v1alpha1/tls): schema and checks."""
from __future__ import annotations

from typing import Any

from appliance.gocompat import go_quote
from appliance.policies._common import Errors, arr, as_dict, join, obj

AUTO = "TLSAuto"
VERSIONS = (AUTO, "TLS10", "TLS11", "TLS12", "TLS13")
CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305",
           "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305")

# kubebuilder's `default=TLSAuto` on both bounds: an absent bound is stored as TLSAuto.
_VERSION_ENUM: dict[str, Any] = {"type": "string", "enum": list(VERSIONS), "default": AUTO}
VERSION_SCHEMA = obj({"max": _VERSION_ENUM, "min": _VERSION_ENUM})
CIPHERS_SCHEMA = arr({"type": "string", "enum": list(CIPHERS)})


def must_be_one_of(field: str, allowed: tuple[str, ...]) -> str:
    """validators.MakeFieldMustBeOneOfErr."""
    return f'"{field}" must be one of [{", ".join(go_quote(a) for a in allowed)}]'


def validate_version(path: str, version: Any) -> Errors:
    """common_tls.ValidateVersion: known bounds, and min not above max when both are specific."""
    version = as_dict(version)
    out: Errors = []
    specific: dict[str, int] = {}
    for bound in ("min", "max"):
        value = version.get(bound)
        if value is None:
            continue
        if value not in VERSIONS:
            out.append((join(path, bound), must_be_one_of(bound, VERSIONS)))
        elif value != AUTO:
            specific[bound] = VERSIONS.index(value)
    if len(specific) == 2 and specific["min"] > specific["max"]:
        out.append((join(path, "min"), "min version must be lower than max"))
    return out
