"""Service-like new-style types of a single zone: MeshService, MeshExternalService, Workload, MeshTrust."""
from __future__ import annotations

from appliance.core.resources.model import ResourceType

TYPES: tuple[ResourceType, ...] = ()
