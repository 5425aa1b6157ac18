"""What every resource is: a typed record with meta, labels and content, and its type descriptor."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from appliance.core.validation import Violations

Scope = Literal["Mesh", "Global"]

# content: the body without its meta. Legacy types keep their fields at the top level
# ({"networking": ...}); new-style types wrap them ({"spec": ..., "status": ...}).
Content = dict[str, Any]


@dataclass
class Resource:
    type: str
    mesh: str            # "" for global-scoped types
    name: str
    content: Content
    labels: dict[str, str] = field(default_factory=dict)
    version: int = 0     # 0 = never stored; the store bumps it on every write
    creation_time: str = ""
    modification_time: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.type, self.mesh, self.name)

    @property
    def spec(self) -> dict[str, Any]:
        """The spec of a new-style resource (empty dict if absent)."""
        return self.content.get("spec") or {}


@dataclass(frozen=True)
class PolicyInfo:
    """What `GET /_resources` says about a policy type."""
    is_target_ref: bool = True
    has_to: bool = False
    has_from: bool = False
    has_rules: bool = False
    is_from_as_rules: bool = False


@dataclass(frozen=True)
class ResourceType:
    name: str                       # "MeshTrafficPermission"
    path: str                       # "meshtrafficpermissions" (REST path segment)
    scope: Scope
    short_name: str = ""            # used in KRIs: kri_<short>_<mesh>_<zone>_<ns>_<name>_
    wrapped: bool = False           # new-style: body has spec (and status)
    has_status: bool = False
    schema: dict[str, Any] | None = None          # structural schema of `spec` (wrapped types)
    validate: Callable[[Content, Violations], None] | None = None
    aliases: tuple[str, ...] = ()   # other REST path segments for the same type
    provided_by_zone: bool = True   # gets kuma.io/origin, kuma.io/zone, kuma.io/env labels
    is_proxy: bool = False          # gets kuma.io/proxy-type
    policy: PolicyInfo | None = None
    read_only: bool = False
    admin_only: bool = False        # secrets: readable and writable by admins only
    admin_writes: bool = False      # readable by all, created, changed and deleted by admins only
    singular: str = ""              # "Mesh Traffic Permission"
    plural: str = ""
    include_in_federation: bool = True
    kumactl: str = ""               # "meshtrafficpermission" (kumactl get <arg>)
    max_name_length: int = 0        # 0 = only the generic 253; checked on the display name
    # Computed fields added to the REST representation (e.g. MeshService "snis").
    present: Callable[["Resource", dict[str, Any]], None] | None = None
    # Deprecation warnings returned on create/update.
    warnings: Callable[["Resource"], list[str]] | None = None
    # Where the type holds Kuma DataSources: (field path, source) pairs, for who-may-reference-what rules.
    data_sources: Callable[[Content], list[tuple[str, Any]]] | None = None
    # Fields only admins may set: (field path, what setting it makes happen) pairs present in the content.
    admin_fields: Callable[[Content], list[tuple[str, str]]] | None = None
