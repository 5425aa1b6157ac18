"""kuma-dp's definition of its proxy (bootstrap request or Envoy node metadata), decoded and validated as
the REST API does: what the API refuses, kuma-dp cannot register either."""
from __future__ import annotations

from typing import Any

from appliance.api import codec
from appliance.api.errors import KumaError, from_exception
from appliance.core.manager import ResourceManager
from appliance.core.resources import registry
from appliance.core.resources.model import Resource
from appliance.core.validation import BadRequest, ValidationError, Violation


def decode(raw: Any, type_name: str, mesh: str, name: str, exact: bool = False) -> Resource:
    """kuma-dp's definition of its proxy (YAML or JSON), decoded with the REST API's limits and
    validated as the API does. `exact`: it must be for `mesh`/`name` (the node id of its stream);
    otherwise these fill in what it leaves out."""
    if not isinstance(raw, str):
        raise KumaError(400, "Bad Request", "invalid dataplaneResource: expected a string")
    body = codec.parse_body(raw.encode(), None, "dataplaneResource")
    if not isinstance(body, dict):
        raise KumaError(400, "Bad Request", "invalid dataplaneResource: expected an object")
    try:
        res = codec.decode(registry.get(type_name), body)
    except ValidationError as e:
        raise KumaError(400, f"Invalid {type_name}", "Resource is not valid", e.violations)
    if exact and (res.mesh if mesh else "", res.name) != (mesh, name):
        raise KumaError(400, "Bad Request", f"proxyId {mesh}.{name} does not match proxy resource "
                        f"{res.mesh}.{res.name}")
    res.mesh = res.mesh or mesh if mesh else ""
    res.name = res.name or name
    return res


def check_transparent_outbounds(res: Resource, request: dict[str, Any]) -> None:
    """Kuma's bootstrap rule: a kuma-dp running with `--transparent-proxy` gets its outbounds from the
    control plane (virtual IPs), so its definition must list none."""
    redirect = (request.get("dataplaneConfig") or {}).get("redirect") if isinstance(
        request.get("dataplaneConfig"), dict) else None
    enabled = any(((redirect or {}).get(flow) or {}).get("enabled") for flow in ("inbound", "outbound"))
    if enabled and (res.content.get("networking") or {}).get("outbound"):
        raise KumaError(400, "Invalid Dataplane", "Resource is not valid", [
            Violation("outbound", "should be empty since dataplane is in Transparent Proxying mode")])


def check_rules(manager: ResourceManager, res: Resource, current: Resource | None) -> None:
    """What the REST API refuses, kuma-dp cannot register either: the same rules, the same answer."""
    try:
        manager.check_write(registry.get(res.type), res, current)
    except (ValidationError, BadRequest) as e:
        raise from_exception(e, "Could not process a resource")


def explain(e: KumaError) -> str:
    """An API error as one line (an ADS refusal has only a message): the detail, then each field's reason."""
    return "; ".join([e.detail] + [f"{v.field}: {v.reason}" for v in e.invalid])


def node_definition(node: object) -> str:
    """The Dataplane kuma-dp put in its Envoy's node metadata (--dataplane-file), or ""."""
    fields = getattr(getattr(node, "metadata", None), "fields", {})
    return fields["dataplane.resource"].string_value if "dataplane.resource" in fields else ""
