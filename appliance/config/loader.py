"""Load kuma-cp settings: defaults < YAML file < KUMA_* environment.

A bad setting stops start-up with one line naming the key (and the file line) and the value.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from appliance.config.schema import BY_PATH, SETTINGS, Setting
from appliance.gocompat import parse_seconds



class ConfigError(Exception):
    """A setting that cannot be used; the message is one line for the operator."""


class Config:
    """Resolved settings, addressed by their dotted path (`cfg["apiServer.http.port"]`)."""

    def __init__(self, values: Mapping[str, Any], source: str | None = None) -> None:
        self._values = dict(values)
        self.source = source

    def __getitem__(self, path: str) -> Any:
        return self._values[path]

    def with_value(self, path: str, value: Any) -> "Config":
        """A copy with one setting replaced (command-line flags win over file and environment)."""
        return Config({**self._values, path: value}, self.source)

    def seconds(self, path: str) -> float:
        return parse_seconds(self._values[path])

    @property
    def work_dir(self) -> Path:
        configured = self._values["general.workDir"]
        return Path(configured) if configured else Path.home() / ".kuma"

    @property
    def sqlite_path(self) -> Path:
        configured = self._values["store.sqlite.path"]
        return Path(configured) if configured else self.work_dir / "kuma.db"

    def as_nested(self) -> dict[str, Any]:
        """The settings as the YAML tree, for `GET /config` (secrets masked)."""
        tree: dict[str, Any] = {}
        for path, value in self._values.items():
            if path in BY_PATH and BY_PATH[path].secret:
                value = "*****"
            node = tree
            *parents, leaf = path.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return tree


def _coerce(setting: Setting, value: Any, where: str) -> Any:
    kind = setting.kind
    bad = ConfigError(
        f"invalid value for {setting.path} ({where}): {value!r} is not {_kind_name(setting)}"
    )
    if value is None:
        value = setting.default
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise bad
    if kind is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            result = value
        elif isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            result = int(value)
        else:
            raise bad
        if setting.path.endswith("port") or setting.path.endswith("Port"):
            if not 0 < result < 65536:
                raise ConfigError(f"invalid value for {setting.path} ({where}): {value!r} is not a port (1-65535)")
        return result
    if kind is list:
        if isinstance(value, list):
            return [str(v) for v in value]
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        raise bad
    # str
    if isinstance(value, (dict, list)) or isinstance(value, bool):
        raise bad
    text = str(value)
    if setting.choices and text not in setting.choices:
        raise ConfigError(
            f"invalid value for {setting.path} ({where}): {text!r}, expected one of {', '.join(setting.choices)}"
        )
    if setting.duration:
        try:
            parse_seconds(text)
        except ValueError:
            raise ConfigError(f"invalid value for {setting.path} ({where}): {text!r} is not a duration like 5s or 1m")
    return text


def _kind_name(setting: Setting) -> str:
    return {bool: "a boolean (true/false)", int: "an integer", list: "a list", str: "a string"}[setting.kind]


def _walk_file(node: yaml.Node, prefix: str, filename: str, out: dict[str, tuple[Any, int]]) -> None:
    """Flatten a YAML mapping node into {path: (python value, line)}; unknown keys are errors."""
    if not isinstance(node, yaml.MappingNode):
        where = f"{filename}:{node.start_mark.line + 1}"
        raise ConfigError(f"{where}: {prefix or 'the top level'} must be a mapping")
    for key_node, value_node in node.value:
        key = key_node.value
        path = f"{prefix}.{key}" if prefix else key
        line = key_node.start_mark.line + 1
        if path in BY_PATH:
            out[path] = (yaml.safe_load(yaml.serialize(value_node)), line)
            continue
        if any(p.startswith(path + ".") for p in BY_PATH):
            if isinstance(value_node, yaml.ScalarNode) and value_node.value in ("", "~", "null"):
                continue  # an empty section, e.g. "store:" with everything commented out
            _walk_file(value_node, path, filename, out)
            continue
        raise ConfigError(f"{filename}:{line}: unknown setting {path!r}")


def load_config(file: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    values: dict[str, Any] = {s.path: s.default for s in SETTINGS}
    if file is not None:
        filename = str(file)
        try:
            text = Path(file).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config file {filename}: {e.strerror}")
        try:
            root = yaml.compose(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            raise ConfigError(f"{filename}{line}: not valid YAML: {getattr(e, 'problem', e)}")
        if root is not None:
            flat: dict[str, tuple[Any, int]] = {}
            _walk_file(root, "", filename, flat)
            for path, (value, line) in flat.items():
                values[path] = _coerce(BY_PATH[path], value, f"{filename}:{line}")
    for setting in SETTINGS:
        if setting.env in env:
            values[setting.path] = _coerce(setting, env[setting.env], f"env {setting.env}")
    return Config(values, source=str(file) if file else None)
