"""Stored JSON written the way Go's encoding/json writes a Kuma struct (for the new-style types whose REST
JSON is a Go struct, not a protobuf message): unknown fields dropped, non-pointer scalars and structs
always written, `omitempty` honoured, integral numbers as integers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Field", "go_number", "list_of", "render", "struct", "value"]


@dataclass(frozen=True)
class Field:
    """One field of a Kuma Go struct.

    kind: "value" a non-pointer scalar (written as `zero` when absent), "optional" a pointer, map or
    free-form value (left out when absent), "struct" a non-pointer struct (always written),
    "optional_struct" a pointer to a struct, "list" a slice of `fields`-structs (or of scalars).
    """
    name: str
    kind: str = "optional"
    zero: Any = None
    omitempty: bool = True
    fields: tuple["Field", ...] = ()
    nil_list: bool = False   # a pointer to a slice: [] is written, only an absent one is left out


def value(name: str, zero: Any, omitempty: bool = False) -> Field:
    return Field(name, "value", zero, omitempty)


def struct(name: str, *fields: Field, optional: bool = False) -> Field:
    return Field(name, "optional_struct" if optional else "struct", fields=fields)


def list_of(name: str, *fields: Field, pointer: bool = False, omitempty: bool = True) -> Field:
    return Field(name, "list", omitempty=omitempty, fields=fields, nil_list=pointer)


def render(fields: tuple[Field, ...], data: Any) -> dict[str, Any]:
    """`data` (stored JSON) as encoding/json writes the struct of `fields`."""
    source = data if isinstance(data, dict) else {}
    out: dict[str, Any] = {}
    for f in fields:
        item = source.get(f.name)
        if f.kind == "struct":
            out[f.name] = render(f.fields, item)
        elif item is None:
            if f.kind == "value" and not f.omitempty:
                out[f.name] = f.zero
            elif f.kind == "list" and not f.omitempty:
                out[f.name] = None
        elif f.kind == "value":
            item = go_number(item, f.zero)
            if not (f.omitempty and item == f.zero):
                out[f.name] = item
        elif f.kind == "optional_struct":
            out[f.name] = render(f.fields, item)
        elif f.kind == "list":
            if isinstance(item, list) and not item and f.omitempty and not f.nil_list:
                continue
            out[f.name] = [render(f.fields, x) for x in item] if f.fields and isinstance(item, list) else item
        else:
            out[f.name] = item
    return out


def go_number(number: Any, zero: Any) -> Any:
    """An integral JSON number stored as 80.0 is written 80 by Go's int fields."""
    if isinstance(zero, int) and not isinstance(zero, bool) and isinstance(number, float) and number.is_integer():
        return int(number)
    return number
