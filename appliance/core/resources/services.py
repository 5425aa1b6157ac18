"""Service-like new-style types of a single zone: MeshService, MeshExternalService, Workload, MeshTrust.

Kuma keeps these as Go structs, so what its REST API shows is what encoding/json writes for them:
unknown fields are gone (a MeshService port's "protocol" is not "appProtocol"), and a non-pointer
struct is always written, even when empty (MeshService status `{"tls": {}, "dataplaneProxies": {}}`).
`_render` reproduces that from our stored JSON. Field defaults (MeshService `state: Unavailable`,
port `appProtocol: tcp`) come from the structural schemas, as kubebuilder's `default`s do in Kuma.
"""
from __future__ import annotations

import base64
import binascii
import copy
import re
from typing import Any

from appliance.core.resources import gostruct as go
from appliance.core.resources.meta import dns1035_warning
from appliance.core.resources.model import Content, Resource, ResourceType
from appliance.core.resources.secret import refused_source_errors
from appliance.core.validation import Violations, check_schema
from appliance.gocompat import go_quote, is_dns_name, is_ip
from appliance.policies import _tls as policy_tls

# --- structural schemas of spec (Kuma's rest.yaml, the subset check_schema reads) ----------------

_STR: dict[str, Any] = {"type": "string"}
_INT: dict[str, Any] = {"type": "integer"}
_STR_MAP: dict[str, Any] = {"type": "object", "additionalProperties": _STR}


def _obj(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def _arr(items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **extra}


def _enum(*values: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "enum": list(values), **extra}


_PORT: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 65535}
_DATA_SOURCE = _obj({"inline": _STR, "inlineString": _STR, "secret": _STR})
_TLS_VERSIONS = policy_tls.VERSIONS
_MATCH_PROTOCOLS = ("tcp", "grpc", "http", "http2")
_VERIFICATION_MODES = ("SkipSAN", "SkipCA", "SkipAll", "Secured")
_SAN_MATCH_TYPES = ("Prefix", "Exact")

MESH_SERVICE_SCHEMA = _obj({
    "identities": _arr(_obj({"type": _enum("ServiceTag", "SpiffeID"), "value": _STR}, ("type", "value"))),
    "ports": _arr(_obj({"appProtocol": {"type": "string", "default": "tcp"}, "name": _STR, "port": _INT,
                        "targetPort": {"type": "int-or-string"}}, ("port",))),
    "selector": _obj({"dataplaneLabels": _obj({"matchLabels": _STR_MAP}), "dataplaneRef": _obj({"name": _STR}),
                      "dataplaneTags": _STR_MAP}),
    "state": _enum("Available", "Unavailable", default="Unavailable"),
})

MESH_EXTERNAL_SERVICE_SCHEMA = _obj({
    "endpoints": _arr(_obj({"address": {"type": "string", "minLength": 1}, "port": _PORT,
                            "priority": {"type": "integer", "minimum": 0, "maximum": 128}}, ("address", "port"))),
    "extension": _obj({"config": {}, "type": _STR}, ("type",)),
    "match": _obj({"port": _PORT, "protocol": _enum(*_MATCH_PROTOCOLS, default="tcp"),
                   "type": _enum("HostnameGenerator", default="HostnameGenerator")}, ("port",)),
    "tls": _obj({
        "allowRenegotiation": {"type": "boolean", "default": False},
        "enabled": {"type": "boolean", "default": False},
        "verification": _obj({
            "caCert": _DATA_SOURCE, "clientCert": _DATA_SOURCE, "clientKey": _DATA_SOURCE,
            "mode": _enum("SkipSAN", "SkipCA", "Secured", "SkipAll", default="Secured"),
            "serverName": _STR,
            "subjectAltNames": _arr(_obj({"type": _enum("Exact", "Prefix", default="Exact"), "value": _STR},
                                         ("value",))),
        }),
        "version": _obj({"max": _enum(*_TLS_VERSIONS, default="TLSAuto"),
                         "min": _enum(*_TLS_VERSIONS, default="TLSAuto")}),
    }),
}, ("match",))

