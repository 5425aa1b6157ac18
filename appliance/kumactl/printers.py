"""Output as Kuma's kumactl writes it: aligned tables, YAML (go-yaml's style) and indented JSON.

Tables follow Go's text/tabwriter with kumactl's settings (padding 3, every cell but the last of a
row padded). YAML follows sigs.k8s.io/yaml: keys in go-yaml's order, strings that would read back
as something else double-quoted. JSON follows encoding/json's MarshalIndent.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, TextIO

import yaml

from appliance.kumactl.client import CliError

PADDING = 3
# Go's time.Duration is an int64 of nanoseconds: differences beyond ~292 years saturate.
_MAX_DURATION_SECONDS = 9223372036.854775807


# --- tables ------------------------------------------------------------------------------------

@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    footer: str = ""

    def render(self) -> str:
        lines = [self.headers, *self.rows] if self.headers else list(self.rows)
        columns = max((len(line) for line in lines), default=0)
        widths = [max([len(line[c]) + PADDING for line in lines if c < len(line) - 1] + [1])
                  for c in range(columns)]
        out = []
        for line in lines:
            cells = [cell.ljust(widths[c]) for c, cell in enumerate(line[:-1])]
            out.append("".join(cells) + (line[-1] if line else "") + "\n")
        if self.footer:
            out.append(f"\n{self.footer}\n")
        return "".join(out)


def pagination_footer(next_offset: str) -> str:
    if not next_offset:
        return ""
    return f"Rerun command with --offset={next_offset} argument to retrieve more resources"


# --- times -------------------------------------------------------------------------------------

_TS = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|z|[+-]\d{2}:\d{2})?$")


def parse_time(text: Any) -> datetime | None:
    """An RFC 3339 timestamp as Kuma writes it (nanoseconds allowed); None if absent or unreadable."""
    if not isinstance(text, str) or not text:
        return None
    m = _TS.match(text.strip())
    if not m:
        return None
    day, clock, fraction, zone = m.groups()
    micro = (fraction or "")[:6].ljust(6, "0")
    offset = "+00:00" if zone in (None, "Z", "z") else zone
    try:
        return datetime.fromisoformat(f"{day}T{clock}.{micro}{offset}")
    except ValueError:
        return None


def duration(seconds: float) -> str:
    """kumactl's short duration: 42s, 5m, 3h, 12d, 2y; "never" for the (far) future."""
    seconds = max(-_MAX_DURATION_SECONDS, min(_MAX_DURATION_SECONDS, seconds))
    whole = int(seconds)
    if whole < -1:
        return "never"
    if whole < 0:
        return "0s"
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    hours = whole // 3600
    if hours < 24:
        return f"{hours}h"
    if hours < 24 * 365:
        return f"{hours // 24}d"
    return f"{int(seconds / 3600 / 24 / 365)}y"


def _seconds_between(then: datetime, now: datetime) -> float:
    # Python datetimes cannot reach year 1 minus 292 years; compute in float seconds instead.
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (now - epoch).total_seconds() - (then - epoch).total_seconds()


def age(timestamp: Any, now: datetime) -> str:
    """AGE column: time since a resource's modificationTime."""
    then = parse_time(timestamp)
    if then is None:
        then = datetime(1, 1, 1, tzinfo=timezone.utc)
    return duration(_seconds_between(then, now))


def ago(timestamp: Any, now: datetime) -> str:
    then = parse_time(timestamp)
    return "never" if then is None else duration(_seconds_between(then, now))


def date(timestamp: Any, now: datetime) -> str:
    then = parse_time(timestamp)
    if then is None:
        return "-"
    return then.astimezone(now.tzinfo).strftime("%Y-%m-%d %H:%M:%S")


# --- JSON --------------------------------------------------------------------------------------

