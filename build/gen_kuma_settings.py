"""Write appliance/config/kuma_settings.py: every kuma-cp setting of a Kuma release, as data.

    python3 build/gen_kuma_settings.py [--repo /work/.mirror/kumahq+kuma/repo] [--tag v2.14.3]

Reads a git clone of kumahq/kuma at the tag (no work tree needed):
- the Go config structs under pkg/config (their `json` names give the YAML paths, their `envconfig`
  tags the KUMA_* variables, their Go types the kind of value), walked from kuma-cp's root Config;
- pkg/config/app/kuma-cp/kuma-cp.defaults.yaml for the documented default of each setting;
- kuma-dp's root Config, for the KUMA_* variables that belong to kuma-dp (never reported by kuma-cp).
Only facts (names, variables, defaults) are taken; nothing of Kuma's code is copied.
Run it again when moving to a new Kuma release and review the diff.
"""
from __future__ import annotations

import argparse
import os
import pprint
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

_MODULE = "github.com/kumahq/kuma/v2/"
_OUT = Path(__file__).resolve().parent.parent / "appliance" / "config" / "kuma_settings.py"
# Go types that hold one value even though they are structs (a Duration wraps time.Duration).
_VALUE_STRUCTS = {"Duration"}
# Mappings in the defaults file that are values (a map setting), not sections.
_MAP_VALUED = ("exceptions.labels", "envVars")


class _GoStructs:
    """The struct types of pkg/config, their fields and each directory's imports."""

    def __init__(self, repo: str, tag: str) -> None:
        self.repo, self.tag = repo, tag
        self.types: dict[tuple[str, str], list[tuple[str | None, str, str]]] = {}
        self.imports: dict[str, dict[str, str]] = {}
        names = self._git("ls-tree", "-r", "--name-only", tag, "pkg/config").split()
        for name in names:
            if name.endswith(".go") and not name.endswith("_test.go"):
                self._read(name)

    def _git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", self.repo, *args], capture_output=True, text=True, check=True).stdout

    def _read(self, name: str) -> None:
        folder, src = os.path.dirname(name), self._git("show", f"{self.tag}:{name}")
        imports = self.imports.setdefault(folder, {})
        for m in re.finditer(r'^\s*(?:(\w+)\s+)?"' + re.escape(_MODULE) + r'([^"]+)"', src, re.M):
            imports[m.group(1) or m.group(2).split("/")[-1]] = m.group(2)
        for m in re.finditer(r"^type (\w+) struct \{\n(.*?)^\}", src, re.M | re.S):
            fields: list[tuple[str | None, str, str]] = []
            for line in m.group(2).splitlines():
                line = line.strip()
                if not line or line.startswith("//"):
                    continue
                named = re.match(r"(\w+)\s+(map\[[\w.]+\][\w.*]+|[\w.*\[\]]+)\s*(`.*`)?", line)
                if named:
                    fields.append((named.group(1), named.group(2), named.group(3) or ""))
                    continue
                embedded = re.match(r"([\w.*]+)\s*(`.*`)?$", line)
                if embedded:
                    fields.append((None, embedded.group(1), embedded.group(2) or ""))
            self.types[(folder, m.group(1))] = fields

    def resolve(self, folder: str, go_type: str) -> tuple[str, str] | None:
        go_type = go_type.lstrip("*")
        if go_type.startswith(("[]", "map[")):
            return None
        if "." in go_type:
            alias, name = go_type.split(".", 1)
            key = (self.imports.get(folder, {}).get(alias, ""), name)
        else:
            key = (folder, go_type)
        return key if key in self.types else None

    def leaves(self, root: tuple[str, str]) -> list[tuple[str, str, str]]:
        """(dotted path, KUMA_* variable or "", Go type) of every value reachable from root."""
        out: list[tuple[str, str, str]] = []

        def walk(key: tuple[str, str], prefix: str) -> None:
            for name, go_type, tag in self.types[key]:
                json_tag = re.search(r'json:"([^",]*)([^"]*)"', tag)
                env_tag = re.search(r'envconfig:"([^"]*)"', tag)
                sub = self.resolve(key[0], go_type)
                if name is None:
                    if sub and json_tag and "inline" in json_tag.group(2):
                        walk(sub, prefix)
                    continue
                if not json_tag or json_tag.group(1) == "-":
                    continue
                path = prefix + json_tag.group(1)
                if sub and sub[1] not in _VALUE_STRUCTS and any(f[0] and 'json:"' in f[2] for f in self.types[sub]):
                    walk(sub, path + ".")
                else:
                    out.append((path, env_tag.group(1).upper() if env_tag else "", go_type))

        walk(root, "")
        return out


