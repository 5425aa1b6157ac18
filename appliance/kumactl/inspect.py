"""`kumactl inspect dataplanes|meshes|zoneegresses|services`, `inspect dataplane NAME --type ...`,
`inspect meshgateway NAME` and `inspect <policy> NAME` (the proxies a policy hits).

The overviews (`/meshes/{mesh}/dataplanes/_overview`, `/zoneegresses/_overview`, `/mesh-insights`)
come with the control plane's insights (DataplaneInsight, issue #3). A control plane that does not
serve them answers 404; kumactl then builds the same shapes from the resources alone: every proxy
without an insight is Offline, exactly as Kuma shows a proxy that never connected.
"""
from __future__ import annotations

import argparse
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterable

from appliance.kumactl import printers
from appliance.kumactl.client import ApiClient, ApiError, CliError
from appliance.kumactl.flags import KeyValues, StringSlice
from appliance.kumactl.inspect_policies import render_policies, render_policy_attachments
from appliance.kumactl.resources import TYPES

if TYPE_CHECKING:
    from appliance.kumactl.context import Context

# `inspect <policy> NAME`: every policy type, by its kumactl name
TYPES_BY_ARG = {t.arg: t for t in TYPES if t.is_policy}
_OVERVIEW_META = ("type", "mesh", "name", "creationTime", "modificationTime", "labels", "kri")


def _with_fallback(client: ApiClient, path: str, query: list[tuple[str, str]],
                   fallback: Any) -> list[dict[str, Any]]:
    """All items of an insight endpoint, or `fallback()` when the server does not serve it."""
    try:
        return list(client.list_all(path, query))
    except ApiError as e:
        if e.status != 404:
            raise
        return list(fallback())


def _overview(kind: str, resource: dict[str, Any], spec_key: str, insight_key: str) -> dict[str, Any]:
    out = {k: resource[k] for k in _OVERVIEW_META if k in resource}
    out["type"] = kind
    out[spec_key] = {k: v for k, v in resource.items() if k not in _OVERVIEW_META}
    out[insight_key] = {}
    return out


def dataplane_overviews(client: ApiClient, mesh: str, tags: dict[str, str], gateway: bool,
                        ingress: bool) -> list[dict[str, Any]]:
    query = [("tag", f"{k}:{v}") for k, v in tags.items()]
    if gateway:
        query.append(("gateway", "true"))
    if ingress:
        query.append(("ingress", "true"))

    def from_dataplanes() -> Iterable[dict[str, Any]]:
        if ingress:  # zone ingresses are not served here: no dataplane is one
            return
        for dp in client.list_all(f"/meshes/{mesh}/dataplanes", [q for q in query if q[0] == "tag"]):
            if gateway and not (dp.get("networking") or {}).get("gateway"):
                continue
            yield _overview("DataplaneOverview", dp, "dataplane", "dataplaneInsight")
    return _with_fallback(client, f"/meshes/{mesh}/dataplanes/_overview", query, from_dataplanes)


def zone_egress_overviews(client: ApiClient) -> list[dict[str, Any]]:
    def from_zone_egresses() -> Iterable[dict[str, Any]]:
        for ze in client.list_all("/zoneegresses"):
            yield _overview("ZoneEgressOverview", ze, "zoneEgress", "zoneEgressInsight")
    return _with_fallback(client, "/zoneegresses/_overview", [], from_zone_egresses)


def mesh_insights(client: ApiClient) -> list[dict[str, Any]]:
    def from_resources() -> Iterable[dict[str, Any]]:
        meshes = list(client.list_all("/meshes"))
        counts: dict[str, dict[str, int]] = {m["name"]: {} for m in meshes}
        counted = [t for t in TYPES if t.name in ("Dataplane", "ExternalService") or t.is_policy]
        for rtype in counted:
            for item in client.list_all(f"/{rtype.path}"):
                per_mesh = counts.setdefault(item.get("mesh", ""), {})
                per_mesh[rtype.name] = per_mesh.get(rtype.name, 0) + 1
        for mesh in meshes:
            per_mesh = counts[mesh["name"]]
            dataplanes = per_mesh.pop("Dataplane", 0)
            yield {"type": "MeshInsight", "name": mesh["name"], "creationTime": mesh.get("creationTime"),
                   "modificationTime": mesh.get("modificationTime"),
                   "dataplanes": {"total": dataplanes, "offline": dataplanes},
                   "policies": {name: {"total": n} for name, n in sorted(per_mesh.items())}}
    return _with_fallback(client, "/mesh-insights", [], from_resources)


