"""`--dataplane-var` templating: the mustache dialect Kuma 2.14 renders dataplane templates with.

Kuma renders `--dataplane`/`--dataplane-file` with github.com/hoisie/mustache (pkg/util/template),
not Go's text/template, so the syntax is `{{ name }}`, and these are the rules users depend on:
- `{{ name }}` is HTML-escaped (`&` becomes `&amp;`), `{{{ name }}}` is not;
- `a.b=x` makes a nested value, read back with `{{ a.b }}`;
- an undefined name renders as nothing (so `{{ .name }}`, Go template style, renders as nothing:
  we keep that, and report such names so the user can see why a field came out empty);
- `{{# name }}...{{/ name }}` renders when the name is defined (even as ""), `{{^ name }}` when not;
- `{{! comment }}` and `{{=<% %>=}}` (new delimiters) work; the newline after a section tag is eaten.
Partials (`{{> file}}`) read files in Kuma; a dataplane template has no use for them: refused here.
"""
from __future__ import annotations

import csv
from typing import Any, Mapping, NamedTuple

from appliance.dp.config import DpError


class TemplateError(DpError):
    pass


class Rendered(NamedTuple):
    text: str
    undefined: list[str]  # names the template used that no --dataplane-var defined


def parse_vars(values: list[str]) -> dict[str, str]:
    """`--dataplane-var` values as Kuma's flag library reads them: `k=v`, or several as `k1=v1,k2=v2`.

    A value with one `=` is one pair (commas and all); with more, it is read as a CSV line.
    Repeating the flag adds pairs; a later key wins.
    """
    out: dict[str, str] = {}
    for value in values:
        n = value.count("=")
        if n == 0:
            raise TemplateError(f"--dataplane-var {value!r} must be formatted as key=value")
        pairs = [value.strip('"')] if n == 1 else next(csv.reader([value]))
        for pair in pairs:
            key, sep, val = pair.partition("=")
            if not sep:
                raise TemplateError(f"--dataplane-var {pair!r} must be formatted as key=value")
            out[key] = val
    return out


def _context(values: Mapping[str, str]) -> dict[str, Any]:
    """`a.b=x` becomes {"a": {"b": "x"}}, as Kuma builds its context; siblings are merged."""
    root: dict[str, Any] = {}
    for key, value in values.items():
        node = root
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    return root


# --- parsing --------------------------------------------------------------------------------

class _Var(NamedTuple):
    name: str
    raw: bool


class _Section(NamedTuple):
    name: str
    inverted: bool
    children: list[Any]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.otag, self.ctag = "{{", "}}"

    def error(self, message: str, at: int | None = None) -> TemplateError:
        line = self.text.count("\n", 0, self.pos if at is None else at) + 1
        return TemplateError(f"dataplane template, line {line}: {message}")

    def parse(self, section: str | None = None, opened_at: int = 0) -> list[Any]:
        out: list[Any] = []
        while True:
            start = self.text.find(self.otag, self.pos)
            if start < 0:
                if section is not None:
                    raise self.error(f"section {section!r} has no closing tag", opened_at)
                out.append(self.text[self.pos:])
                return out
            out.append(self.text[self.pos:start])
            body_at = start + len(self.otag)
            close = ("}" + self.ctag) if self.text.startswith("{", body_at) else self.ctag
            end = self.text.find(close, body_at)
            if end < 0:
                self.pos = start
                raise self.error("unmatched open tag")
            self.pos = end + len(close)
            tag = self.text[body_at:end + len(close) - len(self.ctag)].strip()
            if not tag:
                raise self.error("empty tag")
            kind = tag[0]
            if kind == "!":
                continue
            if kind in "#^":
                name = tag[1:].strip()
                # The newline right after a section's opening tag is not output.
                if self.text.startswith("\n", self.pos):
                    self.pos += 1
                elif self.text.startswith("\r\n", self.pos):
                    self.pos += 2
                out.append(_Section(name, kind == "^", self.parse(name, start)))
            elif kind == "/":
                name = tag[1:].strip()
                if section is None:
                    raise self.error(f"unmatched close tag {name!r}")
                if name != section:
                    raise self.error(f"interleaved closing tag: {name!r} (open: {section!r})")
                return out
            elif kind == ">":
                raise self.error("partials ({{> name}}) are not supported in dataplane templates")
            elif kind == "=":
                if not tag.endswith("=") or len(tag.strip("= ").split()) != 2:
                    raise self.error("invalid delimiter tag (example: {{=<% %>=}})")
                self.otag, self.ctag = tag.strip("= ").split()
            elif kind == "{":
                if tag.endswith("}"):
                    out.append(_Var(tag[1:-1].strip(), True))
            else:
                out.append(_Var(tag, False))


# --- rendering ------------------------------------------------------------------------------

_ESCAPES = {"&": "&amp;", "'": "&#39;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "\0": "\ufffd"}


def _escape(text: str) -> str:
    """Go's template.HTMLEscapeString, which the mustache library uses for `{{ name }}`."""
    return "".join(_ESCAPES.get(c, c) for c in text)


def _go_sprint(value: Any) -> str:
    """How Go prints a value: a nested map (from `a.b=x`) as `map[b:x]`, keys sorted."""
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_sprint(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def _lookup(chain: list[Any], name: str) -> Any:
    if name == ".":
        return chain[0]
    if "." in name:
        head, rest = name.split(".", 1)
        return _lookup([_lookup(chain, head)], rest)
    for ctx in chain:
        if isinstance(ctx, dict) and name in ctx:
            return ctx[name]
    return None


def _render(nodes: list[Any], chain: list[Any], out: list[str], undefined: list[str]) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Var):
            value = _lookup(chain, node.name)
            if value is None:
                if node.name not in undefined:
                    undefined.append(node.name)
                continue
            text = _go_sprint(value)
            out.append(text if node.raw else _escape(text))
        else:
            value = _lookup(chain, node.name)
            if (value is None) != node.inverted:
                continue
            # A map opens a new scope; anything else renders once in the outermost scope.
            scope = value if isinstance(value, dict) and not node.inverted else chain[-1]
            _render(node.children, [scope, *chain], out, undefined)


def render(template: str, values: Mapping[str, str]) -> Rendered:
    nodes = _Parser(template).parse()
    out: list[str] = []
    undefined: list[str] = []
    _render(nodes, [_context(values)], out, undefined)
    return Rendered("".join(out), undefined)