WORKLOAD_SCHEMA: dict[str, Any] = {"type": "object"}

MESH_TRUST_SCHEMA = _obj({
    "caBundles": _arr(_obj({"pem": _obj({"value": _STR}, ("value",)), "type": _enum("Pem")}, ("type",)),
                      minItems=1),
    "origin": _obj({"kri": _STR}),
    "trustDomain": {"type": "string", "maxLength": 253},
}, ("caBundles", "trustDomain"))

# --- Go struct shapes (core/resources/gostruct.py) ------------------------------------------------

_ADDRESS = (go.value("hostname", "", True), go.value("origin", "", True),
            go.struct("hostnameGeneratorRef", go.value("coreName", "")))
_HOSTNAME_GENERATORS = go.list_of("hostnameGenerators", go.struct("hostnameGeneratorRef", go.value("coreName", "")),
                             go.Field("conditions"))

_MESH_SERVICE_SPEC = (
    go.value("state", "", True),
    go.struct("selector", go.Field("dataplaneTags"), go.struct("dataplaneRef", go.value("name", "", True), optional=True),
            go.struct("dataplaneLabels", go.Field("matchLabels"), optional=True)),
    go.list_of("ports", go.Field("name"), go.value("port", 0), go.Field("targetPort"), go.value("appProtocol", "", True)),
    go.list_of("identities", go.value("type", ""), go.value("value", ""), pointer=True),
)
_MESH_SERVICE_STATUS = (
    go.list_of("addresses", *_ADDRESS),
    go.list_of("vips", go.value("ip", "", True)),
    go.struct("tls", go.value("status", "", True)),
    _HOSTNAME_GENERATORS,
    go.struct("dataplaneProxies", go.value("connected", 0, True), go.value("healthy", 0, True), go.value("total", 0, True)),
)

_DATA_SOURCE_FIELDS = (go.Field("secret"), go.Field("inline"), go.Field("inlineString"))
_MESH_EXTERNAL_SERVICE_SPEC = (
    go.struct("match", go.value("type", ""), go.value("port", 0), go.value("protocol", "")),
    go.struct("extension", go.value("type", ""), go.Field("config"), optional=True),
    go.list_of("endpoints", go.value("address", ""), go.value("port", 0), go.Field("priority"), pointer=True),
    go.struct("tls", go.value("enabled", False),
            go.struct("version", go.Field("min"), go.Field("max"), optional=True),
            go.value("allowRenegotiation", False),
            go.struct("verification", go.value("mode", ""), go.Field("serverName"),
                    go.list_of("subjectAltNames", go.value("type", ""), go.value("value", ""), pointer=True),
                    go.struct("caCert", *_DATA_SOURCE_FIELDS, optional=True),
                    go.struct("clientCert", *_DATA_SOURCE_FIELDS, optional=True),
                    go.struct("clientKey", *_DATA_SOURCE_FIELDS, optional=True), optional=True),
            optional=True),
)
_MESH_EXTERNAL_SERVICE_STATUS = (go.struct("vip", go.value("ip", "", True)), go.list_of("addresses", *_ADDRESS),
                                 _HOSTNAME_GENERATORS)

_WORKLOAD_STATUS = (go.struct("dataplaneProxies", go.value("connected", 0), go.value("healthy", 0), go.value("total", 0)),)

_ORIGIN = go.struct("origin", go.Field("kri"), optional=True)
_MESH_TRUST_SPEC = (
    _ORIGIN,
    go.value("trustDomain", ""),
    go.list_of("caBundles", go.value("type", ""), go.struct("pem", go.value("value", ""), optional=True), omitempty=False),
)
_MESH_TRUST_STATUS = (_ORIGIN,)

# --- names and SNIs (pkg/core/resources/sni) -------------------------------------------------------

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1123_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
                      "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used "
                      "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
_DNS_HOSTNAME_LIMIT = 253
_DESTINATIONS = ("msvc", "extsvc")   # short names of the types whose REST JSON lists their SNIs


def _display_name(res: Resource) -> str:
    return res.labels.get("kuma.io/display-name") or res.name