# --- tables -----------------------------------------------------------------------------------

def _subscriptions(insight: dict[str, Any]) -> list[dict[str, Any]]:
    return insight.get("subscriptions") or []


def _is_online(insight: dict[str, Any]) -> bool:
    return any(s.get("connectTime") and not s.get("disconnectTime") for s in _subscriptions(insight))


def _total(insight: dict[str, Any], key: str) -> str:
    return str(sum(int(((s.get("status") or {}).get("total") or {}).get(key) or 0) for s in _subscriptions(insight)))


def _status(dataplane: dict[str, Any], insight: dict[str, Any]) -> tuple[str, list[str]]:
    """Kuma's DataplaneOverview status: Online, Offline or Partially degraded, and what is not ready."""
    networking = dataplane.get("networking") or {}
    online = _is_online(insight)
    if networking.get("gateway"):
        return ("Online" if online else "Offline"), []
    inbounds, listeners = networking.get("inbound") or [], networking.get("listeners") or []
    ready, errors = 0, []
    for inbound in inbounds:
        health = inbound.get("health")
        if (health is not None and not health.get("ready")) or inbound.get("state") == "NotReady":
            service = (inbound.get("tags") or {}).get("kuma.io/service", "")
            errors.append(f"inbound[port={inbound.get('port', 0)},svc={service}] is not ready")
        else:
            ready += 1
    for listener in listeners:
        if listener.get("state") == "Ready":
            ready += 1
        else:
            errors.append(f"listener[port={listener.get('port', 0)},type={listener.get('type', '')}] is not ready")
    if not online or ready == 0:
        return "Offline", errors
    if ready < len(inbounds) + len(listeners):
        return "Partially degraded", errors
    return "Online", []


def _connected_and_updated(subscription: dict[str, Any], now: datetime) -> list[str]:
    """LAST CONNECTED AGO and LAST UPDATED AGO of a proxy's latest subscription."""
    return [printers.ago(subscription.get("connectTime"), now),
            printers.ago((subscription.get("status") or {}).get("lastUpdateTime"), now)]


def _versions(subscription: dict[str, Any]) -> tuple[str, str, str]:
    version = subscription.get("version") or {}
    deps = ", ".join(f"{k}: {v}" for k, v in (version.get("dependencies") or {}).items())
    return ((version.get("kumaDp") or {}).get("version", ""), (version.get("envoy") or {}).get("version", ""),
            deps or "-")


DATAPLANE_HEADERS = ["MESH", "NAME", "TAGS", "STATUS", "LAST CONNECTED AGO", "LAST UPDATED AGO", "TOTAL UPDATES",
                     "TOTAL ERRORS", "CERT REGENERATED AGO", "CERT EXPIRATION", "CERT REGENERATIONS", "CERT BACKEND",
                     "SUPPORTED CERT BACKENDS", "KUMA-DP VERSION", "ENVOY VERSION", "DEPENDENCIES VERSIONS", "NOTES"]


def dataplane_row(item: dict[str, Any], now: datetime) -> list[str]:
    dataplane, insight = item.get("dataplane") or {}, item.get("dataplaneInsight") or {}
    last = (_subscriptions(insight) or [{}])[-1]
    mtls = insight.get("mTLS") or {}
    networking = dataplane.get("networking") or {}
    tags = [i.get("tags") or {} for i in networking.get("inbound") or []]
    tags.append((networking.get("gateway") or {}).get("tags") or {})
    status, errors = _status(dataplane, insight)
    kuma_dp, envoy, deps = _versions(last)
    return [item.get("mesh", ""), item.get("name", ""), printers.tag_set(tags), status,
            *_connected_and_updated(last, now), _total(insight, "responsesSent"), _total(insight, "responsesRejected"),
            printers.ago(mtls.get("lastCertificateRegeneration"), now),
            printers.date(mtls.get("certificateExpirationTime"), now),
            str(int(mtls.get("certificateRegenerations") or 0)),
            mtls.get("issuedBackend", "") if insight.get("mTLS") is not None else "-",
            ",".join(mtls.get("supportedBackends") or []), kuma_dp, envoy, deps, ";".join(errors)]


