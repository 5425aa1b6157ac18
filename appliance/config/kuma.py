"""Kuma's kuma-cp settings that we accept without applying them.

A Kuma 2.14 configuration file must start our control plane: every setting of Kuma's is accepted.
The ones `schema.SETTINGS` lists are applied (that table is the one source of "honoured"); every
other one is "not applied": kept, compared with Kuma's default, and reported when it differs.
A few of them ask for more protection than we give (tighter TLS, fewer people allowed); ignoring
those would fail open, so start-up refuses them instead.
"""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

from appliance.config.kuma_settings import KUMA_DP_ENV, KUMA_SETTINGS, KUMA_VERSION, NO_DEFAULT
from appliance.config.schema import BY_PATH, SETTINGS
from appliance.gocompat import parse_duration

@dataclass(frozen=True)
class KumaSetting:
    path: str
    env: str        # "" when Kuma reads no variable for it
    kind: str       # bool, int, duration, str, list, map or keys
    default: Any    # NO_DEFAULT when Kuma's defaults file does not list it


@dataclass(frozen=True)
class NotApplied:
    """A Kuma setting given a value other than Kuma's default, which we do not apply."""
    path: str
    value: Any
    source: str     # "FILE:LINE" or "env KUMA_..."

    def shown_value(self) -> Any:
        return "*****" if _secret_valued(self.path) else self.value

    def warning(self) -> str:
        return (f"setting {self.path} ({self.source}) is set to {show(self.shown_value())} but kuma-appliance "
                f"does not apply it: it has no effect (Kuma {KUMA_VERSION} setting; listed by GET /config "
                f"under notApplied)")


KUMA: dict[str, KumaSetting] = {row[0]: KumaSetting(*row) for row in KUMA_SETTINGS}
NOT_APPLIED: dict[str, KumaSetting] = {p: s for p, s in KUMA.items() if p not in BY_PATH}
KNOWN_PATHS: frozenset[str] = frozenset(BY_PATH) | frozenset(KUMA)
# Every variable a kuma-cp setting (ours or Kuma's) or kuma-dp reads.
KNOWN_ENV: frozenset[str] = (frozenset(s.env for s in SETTINGS) | frozenset(s.env for s in KUMA.values() if s.env)
                             | KUMA_DP_ENV)
_CP_ENV: tuple[str, ...] = tuple(sorted(frozenset(s.env for s in SETTINGS)
                                        | frozenset(s.env for s in KUMA.values() if s.env)))


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


# KUMA_API_SERVER_, KUMA_STORE_, ...: the variables of one top-level section of kuma-cp's settings.
_SECTION_PREFIXES: tuple[str, ...] = tuple(sorted({
    "KUMA_" + _snake(p.split(".")[0]) + "_" for p in KNOWN_PATHS if "." in p}))

# Not applied, and a value other than Kuma's default asks for more protection than we give.
_STRICTER_WHEN_SET: frozenset[str] = frozenset({
    "apiServer.authn.tokens.validator.useSecrets",
    "dpServer.authn.dpProxy.dpToken.enableIssuer",
    "dpServer.authn.dpProxy.dpToken.validator.useSecrets",
    "dpServer.authn.zoneProxy.zoneToken.enableIssuer",
    "dpServer.authn.zoneProxy.zoneToken.validator.useSecrets",
    "general.tlsMinVersion", "general.tlsMaxVersion", "general.tlsCipherSuites",
    "dpServer.tlsMinVersion", "dpServer.tlsMaxVersion", "dpServer.tlsCipherSuites",
    "diagnostics.tlsEnabled",
    "monitoringAssignmentServer.tlsEnabled", "monitoringAssignmentServer.tlsMinVersion",
    "monitoringAssignmentServer.tlsMaxVersion", "monitoringAssignmentServer.tlsCipherSuites",
})
_SECRET_VALUED = ("password", "envVars")


class BadValue(ValueError):
    """A value of the wrong type for a Kuma setting; the message says what was expected."""


