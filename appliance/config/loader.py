"""Load kuma-cp settings: defaults < YAML file < KUMA_* environment.

A bad setting stops start-up with one line naming the key (and the file line) and the value; an
unknown key also gets the closest known one. Kuma's settings that we do not apply are accepted
and reported (see appliance/config/kuma.py).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

import yaml

from appliance.config.kuma import (KNOWN_PATHS, NOT_APPLIED, BadValue, NotApplied, is_cp_variable, is_default,
                                   normalize, refusal, show, suggest, suggest_path, suggest_variable)
from appliance.config.schema import BY_PATH, SETTINGS, Setting
from appliance.gocompat import GO_TLS_CIPHER_SUITES, parse_seconds


class ConfigError(Exception):
    """A setting that cannot be used; the message is one line for the operator."""


class Config:
    """Resolved settings, addressed by their dotted path (`cfg["apiServer.http.port"]`)."""

    def __init__(self, values: Mapping[str, Any], source: str | None = None,
                 not_applied: tuple[NotApplied, ...] = (), warnings: tuple[str, ...] = ()) -> None:
        self._values = dict(values)
        self.source = source
        self.not_applied = not_applied   # Kuma settings given a value that we do not apply
        self.warnings = warnings         # one line each, for the log at start-up

    def __getitem__(self, path: str) -> Any:
        return self._values[path]

    def with_value(self, path: str, value: Any) -> "Config":
        """A copy with one setting replaced (command-line flags win over file and environment)."""
        return Config({**self._values, path: value}, self.source, self.not_applied, self.warnings)

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
        """The settings as the YAML tree, for `GET /config` (secrets masked).

        The tree holds the settings we apply; `notApplied` lists the Kuma settings given a value
        other than Kuma's default that we do not apply (the start-up warnings), as
        {"setting", "value", "source"}.
        """
        tree: dict[str, Any] = {"notApplied": [{"setting": n.path, "value": n.shown_value(), "source": n.source}
                                               for n in self.not_applied]}
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
            f"invalid value for {setting.path} ({where}): {text!r}, expected one of "
            + ", ".join(c or '""' for c in setting.choices)
        )
    if setting.duration:
        try:
            parse_seconds(text)
        except ValueError:
            raise ConfigError(f"invalid value for {setting.path} ({where}): {text!r} is not a duration like 5s or 1m")
    return text


def _kind_name(setting: Setting) -> str:
    return {bool: "a boolean (true/false)", int: "an integer", list: "a list", str: "a string"}[setting.kind]


def _sections() -> dict[str, str]:
    """Every dotted prefix of a known setting (a section), by its lower-case spelling."""
    out: dict[str, str] = {}
    for path in KNOWN_PATHS:
        parts = path.split(".")
        for i in range(1, len(parts)):
            section = ".".join(parts[:i])
            out[section.lower()] = section
    return out


_SECTIONS = _sections()
_LEAVES = {p.lower(): p for p in KNOWN_PATHS}


def _canonical(path: str, table: dict[str, str]) -> str | None:
    """The known spelling of a path; Kuma (Go) matches keys regardless of case, and so do we."""
    if path in table.values():
        return path
    return table.get(path.lower())


def _value(node: yaml.Node) -> Any:
    """The Python value of a YAML node (an empty value, as in `certPath:`, is None)."""
    return yaml.SafeLoader("").construct_document(node)


def _walk_file(node: yaml.Node, prefix: str, filename: str, out: dict[str, tuple[Any, int]]) -> None:
    """Flatten a YAML mapping node into {path: (python value, line)}; unknown keys are errors."""
    if not isinstance(node, yaml.MappingNode):
        where = f"{filename}:{node.start_mark.line + 1}"
        raise ConfigError(f"{where}: {prefix or 'the top level'} must be a mapping")
    for key_node, value_node in node.value:
        key = key_node.value
        written = f"{prefix}.{key}" if prefix else key
        line = key_node.start_mark.line + 1
        leaf = _canonical(written, _LEAVES)
        if leaf is not None:
            out[leaf] = (_value(value_node), line)
            continue
        section = _canonical(written, _SECTIONS)
        if section is not None:
            if isinstance(value_node, yaml.ScalarNode) and value_node.value in ("", "~", "null"):
                continue  # an empty section, e.g. "store:" with everything commented out
            _walk_file(value_node, section, filename, out)
            continue
        hint = suggest_path(written)
        raise ConfigError(f"{filename}:{line}: unknown setting {written!r}"
                          + (f"; did you mean {hint!r}?" if hint else ""))


def _not_applied(path: str, value: Any, where: str) -> NotApplied | None:
    """A Kuma setting we do not apply: None when it has Kuma's default, else what to report."""
    setting = NOT_APPLIED[path]
    try:
        normalized = normalize(setting, value)
    except BadValue as e:
        raise ConfigError(f"invalid value for {path} ({where}): {value!r} is not {e}")
    if is_default(setting, normalized):
        return None
    reason = refusal(setting, normalized)
    if reason:
        raise ConfigError(f"{path} ({where}) is set to {show(value)}: kuma-appliance does not apply this setting, "
                          f"and {reason}; remove it or keep Kuma's default {show(setting.default)}")
    return NotApplied(path, value, where)


