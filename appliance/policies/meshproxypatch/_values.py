"""A MeshProxyPatch `value`: YAML of an Envoy resource, read into its protobuf message as Kuma reads it.

As Kuma (util_proto.FromYAML: YAML to JSON, then jsonpb with unknown fields allowed), then for an added
resource the message's protoc-gen-validate rules (Kuma calls `Validate()`, which stops at the first
problem). Types named by `@type` in a `typedConfig` are found by importing the `*_pb2` modules of their
package, and only of Envoy's API packages: a policy must not make the control plane import other code.
The frozen kuma-cp holds only the modules listed in build/hidden-imports.txt besides those the code imports.
"""
from __future__ import annotations

import importlib
import json
import pkgutil
import re
from functools import lru_cache
from typing import Any, Iterator

import yaml
from google.protobuf import descriptor, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from validate import validate_pb2

MESSAGES: dict[str, type[Message]] = {
    "cluster": cluster_pb2.Cluster,
    "listener": listener_pb2.Listener,
    "networkFilter": listener_components_pb2.Filter,
    "httpFilter": hcm_pb2.HttpFilter,
    "virtualHost": route_components_pb2.VirtualHost,
}

# Packages whose message types a patch may name in `@type`: Envoy's API and the types it embeds.
_TYPE_NAME = re.compile(r"(envoy|xds|udpa|google\.protobuf)(\.[a-z0-9_]+)*\.[A-Za-z0-9_]+")


class InvalidValue(ValueError):
    """A value that is not the Envoy resource it should be; the text is what the API answers."""


# Far deeper and larger than any Envoy resource; bounds the work a value can ask for (aliases can nest a
# document exponentially, or in a cycle, in a few bytes).
MAX_DEPTH = 100
MAX_NODES = 100_000


def _load_document(text: str) -> Any:
    try:
        document = yaml.safe_load(text)
    except RecursionError:
        raise InvalidValue(f"nested deeper than {MAX_DEPTH} levels") from None
    except yaml.YAMLError:
        # sigs.k8s.io/yaml fails, and Kuma hands the text to the JSON decoder as it is
        try:
            document = json.loads(text)
        except RecursionError:
            raise InvalidValue(f"nested deeper than {MAX_DEPTH} levels") from None
        except json.JSONDecodeError as e:
            raise InvalidValue("unexpected EOF" if e.pos >= len(text.rstrip())
                               else f"invalid character at offset {e.pos}") from None
    _check_size(document)
    return document


def _check_size(document: Any) -> None:
    """Walk the document without recursion; InvalidValue when it is too deep or has too many nodes."""
    stack, nodes = [(document, 1)], 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if depth > MAX_DEPTH:
            raise InvalidValue(f"nested deeper than {MAX_DEPTH} levels")
        if nodes > MAX_NODES:
            raise InvalidValue(f"more than {MAX_NODES} values")
        if isinstance(node, dict):
            stack.extend((item, depth + 1) for item in node.values())
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)


def _type_names(document: Any) -> Iterator[str]:
    if isinstance(document, dict):
        for key, value in document.items():
            if key == "@type" and isinstance(value, str):
                yield value.rsplit("/", 1)[-1]
            else:
                yield from _type_names(value)
    elif isinstance(document, list):
        for item in document:
            yield from _type_names(item)


@lru_cache(maxsize=512)
def resolve(full_name: str) -> bool:
    """Make a message type known to the default pool by importing its package's modules."""
    pool = descriptor_pool.Default()
    try:
        pool.FindMessageTypeByName(full_name)
        return True
    except KeyError:
        pass
    if not _TYPE_NAME.fullmatch(full_name):
        return False
    package = full_name.rsplit(".", 1)[0]
    try:
        module = importlib.import_module(package)
    except ImportError:
        return False
    # pkgutil, not a directory listing: in the frozen kuma-cp the modules live in its archive
    for found in pkgutil.iter_modules(getattr(module, "__path__", ())):
        if found.name.endswith("_pb2"):
            importlib.import_module(f"{package}.{found.name}")
    try:
        pool.FindMessageTypeByName(full_name)
        return True
    except KeyError:
        return False


