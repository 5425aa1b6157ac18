"""Mesh: global-scoped, flat body (mtls, logging, metrics, tracing, routing, ...).

Messages and field paths are Kuma v2.14.3's word for word (pkg/core/resources/apis/mesh), Kuma's
own slips included (`mtls.dpcert...`, `logging.backends[0].config`), since clients compare them.
The checks all legacy types share live in `proto_validation`; the Mesh-only ones, and the Prometheus
backend config a Dataplane may override, are here.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from appliance.core.resources.proto_validation import (
    BOOL, DURATION, METRICS_BACKEND, NUMBER, STRING, STRUCT, TAGS, conf_error, duration_errors, enum,
    message, port_errors, repeated, request_uri_host, split_host_port, tag_errors,
    top, uint, uri_port, without_nulls,
)
from appliance.core.resources.meta import dns1035_warning
from appliance.ca import provided
from appliance.ca.builtin import DEFAULT_RSA_BITS, MAX_RSA_BITS, MIN_RSA_BITS, ca_secret_names, kuma_duration_s
from appliance.core.resources.secret import (
    DataSourceError, chosen_source_errors, is_system_secret, load_data_source, refused_source_errors,
)
from appliance.core.validation import Violations, join
from appliance.gocompat import go_quote, is_dns_name

_CA_BACKEND = message(
    name=STRING, type=STRING,
    dpCert=message(rotation=message(expiration=STRING), requestTimeout=DURATION),
    conf=STRUCT, mode=enum("STRICT", "PERMISSIVE"), rootChain=message(requestTimeout=DURATION))
_RULES = repeated(message(tags=TAGS))

SHAPE: dict[str, Any] = top(
    mtls=message(enabledBackend=STRING, backends=repeated(_CA_BACKEND), skipValidation=BOOL),
    tracing=message(defaultBackend=STRING, backends=repeated(message(
        name=STRING, sampling=NUMBER, type=STRING, conf=STRUCT))),
    logging=message(defaultBackend=STRING, backends=repeated(message(
        name=STRING, format=STRING, type=STRING, conf=STRUCT))),
    metrics=message(enabledBackend=STRING, backends=repeated(METRICS_BACKEND)),
    networking=message(outbound=message(passthrough=BOOL)),
    routing=message(localityAwareLoadBalancing=BOOL, zoneEgress=BOOL,
                    defaultForbidMeshExternalServiceAccess=BOOL),
    constraints=message(dataplaneProxy=message(requirements=_RULES, restrictions=_RULES)),
    skipCreatingInitialPolicies=repeated(STRING),
    meshServices=message(mode=enum("Disabled", "Everywhere", "ReachableBackends", "Exclusive")),
)

# The typed configs Kuma decodes the free-form `conf` structs into.
_FILE_LOG = {"path": "string"}
_TCP_LOG = {"address": "string"}
_ZIPKIN = {"url": "string", "traceId128bit": "bool", "apiVersion": "string", "sharedSpanContext": "bool"}
_DATADOG = {"address": "string", "port": "uint32", "splitService": "bool"}
_BUILTIN_CA = {"caCert": {"RSAbits": "uint32", "expiration": "string"}}

_CA_PLUGINS = ("builtin", "provided")
_SOURCE = {"secret": "string", "file": "string", "inline": "bytes", "inlineString": "string"}
_PROVIDED_CA = {"cert": _SOURCE, "key": _SOURCE}


def enabled_backend(content: dict[str, Any], section: str) -> dict[str, Any] | None:
    """The backend a Mesh's `section` ("mtls", "metrics") names as `enabledBackend`, or None when it names none."""
    settings = content.get(section) or {}
    name = settings.get("enabledBackend")
    if not name:
        return None
    return next((b for b in settings.get("backends") or [] if b.get("name") == name), None)


