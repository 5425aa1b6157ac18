"""HostnameGenerator: global-scoped, names MeshServices and MeshExternalServices from a template
(Kuma 2.14's hostnamegenerator/api/v1alpha1, its rest.yaml schema and validate.go messages).

The template is checked by appliance/model/hostnames.py, which evaluates it for the services."""
from __future__ import annotations

from typing import Any

from appliance.core.resources.model import Content, ResourceType
from appliance.core.validation import Violations
from appliance.model import hostnames

_SELECTOR = {"type": "object", "properties": {"matchLabels": {"type": "object",
                                                              "additionalProperties": {"type": "string"}}}}
SCHEMA: dict[str, Any] = {"type": "object", "required": ["template"], "properties": {
    "extension": {"type": "object", "required": ["type"], "properties": {"config": {}, "type": {"type": "string"}}},
    "selector": {"type": "object", "properties": {
        "meshExternalService": _SELECTOR, "meshMultiZoneService": _SELECTOR, "meshService": _SELECTOR}},
    "template": {"type": "string"},
}}


def validate(content: Content, out: Violations) -> None:
    spec = content.get("spec") or {}
    selector = spec.get("selector") or {}
    if sum(1 for kind in ("meshService", "meshExternalService", "meshMultiZoneService")
           if selector.get(kind) is not None) != 1:
        out.add("spec.selector", "exact one selector (meshService, meshExternalService) must be defined")
    if problem := hostnames.template_problem(str(spec.get("template") or "")):
        out.add("spec.template", problem)
    extension = spec.get("extension")
    if isinstance(extension, dict) and not extension.get("type"):
        out.add("spec.extension.type", "must not be empty")


TYPE = ResourceType(name="HostnameGenerator", path="hostnamegenerators", scope="Global", short_name="hg",
                    wrapped=True, schema=SCHEMA, validate=validate, singular="Hostname Generator",
                    plural="Hostname Generators", kumactl="hostnamegenerator")