def new_message(full_name: str) -> Message:
    """An empty message of a type named in a type URL (InvalidValue when no Envoy API type has that name)."""
    if not resolve(full_name):
        raise InvalidValue(f'unable to resolve "type.googleapis.com/{full_name}": "not found"')
    return message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(full_name))()


def parse(kind: str, text: str) -> Message:
    """The value as the Envoy message of `kind` (InvalidValue with Kuma-like text when it is not one)."""
    document = _load_document(text)
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise InvalidValue(f"expected an object of {MESSAGES[kind].DESCRIPTOR.name}, got {type(document).__name__}")
    for name in _type_names(document):
        if not resolve(name):
            raise InvalidValue(f'unable to resolve "type.googleapis.com/{name}": "not found"')
    message = MESSAGES[kind]()
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError) as e:
        raise InvalidValue(str(e)) from None
    return message


_PEM_PRIVATE_KEY = "PRIVATE KEY-----"
_INLINE = ("inlineBytes", "inlineString", "inline_bytes", "inline_string")


def holds_private_key(document: Any, key: str = "") -> bool:
    """Whether a value (or a JSON patch's value, set at `key`) puts a private key in the policy: a PEM key
    anywhere, or an inline data source under `privateKey` (a TLS certificate's key)."""
    if isinstance(document, str):
        try:
            document = _load_document(document) if _PEM_PRIVATE_KEY not in document else document
        except InvalidValue:
            return False
    stack = [(document, key)]
    while stack:
        node, under = stack.pop()
        if isinstance(node, str) and _PEM_PRIVATE_KEY in node:
            return True
        if isinstance(node, dict):
            if under in ("privateKey", "private_key") and any(k in node for k in _INLINE):
                return True
            stack.extend((item, str(name)) for name, item in node.items())
        elif isinstance(node, list):
            stack.extend((item, under) for item in node)
    return False


def ignored_field(kind: str, text: Any) -> str | None:
    """The first field of a value that parses that Envoy's type does not have (Kuma ignores it silently), as
    'no field named "x" at "Cluster.y"', or None."""
    try:
        document = _load_document(str(text))
        if not isinstance(document, dict) or not all(resolve(name) for name in _type_names(document)):
            return None
        json_format.ParseDict(document, MESSAGES[kind]())
    except InvalidValue:
        return None
    except (json_format.ParseError, TypeError, ValueError) as e:
        first = str(e).split("\n", 1)[0]
        if "has no field named" in first:
            return "no field named" + first.split("has no field named", 1)[1].rstrip(".")
    return None


def check_added(kind: str, text: Any) -> str | None:
    """ValidateResourceYAML: what is wrong with a resource to add, or None."""
    try:
        message = parse(kind, str(text))
    except InvalidValue as e:
        return str(e)
    return first_violation(message)


def check_patch(kind: str, text: Any) -> str | None:
    """ValidateResourceYAMLPatch: a partial resource need only parse."""
    try:
        parse(kind, str(text))
    except InvalidValue as e:
        return str(e)
    return None


# --- protoc-gen-validate: the rules Envoy's API declares, as its generated Validate() checks them -------

def _go_name(field: descriptor.FieldDescriptor) -> str:
    return "".join(part[:1].upper() + part[1:] for part in field.name.split("_"))


def _duration_nanos(value: Any) -> int:
    return value.seconds * 10**9 + value.nanos


def _duration_text(value: Any) -> str:
    nanos = _duration_nanos(value)
    return f"{nanos / 1e9:g}s"


def _scalar_problem(kind: str, rules: Any, value: Any) -> str | None:
    checks = getattr(rules, kind)
    if kind == "string":
        if checks.ignore_empty and not value:
            return None
        if checks.HasField("min_len") and len(value) < checks.min_len:
            return f"value length must be at least {checks.min_len} runes"
        if checks.HasField("max_len") and len(value) > checks.max_len:
            return f"value length must be at most {checks.max_len} runes"
        if checks.HasField("prefix") and not value.startswith(checks.prefix):
            return f'value does not have prefix "{checks.prefix}"'
        return None
    if kind == "enum":
        return None
    for bound, fails, words in (("gt", lambda v, b: v <= b, "greater than"),
                                ("gte", lambda v, b: v < b, "greater than or equal to"),
                                ("lt", lambda v, b: v >= b, "less than"),
                                ("lte", lambda v, b: v > b, "less than or equal to")):
        if checks.HasField(bound) and fails(value, getattr(checks, bound)):
            return f"value must be {words} {getattr(checks, bound)}"
    return None