def to_json(data: Any) -> str:
    """encoding/json's MarshalIndent(data, "", "  ") plus a newline: HTML characters escaped."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text + "\n"


# --- YAML --------------------------------------------------------------------------------------

def _go_key_less(a: str, b: str) -> bool:
    """go-yaml's map key order: digit runs compare as numbers, non-letters before letters."""
    digits = False
    for i in range(min(len(a), len(b))):
        ca, cb = a[i], b[i]
        if ca == cb:
            digits = ca.isdigit()
            continue
        al, bl = ca.isalpha(), cb.isalpha()
        if al and bl:
            return ca < cb
        if al or bl:
            return al if digits else bl
        an = bn = 0
        if ca == "0" or cb == "0":
            j = i - 1
            while j >= 0 and a[j].isdigit():
                if a[j] != "0":
                    an = bn = 1
                    break
                j -= 1
        ai = i
        while ai < len(a) and a[ai].isdigit():
            an = an * 10 + int(a[ai])
            ai += 1
        bi = i
        while bi < len(b) and b[bi].isdigit():
            bn = bn * 10 + int(b[bi])
            bi += 1
        if an != bn:
            return an < bn
        if ai != bi:
            return ai < bi
        return ca < cb
    return len(a) < len(b)


def _go_key_cmp(a: Any, b: Any) -> int:
    a, b = str(a), str(b)
    return -1 if _go_key_less(a, b) else (1 if _go_key_less(b, a) else 0)


_go_key = functools.cmp_to_key(_go_key_cmp)


def sort_keys(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: sort_keys(data[k]) for k in sorted(data, key=_go_key)}
    if isinstance(data, list):
        return [sort_keys(v) for v in data]
    return data


_GO_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_GO_SPECIAL = {"y", "Y", "n", "N", "~", "<<", ""}
_RESOLVER = yaml.resolver.Resolver()


def _reads_back_as_other(text: str) -> bool:
    """Would this string, written plain, read back as a non-string (go-yaml's or PyYAML's view)?"""
    if text in _GO_SPECIAL or _GO_FLOAT.match(text.replace("_", "")):
        return True
    if re.match(r"^[-+]?0[xXoObB]?[0-9a-fA-F_]+$", text):
        return True
    # PyYAML's `yaml` tag is only its guess for indicators such as `*`: go-yaml reads them as strings and
    # writes them single-quoted, as PyYAML does when left to choose
    return _RESOLVER.resolve(yaml.ScalarNode, text, (True, False)) not in ("tag:yaml.org,2002:str",
                                                                           "tag:yaml.org,2002:yaml")


class _GoStyleDumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = None
    if "\n" in data:
        style = "|"
    elif _reads_back_as_other(data):
        style = '"'
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


def _represent_none(dumper: yaml.SafeDumper, _: None) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:null", "null")


_GoStyleDumper.add_representer(str, _represent_str)
_GoStyleDumper.add_representer(type(None), _represent_none)


def to_yaml(data: Any, *, sort: bool = True) -> str:
    if sort:
        data = sort_keys(data)
    return yaml.dump(data, Dumper=_GoStyleDumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=80)


# The meta of a REST resource; everything else is its spec (legacy types) or spec/status.
META_FIELDS = ("type", "mesh", "name", "creationTime", "modificationTime", "labels", "kri")


def resource_to_yaml(resource: dict[str, Any], wrapped: bool) -> str:
    """One resource as `kumactl get -o yaml` prints it: for legacy types the meta first, then the
    spec (each sorted); new-style types (spec/status) as one sorted document."""
    if wrapped:
        return to_yaml(resource)
    meta = {k: v for k, v in resource.items() if k in META_FIELDS}
    spec = {k: v for k, v in resource.items() if k not in META_FIELDS}
    return to_yaml(meta) + (to_yaml(spec) if spec else "")


# --- dispatch ----------------------------------------------------------------------------------

FORMATS = ("table", "yaml", "json")


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise CliError(f'unknown output format "{fmt}"')


def print_data(out: TextIO, fmt: str, data: Any, table: Callable[[], Table],
               yaml_text: Callable[[], str] | None = None) -> None:
    """Print `data` as JSON, YAML or the table built by `table`."""
    if fmt == "json":
        out.write(to_json(data))
    elif fmt == "yaml":
        out.write(yaml_text() if yaml_text else to_yaml(data))
    elif fmt == "table":
        out.write(table().render())
    else:
        check_format(fmt)


def tag_set(tag_maps: Iterable[dict[str, Any]]) -> str:
    """Tags of several inbounds as one string: `k=v1,v2 k2=v` (keys and values sorted)."""
    merged: dict[str, set[str]] = {}
    for tags in tag_maps:
        for key, value in (tags or {}).items():
            merged.setdefault(str(key), set()).add(str(value))
    return " ".join(sorted(f"{k}={','.join(sorted(v))}" for k, v in merged.items()))