def validate(content: dict[str, Any], out: Violations) -> None:
    mesh = without_nulls(SHAPE, content)
    if duration_errors(mesh, "mtls.backends", ("dpCert.requestTimeout", "rootChain.requestTimeout"), out):
        return
    before = len(out.items)
    mtls = mesh.get("mtls")
    if mtls is not None:
        _check_mtls(mtls, out)
    if (logging := mesh.get("logging")) is not None:
        _check_logging(logging, out)
    if (tracing := mesh.get("tracing")) is not None:
        _check_tracing(tracing, out)
    if (metrics := mesh.get("metrics")) is not None:
        _check_metrics(metrics, out)
    for kind in ("requirements", "restrictions"):
        for i, rule in enumerate(((mesh.get("constraints") or {}).get("dataplaneProxy") or {}).get(kind) or []):
            tag_errors(f"constraints.dataplaneProxy.{kind}[{i}].tags", rule.get("tags") or {}, out,
                       selector=True, at_least_one=True)
    if (mesh.get("routing") or {}).get("zoneEgress") and not (mtls or {}).get("enabledBackend"):
        out.add("mtls", "has to be set when zoneEgress enabled")
    # Kuma's mesh manager checks the CA backends only once the resource itself is valid.
    if len(out.items) == before:
        _check_ca_backends(mtls or {}, out)
    # Kuma reads a provided CA's `file` on the control plane's host; we do not (whoever may write a Mesh could
    # otherwise have the control plane read its own keys): secret, inline or inlineString
    refused_source_errors(data_sources(content), out)


def data_sources(content: dict[str, Any]) -> list[tuple[str, Any]]:
    """A provided CA's `conf.cert` and `conf.key`."""
    out = []
    for i, backend in enumerate((content.get("mtls") or {}).get("backends") or []):
        conf = (backend.get("conf") if isinstance(backend, dict) else None) or {}
        if isinstance(conf, dict):
            out.extend((f"mtls.backends[{i}].conf.{part}", conf[part]) for part in ("cert", "key")
                       if conf.get(part) is not None)
    return out


def warnings(name: str, content: dict[str, Any] | None = None) -> list[str]:
    out = dns1035_warning("Mesh", name)
    mtls = (content or {}).get("mtls") or {}
    if mtls.get("skipValidation") and mtls.get("enabledBackend"):
        out.append("mtls.skipValidation: the CA backends were not checked; while the enabled backend's CA cannot be "
                   "used (missing Secrets, not a CA, key not matching), the mesh's proxies get no listeners and "
                   "traffic fails closed (the control plane's log says why)")
    return out


def _check_mtls(mtls: dict[str, Any], out: Violations) -> None:
    # Kuma 2.14 allows one backend (AllowedMTLSBackends); we allow more, for the CA rotation its docs describe
    # (add a backend, enable it, remove the old one): proxies trust every usable backend's CA meanwhile
    backends = mtls.get("backends") or []
    names: set[str] = set()
    for i, backend in enumerate(backends):
        name = backend.get("name", "")
        if name in names:
            out.add(f"mtls.backends[{i}].name", f"{go_quote(name)} name is already used for another backend")
        names.add(name)
        if backend.get("dpCert") is not None:
            expiration = (backend["dpCert"].get("rotation") or {}).get("expiration", "")
            if kuma_duration_s(expiration) is None:
                out.add("mtls.dpcert.rotation.expiration", "has to be a valid format")
    enabled = mtls.get("enabledBackend", "")
    if enabled and enabled not in names:
        out.add("mtls.enabledBackend", "has to be set to one of the backends in the mesh")


def _check_logging(logging: dict[str, Any], out: Violations) -> None:
    names: set[str] = set()
    for i, backend in enumerate(logging.get("backends") or []):
        path = f"logging.backends[{i}]"
        name = backend.get("name", "")
        if not name:
            out.add(f"{path}.name", "cannot be empty")
        kind, conf = backend.get("type", ""), backend.get("conf") or {}
        if kind == "file":
            if problem := conf_error(conf, _FILE_LOG):
                out.add(f"{path}.config", f"could not parse config: {problem}")
            elif not conf.get("path"):
                out.add(f"{path}.config.path", "cannot be empty")
        elif kind == "tcp":
            if problem := conf_error(conf, _TCP_LOG):
                out.add(f"{path}.config", f"could not parse config: {problem}")
            elif not conf.get("address"):
                out.add(f"{path}.config.address", "cannot be empty")
            elif not (parts := split_host_port(conf["address"])) or not all(parts):
                out.add(f"{path}.config.address", "has to be in format of HOST:PORT")
        else:
            out.add(f"{path}.type", 'unknown backend type. Available backends: "tcp", "file"')
        if name in names:
            out.add(f"{path}.name", f"{go_quote(name)} name is already used for another backend")
        names.add(name)
    default = logging.get("defaultBackend", "")
    if default and default not in names:
        out.add("logging.defaultBackend", "has to be set to one of the logging backend in mesh")