ZONE_EGRESS_HEADERS = ["NAME", "STATUS", "LAST CONNECTED AGO", "LAST UPDATED AGO", "TOTAL UPDATES", "TOTAL ERRORS",
                       "KUMA-DP VERSION", "ENVOY VERSION"]


def zone_egress_row(item: dict[str, Any], now: datetime) -> list[str]:
    insight = item.get("zoneEgressInsight") or {}
    last = (_subscriptions(insight) or [{}])[-1]
    kuma_dp, envoy, _ = _versions(last)
    return [item.get("name", ""), "Online" if _is_online(insight) else "Offline", *_connected_and_updated(last, now),
            _total(insight, "responsesSent"), _total(insight, "responsesRejected"), kuma_dp, envoy]


# Kuma 2.14 still shows the counts of its legacy policies here (always 0 on this control plane).
MESH_COLUMNS = [("TRAFFIC PERMISSIONS", "TrafficPermission"), ("TRAFFIC ROUTES", "TrafficRoute"),
                ("CIRCUIT BREAKERS", "CircuitBreaker"), ("HEALTH CHECKS", "HealthCheck"),
                ("FAULT INJECTIONS", "FaultInjection"), ("EXTERNAL SERVICES", "ExternalService"),
                ("TRAFFIC TRACES", "TrafficTrace"), ("TRAFFIC LOGS", "TrafficLog"),
                ("PROXY TEMPLATES", "ProxyTemplate"), ("RATE LIMITS", "RateLimit")]
MESH_HEADERS = ["MESH", "DATAPLANES", *(h for h, _ in MESH_COLUMNS)]


def mesh_row(item: dict[str, Any], _: datetime) -> list[str]:
    dataplanes, policies = item.get("dataplanes") or {}, item.get("policies") or {}
    return [item.get("name", ""), f"{int(dataplanes.get('online') or 0)}/{int(dataplanes.get('total') or 0)}",
            *(str(int((policies.get(kind) or {}).get("total") or 0)) for _, kind in MESH_COLUMNS)]


def print_overviews(ctx: Context, items: list[dict[str, Any]], headers: list[str], row: Any) -> None:
    now = ctx.now()
    data = {"total": len(items), "items": items, "next": None}
    printers.print_data(ctx.out, ctx.output, data, lambda: printers.Table(headers, [row(i, now) for i in items]))


# --- commands ---------------------------------------------------------------------------------

def _dataplanes(ctx: Context) -> None:
    printers.check_format(ctx.output)
    a = ctx.args
    items = dataplane_overviews(ctx.connected_client(), ctx.mesh, a.tag, a.gateway, a.ingress)
    print_overviews(ctx, items, DATAPLANE_HEADERS, dataplane_row)


def _meshes(ctx: Context) -> None:
    printers.check_format(ctx.output)
    print_overviews(ctx, mesh_insights(ctx.connected_client()), MESH_HEADERS, mesh_row)


def _zone_egresses(ctx: Context) -> None:
    printers.check_format(ctx.output)
    print_overviews(ctx, zone_egress_overviews(ctx.connected_client()), ZONE_EGRESS_HEADERS, zone_egress_row)


# --- inspect services ---------------------------------------------------------------------------

SERVICE_HEADERS = ["SERVICE", "STATUS", "DATAPLANES"]
_SERVICE_STATUS = {"online": "Online", "partially_degraded": "Partially degraded"}   # any other: Offline
_SERVICE_META = ("mesh", "name", "creationTime", "modificationTime", "labels")


def service_overview(item: dict[str, Any]) -> dict[str, Any]:
    """A ServiceInsight item as kumactl decodes and prints it (a ServiceOverview): proto3 JSON, zero values
    left out."""
    out: dict[str, Any] = {"type": "ServiceOverview"}
    out.update({k: item[k] for k in _SERVICE_META if item.get(k)})
    if item.get("status") and item["status"] != "none":
        out["status"] = item["status"]
    stats = item.get("dataplanes") or {}
    out["dataplanes"] = {k: stats[k] for k in ("total", "online", "offline") if stats.get(k)}
    for key in ("issuedBackends", "serviceType", "addressPort", "zones"):
        if item.get(key) and not (key == "serviceType" and item[key] == "internal"):
            out[key] = item[key]
    return out


