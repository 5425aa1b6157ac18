"""The resource types kumactl knows, by the names Kuma's kumactl uses (`get meshtrafficpermissions`,
`get external-service NAME`, `delete global-secret NAME`), and their REST paths."""
from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from appliance.core.resources import registry
from appliance.core.resources.legacy_policies import LEGACY_POLICIES
from appliance.core.resources.model import ResourceType


@dataclass(frozen=True)
class KumactlType:
    name: str            # "MeshTrafficPermission"
    path: str            # REST path segment
    scope: str           # "Mesh" | "Global"
    arg: str             # kumactl get/delete TYPE NAME
    list_arg: str        # kumactl get TYPES
    aliases: tuple[str, ...] = ()
    list_aliases: tuple[str, ...] = ()
    wrapped: bool = False
    is_policy: bool = False
    read_only: bool = False
    short_name: str = ""

    @property
    def mesh_scoped(self) -> bool:
        return self.scope == "Mesh"

    def list_path(self, mesh: str) -> str:
        if self.mesh_scoped and mesh:
            return f"/meshes/{_seg(mesh)}/{self.path}"
        return f"/{self.path}"

    def item_path(self, mesh: str, name: str) -> str:
        if self.name == "Mesh":
            return f"/meshes/{_seg(name)}"
        if self.mesh_scoped:
            return f"/meshes/{_seg(mesh)}/{self.path}/{_seg(name)}"
        return f"/{self.path}/{_seg(name)}"


def _seg(text: str) -> str:
    return urllib.parse.quote(text, safe="")


# Where Kuma's kumactl names differ from `name.lower()` / the plural display name.
_KUMA_ARGS = {
    "ExternalService": ("external-service", "external-services", (), ()),
    "GlobalSecret": ("globalsecret", "globalsecrets", ("global-secret",), ("global-secrets",)),
}


def _describe(t: ResourceType) -> KumactlType:
    arg, list_arg, aliases, list_aliases = _KUMA_ARGS.get(
        t.name, (t.kumactl or t.name.lower(), t.plural.replace(" ", "").lower(), (), ()))
    return KumactlType(name=t.name, path=t.path, scope=t.scope, arg=arg, list_arg=list_arg, aliases=aliases,
                       list_aliases=list_aliases, wrapped=t.wrapped, is_policy=t.policy is not None,
                       read_only=t.read_only,
                       short_name=t.short_name)


# As in Kuma, insights and overviews are read through `inspect`, not get/delete/apply. Kuma's
# legacy policies are known by name, as Kuma's kumactl knows them: the server answers for them
# (an apply is refused naming the policy that replaces it; a list is empty).
TYPES: tuple[KumactlType, ...] = tuple(_describe(t) for t in registry.ALL_TYPES
                                       if not t.name.endswith(("Insight", "Overview"))) + tuple(
    KumactlType(name=p.name, path=p.path, scope="Mesh", arg=p.kumactl, list_arg=p.kumactl_list)
    for p in LEGACY_POLICIES)
BY_NAME: dict[str, KumactlType] = {t.name: t for t in TYPES}
BY_ARG: dict[str, KumactlType] = {a: t for t in TYPES for a in (t.arg, *t.aliases)}
BY_LIST_ARG: dict[str, KumactlType] = {a: t for t in TYPES for a in (t.list_arg, *t.list_aliases)}


def all_args() -> list[str]:
    """Every TYPE name `kumactl delete` accepts, sorted (its error message lists them)."""
    return sorted(BY_ARG)