def _origin_segments(res: Resource) -> list[tuple[str, str]]:
    """Zone, then namespace, of a zone-originated resource (a namespace alone does not count)."""
    zone = res.labels.get("kuma.io/zone", "")
    if not zone:
        return []
    namespace = res.labels.get("k8s.kuma.io/namespace", "")
    return [("zone", zone), ("namespace", namespace)] if namespace else [("zone", zone)]


def _sni(short_name: str, res: Resource, section: str) -> str:
    """sni.<short>.<mesh>[.<zone>[.<namespace>]].<name>.<section>, as Kuma's sni.FromKRI builds it."""
    origin = [value for _, value in _origin_segments(res)]
    return ".".join(["sni", short_name, res.mesh, *origin, _display_name(res), section])


def _dns1123_label_errors(value: str) -> list[str]:
    errors = []
    if len(value) > 63:
        errors.append("must be no more than 63 characters")
    if not _DNS1123_LABEL.fullmatch(value):
        errors.append("must not contain dots" if _DNS1123_SUBDOMAIN.fullmatch(value) else _DNS1123_LABEL_MSG)
    return errors


def _sni_problems(short_name: str, res: Resource, section: str) -> list[str]:
    """Why the SNI of one section breaks MADR-101 naming (Kuma's sni.ValidateKRI)."""
    name = _display_name(res)
    if not res.mesh or not name or not section:
        return ["mesh, name and sectionName must be non-empty"]
    parts = [("mesh", res.mesh), ("name", name), *_origin_segments(res)]
    problems = [f"{field} {go_quote(value)} does not conform to RFC 1123: {'; '.join(errors)}"
                for field, value in parts if (errors := _dns1123_label_errors(value))]
    if errors := _dns1123_label_errors(section):
        problems.append("; ".join(errors))
    sni = _sni(short_name, res, section)
    if len(sni) > _DNS_HOSTNAME_LIMIT:
        problems.append(f"computed SNI is {len(sni)} characters which exceeds the DNS hostname limit "
                        f"({_DNS_HOSTNAME_LIMIT})")
    return problems


def _sections(res: Resource) -> list[tuple[Any, str]]:
    """(port, section name) of every SNI a destination contributes, in spec order."""
    spec = res.spec
    if res.type == "MeshExternalService":
        port = go.go_number(_as_dict(spec.get("match")).get("port") or 0, 0)
        return [(port, str(port))]
    sections = []
    for p in _as_list(spec.get("ports")):
        port = go.go_number(_as_dict(p).get("port") or 0, 0)
        name = _as_dict(p).get("name")
        sections.append((port, str(port) if name is None else name))
    return sections


def _destination_warnings(res: Resource) -> list[str]:
    rtype = _BY_NAME[res.type]
    warnings = dns1035_warning(res.type, _display_name(res))
    for _, section in _sections(res):
        warnings += [f"Invalid {res.type} SNI (port {go_quote(section)}): {problem}. This is deprecated."
                     for problem in _sni_problems(rtype.short_name, res, section)]
    return warnings


def _mesh_trust_warnings(res: Resource) -> list[str]:
    return ["setting spec.origin field is deprecated"] if res.spec.get("origin") is not None else []


# --- REST representation ------------------------------------------------------------------------------

_SHAPES: dict[str, tuple[dict[str, Any], tuple[go.Field, ...], tuple[go.Field, ...]]] = {
    "MeshService": (MESH_SERVICE_SCHEMA, _MESH_SERVICE_SPEC, _MESH_SERVICE_STATUS),
    "MeshExternalService": (MESH_EXTERNAL_SERVICE_SCHEMA, _MESH_EXTERNAL_SERVICE_SPEC, _MESH_EXTERNAL_SERVICE_STATUS),
    "Workload": (WORKLOAD_SCHEMA, (), _WORKLOAD_STATUS),
    "MeshTrust": (MESH_TRUST_SCHEMA, _MESH_TRUST_SPEC, _MESH_TRUST_STATUS),
}