def _check_tracing(tracing: dict[str, Any], out: Violations) -> None:
    names: set[str] = set()
    for i, backend in enumerate(tracing.get("backends") or []):
        path = f"tracing.backends[{i}]"
        name = backend.get("name", "")
        if not name:
            out.add(f"{path}.name", "cannot be empty")
        if not 0.0 <= backend.get("sampling", 0.0) <= 100.0:
            out.add(f"{path}.sampling", "has to be in [0.0 - 100.0] range")
        kind, conf = backend.get("type", ""), backend.get("conf") or {}
        if kind == "zipkin":
            _check_zipkin(f"{path}.config", conf, out)
        elif kind == "datadog":
            if problem := conf_error(conf, _DATADOG):
                out.add(f"{path}.config", f"could not parse config: {problem}")
            else:
                if not conf.get("address"):
                    out.add(f"{path}.config.address", "cannot be empty")
                port_errors(f"{path}.config.port", uint(conf.get("port")), out)
        else:
            out.add(f"{path}.type", 'unknown backend type. Available backends: "zipkin", "datadog"')
        if name in names:
            out.add(f"{path}.name", f"{go_quote(name)} name is already used for another backend")
        names.add(name)
    default = tracing.get("defaultBackend", "")
    if default and default not in names:
        out.add("tracing.defaultBackend", "has to be set to one of the tracing backend in mesh")


def _check_zipkin(path: str, conf: dict[str, Any], out: Violations) -> None:
    if problem := conf_error(conf, _ZIPKIN):
        out.add(path, f"could not parse config: {problem}")
        return
    if conf.get("apiVersion", "") not in ("", "httpJsonV1", "httpJson", "httpProto"):
        out.add(f"{path}.apiVersion", "has invalid value. Allowed values: httpJsonV1, httpJson, httpProto")
    url = conf.get("url", "")
    if not url:
        out.add(f"{path}.url", "cannot be empty")
    elif (host := request_uri_host(url)) is None:
        out.add(f"{path}.url", "invalid URL")
    elif not uri_port(host):
        out.add(f"{path}.url", "port has to be explicitly specified")


def _check_metrics(metrics: dict[str, Any], out: Violations) -> None:
    names: set[str] = set()
    for i, backend in enumerate(metrics.get("backends") or []):
        name = backend.get("name", "")
        if name in names:
            out.add(f"metrics.backends[{i}].name", f"{go_quote(name)} name is already used for another backend")
        if backend.get("type", "") != "prometheus":
            out.add(f"metrics.backends[{i}].type", 'unknown backend type. Available backends: "prometheus"')
        else:
            prometheus_errors(f"metrics.backends[{i}].conf", backend.get("conf") or {}, out)
        names.add(name)
    enabled = metrics.get("enabledBackend", "")
    if enabled and enabled not in names:
        out.add("metrics.enabledBackend", "has to be set to one of the backends in the mesh")


