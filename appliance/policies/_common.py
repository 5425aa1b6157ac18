"""Pieces every policy schema shares: schema builders, Kuma's field paths and its scalar checks.

Messages are Kuma's (pkg/core/validators) word for word, because clients and tests compare them.
"""
from __future__ import annotations

import ipaddress
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from appliance.gocompat import duration_or_none

Errors = list[tuple[str, str]]

# --- schema builders (the OpenAPI subset appliance.core.validation.check_schema reads) ---------

STR: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
BOOL: dict[str, Any] = {"type": "boolean"}
INT_OR_STR: dict[str, Any] = {"type": "int-or-string"}
STR_MAP: dict[str, Any] = {"type": "object", "additionalProperties": STR}
# k8s metav1.Duration: a string Go's time.ParseDuration must read, checked when the body is decoded
DURATION: dict[str, Any] = {"type": "string", "format": "duration"}


def obj(properties: dict[str, Any], required: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = list(required)
    return schema


def arr(items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **extra}


def enum(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


# common_api.HeaderName: kubebuilder bounds it, kube-openapi checks them before Kuma does.
HEADER_NAME: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 256,
                               "pattern": "^[a-z0-9!#$%&'*+\\-.^_\\x60|~]+$"}
HEADER_MATCH = obj({
    "name": HEADER_NAME,
    "type": {"type": "string", "default": "Exact",
             "enum": ["Exact", "Present", "RegularExpression", "Absent", "Prefix"]},
    "value": STR,
}, required=("name",))
HEADER_KEY_VALUE = obj({"name": HEADER_NAME, "value": STR}, required=("name", "value"))

# --- field paths, as Kuma's validators.PathBuilder prints them ----------------------------------


def join(parent: str, child: str) -> str:
    if not parent:
        return child
    if not child:
        return parent
    return parent + child if child.startswith("[") else f"{parent}.{child}"


def index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def key(path: str, name: str) -> str:
    """`tags["env"]`: Go quotes map keys with %q; JSON quoting agrees for printable text."""
    return f"{path}[{json.dumps(name, ensure_ascii=False)}]"


# --- loose readers: validate() may see a spec the schema check already complained about --------


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


# --- durations (Go's time.ParseDuration, which k8s metav1.Duration uses) -------------------------

# backendRef kinds a route can name whose traffic has nowhere to go on a Universal zone without MeshService
# resources; routes leave them out (policies/_backends.py), and a write says so.
UNROUTED_BACKEND_KINDS = ("MeshExternalService", "MeshMultiZoneService")


def unrouted_backends(spec: dict[str, Any]) -> list[str]:
    """The `warnings` of a route (MeshHTTPRoute, MeshTCPRoute) for each backendRef it stores but does not route to."""
    out = []
    for i, item in enumerate(as_list(spec.get("to"))):
        for j, rule in enumerate(as_list(as_dict(item).get("rules"))):
            conf = as_dict(as_dict(rule).get("default"))
            refs = [(f"spec.to[{i}].rules[{j}].default.backendRefs[{k}]", ref)
                    for k, ref in enumerate(as_list(conf.get("backendRefs")))]
            refs += [(f"spec.to[{i}].rules[{j}].default.filters[{k}].requestMirror.backendRef",
                      as_dict(as_dict(f).get("requestMirror")).get("backendRef"))
                     for k, f in enumerate(as_list(conf.get("filters")))]
            out += [f"'{path}' of kind {as_dict(ref).get('kind')} is stored but not yet applied to proxies "
                    "by this control plane: use a MeshService or MeshServiceSubset backend"
                    for path, ref in refs if as_dict(ref).get("kind") in UNROUTED_BACKEND_KINDS]
    return out


def duration_greater_than_zero_or_nil(path: str, value: Any) -> Errors:
    nanos = duration_or_none(value)
    if value is not None and nanos is not None and nanos <= 0:
        return [(path, "must be greater than zero when defined")]
    return []


def duration_not_negative_or_nil(path: str, value: Any) -> Errors:
    nanos = duration_or_none(value)
    if value is not None and nanos is not None and nanos < 0:
        return [(path, "must not be negative when defined")]
    return []


def duration_greater_than_zero(path: str, value: Any) -> Errors:
    nanos = duration_or_none(value)
    if nanos is not None and nanos <= 0:
        return [(path, "must be defined and greater than zero")]
    return []


# --- numbers ---------------------------------------------------------------------------------

_DECIMAL = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?", re.ASCII)


def parse_decimal(value: Any) -> Decimal | None:
    """An IntOrString as Kuma reads it (shopspring/decimal); None when it is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        try:
            return Decimal(value)
        except InvalidOperation:
            return None
    return None


def integer_greater_than_zero_or_nil(path: str, value: Any) -> Errors:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
        return [(path, "must be greater than 0")]
    return []


def value_greater_than_zero_or_nil(path: str, value: Any) -> Errors:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
        return [(path, "must be greater than zero when defined")]
    return []


def uint_percentage_or_nil(path: str, value: Any) -> Errors:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 100:
        return [(path, "must be in inclusive range [0, 100]")]
    return []


def int_percentage_or_nil(path: str, value: Any) -> Errors:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not 0 <= value <= 100:
        return [(path, "must be in inclusive range [0, 100]")]
    return []


def percentage(path: str, value: Any, *, allow_zero: bool = True) -> Errors:
    """validators.ValidatePercentage(OrNil): an int-or-string between 0.0 and 100.0; absent is fine."""
    if value is None:
        return []
    number = parse_decimal(value)
    if number is None:
        return [(path, "string must be a valid number")]
    if number < 0 or number > 100:
        return [(path, "must be in inclusive range [0.0, 100.0]")]
    if not allow_zero and number == 0:
        return [(path, "must be greater than 0")]
    return []


def status_code(path: str, value: Any) -> Errors:
    if isinstance(value, int) and not 100 <= value < 600:
        return [(path, "must be in inclusive range [100, 599]")]
    return []


# Go's net/http.StatusText knows exactly these codes; Kuma treats any other number as unknown.
HTTP_STATUS_CODES = frozenset({
    100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226,
    300, 301, 302, 303, 304, 305, 307, 308,
    400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418,
    421, 422, 423, 424, 425, 426, 428, 429, 431, 451,
    500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
})

# --- names and addresses ---------------------------------------------------------------------

# k8s's '[a-z0-9]([-a-z0-9]*[a-z0-9])?' label, rewritten so a long value cannot make the match backtrack.
_DNS1123_LABEL = r"[a-z0-9]+(?:-+[a-z0-9]+)*"
_DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL}(?:\.{_DNS1123_LABEL})*")
_DNS1123_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


def dns1123_subdomain_errors(value: str) -> list[str]:
    """k8s.io/apimachinery's IsDNS1123Subdomain, messages included."""
    errors = []
    if len(value) > 253:
        errors.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        errors.append(_DNS1123_MESSAGE)
    return errors


_SLOPPY_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}", re.ASCII)


