"""Every resource type we serve, by name and by REST path."""
from __future__ import annotations

from types import ModuleType
from typing import Any, Callable

from appliance import policies
from appliance.core.resources import (dataplane, externalservice, hostnamegenerator, mesh, meshgateway, secret,
                                      services, zoneegress)
from appliance.core.resources.model import Content, PolicyInfo, Resource, ResourceType
from appliance.core.validation import Violations


def _words(name: str) -> str:
    out = ""
    for i, ch in enumerate(name):
        if ch.isupper() and i and not (name[i - 1].isupper() and (i + 1 == len(name) or name[i + 1].isupper())):
            out += " "
        out += ch
    return out


def _plural(words: str) -> str:
    if words.lower().endswith(("s", "sh", "ch")):   # "Mesh TLS" -> "Mesh TLSes", as Kuma
        return words + "es"
    if words.endswith("y") and words[-2:-1] not in "aeiou":
        return words[:-1] + "ies"
    return words + "s"


def _legacy(name: str, path: str, scope: str, module: ModuleType, **kw: Any) -> ResourceType:
    words = _words(name)
    return ResourceType(name=name, path=path, scope=scope, validate=module.validate, schema=module.SHAPE,
                        singular=words, plural=_plural(words), kumactl=name.lower(), **kw)


def _policy_validator(module: ModuleType) -> Callable[[Content, Violations], None]:
    def validate(content: Content, out: Violations) -> None:
        for field, reason in module.validate(content.get("spec") or {}):
            out.add(field, reason)
    return validate


def _policy_warnings(module: ModuleType) -> Callable[[Resource], list[str]]:
    # Nothing accepted silently does nothing: what no plugin applies says so with every write.
    return lambda res: list(module.deprecations(res.spec)) + policies.not_applied(module, res.spec)


def _policy_admin_fields(module: ModuleType) -> Callable[[Content], list[tuple[str, str]]] | None:
    admin_only = getattr(module, "admin_only", None)
    return None if admin_only is None else lambda content: admin_only(content.get("spec") or {})


def _policy(module: ModuleType) -> ResourceType:
    words = _words(module.KIND)
    t = module.TARGETS
    return ResourceType(
        name=module.KIND, path=module.PATH, scope="Mesh", short_name=module.SHORT_NAME, wrapped=True,
        has_status=getattr(module, "HAS_STATUS", False),
        schema=module.SPEC_SCHEMA, validate=_policy_validator(module),
        policy=PolicyInfo(is_target_ref=t["is_target_ref"], has_to=t["has_to"], has_from=t["has_from"],
                          has_rules=t["has_rules"], is_from_as_rules=t["is_from_as_rules"]),
        singular=words, plural=_plural(words), kumactl=module.KIND.lower(), warnings=_policy_warnings(module),
        admin_fields=_policy_admin_fields(module), admin_writes=getattr(module, "ADMIN_WRITES", False),
    )


def _mesh_warnings(res: Resource) -> list[str]:
    return mesh.warnings(res.name, res.content)


CORE_TYPES: tuple[ResourceType, ...] = (
    _legacy("Mesh", "meshes", "Global", mesh, short_name="m", provided_by_zone=False,
            warnings=_mesh_warnings, data_sources=mesh.data_sources),
    _legacy("Dataplane", "dataplanes", "Mesh", dataplane, short_name="dp", is_proxy=True,
            include_in_federation=False, warnings=lambda res: dataplane.warnings(res.content)),
    _legacy("Secret", "secrets", "Mesh", secret, admin_only=True),
    _legacy("GlobalSecret", "globalsecrets", "Global", secret, admin_only=True, aliases=("global-secrets",)),
    _legacy("ZoneEgress", "zoneegresses", "Global", zoneegress, short_name="ze", is_proxy=True,
            include_in_federation=False),
    _legacy("ExternalService", "external-services", "Mesh", externalservice, data_sources=externalservice.data_sources),
    _legacy("MeshGateway", "meshgateways", "Mesh", meshgateway, short_name="mgw", data_sources=meshgateway.data_sources,
            warnings=lambda res: meshgateway.warnings(res.content)),
    ResourceType(name="DataplaneInsight", path="dataplane-insights", scope="Mesh", read_only=True,
                 provided_by_zone=False, include_in_federation=False, singular="Dataplane Insight",
                 plural="Dataplane Insights", kumactl="dataplane-insight"),
    ResourceType(name="ZoneEgressInsight", path="zoneegressinsights", scope="Global", read_only=True,
                 provided_by_zone=False, include_in_federation=False, singular="Zone Egress Insight",
                 plural="Zone Egress Insights", kumactl=""),
)
# A proxy type -> the read-only type that records its xDS subscriptions.
INSIGHTS = {"Dataplane": "DataplaneInsight", "ZoneEgress": "ZoneEgressInsight"}

ALL_TYPES: tuple[ResourceType, ...] = CORE_TYPES + services.TYPES + (hostnamegenerator.TYPE,) + tuple(_policy(m) for m in policies.ALL)

BY_NAME: dict[str, ResourceType] = {t.name: t for t in ALL_TYPES}
BY_PATH: dict[str, ResourceType] = {p: t for t in ALL_TYPES for p in (t.path, *t.aliases)}
BY_SHORT_NAME: dict[str, ResourceType] = {t.short_name: t for t in ALL_TYPES if t.short_name}
POLICY_MODULES: dict[str, ModuleType] = {m.KIND: m for m in policies.ALL}


def get(name: str) -> ResourceType:
    return BY_NAME[name]