def _check_ca_backends(mtls: dict[str, Any], out: Violations) -> None:
    """The CA plugins' ValidateBackend, as far as it can be judged without the store (`ca_backend_errors`
    reads the provided CAs' data)."""
    for i, backend in enumerate(mtls.get("backends") or []):
        path = f"mtls.backends[{i}]"
        kind = backend.get("type", "")
        if kind not in _CA_PLUGINS:
            out.add(f"{path}.type", "could not find installed plugin for this type")
            return
        if mtls.get("skipValidation"):
            continue
        conf = backend.get("conf") or {}
        if kind == "provided":
            if problem := conf_error(conf, _PROVIDED_CA):
                out.add(f"{path}.conf", f"could not convert backend config: {problem}")
                continue
            for part in ("cert", "key"):
                if conf.get(part) is None:
                    out.add(f"{path}.conf.{part}", "has to be defined")
                else:
                    chosen_source_errors(f"{path}.conf.{part}", conf[part], out)
            continue
        if problem := conf_error(conf, _BUILTIN_CA):
            out.add(f"{path}.conf", f"could not convert backend config: {problem}")
        else:
            _check_builtin_ca_cert(f"{path}.conf.caCert", conf.get("caCert") or {}, out)
        # Kuma checks "<mesh>.ca-builtin-cert-<backend>"; the mesh part is always a valid DNS name.
        name = backend.get("name", "")
        if not is_dns_name(f"ca-builtin-cert-{name}") or name != name.lower():
            out.add(f"{path}.conf.mtls.backends.name", f"{go_quote(name)} name must be valid dns name")


def _check_builtin_ca_cert(path: str, ca_cert: dict[str, Any], out: Violations) -> None:
    """Ours: what Kuma only finds out when it generates the CA (an error then, not a 400)."""
    bits = int(ca_cert.get("RSAbits") or 0)
    if bits and not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
        out.add(f"{path}.RSAbits", f"must be between {MIN_RSA_BITS} and {MAX_RSA_BITS} (or unset: "
                                   f"{DEFAULT_RSA_BITS})")
    expiration = ca_cert.get("expiration")
    if expiration is not None and not kuma_duration_s(expiration):
        out.add(f"{path}.expiration", "has to be a valid format (a number and one of y, w, d, h, m, s, ms)")


class CaUnavailable(Exception):
    """The CA of a backend cannot sign and anchor the mesh's mTLS; the message says why."""


def ca_pair(mesh: str, backend: dict[str, Any], secret_data: Callable[[str], str | None]) -> tuple[bytes, bytes]:
    """A CA backend's (certificate PEM, key PEM), read (`secret_data(name)`: a Secret's base64 data, None
    when missing) and checked: a CA whose key matches its certificate. The one check of a mesh's CA, for
    the proxies' config (fail closed when it fails) and the mesh insight."""
    name, kind = str(backend.get("name") or ""), backend.get("type")
    conf = backend.get("conf") if isinstance(backend.get("conf"), dict) else {}

    def user_secret(secret: str) -> str | None:
        return None if is_system_secret(secret) else secret_data(secret)   # validation refuses them too

    if kind == "builtin":
        sources, read = [{"secret": n} for n in ca_secret_names(mesh, name)], secret_data
    elif kind == "provided":
        sources, read = [conf.get("cert") or {}, conf.get("key") or {}], user_secret
    else:
        raise CaUnavailable(f"mTLS backend {name!r} has type {kind!r}, which this control plane cannot use")
    try:
        cert_pem, key_pem = (load_data_source(source, mesh, read) for source in sources)
    except (DataSourceError, ValueError) as e:
        raise CaUnavailable(f"the CA of mTLS backend {name!r} ({kind}) cannot be read: {e}") from None
    problems = provided.cached_pair_violations(cert_pem, key_pem)
    if problems:
        raise CaUnavailable(f"the CA of mTLS backend {name!r} ({kind}) cannot sign certificates: "
                            + "; ".join(f"conf.{path}: {message}" for path, message in problems))
    return cert_pem, key_pem


def ca_backend_errors(mesh: str, content: dict[str, Any], secret_data: Callable[[str], str | None],
                      out: Violations) -> None:
    """What Kuma's provided CA plugin checks with the store, once the Mesh is otherwise valid: its Secrets
    exist (`secret_data(name)`: a Secret's base64 data, None when missing), the certificate is a CA
    and the key is its key. Skipped with `mtls.skipValidation`, as in Kuma (the mesh then fails closed)."""
    mtls = content.get("mtls") or {}
    if mtls.get("skipValidation"):
        return
    for i, backend in enumerate(mtls.get("backends") or []):
        if backend.get("type") != "provided":
            continue
        path = f"mtls.backends[{i}].conf"
        conf = backend.get("conf") or {}
        try:
            # Kuma loads the key first: its error is the one both fields get
            key_pem = load_data_source(conf["key"], mesh, secret_data)
            cert_pem = load_data_source(conf["cert"], mesh, secret_data)
        except (DataSourceError, ValueError) as e:
            out.add(f"{path}.cert", str(e))
            out.add(f"{path}.key", str(e))
            continue
        for where, problem in provided.pair_violations(cert_pem, key_pem):
            out.add(f"{path}.{where}", problem)


