"""`kumactl apply -f FILE|DIR|URL|- [-v key=value] [--dry-run]`: create or update resources."""
from __future__ import annotations

import argparse
import base64
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from appliance.gocompat import go_quote
from appliance.kumactl import printers
from appliance.kumactl.client import ApiError, CliError, decode
from appliance.kumactl.flags import KeyValues
from appliance.kumactl.resources import BY_NAME, KumactlType

if TYPE_CHECKING:
    from appliance.kumactl.context import Context

_EXTENSIONS = (".yaml", ".yml", ".json")
_SEPARATOR = re.compile(r"(?:^|[\t\n\f\r ]*\n)---[\t\n\f\r ]*")
_WHOLE_COMMENT = re.compile(r"^#[^\n]*\Z")
_IDENTIFIER = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LEGACY_MESH = re.compile(r"^[0-9a-z-_.]*$")
_MUSTACHE = re.compile(r"\{\{\{\s*([^{}]*?)\s*\}\}\}|\{\{\s*(&?)\s*([^{}!#^/>]*?)\s*\}\}")
_ZERO_TIME = "0001-01-01T00:00:00Z"


@dataclass
class Document:
    index: int      # position among the non-empty documents: resource[index]
    text: str
    line: int       # line of the input where the document starts (1-based)
    origin: str     # the file it came from, when applying a directory


class _Loader(yaml.SafeLoader):
    """YAML as Kuma reads it (YAML to JSON): timestamps stay strings."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


# --- reading ----------------------------------------------------------------------------------

def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise CliError(f"error while reading provided file: open {path}: {(e.strerror or str(e)).lower()}") from e


def _read_directory(path: str) -> tuple[str, list[tuple[int, str]]]:
    files = sorted(os.path.join(path, name) for name in os.listdir(path)
                   if os.path.splitext(name)[1].lower() in _EXTENSIONS and os.path.isfile(os.path.join(path, name)))
    text, origins = "", []
    for file in files:
        if text:
            text += "\n---\n"
        origins.append((text.count("\n"), file))
        text += _read_file(file)
    return text, origins


def read_input(ctx: Context, source: str) -> tuple[str, list[tuple[int, str]]]:
    """The text to apply and, for a directory, where each file starts (line offset, path)."""
    try:
        return _read_input(ctx, source)
    except UnicodeDecodeError as e:
        raise CliError(f"error while reading provided file: it is not UTF-8 text ({e.reason} at byte {e.start})") from e


def _read_input(ctx: Context, source: str) -> tuple[str, list[tuple[int, str]]]:
    if source == "-":
        return ctx.stdin.read(), []
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=10) as resp:
                return resp.read().decode("utf-8"), []
        except urllib.error.HTTPError as e:
            raise CliError("error while retrieving URL") from e
        except (urllib.error.URLError, OSError) as e:
            raise CliError(f"error with GET http request: {getattr(e, 'reason', e)}") from e
    if not os.path.exists(source):
        raise CliError(f"error while reading provided file: stat {source}: no such file or directory")
    if os.path.isdir(source):
        return _read_directory(source)
    return _read_file(source), []


def split_documents(text: str, origins: list[tuple[int, str]] | None = None) -> list[Document]:
    """Kuma's SplitYAML: `---` separated documents, blank ones and lone comment lines dropped."""
    stripped = text.strip()
    base = len(text) - len(text.lstrip())
    starts, pos = [], 0
    for m in _SEPARATOR.finditer(stripped):
        starts.append((pos, m.start()))
        pos = m.end()
    starts.append((pos, len(stripped)))
    docs: list[Document] = []
    for begin, end in starts:
        raw = stripped[begin:end]
        if not raw or _WHOLE_COMMENT.match(raw):
            continue
        body = raw.strip()
        offset = base + begin + (len(raw) - len(raw.lstrip()))
        line = text.count("\n", 0, offset)
        origin, first = "", 0
        for file_start, path in origins or []:
            if file_start <= line:
                origin, first = path, file_start
        line -= first
        docs.append(Document(len(docs), body, line + 1, origin))
    return docs