def _unknown_variables(env: Mapping[str, str]) -> list[str]:
    warnings = []
    for name in sorted(env):
        if name.startswith("KUMA_") and is_cp_variable(name):
            hint = suggest_variable(name)
            warnings.append(f"environment variable {name} is not a kuma-cp setting and is ignored"
                            + (f"; did you mean {hint}?" if hint else ""))
    return warnings


def _check_together(values: dict[str, Any]) -> None:
    """Rules between settings, as Kuma validates them."""
    for section in ("general", "apiServer.https"):
        if bool(values[f"{section}.tlsCertFile"]) != bool(values[f"{section}.tlsKeyFile"]):
            raise ConfigError(f"{section}.tlsCertFile and {section}.tlsKeyFile must be given together")
    for name in values["apiServer.https.tlsCipherSuites"]:
        if name not in GO_TLS_CIPHER_SUITES:
            hint = suggest(name, GO_TLS_CIPHER_SUITES)
            raise ConfigError(f"invalid value for apiServer.https.tlsCipherSuites: unsupported TLS cipher suite "
                              f"{name!r}" + (f"; did you mean {hint!r}?" if hint else ""))
    for path in ("dpServer.hds.interval", "dpServer.hds.refreshInterval", "dpServer.hds.checkDefaults.timeout",
                 "dpServer.hds.checkDefaults.interval", "dpServer.hds.checkDefaults.noTrafficInterval"):
        if parse_seconds(values[path]) <= 0:
            raise ConfigError(f"invalid value for {path}: {values[path]!r}, must be greater than 0s")
    for path in ("dpServer.hds.checkDefaults.healthyThreshold", "dpServer.hds.checkDefaults.unhealthyThreshold"):
        if not 0 < values[path] < 2**32:
            raise ConfigError(f"invalid value for {path}: {values[path]!r}, must be a positive number of checks")
    root_url = urlsplit(values["apiServer.gui.rootUrl"])
    if values["apiServer.gui.rootUrl"] and not (root_url.scheme in ("http", "https") and root_url.netloc):
        raise ConfigError(f"invalid value for apiServer.gui.rootUrl: {values['apiServer.gui.rootUrl']!r} is not "
                          "an http(s) URL such as https://proxy.example/kuma/gui")
    if not values["apiServer.gui.basePath"].strip("/"):
        raise ConfigError("invalid value for apiServer.gui.basePath: the GUI needs a path of its own, such as /gui")
    if values["apiServer.https.requireClientCert"] and not values["apiServer.https.tlsCaFile"]:
        raise ConfigError("apiServer.https.requireClientCert needs apiServer.https.tlsCaFile, the CA that signs "
                          "the client certificates")


def load_config(file: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Settings from defaults, the file and the environment.

    Raises ConfigError for an unknown key, a bad value or a refused one; `Config.warnings` holds
    one line per Kuma setting given a value we do not apply and per unknown cp-like KUMA_* variable.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {s.path: s.default for s in SETTINGS}
    ignored: dict[str, NotApplied | None] = {}
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
                if path in BY_PATH:
                    values[path] = _coerce(BY_PATH[path], value, f"{filename}:{line}")
                else:
                    ignored[path] = _not_applied(path, value, f"{filename}:{line}")
    for setting in SETTINGS:
        if setting.env in env:
            values[setting.path] = _coerce(setting, env[setting.env], f"env {setting.env}")
    for path, kuma_setting in NOT_APPLIED.items():
        if kuma_setting.env and kuma_setting.env in env:
            ignored[path] = _not_applied(path, env[kuma_setting.env], f"env {kuma_setting.env}")
    _check_together(values)
    not_applied = tuple(n for n in ignored.values() if n is not None)
    warnings = tuple(n.warning() for n in not_applied) + tuple(_unknown_variables(env))
    return Config(values, source=str(file) if file else None, not_applied=not_applied, warnings=warnings)