def _present(res: Resource, out: dict[str, Any]) -> None:
    """`snis` of destinations, then spec and status as Kuma's structs write them (defaults applied).

    Replaces the stored spec and status in `out`, so it has to run after they are copied into it.
    """
    schema, spec_shape, status_shape = _SHAPES[res.type]
    spec = copy.deepcopy(res.spec)
    check_schema(schema, spec, "spec", [])   # fills the defaults of a resource stored without them
    for name in ("snis", "spec", "status"):
        out.pop(name, None)
    short_name = _BY_NAME[res.type].short_name
    if short_name in _DESTINATIONS:
        snis = sorted(((port, _sni(short_name, res, section)) for port, section in _sections(res)),
                      key=lambda entry: entry[0])
        if snis:
            out["snis"] = [{"port": port, "sni": sni} for port, sni in snis]
    out["spec"] = go.render(spec_shape, spec)
    out["status"] = go.render(status_shape, res.content.get("status"))


# --- validators (Kuma's validator.go of each type) ----------------------------------------------------


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _bad_port(port: Any) -> bool:
    return not isinstance(port, (int, float)) or port == 0 or port > 65535


def validate_mesh_service(content: Content, out: Violations) -> None:
    selector = _as_dict(_as_dict(content.get("spec")).get("selector"))
    chosen = [k for k in ("dataplaneTags", "dataplaneRef", "dataplaneLabels") if selector.get(k) is not None]
    if len(chosen) > 1:
        out.add("spec.selector", "must specify only one of: dataplaneTags, dataplaneRef, or dataplaneLabels")


def mesh_external_service_sources(content: Content) -> list[tuple[str, Any]]:
    verification = _as_dict(_as_dict(_as_dict(content.get("spec")).get("tls")).get("verification"))
    return [(f"spec.tls.verification.{name}", verification[name]) for name in ("caCert", "clientCert", "clientKey")
            if verification.get(name) is not None]


def validate_mesh_external_service(content: Content, out: Violations) -> None:
    refused_source_errors(mesh_external_service_sources(content), out)
    spec = _as_dict(content.get("spec"))
    match = _as_dict(spec.get("match"))
    kind = match.get("type") or ""
    if kind not in ("HostnameGenerator", ""):
        out.add("spec.match.type", f"unrecognized type '{kind}' - only 'HostnameGenerator' is supported")
    if _bad_port(match.get("port") or 0):
        out.add("spec.match.port", "port must be a valid (1-65535)")
    if (match.get("protocol") or "") not in _MATCH_PROTOCOLS:
        out.add("spec.match.protocol", policy_tls.must_be_one_of("protocol", _MATCH_PROTOCOLS))
    extension = spec.get("extension")
    if extension is None:   # with an extension, endpoints and tls are the extension's to check
        for i, endpoint in enumerate(_as_list(spec.get("endpoints"))):
            address = _as_dict(endpoint).get("address") or ""
            if is_ip(address) or is_dns_name(address):
                if _bad_port(_as_dict(endpoint).get("port") or 0):
                    out.add(f"spec.endpoints[{i}].port", "port must be a valid (1-65535)")
            else:
                out.add(f"spec.endpoints[{i}].address", "address has to be a valid IP or hostname")
        if spec.get("tls") is not None:
            _validate_tls(_as_dict(spec["tls"]), out)
    elif not _as_dict(extension).get("type"):
        out.add("spec.extension.type", "must not be empty")


def _validate_tls(tls: dict[str, Any], out: Violations) -> None:
    if tls.get("version") is not None:
        # the rule MeshTLS follows too (Kuma's common_tls.ValidateVersion)
        for field_path, reason in policy_tls.validate_version("spec.tls.version", tls["version"]):
            out.add(field_path, reason)
    if tls.get("verification") is None:
        return
    verification = _as_dict(tls["verification"])
    path = "spec.tls.verification"
    server_name = verification.get("serverName")
    if server_name is not None and not is_dns_name(server_name):
        out.add(f"{path}.serverName", "must be a valid DNS name")
    if (verification.get("mode") or "") not in (*_VERIFICATION_MODES, ""):
        out.add(f"{path}.mode", policy_tls.must_be_one_of("mode", _VERIFICATION_MODES))
    for i, san in enumerate(_as_list(verification.get("subjectAltNames"))):
        if _as_dict(san).get("type") not in _SAN_MATCH_TYPES:
            out.add(f"{path}.subjectAltNames[{i}].type", policy_tls.must_be_one_of("type", _SAN_MATCH_TYPES))
    has_cert, has_key = verification.get("clientCert") is not None, verification.get("clientKey") is not None
    if has_cert and not has_key:
        out.add(f"{path}.clientKey", "must be defined when clientCert is defined")
    if has_key and not has_cert:
        out.add(f"{path}.clientCert", "must be defined when clientKey is defined")


