"""`kumactl config`: the config file (~/.kumactl/config, Kuma's layout) and its commands.

The file is Kuma's `kumactl.config.v1alpha1.Configuration` in YAML: `controlPlanes` (name,
coordinates.apiServer: url, caCertFile, clientCertFile, clientKeyFile, headers, authType,
authConf, skipVerify), `contexts` (name, controlPlane, defaults.mesh) and `currentContext`.
Like protojson, reading accepts snake_case and camelCase names and drops unknown fields; writing
uses camelCase, sorted, with empty values left out.
"""
from __future__ import annotations

import argparse
import os
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from appliance.kumactl import printers
from appliance.kumactl.client import ApiClient, ApiServer, CliError
from appliance.kumactl.flags import KeyValues

if TYPE_CHECKING:
    from appliance.kumactl.context import Context

# field name -> str | bool | ("map", str) | ("list", schema) | schema (a nested dict)
_HEADER = {"key": str, "value": str}
_API_SERVER = {"url": str, "caCertFile": str, "clientCertFile": str, "clientKeyFile": str,
               "headers": ("list", _HEADER), "authType": str, "authConf": ("map", str), "skipVerify": bool}
_CONTROL_PLANE = {"name": str, "coordinates": {"apiServer": _API_SERVER}}
_CONTEXT = {"name": str, "controlPlane": str, "defaults": {"mesh": str}}
_CONFIGURATION = {"controlPlanes": ("list", _CONTROL_PLANE), "contexts": ("list", _CONTEXT), "currentContext": str}

TOKENS_AUTH_TYPE = "tokens"


def default_config_file() -> Path:
    return Path(os.environ.get("HOME", "")) / ".kumactl" / "config"