def _kind(go_type: str) -> str:
    base = go_type.lstrip("*")
    if base == "bool":
        return "bool"
    if re.fullmatch(r"u?int\d*", base):
        return "int"
    if base.endswith("Duration"):
        return "duration"
    if base.startswith("map["):
        return "map"
    if base.startswith("[]"):
        return "keys" if "PublicKey" in base else "list"
    return "str"


def _default_leaves(node: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in node.items():
        path = prefix + key
        if isinstance(value, dict) and value and not path.endswith(_MAP_VALUED):
            _default_leaves(value, path + ".", out)
        else:
            out[path] = value


def _default(kind: str, value: Any) -> Any:
    if value is None:
        return {"str": "", "list": [], "keys": [], "map": {}}.get(kind)
    if kind == "list":
        return [str(v) for v in value]
    return value


def generate(repo: str, tag: str) -> str:
    structs = _GoStructs(repo, tag)
    defaults_text = structs._git("show", f"{tag}:pkg/config/app/kuma-cp/kuma-cp.defaults.yaml")
    defaults: dict[str, Any] = {}
    _default_leaves(yaml.safe_load(defaults_text), "", defaults)
    by_lower = {p.lower(): p for p in defaults}
    rows = []
    for path, env, go_type in structs.leaves(("pkg/config/app/kuma-cp", "Config")):
        # Go matches YAML keys case-insensitively; the defaults file's spelling is the documented one.
        path = by_lower.get(path.lower(), path)
        kind = _kind(go_type)
        rows.append((path, env, kind, _default(kind, defaults[path]) if path in defaults else _NO_DEFAULT))
    missing = sorted(set(defaults) - {r[0] for r in rows})
    if missing:
        raise SystemExit(f"settings of the defaults file not found in the Go structs: {missing}")
    dp_env = sorted({env for _, env, _ in structs.leaves(("pkg/config/app/kuma-dp", "Config")) if env})
    body = ",\n".join("    " + pprint.pformat(r, width=200, sort_dicts=False) for r in rows)
    body = body.replace(repr(_NO_DEFAULT), "NO_DEFAULT")
    dp = pprint.pformat(dp_env, width=110, compact=True)
    return f'''"""Kuma {tag.lstrip("v")}'s kuma-cp settings, as data. Generated by build/gen_kuma_settings.py: do not edit.

Each row: (dotted YAML path, KUMA_* variable or "" when Kuma reads none, kind, Kuma's default).
kind is one of bool, int, duration, str, list, map, keys (a list of public keys); NO_DEFAULT marks a
setting Kuma's defaults file does not list (any value given for it counts as set).
"""
from __future__ import annotations

KUMA_VERSION = "{tag.lstrip("v")}"
NO_DEFAULT = object()

KUMA_SETTINGS = (
{body},
)

# Variables kuma-dp reads: kuma-cp neither applies nor reports them.
KUMA_DP_ENV = frozenset({dp})
'''


_NO_DEFAULT = "\x00no-default\x00"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default="/work/.mirror/kumahq+kuma/repo")
    parser.add_argument("--tag", default="v2.14.3")
    args = parser.parse_args()
    _OUT.write_text(generate(args.repo, args.tag))
    print(f"wrote {_OUT}")


if __name__ == "__main__":
    main()