def render(text: str, values: dict[str, str]) -> str:
    """Mustache variables (`{{ name }}`, HTML-escaped; `{{{ name }}}` and `{{& name }}` raw)."""
    def value(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return values.get(m.group(1), "")
        raw = values.get(m.group(3), "")
        if m.group(2):
            return raw
        for ch, esc in (("&", "&amp;"), ('"', "&quot;"), ("'", "&apos;"), ("<", "&lt;"), (">", "&gt;")):
            raw = raw.replace(ch, esc)
        return raw
    return _MUSTACHE.sub(value, text)


# --- parsing ------------------------------------------------------------------------------------

def _identifier_error(value: str, pattern: re.Pattern[str], message: str) -> str:
    if value == "":
        return "cannot be empty"
    if len(value) > 253:
        return "value length must less or equal 253"
    return "" if pattern.match(value) else message


def parse_document(doc: Document, text: str) -> tuple[KumactlType, dict[str, Any]]:
    """The resource in a document; CliError says, as Kuma does, why it cannot be applied."""
    where = f"resource[{doc.index}]"
    try:
        data = _jsonable(yaml.load(text, Loader=_Loader))  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f"line {doc.line + mark.line}: " if mark is not None else ""
        file = f" ({doc.origin})" if doc.origin else ""
        problem = go_quote(f"error converting YAML to JSON: yaml: {line}{e.problem or e.context}")
        raise CliError(f"{where}: failed to parse resource: invalid meta type: {problem}{file}") from e
    except yaml.YAMLError as e:
        raise CliError(f"{where}: failed to parse resource: invalid meta type: {go_quote(str(e))}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problem = ("error unmarshaling JSON: while decoding JSON: json: cannot unmarshal "
                   f"{_go_type(data)} into Go value of type v1alpha1.ResourceMeta")
        raise CliError(f"{where}: failed to parse resource: invalid meta type: {go_quote(problem)}")
    for key in ("type", "mesh", "name"):
        if key in data and data[key] is not None and not isinstance(data[key], str):
            problem = ("error unmarshaling JSON: while decoding JSON: json: cannot unmarshal "
                       f"{_go_type(data[key])} into Go struct field ResourceMeta.{key} of type string")
            raise CliError(f"{where}: failed to parse resource: invalid meta type: {go_quote(problem)}")
    rtype = BY_NAME.get(data.get("type") or "")
    if rtype is None:
        raise CliError(f'{where}: failed to parse resource: invalid resource type {go_quote(data.get("type") or "")}')
    violations = []
    name_error = _identifier_error(data.get("name") or "", _IDENTIFIER,
                                   "invalid characters. A lowercase RFC 1123 subdomain must consist of lower case "
                                   "alphanumeric characters, '-' or '.', and must start and end with an "
                                   "alphanumeric character")
    if name_error:
        violations.append(f"name: {name_error}")
    if rtype.mesh_scoped:
        mesh_error = _identifier_error(data.get("mesh") or "", _LEGACY_MESH,
                                       "invalid characters. Valid characters are numbers, lowercase latin letters "
                                       "and '-', '_', '.' symbols.")
        if mesh_error:
            violations.append(f"mesh: {mesh_error}")
    if violations:
        raise CliError(f"{where}: failed to read meta: {'; '.join(violations)}")
    return rtype, data


# --- applying -----------------------------------------------------------------------------------

_NOT_SENT = ("creationTime", "modificationTime", "kri")


def _request_body(rtype: KumactlType, data: dict[str, Any]) -> dict[str, Any]:
    """What Kuma's kumactl sends: the meta (type, mesh, name, labels) and the spec."""
    body = {k: v for k, v in data.items() if k not in _NOT_SENT and not (rtype.wrapped and k == "status")}
    if not rtype.mesh_scoped:
        body.pop("mesh", None)
    return body


def dry_run_yaml(rtype: KumactlType, data: dict[str, Any]) -> str:
    """The resource as Kuma's `apply --dry-run` prints it."""
    out: dict[str, Any] = {k: v for k, v in data.items() if k not in _NOT_SENT}
    if not rtype.mesh_scoped:
        out.pop("mesh", None)
    out.update(creationTime=_ZERO_TIME, modificationTime=_ZERO_TIME)
    if rtype.short_name:
        labels = data.get("labels") or {}
        out["kri"] = (f"kri_{rtype.short_name}_{data.get('mesh', '') if rtype.mesh_scoped else ''}_"
                      f"{labels.get('kuma.io/zone', '')}_{labels.get('k8s.kuma.io/namespace', '')}_{data['name']}_")
    return printers.resource_to_yaml(out, rtype.wrapped)


def _run(ctx: Context) -> None:
    a = ctx.args
    text, origins = read_input(ctx, a.file)
    if not text:
        raise CliError("no resource(s) passed to apply")
    resources: list[tuple[KumactlType, dict[str, Any]]] = []
    failed = False
    for doc in split_documents(text, origins):
        try:
            resources.append(parse_document(doc, render(doc.text, a.var) if a.var else doc.text))
        except CliError as e:
            ctx.err.write(f"{e}\n")
            failed = True
    if failed:
        raise CliError("failed to validate some resources")
    if a.dry_run:
        ctx.out.write("---\n".join(dry_run_yaml(rtype, data) for rtype, data in resources))
        return
    client = ctx.connected_client()
    for rtype, data in resources:
        mesh, name = data.get("mesh") or "", data["name"]
        what = f'resource type="{rtype.name}" mesh="{mesh}" name="{name}"'
        try:
            status, raw = client.call("PUT", rtype.item_path(mesh, name), body=_request_body(rtype, data))
        except ApiError as e:
            raise CliError(f"{what}: failed server side: {e.formatted()}") from e
        ctx.out.write(f"{what} {'Created' if status == 201 else 'Updated'}\n")
        answer = decode(raw) if raw.strip() else {}
        for warning in (answer.get("warnings") if isinstance(answer, dict) else None) or []:
            ctx.err.write(f"Warning: {warning}\n")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("apply", parents=[common], help="Create or modify Kuma resources",
                       description="Create or modify Kuma resources.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  kumactl apply -f resource.yaml\n  kumactl apply -f resources/\n"
                              "  echo 'type: Mesh\n  name: demo' | kumactl apply -f -\n"
                              "  kumactl apply -f dataplane.yaml -v address=10.0.0.1")
    p.add_argument("-f", "--file", required=True,
                   help="Path to file or directory to apply (.yaml, .yml and .json files), a URL, or - for stdin")
    p.add_argument("-v", "--var", action=KeyValues,
                   help="Variable to replace in configuration (key=value)")
    p.add_argument("--dry-run", action="store_true", help="Resolve variable and prints result out without actual "
                                                          "applying")
    p.set_defaults(run=_run)