_PEM_BLOCK = re.compile(r"-----BEGIN ([^\n]*)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_PRIVATE_KEY_TYPES = ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY")


def _is_pem_certificate(text: str) -> bool:
    """Go's pem.Decode finds a block (skipping undecodable ones) and it is not a private key."""
    for block in _PEM_BLOCK.finditer(text):
        body = block.group(2)
        head, blank, rest = body.partition("\n\n")
        if blank and ":" in head.split("\n", 1)[0]:
            body = rest   # RFC 1421 headers before the base64 body
        try:
            base64.b64decode("".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            continue
        return block.group(1) not in _PRIVATE_KEY_TYPES
    return False


def validate_mesh_trust(content: Content, out: Violations) -> None:
    spec = _as_dict(content.get("spec"))
    bundles = _as_list(spec.get("caBundles"))
    if not bundles:
        out.add("spec.caBundles", "must not be empty")
    for i, bundle in enumerate(bundles):
        kind = _as_dict(bundle).get("type") or ""
        if kind != "Pem":
            # Kuma reports this at spec.caBundles.type, without the index
            out.add("spec.caBundles.type", f"{kind} must be one of: Pem")
        elif _as_dict(bundle).get("pem") is None:
            out.add(f"spec.caBundles[{i}].pem", "must be defined")
        elif not _is_pem_certificate(_as_dict(bundle["pem"]).get("value") or ""):
            out.add(f"spec.caBundles[{i}].pem.value", "provided certificate has incorrect format")
    trust_domain = spec.get("trustDomain") or ""
    if not trust_domain:
        out.add("spec.trustDomain", "trustDomain needs to be defined")
    if len(trust_domain) > 253:
        out.add("spec.trustDomain", "must not be longer than 253 characters")


# --- the types -----------------------------------------------------------------------------------------

TYPES: tuple[ResourceType, ...] = (
    ResourceType(name="MeshService", path="meshservices", scope="Mesh", short_name="msvc", wrapped=True,
                 has_status=True, schema=MESH_SERVICE_SCHEMA, validate=validate_mesh_service,
                 singular="Mesh Service", plural="Mesh Services", kumactl="meshservice",
                 include_in_federation=False, present=_present, warnings=_destination_warnings,
                 max_name_length=63),
    ResourceType(name="MeshExternalService", path="meshexternalservices", scope="Mesh", short_name="extsvc",
                 wrapped=True, has_status=True, schema=MESH_EXTERNAL_SERVICE_SCHEMA,
                 validate=validate_mesh_external_service, singular="Mesh External Service",
                 plural="Mesh External Services", kumactl="meshexternalservice", present=_present,
                 warnings=_destination_warnings, max_name_length=63, data_sources=mesh_external_service_sources),
    ResourceType(name="Workload", path="workloads", scope="Mesh", short_name="wl", wrapped=True, has_status=True,
                 schema=WORKLOAD_SCHEMA, singular="Workload", plural="Workloads", kumactl="workload",
                 include_in_federation=False, present=_present, max_name_length=253),
    ResourceType(name="MeshTrust", path="meshtrusts", scope="Mesh", short_name="mtrust", wrapped=True,
                 has_status=True, schema=MESH_TRUST_SCHEMA, validate=validate_mesh_trust, singular="Mesh Trust",
                 plural="Mesh Trusts", kumactl="meshtrust", present=_present, warnings=_mesh_trust_warnings),
)

_BY_NAME: dict[str, ResourceType] = {t.name: t for t in TYPES}