def service_row(item: dict[str, Any], _: datetime) -> list[str]:
    stats = item.get("dataplanes") or {}
    return [item.get("name", ""), _SERVICE_STATUS.get(item.get("status", ""), "Offline"),
            f"{int(stats.get('online') or 0)}/{int(stats.get('total') or 0)}"]


def _services(ctx: Context) -> None:
    printers.check_format(ctx.output)
    page = ctx.connected_client().get_json(f"/meshes/{ctx.mesh}/service-insights")
    items = [service_overview(i) for i in page.get("items") or []]
    data = {"total": page.get("total", len(items)), "items": items, "next": page.get("next")}
    now = ctx.now()
    printers.print_data(ctx.out, ctx.output, data,
                        lambda: printers.Table(SERVICE_HEADERS, [service_row(i, now) for i in items]))


# --- inspect <policy> NAME ----------------------------------------------------------------------

def _policy(ctx: Context) -> None:
    a = ctx.args
    rtype = TYPES_BY_ARG[a.inspect_command]
    client = ctx.connected_client()
    base = rtype.item_path(ctx.mesh, a.name)
    if not a.new_api:
        ctx.out.write(render_policy_attachments(client.get_json(base + "/dataplanes")))
        return
    printers.check_format(ctx.output)
    # Kuma's kumactl asks `-resources/dataplanes`, which no server serves; the endpoint is `_resources`
    query = [("offset", str(a.offset))] if a.offset else []
    answer = client.get_json(base + "/_resources/dataplanes", query)
    items = answer.get("items") or []
    printers.print_data(ctx.out, ctx.output, answer, lambda: printers.Table(
        ["Type", "Mesh", "Name"], [[i.get("type", ""), i.get("mesh", ""), i.get("name", "")] for i in items],
        footer=f"Total: {answer.get('total', 0)}"))


_INSPECTIONS = {"config-dump": "xds", "stats": "stats", "clusters": "clusters", "config": "_config"}


def _meshgateway(ctx: Context) -> None:
    """`inspect meshgateway NAME`: the names of the builtin gateway proxies it configures, one a line (Kuma's
    template, whatever the output format)."""
    page = ctx.connected_client().get_json(f"/meshes/{ctx.mesh}/meshgateways/{ctx.args.name}/dataplanes")
    ctx.out.write("".join(f"{(i.get('dataplane') or {}).get('name', '')}\n" for i in page.get("items") or []))


def _dataplane(ctx: Context) -> None:
    a = ctx.args
    kind = "config-dump" if a.config_dump else a.type
    if a.shadow and kind != "config":
        raise CliError("flag '--shadow' can be used only when '--type=config'")
    if a.include and kind != "config":
        raise CliError("flag '--include' can be used only when '--type=config'")
    if a.include_eds and kind != "config-dump":
        raise CliError("flag '--include-eds' can be used only when '--type=config-dump'")
    if kind != "policies" and kind not in _INSPECTIONS:
        raise CliError("invalid inspection type")
    client = ctx.connected_client()
    base = f"/meshes/{ctx.mesh}/dataplanes/{a.name}"
    if kind == "policies":
        ctx.out.write(render_policies(client.get_json(base + "/policies")))
        return
    query: list[tuple[str, str]] = []
    if kind == "config-dump":
        query = [("include_eds", str(a.include_eds).lower())]
    elif kind == "config":
        query = [("shadow", str(a.shadow).lower()), *(("include", i) for i in a.include)]
    _print_inspection(ctx, f"{base}/{_INSPECTIONS[kind]}", query)


def _print_inspection(ctx: Context, path: str, query: list[tuple[str, str]]) -> None:
    """What the control plane answers, as it is; an error as Kuma's inspect client words it: `(status): body`."""
    status, raw = ctx.connected_client().request("GET", path, query)
    text = raw.decode("utf-8", errors="replace")
    if status != 200:
        raise CliError(f"({status}): {text}")
    ctx.out.write(text)


ZONE_EGRESS_POLICIES_ERROR = ("Policies are not applied on ZoneEgress, please use '--config-dump' flag to get "
                              "envoy config dump of the ZoneEgress")


