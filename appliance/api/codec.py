"""From request bytes to a Resource, and from a Resource to Kuma's REST JSON."""
from __future__ import annotations

import json
import re
import sys
from typing import Any

import orjson
import yaml

from appliance.api.errors import KumaError, bad_request
from appliance.core.resources.model import Resource, ResourceType
from appliance.core.validation import (
    ValidationError, Violation, Violations, check_schema, first_bad_duration, prune,
)
from appliance.gocompat import go_quote

MAX_BODY = 1024 * 1024
# No Kuma resource nests deeper than ~15 levels; 100 keeps every recursive walk over a body (schema
# checks, orjson, which refuses more than 255 levels when it writes) far from its limit.
MAX_DEPTH = 100
# Every JSON value takes at least two bytes, so only YAML aliases can expand a body past this.
MAX_NODES = MAX_BODY // 2
META_FIELDS = ("type", "mesh", "name", "labels", "creationTime", "modificationTime", "kri")


def kri(rtype: ResourceType, res: Resource) -> str | None:
    """Kuma Resource Identifier: kri_<short>_<mesh>_<zone>_<namespace>_<name>_<section>."""
    if not rtype.short_name:
        return None
    zone = res.labels.get("kuma.io/zone", "")
    namespace = res.labels.get("k8s.kuma.io/namespace", "")
    return f"kri_{rtype.short_name}_{res.mesh}_{zone}_{namespace}_{res.name}_"


def present(rtype: ResourceType, res: Resource) -> dict[str, Any]:
    out: dict[str, Any] = {"type": res.type}
    if rtype.scope == "Mesh":
        out["mesh"] = res.mesh
    out["name"] = res.name
    out["creationTime"] = res.creation_time
    out["modificationTime"] = res.modification_time
    if res.labels:
        out["labels"] = res.labels
    identifier = kri(rtype, res)
    if identifier:
        out["kri"] = identifier
    out.update(res.content)
    if rtype.present:
        rtype.present(res, out)
    return out


def _go_json_error(text: str, err: json.JSONDecodeError) -> str:
    """Say what Go's encoding/json says for the same mistake (Kuma's clients match on it)."""
    if not text.strip():
        return "unexpected end of JSON input"
    if err.pos >= len(text):
        return "unexpected end of JSON input"
    ch = text[err.pos]
    shown = "'" + ch + "'" if ch != "'" else "'\\''"
    msg = err.msg
    if msg.startswith("Expecting property name"):
        return f"invalid character {shown} looking for beginning of object key string"
    if msg.startswith("Expecting ':'"):
        return f"invalid character {shown} after object key"
    if msg.startswith("Expecting ',' delimiter"):
        where = "array element" if _innermost(text, err.pos) == "[" else "object key:value pair"
        return f"invalid character {shown} after {where}"
    if msg.startswith("Extra data"):
        return f"invalid character {shown} after top-level value"
    return f"invalid character {shown} looking for beginning of value"


