"""What Kuma's legacy (protobuf-backed) types share: how protojson reads a body, and the checks of
Kuma's pkg/core/resources/apis/mesh/validators.go, with Go's parsers where Kuma leans on them.

Kuma decodes these bodies with jsonpb and AllowUnknownFields, so unknown fields are ignored (SHAPE
objects have no additionalProperties: False), and a null is the same as an absent field.
"""
from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from appliance.core.resources.secret import base64_error
from appliance.core.validation import Violations, join
from appliance.gocompat import go_quote, is_dns_name, parse_duration, parse_ip

# --- SHAPE builders: every field may be null, as protojson allows -------------------------------

STRING: dict[str, Any] = {"type": "string", "nullable": True}
DURATION = STRING  # google.protobuf.Duration: "5s"; its format is checked by duration_errors
UINT32: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": 4294967295, "nullable": True}
BOOL: dict[str, Any] = {"type": "boolean", "nullable": True}
NUMBER: dict[str, Any] = {"type": "number", "nullable": True}
STRUCT: dict[str, Any] = {"type": "object", "nullable": True}  # google.protobuf.Struct
TAGS: dict[str, Any] = {"type": "object", "additionalProperties": STRING, "nullable": True}


def message(**fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": fields, "nullable": True}


def top(**fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": fields}


def repeated(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item, "nullable": True}


def enum(*names: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(names), "nullable": True}


METRICS_BACKEND = message(name=STRING, type=STRING, conf=STRUCT)

_ZERO: dict[str, Any] = {"string": "", "integer": 0, "number": 0, "boolean": False}


def without_nulls(schema: dict[str, Any], value: Any) -> Any:
    """`value` as jsonpb decodes it: null fields dropped, null map values and list items zeroed."""
    if isinstance(value, dict):
        fields = schema.get("properties")
        if fields is not None:
            return {k: without_nulls(fields.get(k, {}), v) for k, v in value.items() if v is not None}
        item = schema.get("additionalProperties")
        if isinstance(item, dict):
            return {k: _zero(item) if v is None else without_nulls(item, v) for k, v in value.items()}
        return value
    if isinstance(value, list):
        item = schema.get("items") or {}
        return [_zero(item) if v is None else without_nulls(item, v) for v in value]
    return value


def _zero(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    return {} if kind == "object" else [] if kind == "array" else _ZERO.get(kind or "")


def uint(value: Any) -> int:
    return int(value or 0)


# --- field paths ------------------------------------------------------------------------------

def key(path: str, name: str) -> str:
    return f"{path}[{go_quote(name)}]"


# --- tags, ports, addresses (validators.go) ----------------------------------------------------

SERVICE_TAG = "kuma.io/service"
PROTOCOL_TAG = "kuma.io/protocol"
_PROTOCOLS = ("http", "http2", "tcp", "tls", "grpc", "kafka", "mysql")
PROTOCOLS_HINT = "Allowed values: grpc, http, http2, kafka, tcp"
_TAG_NAME = re.compile(r"[a-zA-Z0-9.\-_:/]*")
_TAG_VALUE = re.compile(r"[a-zA-Z0-9.\-_:]*")
_SELECTOR_VALUE = re.compile(r"[a-zA-Z0-9.\-_:/]*|\*")


def known_protocol(value: str) -> bool:
    return value.lower() in _PROTOCOLS


def inbound_protocol_errors(path: str, tags: dict[str, str], out: Violations) -> None:
    value = tags.get(PROTOCOL_TAG)
    if value is not None and not known_protocol(value):
        out.add(key(path, PROTOCOL_TAG),
                f"tag {go_quote(PROTOCOL_TAG)} has an invalid value {go_quote(value)}. {PROTOCOLS_HINT}")


def tag_errors(path: str, tags: dict[str, str], out: Violations, *, selector: bool = False,
               require_service: bool = False, at_least_one: bool = False, extra: Any = None,
               forbidden_keys: tuple[str, ...] = ()) -> None:
    """ValidateTags (or ValidateSelector when `selector`), in Kuma's order; `extra` runs before the keys,
    `forbidden_keys` are names the tags must not use (SelectorKeyNotInSet)."""
    if at_least_one and not tags:
        out.add(path, "must have at least one tag")
    if extra is not None:
        extra(path, tags, out)
    for name in sorted(tags):
        if name == "":
            out.add(path, "tag name must be non-empty")
        if not _TAG_NAME.fullmatch(name):
            out.add(key(path, name), "tag name must consist of alphanumeric characters, dots, dashes, slashes "
                                     "and underscores")
        if name in forbidden_keys:
            out.add(key(path, name), f"tag name must not be {go_quote(name)}")
        value = tags[name]
        if value == "":
            out.add(key(path, name), "tag value must be non-empty")
        if selector and not _SELECTOR_VALUE.fullmatch(value):
            out.add(key(path, name), "tag value must consist of alphanumeric characters, dots, dashes, slashes "
                                     'and underscores or be "*"')
        elif not selector and not _TAG_VALUE.fullmatch(value):
            out.add(key(path, name), "tag value must consist of alphanumeric characters, dots, dashes and "
                                     "underscores")
    if require_service and SERVICE_TAG not in tags:
        out.add(path, f"mandatory tag {go_quote(SERVICE_TAG)} is missing")


def port_errors(path: str, port: int, out: Violations) -> None:
    if port == 0 or port > 65535:
        out.add(path, "port must be in the range [1, 65535]")


def address_errors(parent: str, address: str, out: Violations) -> None:
    """validateAddress: it appends `.address` to the path it is given, whatever that path is."""
    path = join(parent, "address")
    if address == "":
        out.add(path, "address can't be empty")
        return
    if address in ("0.0.0.0", "::"):
        out.add(path, "must not be 0.0.0.0 or ::")
    if parse_ip(address) is None and not is_dns_name(address):
        out.add(path, "address has to be valid IP address or domain name")


def is_loopback_overlap(address: str) -> bool:
    """overlap(127.0.0.1, ParseIP(address)): a wildcard or 127.0.0.1 itself."""
    ip = parse_ip(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip is not None and (ip.is_unspecified or ip == ipaddress.IPv4Address("127.0.0.1"))


def split_host_port(text: str) -> tuple[str, str] | None:
    """Go's net.SplitHostPort; None where Go returns an error."""
    colon = text.rfind(":")
    if colon < 0:
        return None
    start, end_bracket = 0, 0
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or end + 1 != colon:
            return None
        host, start, end_bracket = text[1:end], 1, end + 1
    else:
        host = text[:colon]
        if ":" in host:
            return None
    if "[" in text[start:] or "]" in text[end_bracket:]:
        return None
    return host, text[colon + 1:]


# --- Go's url.ParseRequestURI (probe paths, zipkin URLs) ---------------------------------------

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_HOST_CHARS = re.compile(r"[A-Za-z0-9\-_.~!$&'()*+,;=:\[\]<>\"%\u0080-\U0010ffff]*")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_OPTIONAL_PORT = re.compile(r"(:[0-9]*)?")


def request_uri_host(raw: str) -> str | None:
    """None where Go's url.ParseRequestURI fails, else the URL's host ("" when it has none)."""
    if raw == "" or any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw) or raw.startswith(":"):
        return None
    if raw == "*":
        return ""
    scheme = _SCHEME.match(raw)
    rest = raw[scheme.end():] if scheme else raw
    rest = rest[:-1] if rest.endswith("?") and rest.count("?") == 1 else rest.split("?", 1)[0]
    if not rest.startswith("/"):
        return "" if scheme else None
    host = ""
    if scheme and rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        host, rest = authority.rpartition("@")[2], slash + path
        bracket = host.rfind("]") if host.startswith("[") else -1
        if host.startswith("[") and bracket < 0:
            return None
        port_part = host[bracket + 1:] if bracket >= 0 else host[host.rfind(":"):] if ":" in host else ""
        if not _OPTIONAL_PORT.fullmatch(port_part) or not _HOST_CHARS.fullmatch(host) or _BAD_ESCAPE.search(host):
            return None
    return None if _BAD_ESCAPE.search(rest) else host


def uri_port(host: str) -> str:
    colon = host.rfind(":")
    return host[colon + 1:] if colon >= 0 and _OPTIONAL_PORT.fullmatch(host[colon:]) else ""


# --- durations ----------------------------------------------------------------------------------

def duration_errors(body: dict[str, Any], list_path: str, fields: tuple[str, ...], out: Violations) -> bool:
    """Report the first Duration (a `fields` of an item of `list_path`) jsonpb cannot decode.

    Kuma fails the whole decoding then, so the caller checks nothing else; True if there was one.
    """
    for i, item in enumerate(_dig(body, list_path) or []):
        for field in fields:
            value = _dig(item, field)
            if not isinstance(value, str):
                continue
            try:
                parse_duration(value)
            except ValueError as e:  # jsonpb hands Go's time.ParseDuration error on
                out.add(f"{list_path}[{i}].{field}", f"bad Duration: {e}")
                return True
    return False


def _dig(value: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


# --- typed configs decoded from google.protobuf.Struct (ToTyped) ------------------------------


def conf_error(conf: dict[str, Any], fields: dict[str, Any]) -> str | None:
    """The first error jsonpb reports decoding `conf` into a message with `fields`, in field order.

    Kinds: "string", "bool", "uint32", "bytes", "map" (of strings), a dict (message), a one-item
    list (repeated message), or a (enum full name, value names) tuple.
    """
    for name, kind in fields.items():
        value = conf.get(name)
        if value is not None and (problem := _typed_error(value, kind)):
            return problem
    return None


def _typed_error(value: Any, kind: Any) -> str | None:
    if kind in ("string", "bool", "bytes"):
        expected = {"string": str, "bool": bool, "bytes": str}[kind]
        if not isinstance(value, expected):
            return _cannot(value, "[]uint8" if kind == "bytes" else kind)
        return base64_error(value) if kind == "bytes" else None
    if kind == "uint32":
        return _uint32_error(value)
    if kind == "map" or isinstance(kind, dict):
        if not isinstance(value, dict):
            return _cannot(value, "map[string]json.RawMessage")
        if kind == "map":
            return next((_cannot(v, "string") for v in value.values() if v is not None and not isinstance(v, str)),
                        None)
        return conf_error(value, kind)
    if isinstance(kind, list):
        if not isinstance(value, list):
            return _cannot(value, "[]json.RawMessage")
        return next((e for item in value if item is not None and (e := _typed_error(item, kind[0]))), None)
    full_name, names = kind
    if isinstance(value, str):
        return None if value in names else f"unknown value {go_quote(json.dumps(value))} for enum {full_name}"
    if isinstance(value, int) and not isinstance(value, bool):
        return None
    return _cannot(value, "protoreflect.EnumNumber")


def _uint32_error(value: Any) -> str | None:
    if isinstance(value, str):  # jsonpb strips the quotes of a quoted number and reads the rest as JSON
        text = value
        try:
            value = json.loads(text, parse_constant=_not_json)
        except json.JSONDecodeError as e:
            if not text.strip():
                return "unexpected end of JSON input"
            if e.msg == "Extra data":
                return f"invalid character {_go_char(text[e.pos])} after top-level value"
            return f"invalid character {_go_char(text.lstrip()[0])} looking for beginning of value"
        if isinstance(value, float):
            return f"json: cannot unmarshal number {text.strip()} into Go value of type uint32"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _cannot(value, "uint32")
    if value != int(value) or not 0 <= value <= 4294967295:
        return f"json: cannot unmarshal number {_go_number(value)} into Go value of type uint32"
    return None


def _not_json(word: str) -> Any:
    raise json.JSONDecodeError("Expecting value", word, 0)


def _cannot(value: Any, go_type: str) -> str:
    kind = ("bool" if isinstance(value, bool) else "number" if isinstance(value, (int, float))
            else "string" if isinstance(value, str) else "array" if isinstance(value, list) else "object")
    return f"json: cannot unmarshal {kind} into Go value of type {go_type}"


def _go_number(value: float) -> str:
    """How Go's encoding/json writes the float64 a Struct holds."""
    if float(value).is_integer() and abs(value) < 1e21:
        return str(int(value))
    return repr(float(value)).replace("e-0", "e-").replace("e+0", "e+")


def _go_char(ch: str) -> str:
    return "'\\''" if ch == "'" else f"'{ch}'"