def normalize(setting: KumaSetting, value: Any) -> Any:
    """The value in a form that compares equal to Kuma's default when it means the same thing.

    Strings from the environment are read as Kuma's envconfig reads them (lists and maps comma
    separated, maps as key:value). A value of the wrong type raises BadValue, as Kuma refuses it.
    """
    kind = setting.kind
    if value is None:
        return {"str": "", "list": [], "keys": [], "map": {}}.get(kind)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise BadValue("a boolean (true/false)")
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        raise BadValue("an integer")
    if kind == "duration":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)   # Kuma reads a bare number as nanoseconds
        try:
            return parse_duration(str(value))
        except ValueError:
            raise BadValue("a duration like 5s or 1m")
    if kind == "list":
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
            return [str(v) for v in value]
        raise BadValue("a list")
    if kind == "map":
        if isinstance(value, str):
            pairs = [p.split(":", 1) for p in value.split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise BadValue("a map (key:value,key:value)")
            return {k.strip(): v.strip() for k, v in pairs}
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        raise BadValue("a map")
    if kind == "keys":
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            return value
        raise BadValue("a list of public keys (kid, key or keyFile)")
    if isinstance(value, (dict, list)):
        raise BadValue("a string")
    return str(value).lower() if isinstance(value, bool) else str(value)


def is_default(setting: KumaSetting, normalized: Any) -> bool:
    return setting.default is not NO_DEFAULT and normalized == normalize(setting, setting.default)


def refusal(setting: KumaSetting, normalized: Any) -> str | None:
    """Why a non-default value of a setting we do not apply cannot be ignored, or None."""
    if setting.path in _STRICTER_WHEN_SET:
        return "ignoring it would give less protection than it asks for"
    return None


def suggest(wrong: str, candidates: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(wrong, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def suggest_path(path: str) -> str | None:
    """The known setting or section closest to a dotted path that does not exist: a sibling first."""
    parent, _, _ = path.rpartition(".")
    depth = path.count(".")
    siblings = {".".join(p.split(".")[:depth + 1]) for p in KNOWN_PATHS
                if p.startswith(parent + ".") or not parent}
    siblings = {s for s in siblings if s.count(".") == depth}
    return suggest(path, siblings) or suggest(path, KNOWN_PATHS)


def is_cp_variable(name: str) -> bool:
    """Whether an unknown KUMA_* variable looks like a kuma-cp setting (and so is worth a warning).

    It does when it starts like the variables of one section of kuma-cp's settings (KUMA_API_SERVER_,
    KUMA_STORE_, ... for apiServer, store, ...) or is one typo away from a kuma-cp variable. kuma-dp's
    variables (KUMA_DATAPLANE_*, KUMA_CONTROL_PLANE_*, KUMA_DNS_*, ...) and other tools' never do.
    """
    if name in KNOWN_ENV:
        return False
    return name.startswith(_SECTION_PREFIXES) or bool(difflib.get_close_matches(name, _CP_ENV, n=1, cutoff=0.9))


def suggest_variable(name: str) -> str | None:
    return suggest(name, _CP_ENV)


def _secret_valued(path: str) -> bool:
    return any(word.lower() in path.lower() for word in _SECRET_VALUED)


def show(value: Any) -> str:
    return json.dumps(value, default=str)


DOC_HEADER = "# Kuma {version} settings that kuma-appliance accepts and does not apply."


def not_applied_doc() -> str:
    """The closing section of config/kuma-cp.conf.yaml: every Kuma setting we accept without applying it."""
    lines = [DOC_HEADER.format(version=KUMA_VERSION),
             "# Given a value other than Kuma's default (shown after \"=\"), each one logs a warning line at",
             "# start-up and is listed by GET /config under \"notApplied\"; it has no effect. Those marked",
             "# [refused] stop start-up instead when they differ from Kuma's default, because ignoring them",
             "# would give less protection than they ask for.",
             "#"]
    for path in sorted(NOT_APPLIED, key=str.lower):
        setting = NOT_APPLIED[path]
        if setting.default is NO_DEFAULT:
            default = "(not in Kuma's defaults file)"
        elif isinstance(setting.default, (list, dict)) and len(setting.default) > 2:
            default = f"[{len(setting.default)} values]" if isinstance(setting.default, list) else "{...}"
        else:
            default = show(setting.default)
        mark = " [refused]" if path in _STRICTER_WHEN_SET else ""
        env = f" ({setting.env})" if setting.env else ""
        lines.append(f"#   {path} = {default}{env}{mark}")
    return "\n".join(lines) + "\n"