def _innermost(text: str, pos: int) -> str:
    depth: list[str] = []
    in_string = False
    escaped = False
    for ch in text[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth.append(ch)
        elif ch in "]}" and depth:
            depth.pop()
    return depth[-1] if depth else ""


def parse_body(raw: bytes, content_type: str | None, type_name: str) -> Any:
    """JSON or YAML to Python; a 400 in Kuma's words when it is neither, or when it is beyond
    MAX_BODY bytes, MAX_DEPTH levels of nesting or MAX_NODES values (YAML aliases expanded)."""
    if len(raw) > MAX_BODY:
        raise KumaError(400, "Bad Request", f"request body is larger than {MAX_BODY} bytes")
    value = _decode(raw, content_type, type_name)
    problem = _shape_problem(value)
    if problem:
        raise bad_request(f"invalid {type_name} object: \"{problem}\"")
    return value


def parse_yaml(text: str | bytes) -> Any:
    """yaml.safe_load within the nesting limit; yaml.YAMLError for both bad and too deep YAML
    (ValueError for a number Python will not convert), so that callers answer a 400, never recurse
    until RecursionError. Callers outside the REST API (the DP server's /bootstrap) use it too."""
    return yaml.load(text, Loader=_LimitedLoader)  # noqa: S506 - a SafeLoader subclass


class _LimitedLoader(yaml.SafeLoader):
    """PyYAML composes nodes recursively (three frames a level): stop at MAX_DEPTH instead."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"exceeded max depth of {MAX_DEPTH}",
                                              self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _decode(raw: bytes, content_type: str | None, type_name: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        json_error = e
    text = raw.decode("utf-8", errors="replace")
    if not (content_type or "").startswith("application/json") and text.strip()[:1] not in ("{", "["):
        try:
            return parse_yaml(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1}: " if mark else ""
            raise bad_request(f"invalid {type_name} object: \"{where}{getattr(e, 'problem', e)}\"")
        except ValueError:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
            raise bad_request(f"invalid {type_name} object: \"a number has more than "
                              f"{sys.get_int_max_str_digits()} digits\"")
    raise bad_request(f"invalid {type_name} object: \"{_json_problem(text, json_error)}\"")


def _json_problem(text: str, err: orjson.JSONDecodeError) -> str:
    """What Go's encoding/json says about a body orjson refused, without recursing into it again."""
    if err.msg.startswith("depth limit exceeded"):
        return f"exceeded max depth of {MAX_DEPTH}"
    if err.msg.startswith("number is infinity"):
        number = re.match(r"[-+0-9.eE]*", text[err.pos:])
        return f"json: cannot unmarshal number {number.group(0) if number else ''} into Go value of type float64"
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        return _go_json_error(text, e)
    except (ValueError, RecursionError):
        pass
    return "invalid JSON"


def _shape_problem(value: Any) -> str | None:
    """Depth and size of a decoded body, walked without recursion, each shared (aliased) node once."""
    done: dict[int, tuple[int, int]] = {}  # id -> (depth, expanded count of values)
    open_ids: set[int] = set()
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack:
        node, finished = stack.pop()
        children = list(node.values()) if isinstance(node, dict) else node
        if finished:
            depth, count = 1, 1
            for child in children:
                sub = done.get(id(child), (0, 1)) if isinstance(child, (dict, list)) else (0, 1)
                depth, count = max(depth, sub[0] + 1), count + sub[1]
            open_ids.discard(id(node))
            done[id(node)] = (depth, count)
            if depth > MAX_DEPTH:
                return f"exceeded max depth of {MAX_DEPTH}"
            if count > MAX_NODES:
                return f"more than {MAX_NODES} values (YAML aliases expanded)"
            continue
        if not isinstance(node, (dict, list)) or id(node) in done:
            continue
        open_ids.add(id(node))
        stack.append((node, True))
        for child in children:
            if isinstance(child, (dict, list)):
                if id(child) in open_ids:
                    return "a YAML alias refers to a node that contains it"
                stack.append((child, False))
    return None


_GO_KIND = {bool: "bool", int: "number", float: "number", list: "array", dict: "object", str: "string"}


def _go_kind(value: Any) -> str:
    return "null" if value is None else _GO_KIND.get(type(value), "object")


def decode(rtype: ResourceType, body: Any) -> Resource:
    """Validate the shape and rules of a request body and build the Resource it describes.

    Mirrors Kuma's unmarshal: structural schema (wrapped types) or proto shape (legacy types),
    then the type's own validator. Meta is checked later, against the URL.
    """
    if not isinstance(body, dict):
        raise bad_request(f"invalid {rtype.name} object: \"json: cannot unmarshal {_go_kind(body)} into Go value "
                          f"of type map[string]interface {{}}\"")
    for field in ("type", "name", "mesh"):
        value = body.get(field)
        if value is not None and not isinstance(value, str):
            raise bad_request(f"invalid {rtype.name} object: \"json: cannot unmarshal {_go_kind(value)} into Go "
                              f"struct field ResourceMeta.{field} of type string\"")
    labels = body.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        bad = labels if not isinstance(labels, dict) else next(v for v in labels.values() if not isinstance(v, str))
        raise bad_request(f"invalid {rtype.name} object: \"json: cannot unmarshal {_go_kind(bad)} into Go struct "
                          f"field ResourceMeta.labels of type string\"")
    content = {k: v for k, v in body.items() if k not in META_FIELDS}
    if rtype.wrapped:
        problems: list[str] = []
        if body.get("type") != rtype.name:
            problems.append(f"type in body should be one of [{rtype.name}]")
        spec = content.get("spec")
        if spec is None:
            spec = content["spec"] = {}
        check_schema(rtype.schema or {"type": "object"}, spec, "spec", problems)
        if problems:
            raise ValidationError([_kube_violation(p) for p in problems])
        if bad := first_bad_duration(rtype.schema or {}, spec, "spec"):
            # what Kuma's json.Unmarshal says; the field is named too, which Kuma's answer does not
            raise KumaError(400, "Bad Request", f"invalid {rtype.name} object: {go_quote(bad[1])}", [Violation(*bad)])
        # status belongs to the control plane: never taken from a request
        content = {"spec": content["spec"], **({"status": {}} if rtype.has_status else {})}
    else:
        problems = []
        check_schema(rtype.schema or {"type": "object"}, content, "", problems)
        if problems:
            raise bad_request(f"invalid {rtype.name} object: \"{problems[0]}\"")
        # jsonpb drops fields the proto does not have; so do we, rather than store them
        content = prune(rtype.schema or {}, content)
    found = Violations()
    if rtype.max_name_length:
        shown = labels.get("kuma.io/display-name") or str(body.get("name") or "")
        if len(shown) > rtype.max_name_length:
            found.add("name", f"must not be longer than {rtype.max_name_length} characters")
    if rtype.validate:
        rtype.validate(content, found)
    found.raise_if_any()
    return Resource(type=str(body.get("type") or ""), mesh=str(body.get("mesh") or ""),
                    name=str(body.get("name") or ""), content=content, labels=dict(labels))


def _kube_violation(problem: str) -> Violation:
    head, _, rest = problem.partition(" ")
    if head.startswith("spec.") or head == "spec":
        return Violation(head, rest)
    return Violation("", problem)


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)
