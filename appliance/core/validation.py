"""Validation results in Kuma's shape: a list of (field path, reason) violations.

Field paths follow Kuma: `networking.inbound[0].tags["kuma.io/service"]`, `spec.from[0].targetRef`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from appliance.gocompat import parse_duration


@dataclass(frozen=True)
class Violation:
    field: str
    reason: str


class ValidationError(Exception):
    """A resource (or request) that breaks one or more rules; becomes a 400 with invalid_parameters."""

    def __init__(self, violations: list[Violation], title: str | None = None) -> None:
        super().__init__("; ".join(f"{v.field}: {v.reason}" for v in violations))
        self.violations = violations
        self.title = title


class BadRequest(Exception):
    """A request Kuma refuses with a plain 400 "bad request: <message>", without a list of fields."""


@dataclass
class Violations:
    items: list[Violation] = field(default_factory=list)

    def add(self, field: str, reason: str) -> None:
        self.items.append(Violation(field, reason))

    def extend(self, other: "Violations") -> None:
        self.items.extend(other.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __iter__(self) -> Iterator[Violation]:
        return iter(self.items)

    def raise_if_any(self, title: str | None = None) -> None:
        if self.items:
            raise ValidationError(list(self.items), title)


def join(parent: str, child: str) -> str:
    if not parent:
        return child
    if not child:
        return parent
    if child.startswith("["):
        return parent + child
    return f"{parent}.{child}"


def key(parent: str, name: str) -> str:
    """`labels["kuma.io/zone"]`, as Kuma writes map keys in field paths."""
    return f'{parent}["{name}"]'


# --- A small structural schema checker (the subset of OpenAPI that Kuma's policy schemas use) -----
# Messages match kube-openapi's, which Kuma returns for new-style (spec-wrapped) resources.

_JSON_TYPE = {str: "string", bool: "boolean", int: "integer", float: "number", list: "array", dict: "object"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        # Go decodes every JSON number as float64 before the check, hence "number".
        return "number"
    return _JSON_TYPE.get(type(value), "object")


def _type_ok(expected: str, value: Any) -> bool:
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if expected == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected == "array":
        return isinstance(value, list)
    if expected == "object":
        return isinstance(value, dict)
    if expected == "int-or-string":
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    return True


def check_schema(schema: dict[str, Any], value: Any, path: str, out: list[str]) -> None:
    """Append kube-openapi style messages ("<path> in body ...") for every mismatch in `value`.

    Also fills in `default`s of absent properties, as Kuma's structural defaulting does.
    """
    expected = schema.get("type")
    if value is None and schema.get("nullable"):
        return
    if expected and not _type_ok(expected, value):
        shown = "string" if expected == "int-or-string" else expected
        out.append(f"{path} in body must be of type {shown}: \"{_json_type(value)}\"")
        return
    enum = schema.get("enum")
    if enum is not None and value not in enum:
        out.append(f"{path} in body should be one of [{' '.join(str(e) for e in enum)}]")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{path} in body should be greater than or equal to {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{path} in body should be less than or equal to {schema['maximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            out.append(f"{path} in body should be at least {schema['minLength']} chars long")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(f"{path} in body may not be longer than {schema['maxLength']}")
    if isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                out.append(f"{join(path, name)} in body is required")
        for name, sub in props.items():
            if name not in value and "default" in sub:
                value[name] = _copy(sub["default"])
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if name in props:
                check_schema(props[name], item, join(path, name), out)
            elif isinstance(extra, dict):
                check_schema(extra, item, join(path, name), out)
            elif extra is False:
                out.append(f"{join(path, name)} in body is a forbidden property")
    if isinstance(value, list):
        items = schema.get("items")
        if "minItems" in schema and len(value) < schema["minItems"]:
            out.append(f"{path} in body should have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(f"{path} in body should have at most {schema['maxItems']} items")
        if items:
            for i, item in enumerate(value):
                check_schema(items, item, f"{path}[{i}]", out)


def first_bad_duration(schema: dict[str, Any], value: Any, path: str) -> tuple[str, str] | None:
    """The first string under a `format: duration` schema that Go's time.ParseDuration refuses, in
    document order as Go's decoder meets it: (field path, Go's message). Kuma fails to decode then."""
    if isinstance(value, str) and schema.get("format") == "duration":
        try:
            parse_duration(value)
        except ValueError as e:
            return path, str(e)
    elif isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            sub = props.get(name, extra if isinstance(extra, dict) else None)
            if sub is not None and (found := first_bad_duration(sub, item, join(path, name))):
                return found
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            if found := first_bad_duration(schema["items"], item, f"{path}[{i}]"):
                return found
    return None


def prune(schema: dict[str, Any], value: Any) -> Any:
    """`value` without nulls and without properties the schema does not know (free-form objects kept)."""
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props is not None and extra is None:
            return {k: prune(props[k], v) for k, v in value.items() if k in props and v is not None}
        if isinstance(extra, dict):
            return {k: prune(extra, v) for k, v in value.items() if v is not None}
        return value
    if isinstance(value, list):
        items = schema.get("items") or {}
        return [prune(items, v) for v in value]
    return value


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