def default_configuration() -> dict[str, Any]:
    return {"controlPlanes": [{"name": "local", "coordinates": {"apiServer": {"url": "http://localhost:5681"}}}],
            "contexts": [{"name": "local", "controlPlane": "local"}], "currentContext": "local"}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _normalize(value: Any, schema: Any, where: str) -> Any:
    if schema is str or schema is bool:
        if not isinstance(value, schema):
            raise ValueError(f"{where}: expected a {'string' if schema is str else 'boolean'}")
        return value
    if isinstance(schema, tuple):
        kind, item = schema
        if kind == "map":
            if not isinstance(value, dict):
                raise ValueError(f"{where}: expected a map")
            return {str(k): _normalize(v, item, f"{where}.{k}") for k, v in value.items()}
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list")
        return [_normalize(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        raise ValueError(f"{where or 'the configuration'}: expected an object")
    out = {}
    for key, v in value.items():
        name = _camel(str(key))
        if name in schema and v is not None:
            out[name] = _normalize(v, schema[name], f"{where}.{name}" if where else name)
    return out


def _prune(value: Any) -> Any:
    """Leave out what proto3 JSON leaves out: empty strings, false, empty lists and maps."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ("", False, [], {}, None)}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


class Configuration:
    """The kumactl configuration: control planes, contexts and the current context."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        data = data or {}
        self.control_planes: list[dict[str, Any]] = list(data.get("controlPlanes") or [])
        self.contexts: list[dict[str, Any]] = list(data.get("contexts") or [])
        self.current_context: str = data.get("currentContext") or ""

    @classmethod
    def parse(cls, text: str) -> "Configuration":
        raw = yaml.safe_load(text) if text.strip() else {}
        return cls(_normalize(raw or {}, _CONFIGURATION, ""))

    def to_yaml(self) -> str:
        data = _prune({"controlPlanes": self.control_planes, "contexts": self.contexts,
                       "currentContext": self.current_context})
        return printers.to_yaml(data) if data else "{}\n"

    def context(self, name: str) -> dict[str, Any] | None:
        return next((c for c in self.contexts if c.get("name") == name), None)

    def control_plane(self, name: str) -> dict[str, Any] | None:
        return next((c for c in self.control_planes if c.get("name") == name), None)

    def add(self, cp: dict[str, Any], overwrite: bool) -> None:
        name = cp["name"]
        if self.control_plane(name) is not None and not overwrite:
            raise CliError(f'Control Plane with name "{name}" already exists. Use --overwrite to replace an '
                           "existing one.")
        if self.context(name) is not None and not overwrite:
            raise CliError(f'Context with name "{name}" already exists')
        _put(self.control_planes, cp)
        _put(self.contexts, {"name": name, "controlPlane": name})
        self.current_context = name

    def remove(self, name: str) -> bool:
        if self.control_plane(name) is None:
            return False
        for ctx in [c for c in self.contexts if c.get("controlPlane") == name]:
            self.contexts.remove(ctx)
            if self.current_context == ctx.get("name"):
                self.current_context = self.contexts[0]["name"] if self.contexts else ""
        self.control_planes = [c for c in self.control_planes if c.get("name") != name]
        return True

    def current_control_plane(self, override: str = "") -> dict[str, Any]:
        """The control plane to talk to: the current context's, or the one `--context` names."""
        if not self.current_context:
            raise CliError("active Control Plane is not set. Use `kumactl config control-planes add` to add a "
                           "Control Plane and make it active")
        ctx = self.context(self.current_context)
        cp = None
        if ctx is not None:
            name = override or ctx.get("controlPlane", "")
            chosen = self.context(override) if override else None
            cp = self.control_plane(chosen.get("controlPlane", "") if chosen else name)
        if cp is None:
            raise CliError("apparently, configuration is broken. Use `kumactl config control-planes add` to add a "
                           "Control Plane and make it active")
        return cp


def _put(items: list[dict[str, Any]], item: dict[str, Any]) -> None:
    for i, existing in enumerate(items):
        if existing.get("name") == item["name"]:
            items[i] = item
            return
    items.append(item)


def load(path: Path, explicit: bool) -> Configuration:
    if explicit and not path.exists():
        raise CliError(f'Failed to access configuration file "{path}"')
    if not path.exists():
        return Configuration()
    try:
        text = path.read_text()
    except OSError as e:
        raise CliError(f'Failed to read configuration from file "{path}": {e.strerror}') from e
    try:
        return Configuration.parse(text)
    except (yaml.YAMLError, ValueError) as e:
        raise CliError(f'Failed to parse configuration from file "{path}": {" ".join(str(e).split())}') from e


def save(path: Path, cfg: Configuration) -> None:
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(cfg.to_yaml())
    except OSError as e:
        raise CliError(f'Failed to write configuration into file "{path}": {e.strerror}') from e


def api_server(cp: dict[str, Any], timeout: float) -> ApiServer:
    """How to reach a configured control plane (with its token, if `authType: tokens`)."""
    coords = (cp.get("coordinates") or {}).get("apiServer") or {}
    auth_type = coords.get("authType", "")
    if auth_type and auth_type != TOKENS_AUTH_TYPE:
        raise CliError(f'authentication plugin of type "{auth_type}" not found')
    return ApiServer(url=coords.get("url", ""), token=(coords.get("authConf") or {}).get("token", "")
                     if auth_type else "",
                     headers={h.get("key", ""): h.get("value", "") for h in coords.get("headers") or []},
                     ca_cert_file=coords.get("caCertFile", ""), client_cert_file=coords.get("clientCertFile", ""),
                     client_key_file=coords.get("clientKeyFile", ""), skip_verify=bool(coords.get("skipVerify")),
                     timeout=timeout)


# --- commands ----------------------------------------------------------------------------------

def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    config = sub.add_parser("config", parents=[common], help="Modify kumactl config files",
                            description="Modify kumactl config files. They live at --config-file "
                                        "(~/.kumactl/config by default).")
    commands = config.add_subparsers(dest="config_command", metavar="COMMAND")
    config.set_defaults(run=lambda ctx, parser=config: parser.print_help(ctx.out))
    commands.add_parser("view", parents=[common], help="Show kumactl config").set_defaults(run=_view)
    cps = commands.add_parser("control-planes", parents=[common], help="Manage known Control Planes")
    cp_commands = cps.add_subparsers(dest="cp_command", metavar="COMMAND")
    cps.set_defaults(run=lambda ctx, parser=cps: parser.print_help(ctx.out))
    cp_commands.add_parser("list", parents=[common], help="List Control Planes").set_defaults(run=_list)

    add = cp_commands.add_parser("add", parents=[common], help="Add a Control Plane")
    add.add_argument("--name", required=True, help="reference name for the Control Plane (required)")
    add.add_argument("--address", required=True,
                     help="URL of the Control Plane API Server (required). Example: http://localhost:5681")
    add.add_argument("--overwrite", action="store_true", help="overwrite existing Control Plane with the same name")
    add.add_argument("--ca-cert-file", default="", help="CA to verify the Control Plane certificate with")
    add.add_argument("--client-cert-file", default="", help="client certificate for the Control Plane")
    add.add_argument("--client-key-file", default="", help="key of the client certificate")
    add.add_argument("--skip-verify", action="store_true", help="skip CA verification")
    add.add_argument("--headers", action=KeyValues,
                     help="add these headers while communicating to control plane, format key=value")
    add.add_argument("--auth-type", default="", help='authentication type (for example: "tokens")')
    add.add_argument("--auth-conf", action=KeyValues,
                     help="authentication configuration for defined authentication type format key=value")
    add.add_argument("--skip-check", action="store_true", help="skip checking if we can connect to the CP")
    add.set_defaults(run=_add)

    for name, run, text in (("remove", _remove, "Remove a Control Plane"),
                            ("switch", _switch, "Switch active Control Plane")):
        p = cp_commands.add_parser(name, parents=[common], help=text)
        p.add_argument("--name", required=True, help="reference name for the Control Plane (required)")
        p.set_defaults(run=run)


def _view(ctx: Context) -> None:
    ctx.out.write(ctx.config.to_yaml() + "\n")


def _list(ctx: Context) -> None:
    cfg: Configuration = ctx.config
    current = cfg.context(cfg.current_context)
    active = current.get("controlPlane") if current else None
    rows = [["*" if cp.get("name") == active else "", cp.get("name", ""),
             ((cp.get("coordinates") or {}).get("apiServer") or {}).get("url", "")] for cp in cfg.control_planes]
    ctx.out.write(printers.Table(["ACTIVE", "NAME", "ADDRESS"], rows).render())


def _valid_request_uri(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return bool(parts.scheme) or url.startswith("/")


def _add(ctx: Context) -> None:
    a = ctx.args
    if not _valid_request_uri(a.address):
        raise CliError(f'API Server URL is invalid: parse "{a.address}": invalid URI for request')
    if bool(a.client_key_file) != bool(a.client_cert_file):
        raise CliError("Both --client-cert-file and --client-key-file needs to be specified")
    if a.auth_type:
        if a.auth_type != TOKENS_AUTH_TYPE:
            raise CliError(f'authentication plugin of type "{a.auth_type}" is not found')
        if not a.auth_conf.get("token"):
            raise CliError("--auth-conf is not valid: provide token=YOUR_TOKEN")
    coords: dict[str, Any] = {"url": a.address, "caCertFile": a.ca_cert_file, "clientCertFile": a.client_cert_file,
                              "clientKeyFile": a.client_key_file, "authType": a.auth_type,
                              "authConf": dict(a.auth_conf), "skipVerify": a.skip_verify,
                              "headers": [{"key": k, "value": a.headers[k]} for k in sorted(a.headers)]}
    cp = {"name": a.name, "coordinates": {"apiServer": _prune(coords)}}
    if not a.skip_check:
        _check_control_plane(api_server(cp, ctx.timeout))
    cfg: Configuration = ctx.config
    cfg.add(cp, a.overwrite)
    ctx.save_config()
    ctx.out.write(f'added Control Plane "{a.name}"\nswitched active Control Plane to "{a.name}"\n')


def _check_control_plane(server: ApiServer) -> None:
    server.token = ""  # as Kuma: the reachability check goes without credentials
    try:
        index = ApiClient(server).get_json("/")
    except CliError as e:
        raise CliError(f"could not connect to the Control Plane API Server: {e}") from e
    product = index.get("product") if isinstance(index, dict) else None
    if product != "Kuma":
        raise CliError(f"this CLI is for Kuma but the control plane you're connected to is {product}. Please use "
                       "the CLI for your control plane")


def _remove(ctx: Context) -> None:
    cfg: Configuration = ctx.config
    name = ctx.args.name
    if not cfg.remove(name):
        raise CliError(f'there is no Control Plane with name "{name}"')
    ctx.save_config()
    ctx.out.write(f'removed Control Plane "{name}"\n')
    current = cfg.context(cfg.current_context)
    if current is not None:
        ctx.out.write(f'switched active Control Plane to "{current.get("controlPlane", "")}"\n')
    else:
        ctx.out.write("there is no active Control Plane left. Use `kumactl config control-planes add` to add a "
                      "Control Plane and make it active\n")


def _switch(ctx: Context) -> None:
    cfg: Configuration = ctx.config
    name = ctx.args.name
    if cfg.context(name) is None:
        raise CliError(f'there is no Control Plane with name "{name}"')
    cfg.current_context = name
    ctx.save_config()
    ctx.out.write(f'switched active Control Plane to "{name}"\n')

