"""`kumactl get TYPES` and `kumactl get TYPE NAME`, with Kuma 2.14's table columns."""
from __future__ import annotations

import argparse
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

from appliance.kumactl import printers
from appliance.kumactl.client import CliError, decode, error_from, next_offset
from appliance.kumactl.resources import BY_ARG, BY_LIST_ARG, TYPES, KumactlType

if TYPE_CHECKING:
    from appliance.kumactl.context import Context

RowFn = Callable[[dict[str, Any], datetime], list[str]]


def _dataplane_row(dp: dict[str, Any], now: datetime) -> list[str]:
    networking = dp.get("networking") or {}
    tags = [i.get("tags") or {} for i in networking.get("inbound") or []]
    tags.append((networking.get("gateway") or {}).get("tags") or {})
    return [dp.get("mesh", ""), dp.get("name", ""), printers.tag_set(tags),
            networking.get("advertisedAddress") or networking.get("address", ""),
            printers.age(dp.get("modificationTime"), now)]


def _external_service_row(es: dict[str, Any], now: datetime) -> list[str]:
    return [es.get("mesh", ""), es.get("name", ""), printers.tag_set([es.get("tags") or {}]),
            (es.get("networking") or {}).get("address", ""), printers.age(es.get("modificationTime"), now)]


def _on_off(value: Any) -> str:
    return "on" if value else "off"


def _mesh_row(mesh: dict[str, Any], now: datetime) -> list[str]:
    mtls = mesh.get("mtls") or {}
    enabled = mtls.get("enabledBackend", "")
    ca = "off"
    if enabled:
        backend = next((b for b in mtls.get("backends") or [] if b.get("name") == enabled), {})
        ca = f"{backend.get('type', '')}/{enabled}"
    routing = mesh.get("routing") or {}
    return [mesh.get("name", ""), ca, _on_off(routing.get("localityAwareLoadBalancing")),
            _on_off(routing.get("zoneEgress")), printers.age(mesh.get("modificationTime"), now)]


def _mesh_scoped_row(res: dict[str, Any], now: datetime) -> list[str]:
    return [res.get("mesh", ""), res.get("name", ""), printers.age(res.get("modificationTime"), now)]


def _global_row(res: dict[str, Any], now: datetime) -> list[str]:
    return [res.get("name", ""), printers.age(res.get("modificationTime"), now)]


CUSTOM_TABLES: dict[str, tuple[list[str], RowFn]] = {
    "Dataplane": (["MESH", "NAME", "TAGS", "ADDRESS", "AGE"], _dataplane_row),
    "ExternalService": (["MESH", "NAME", "TAGS", "ADDRESS", "AGE"], _external_service_row),
    "Mesh": (["NAME", "mTLS", "LOCALITY", "ZONEEGRESS", "AGE"], _mesh_row),
}


def table_for(rtype: KumactlType) -> tuple[list[str], RowFn]:
    if rtype.name in CUSTOM_TABLES:
        return CUSTOM_TABLES[rtype.name]
    if rtype.mesh_scoped:
        return ["MESH", "NAME", "AGE"], _mesh_scoped_row
    return ["NAME", "AGE"], _global_row


def print_list(ctx: Context, rtype: KumactlType, page: dict[str, Any]) -> None:
    items = page.get("items") or []
    headers, row = table_for(rtype)
    now = ctx.now()
    data = {"total": page.get("total", len(items)), "items": items, "next": None}
    printers.print_data(ctx.out, ctx.output, data,
                        lambda: printers.Table(headers, [row(i, now) for i in items],
                                               printers.pagination_footer(next_offset(page))))


def print_one(ctx: Context, rtype: KumactlType, resource: dict[str, Any]) -> None:
    headers, row = table_for(rtype)
    printers.print_data(ctx.out, ctx.output, resource,
                        lambda: printers.Table(headers, [row(resource, ctx.now())]),
                        lambda: printers.resource_to_yaml(resource, rtype.wrapped))


def _run(ctx: Context) -> None:
    a = ctx.args
    if not a.type:
        a.parser.print_help(ctx.out)
        return
    printers.check_format(a.output)
    if a.type in BY_LIST_ARG:
        if a.name is not None:
            raise CliError(f'unknown command "{a.name}" for "kumactl get {a.type}"')
        rtype = BY_LIST_ARG[a.type]
        client = ctx.connected_client()
        query = [("size", str(a.size))] if a.size else []
        if a.offset:
            query.append(("offset", a.offset))
        page = client.get_json(rtype.list_path(ctx.mesh if rtype.mesh_scoped else ""), query)
        print_list(ctx, rtype, page)
        return
    if a.type not in BY_ARG:
        raise CliError(f'unknown command "{a.type}" for "kumactl get"')
    rtype = BY_ARG[a.type]
    if a.name is None:
        raise CliError(f'accepts 1 arg(s), received 0. Usage: kumactl get {a.type} NAME')
    client = ctx.connected_client()
    status, raw = client.request("GET", rtype.item_path(ctx.mesh, a.name))
    if status == 404:
        raise CliError(f"No resources found in {ctx.mesh} mesh" if rtype.mesh_scoped else "No resources found")
    if status >= 400:
        raise error_from(status, raw)
    print_one(ctx, rtype, decode(raw))


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    types = "\n".join(f"  {t.list_arg:<30} {t.arg} NAME" for t in sorted(TYPES, key=lambda t: t.list_arg))
    p = sub.add_parser("get", parents=[common], help="Show Kuma resources", description="Show Kuma resources.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=f"types (a list, or one resource by name):\n{types}")
    p.add_argument("type", nargs="?", metavar="TYPE", help="a resource type, e.g. meshes or mesh")
    p.add_argument("name", nargs="?", metavar="NAME", help="the name of one resource")
    p.add_argument("-m", "--mesh", default="default", help="mesh to use")
    p.add_argument("-o", "--output", default="table", help="output format: one of table|yaml|json")
    p.add_argument("--size", type=int, default=0, help="maximum number of elements to return")
    p.add_argument("--offset", default="", help="the offset that indicates starting element of the resources "
                                                "list to retrieve")
    p.set_defaults(run=_run, parser=p)
