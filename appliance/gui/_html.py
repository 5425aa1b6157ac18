"""Safe HTML building: every value is escaped unless it is already `Html` (built here from escaped parts).

Templates are `string.Template` files in templates/; `render` escapes each substituted value, so a
resource name or label (user input) can only ever show up as text.
"""
from __future__ import annotations

import html
import json
from functools import lru_cache
from importlib import resources
from string import Template
from typing import Any, Iterable, Sequence
from urllib.parse import quote

import yaml


class Html(str):
    """A string that is already safe HTML."""


def esc(value: Any) -> Html:
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[Any], sep: str = "") -> Html:
    return Html(sep.join(esc(p) for p in parts))


def tag(name: str, content: Any = "", **attrs: Any) -> Html:
    """`<name attr="...">content</name>`; `class_` gives `class`; attributes that are None are left out."""
    shown = "".join(f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"' for k, v in attrs.items() if v is not None)
    return Html(f"<{name}{shown}>{esc(content)}</{name}>")


INTERNAL_BASE = "/gui"


def url(*segments: str) -> str:
    """A GUI path from raw segments (names may hold any character): /gui/a/b (see `rebase`)."""
    return INTERNAL_BASE + "".join("/" + quote(s, safe="") for s in segments if s)


def rebase(page: str, base: str) -> str:
    """Links are written under /gui (`url`, the templates); a GUI served or reached elsewhere gets them moved
    once per page. Only our own attributes can hold `="/gui`: every value put into a page is escaped,
    quotes included, so no name or label can be rewritten by this."""
    if base == INTERNAL_BASE:
        return page
    return page.replace(f'="{INTERNAL_BASE}/', f'="{base.rstrip("/")}/').replace(f'="{INTERNAL_BASE}"', f'="{base}"')


def link(href: str, text: Any) -> Html:
    return tag("a", text, href=href)


def status(text: str) -> Html:
    """A status word with the class the stylesheet colours (Online, Offline, Partially degraded, ...)."""
    return tag("span", text, class_="status status-" + text.lower().replace(" ", "-").replace("_", "-"))


def labels(values: dict[str, str]) -> Html:
    return join(tag("span", f"{k}={v}", class_="label") for k, v in sorted(values.items()))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], empty: str = "none", id: str | None = None) -> Html:
    body = [tag("tr", join(tag("td", cell) for cell in row)) for row in rows]
    if not body:
        return tag("p", empty, class_="empty", id=id)
    head = tag("thead", tag("tr", join(tag("th", h) for h in headers)))
    return tag("table", join([head, tag("tbody", join(body))]), id=id)


def pre_yaml(value: Any) -> Html:
    return tag("pre", yaml.safe_dump(value, sort_keys=False, default_flow_style=False, allow_unicode=True))


def pre_json(value: Any) -> Html:
    return tag("pre", json.dumps(value, indent=2, sort_keys=False))


@lru_cache(maxsize=None)
def _template(name: str) -> Template:
    return Template(resources.files("appliance.gui").joinpath("templates", name).read_text(encoding="utf-8"))


def render(name: str, **values: Any) -> Html:
    """templates/<name> with each value escaped (unless Html); a missing value is an error, not a blank."""
    return Html(_template(name).substitute({k: esc(v) for k, v in values.items()}))