_SCALARS = {"uint32", "uint64", "int32", "int64", "double", "float", "string", "sint32", "sint64",
            "fixed32", "fixed64", "sfixed32", "sfixed64"}


def _message_problem(rules: Any, value: Message) -> str | None:
    kind = rules.WhichOneof("type")
    if kind == "duration":
        nanos, checks = _duration_nanos(value), rules.duration
        for bound, fails, words in (("gt", lambda v, b: v <= b, "greater than"),
                                    ("gte", lambda v, b: v < b, "greater than or equal to"),
                                    ("lt", lambda v, b: v >= b, "less than"),
                                    ("lte", lambda v, b: v > b, "less than or equal to")):
            if checks.HasField(bound) and fails(nanos, _duration_nanos(getattr(checks, bound))):
                return f"value must be {words} {_duration_text(getattr(checks, bound))}"
    return None


def first_violation(message: Message, prefix: str = "") -> str | None:
    """The first protoc-gen-validate violation in `message` (and the messages it holds), as Go prints it."""
    desc = message.DESCRIPTOR
    where = f"{prefix}invalid {desc.name}."
    for oneof in desc.oneofs:
        if oneof.GetOptions().Extensions[validate_pb2.required] and message.WhichOneof(oneof.name) is None:
            return f"{where}{''.join(p.title() for p in oneof.name.split('_'))}: value is required"
    for field in desc.fields:
        options = field.GetOptions()
        rules = options.Extensions[validate_pb2.rules] if options.HasExtension(validate_pb2.rules) else None
        in_oneof = field.containing_oneof is not None
        if in_oneof and message.WhichOneof(field.containing_oneof.name) != field.name:
            continue
        value = getattr(message, field.name)
        label = f"{where}{_go_name(field)}: "
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if field.is_repeated:
            if rules is not None:
                kind = rules.WhichOneof("type")
                if kind == "repeated":
                    if rules.repeated.HasField("min_items") and len(value) < rules.repeated.min_items:
                        return f"{label}value must contain at least {rules.repeated.min_items} item(s)"
                    if rules.repeated.HasField("max_items") and len(value) > rules.repeated.max_items:
                        return f"{label}value must contain no more than {rules.repeated.max_items} item(s)"
                    item_rules = rules.repeated.items
                    item_kind = item_rules.WhichOneof("type")
                    if item_kind in _SCALARS:
                        for i, item in enumerate(value):
                            if (problem := _scalar_problem(item_kind, item_rules, item)):
                                return f"{where}{_go_name(field)}[{i}]: {problem}"
                elif kind == "map" and rules.map.HasField("min_pairs") and len(value) < rules.map.min_pairs:
                    return f"{label}value must contain at least {rules.map.min_pairs} pair(s)"
            if field.message_type is not None:
                items = value.values() if is_map else value
                if is_map and field.message_type.fields_by_name["value"].message_type is None:
                    continue
                for i, item in enumerate(items):
                    found = first_violation(item)
                    if found:
                        return f"{where}{_go_name(field)}[{i}]: embedded message failed validation | caused by: " \
                               + found
            continue
        if field.message_type is not None:
            present = message.HasField(field.name)
            if rules is not None and rules.message.required and not present:
                return f"{label}value is required"
            if not present:
                continue
            if rules is not None and (problem := _message_problem(rules, value)):
                return label + problem
            if field.message_type.full_name == "google.protobuf.Any":
                continue   # Go's Validate() does not look inside an Any
            if rules is None or not rules.message.skip:
                found = first_violation(value)
                if found:
                    return f"{label}embedded message failed validation | caused by: {found}"
            continue
        if rules is None:
            continue
        kind = rules.WhichOneof("type")
        if kind == "enum" and rules.enum.defined_only and field.enum_type.values_by_number.get(value) is None:
            return f"{label}value must be one of the defined enum values"
        if kind in _SCALARS and (problem := _scalar_problem(kind, rules, value)):
            return label + problem
    return None