# --- Prometheus metrics backend config (Mesh metrics and Dataplane metrics) --------------------

_TLS_MODES = ("activeMTLSBackend", "providedTLS", "disabled")
_PROMETHEUS = {
    "port": "uint32", "path": "string", "tags": "map", "skipMTLS": "bool",
    "aggregate": [{"name": "string", "port": "uint32", "path": "string", "enabled": "bool", "address": "string"}],
    "envoy": {"filterRegex": "string", "usedOnly": "bool"},
    "tls": {"mode": ("kuma.mesh.v1alpha1.PrometheusTlsConfig.Mode", _TLS_MODES)},
}


def prometheus_errors(path: str, conf: dict[str, Any], out: Violations) -> None:
    """validatePrometheusConfig."""
    if problem := conf_error(conf, _PROMETHEUS):
        out.add(path, f"could not parse config: {problem}")
        return
    skip, tls = conf.get("skipMTLS"), conf.get("tls")
    if skip is not None and tls is not None:
        mode = tls.get("mode") or 0
        mode = _TLS_MODES[mode] if isinstance(mode, int) and 0 <= mode < len(_TLS_MODES) else mode
        if not (not skip and mode == "activeMTLSBackend" or skip and mode == "disabled"):
            out.add(path, "skipMTLS and tls configuration cannot be defined together")
            return
    if problem := go_regexp_error((conf.get("envoy") or {}).get("filterRegex") or ""):
        out.add(join(path, "envoy.filterRegex"), f"provided regexp isn't correct: {problem}")
        return
    names: set[str] = set()
    for i, item in enumerate(conf.get("aggregate") or []):
        name = (item or {}).get("name") or ""
        if name in names:
            out.add(f"{path}.aggregate[{i}].name", f"duplicate entry: {name}, values have to be unique")
            continue
        names.add(name)


# Python's re and Go's RE2 disagree at the edges; these are the differences users meet.
_RE2_ONLY_ESCAPES = ("\\p", "\\P", "\\z", "\\Q", "\\E", "\\C")
_PERL_ONLY = re.compile(r"\(\?<?[=!]|\\[1-9]")
_PY_TO_GO = {"missing ), unterminated subpattern": "missing closing )", "unbalanced parenthesis": "unexpected )",
             "unterminated character set": "missing closing ]", "nothing to repeat":
             "missing argument to repetition operator", "multiple repeat": "invalid nested repetition operator"}


def go_regexp_error(expr: str) -> str | None:
    """Roughly Go's regexp.Compile error text for `expr`, or None when Go accepts it."""
    if m := _PERL_ONLY.search(expr):
        what = "invalid escape sequence" if m.group().startswith("\\") else "invalid or unsupported Perl syntax"
        return f"error parsing regexp: {what}: `{m.group()}`"
    try:
        re.compile(expr)
    except re.error as e:
        pos = e.pos or 0
        if e.msg.startswith("bad escape"):
            escape = expr[pos:pos + 2]
            if escape in _RE2_ONLY_ESCAPES:
                return None
            return f"error parsing regexp: invalid escape sequence: `{escape}`"
        if e.msg.startswith("bad character range"):
            return f"error parsing regexp: invalid character class range: `{e.msg.split()[-1]}`"
        snippet = {"unterminated character set": expr[pos:], "nothing to repeat": expr[pos:pos + 1],
                   "multiple repeat": expr[pos - 1:pos + 1]}.get(e.msg, expr)
        return f"error parsing regexp: {_PY_TO_GO.get(e.msg, e.msg)}: `{snippet}`"
    return None
