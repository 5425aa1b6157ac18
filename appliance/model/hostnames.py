"""Hostnames from HostnameGenerators (Kuma 2.14's hostnamegenerator/hostname), as pure functions.

A generator's `template` is Go text/template text over the service's `.Name`, `.DisplayName`, `.Namespace`,
`.Mesh` and `.Zone`, with `label "key"`. We evaluate those actions (with `{{-`/`-}}` trimming), which is
what Kuma's docs and defaults use; any other action is refused when the generator is written.
The generators apply in Kuma's order (this zone's first, then by creation time, then name) to services in
creation-time order; a hostname taken in the mesh by an earlier service is a collision for later ones.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from appliance.core.resources.model import Resource

TYPE = "HostnameGenerator"
FIELDS = ("Name", "DisplayName", "Namespace", "Mesh", "Zone")
_ACTION = re.compile(r"\{\{(-\s)?\s*(.*?)\s*(\s-)?\}\}", re.S)
_FIELD = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)")
_LABEL = re.compile(r'label\s+"((?:[^"\\]|\\.)*)"')
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

# the defaults a zone control plane on Universal creates (pkg/defaults/hostname_generator.go)
DEFAULTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("local-mesh-external-service", {"selector": {"meshExternalService": {"matchLabels": {
        "kuma.io/origin": "zone"}}}, "template": "{{ .DisplayName }}.extsvc.mesh.local"}),
    ("local-universal-mesh-service", {"selector": {"meshService": {"matchLabels": {
        "kuma.io/origin": "zone"}}}, "template": "{{ .DisplayName }}.svc.mesh.local"}),
)
DEFAULT_LABELS = {"kuma.io/origin": "zone"}


class TemplateError(ValueError):
    pass


def _parts(template: str) -> list[tuple[str, str]]:
    """("text", s) and ("field", name) / ("label", key) pieces; TemplateError for what we do not evaluate."""
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        if m.group(1):
            text = text.rstrip()
        out.append(("text", text))
        action = m.group(2)
        if field := _FIELD.fullmatch(action):
            out.append(("field", field.group(1)))
        elif label := _LABEL.fullmatch(action):
            out.append(("label", label.group(1).encode().decode("unicode_escape")))
        else:
            raise TemplateError(f"unsupported action {{{{ {action} }}}}: only {{{{ .Name }}}}, {{{{ .DisplayName }}}}, "
                                "{{ .Namespace }}, {{ .Mesh }}, {{ .Zone }} and {{ label \"key\" }} are evaluated")
        pos = m.end()
        if m.group(3):
            rest = template[pos:]
            pos += len(rest) - len(rest.lstrip())
    tail = template[pos:]
    if "{{" in tail:
        raise TemplateError("unclosed action")
    out.append(("text", tail))
    return out


def _render(template: str, values: Mapping[str, str], labels: Mapping[str, str]) -> str:
    out = []
    for kind, value in _parts(template):
        if kind == "text":
            out.append(value)
        elif kind == "field":
            if value not in values:
                raise TemplateError(f"can't evaluate field {value} in type hostname.meshedName")
            out.append(values[value])
        elif value in labels:
            out.append(labels[value])
        else:
            raise TemplateError(f"error calling label: label {value} not found")
    return "".join(out)


def dns_name_problem(name: str) -> str | None:
    if len(name) > 253:
        return "must be no more than 253 characters"
    if not _DNS1123_SUBDOMAIN.fullmatch(name):
        return ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                "and must start and end with an alphanumeric character")
    return None


def template_problem(template: str) -> str | None:
    """validateTemplate: empty, not evaluable, or not a DNS name with stub values."""
    if not template:
        return "must not be empty"
    try:
        rendered = _render(template, {f: f.lower() for f in FIELDS}, _AnyLabel())
    except TemplateError as e:
        return f"couldn't parse template: {e}"
    if problem := dns_name_problem(rendered):
        return f"template renders to {rendered!r} which is not a valid DNS name: {problem}"
    return None


class _AnyLabel(dict):
    """Every label exists (Kuma validates with a `label` that answers "label")."""
    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> str:
        return "label"


def hostname(template: str, service: Resource, zone: str, validate_dns: bool = True) -> str:
    """EvaluateTemplate for one service; TemplateError when it cannot be evaluated or (validate_dns) is no
    DNS name."""
    labels = service.labels
    values = {"Name": service.name, "DisplayName": labels.get("kuma.io/display-name", service.name),
              "Namespace": labels.get("k8s.kuma.io/namespace", ""), "Mesh": service.mesh,
              "Zone": labels.get("kuma.io/zone") or zone}
    generated = _render(template, values, labels)
    if validate_dns and (problem := dns_name_problem(generated)):
        raise TemplateError(f"generated hostname {generated!r} is not a valid DNS name: {problem}")
    return generated


@dataclass(frozen=True)
class Generated:
    addresses: list[dict[str, Any]]
    generators: list[dict[str, Any]]


def matches(generator: Resource, selector_kind: str, labels: Mapping[str, str]) -> bool:
    """Whether the generator's selector of this kind (meshService, meshExternalService...) selects the labels."""
    selector = (generator.spec.get("selector") or {}).get(selector_kind)
    if selector is None:
        return False
    return all(labels.get(k) == v for k, v in ((selector.get("matchLabels") or {}).items()))


def _generator_order(g: Resource) -> tuple[int, str, str]:
    return (0 if g.labels.get("kuma.io/origin") == "zone" else 1, g.creation_time, g.name)


def generate(generators: Iterable[Resource], services: Iterable[Resource], selector_kind: str,
             zone: str) -> dict[tuple[str, str], Generated]:
    """The `status.addresses` and `status.hostnameGenerators` of each service, by (mesh, name)."""
    ordered = sorted(services, key=lambda s: (s.creation_time, s.name))
    taken: dict[tuple[str, str], str] = {}
    found: dict[tuple[str, str], dict[str, tuple[str, dict[str, str] | None]]] = {}
    for generator in sorted(generators, key=_generator_order):
        for svc in ordered:
            key = (svc.mesh, svc.name)
            hostname_, condition = "", None
            if matches(generator, selector_kind, svc.labels):
                try:
                    hostname_ = hostname(str(generator.spec.get("template") or ""), svc, zone)
                except TemplateError as e:
                    condition = {"status": "False", "reason": "TemplateError", "message": str(e)}
            if hostname_:
                owner = taken.get((svc.mesh, hostname_))
                if owner is not None and owner != svc.name:
                    condition = {"status": "False", "reason": "Collision",
                                 "message": f"Hostname collision with {svc.type}: {svc.name}"}
                    hostname_ = ""
                else:
                    taken[(svc.mesh, hostname_)] = svc.name
                    condition = {"status": "True", "reason": "Generated", "message": ""}
            found.setdefault(key, {})[generator.name] = (hostname_, condition)
    out: dict[tuple[str, str], Generated] = {}
    for key, by_generator in found.items():
        addresses, statuses = [], []
        for name in sorted(by_generator):
            hostname_, condition = by_generator[name]
            if condition is None:
                continue
            ref = {"coreName": name}
            if hostname_:
                addresses.append({"hostname": hostname_, "origin": "HostnameGenerator", "hostnameGeneratorRef": ref})
            statuses.append({"hostnameGeneratorRef": ref, "conditions": [{"type": "Generated", **condition}]})
        out[key] = Generated(addresses, statuses)
    return out
