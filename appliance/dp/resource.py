"""The proxy's own resource (`--dataplane`, `--dataplane-file`) and its token, read and checked as
kuma-dp 2.14 does before it talks to the control plane (app/kuma-dp/cmd/dataplane.go, context.go)."""
from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from appliance.dp.config import DpConfig, DpError
from appliance.dp.template import render

log = logging.getLogger("kuma-dp")

RESOURCE_TYPES = {"dataplane": "Dataplane", "ingress": "ZoneIngress", "egress": "ZoneEgress"}
MESH_SCOPED = {"Dataplane"}

# pkg/core/resources/apis/mesh/meta_validator.go: names are RFC 1123 subdomains; a resource's mesh
# is checked with the older, laxer pattern because old meshes may contain '_'.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_MSG = ("invalid characters. A lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
             "characters, '-' or '.', and must start and end with an alphanumeric character")
_MESH = re.compile(r"^[0-9a-z-_.]*$")
_MESH_MSG = "invalid characters. Valid characters are numbers, lowercase latin letters and '-', '_', '.' symbols."


@dataclass(frozen=True)
class Identity:
    """Who the proxy is: from its resource when one is given, else from --name/--mesh."""
    name: str
    mesh: str
    resource: dict[str, Any] | None


def _identifier_error(value: str, pattern: re.Pattern[str], message: str) -> str | None:
    if value == "":
        return "cannot be empty"
    if len(value) > 253:
        return "value length must less or equal 253"
    return None if pattern.match(value) else message


def _read_source(cfg: DpConfig, stdin: TextIO) -> str:
    if cfg.dataplane_file == "-":
        return stdin.read()
    if cfg.dataplane_file:
        try:
            return Path(cfg.dataplane_file).read_text()
        except OSError as e:
            raise DpError(f"cannot read --dataplane-file {cfg.dataplane_file}: {e.strerror}")
    return cfg.dataplane


def load_resource(cfg: DpConfig, stdin: TextIO = sys.stdin) -> dict[str, Any] | None:
    """The rendered, parsed and checked resource, or None when none was given."""
    source = _read_source(cfg, stdin)
    if not source:
        return None
    rendered = render(source, cfg.dataplane_vars)
    for name in rendered.undefined:
        hint = " (Kuma's templates are mustache: write {{ name }})" if name[:1] in ".&" else ""
        log.warning("template variable %r is not defined by any --dataplane-var: it renders as nothing%s",
                    name, hint)
    log.debug("rendered resource:\n%s", rendered.text.strip())
    try:
        doc = yaml.safe_load(rendered.text)
    except yaml.YAMLError as e:
        raise DpError(f"the dataplane definition is not valid YAML or JSON: {' '.join(str(e).split())}")
    if not isinstance(doc, dict):
        raise DpError("the dataplane definition must be a YAML or JSON object with type, mesh and name")
    expected = RESOURCE_TYPES[cfg.proxy_type]
    if doc.get("type") != expected:
        raise DpError(f"invalid proxy resource type {doc.get('type')!r}, expected {expected} "
                      f"(--proxy-type={cfg.proxy_type})")
    problems = []
    name = doc.get("name")
    if (err := _identifier_error(name if isinstance(name, str) else "", _NAME, _NAME_MSG)) is not None:
        problems.append(f"name: {err}")
    if expected in MESH_SCOPED:
        mesh = doc.get("mesh")
        if (err := _identifier_error(mesh if isinstance(mesh, str) else "", _MESH, _MESH_MSG)) is not None:
            problems.append(f"mesh: {err}")
    if problems:
        raise DpError("the dataplane definition is invalid: " + "; ".join(problems))
    return doc


def identity(cfg: DpConfig, resource: dict[str, Any] | None) -> Identity:
    if resource is not None:
        if cfg.name or cfg.mesh:
            raise DpError("--name and --mesh cannot be specified when a dataplane definition is provided, "
                          "mesh and name will be read from the dataplane definition")
        return Identity(resource["name"], resource.get("mesh") or "", resource)
    if not cfg.name:
        raise DpError("--name is required when no dataplane definition (--dataplane or --dataplane-file) is given")
    if not cfg.mesh and cfg.proxy_type == "dataplane":
        raise DpError("--mesh is required when no dataplane definition (--dataplane or --dataplane-file) is given")
    if any(c in cfg.name for c in "$(){}"):
        raise DpError(f"--name {cfg.name!r} contains invalid characters")
    return Identity(cfg.name, cfg.mesh, None)


def resource_json(resource: dict[str, Any]) -> str:
    """The `dataplaneResource` field: the resource as JSON text, as the user wrote it."""
    return json.dumps(resource, separators=(",", ":"), default=str)


def _b64url_json(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def check_token(token: str, origin: str) -> str:
    """Kuma's ValidateTokenPath: the token is one line and parses as a JWT with an algorithm.

    Checking here turns a wrong file (a PEM key, an empty file) into a clear message before the
    control plane is contacted; the signature is the control plane's business.
    """
    token = token.strip()
    why = ""
    if not token:
        why = "it is empty"
    elif any(c in token for c in "\r\n\0"):
        why = "it contains line breaks within the token, only at the start or end are allowed"
    else:
        parts = token.split(".")
        try:
            header = _b64url_json(parts[0]) if len(parts) == 3 else None
            if len(parts) == 3:
                _b64url_json(parts[1])
        except (ValueError, binascii.Error, UnicodeDecodeError):
            header = None
        if not isinstance(header, dict):
            why = "it is not a JWT"
        elif not header.get("alg"):
            why = "it is not a valid JWT (no alg in its header)"
    if why:
        raise DpError(f"the dataplane token from {origin} is invalid: {why}; generate one with "
                      "'kumactl generate dataplane-token' (or POST /tokens/dataplane)")
    return token