def _zone_egress(ctx: Context) -> None:
    a = ctx.args
    kind = "config-dump" if a.config_dump else a.type
    if a.include_eds and kind != "config-dump":
        raise CliError("flag '--include-eds' can be used only when '--type=config-dump'")
    if kind == "policies":
        raise CliError(ZONE_EGRESS_POLICIES_ERROR)
    if kind not in ("config-dump", "stats", "clusters"):
        raise CliError("invalid inspection type")
    query = [("include_eds", str(a.include_eds).lower())] if kind == "config-dump" else []
    _print_inspection(ctx, f"/zoneegresses/{a.name}/{_INSPECTIONS[kind]}", query)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("inspect", parents=[common], help="Inspect Kuma resources",
                       description="Inspect Kuma resources.")
    p.add_argument("-o", "--output", default="table", help="output format: one of table|yaml|json")
    what = p.add_subparsers(dest="inspect_command", metavar="COMMAND")
    p.set_defaults(run=lambda ctx, parser=p: parser.print_help(ctx.out))
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("-o", "--output", default=argparse.SUPPRESS, help="output format: one of table|yaml|json")

    dps = what.add_parser("dataplanes", parents=[common, output], help="Inspect Dataplanes")
    dps.add_argument("-m", "--mesh", default="default", help="mesh to use")
    dps.add_argument("--tag", action=KeyValues,
                     help="filter by tag in format of key=value. You can provide many tags")
    dps.add_argument("--gateway", action="store_true", help="filter gateway dataplanes")
    dps.add_argument("--ingress", action="store_true", help="filter ingress dataplanes")
    dps.set_defaults(run=_dataplanes)
    what.add_parser("meshes", parents=[common, output], help="Inspect Meshes").set_defaults(run=_meshes)
    what.add_parser("zoneegresses", parents=[common, output], help="Inspect Zone Egresses").set_defaults(
        run=_zone_egresses)

    services = what.add_parser("services", parents=[common, output], help="Inspect Services")
    services.add_argument("-m", "--mesh", default="default", help="mesh")
    services.set_defaults(run=_services)
    for rtype in TYPES_BY_ARG.values():
        policy = what.add_parser(rtype.arg, parents=[common, output], help=f"Inspect {rtype.name}")
        policy.add_argument("name", metavar="NAME")
        policy.add_argument("-m", "--mesh", default="default", help="mesh to use")
        policy.add_argument("--offset", type=int, default=0, help="the offset for pagination")
        policy.add_argument("--new-api", action="store_true", help="use the newer version of the inspect api")
        policy.set_defaults(run=_policy)

    gateway = what.add_parser("meshgateway", parents=[common, output], help="Inspect MeshGateway",
                              description="List Dataplanes matched by this MeshGateway.")
    gateway.add_argument("name", metavar="NAME")
    gateway.add_argument("-m", "--mesh", default="default", help="mesh to use")
    gateway.set_defaults(run=_meshgateway)

    dp = what.add_parser("dataplane", parents=[common, output], help="Inspect Dataplane")
    dp.add_argument("name", metavar="NAME")
    dp.add_argument("-m", "--mesh", default="default", help="mesh to use")
    dp.add_argument("--type", default="policies",
                    help="inspection type: one of policies|config-dump|stats|clusters|config")
    dp.add_argument("--config-dump", action="store_true", help=argparse.SUPPRESS)
    dp.add_argument("--include-eds", action="store_true", help="include EDS when dumping envoy config for dataplane")
    dp.add_argument("--shadow", action="store_true", help="compute the XDS config with 'kuma.io/effect: shadow' "
                                                          "policies taken into account")
    dp.add_argument("--include", action=StringSlice, default=[],
                    help="extra fields to include in the response (e.g. diff)")
    dp.set_defaults(run=_dataplane)

    egress = what.add_parser("zoneegress", parents=[common, output], help="Inspect ZoneEgress")
    egress.add_argument("name", metavar="NAME")
    egress.add_argument("--type", default="config-dump", help="inspection type: one of config-dump|stats|clusters")
    egress.add_argument("--config-dump", action="store_true", help=argparse.SUPPRESS)
    egress.add_argument("--include-eds", action="store_true",
                        help="include EDS when dumping envoy config for dataplane")
    egress.set_defaults(run=_zone_egress)