def is_ip(value: str) -> bool:
    """k8s.io/utils/net ParseIPSloppy: IPv6 or IPv4, leading zeros in IPv4 octets allowed."""
    if _SLOPPY_IPV4.fullmatch(value):
        return all(int(octet) <= 255 for octet in value.split("."))
    if "%" in value:
        return False
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


# govalidator.IsFilePath: a Windows drive path or a Unix path.
_WIN_PATH = re.compile(r'[a-zA-Z]:\\(?:[^\\/:*?"<>|\r\n]+\\)*[^\\/:*?"<>|\r\n]*')
_UNIX_PATH = re.compile(r"(/[^/\x00]*)+/?")


def is_file_path(value: str) -> bool:
    if _WIN_PATH.fullmatch(value):
        return len(value[3:]) <= 32767
    return bool(_UNIX_PATH.fullmatch(value))


# --- observability backends ------------------------------------------------------------------

def otel_endpoint_or_ref(root: str, conf: dict[str, Any]) -> Errors:
    """validators.ValidateOtelBackendRefOrEndpoint."""
    endpoint, ref = as_str(conf.get("endpoint")), conf.get("backendRef")
    if endpoint and ref is not None:
        return [(root, "openTelemetry must have only one type defined: endpoint, backendRef")]
    if not endpoint and ref is None:
        return [(root, "openTelemetry must have exactly one defined: endpoint, backendRef")]
    if ref is not None:
        out: Errors = []
        ref = as_dict(ref)
        if ref.get("kind") != "MeshOpenTelemetryBackend":
            out.append((join(root, "backendRef.kind"), '"kind" must be one of ["MeshOpenTelemetryBackend"]'))
        if not ref.get("labels"):
            out.append((join(root, "backendRef"), "backendRef must have exactly one defined: labels"))
        return out
    if any(c in endpoint for c in "/?#"):
        return [(join(root, "endpoint"), "must be in host:port format, not a URL")]
    return []
