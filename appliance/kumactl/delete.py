"""`kumactl delete TYPE NAME [-m MESH]`."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from appliance.kumactl.client import CliError, error_from
from appliance.kumactl.resources import BY_ARG, all_args

if TYPE_CHECKING:
    from appliance.kumactl.context import Context


def _run(ctx: Context) -> None:
    type_arg, name = ctx.args.type, ctx.args.name
    rtype = BY_ARG.get(type_arg)
    if rtype is None:
        raise CliError(f"unknown TYPE: {type_arg}. Allowed values: {', '.join(all_args())}")
    if rtype.read_only:
        raise CliError(f"TYPE: {type_arg} is readOnly, can't use it for write action")
    client = ctx.connected_client()
    status, raw = client.request("DELETE", rtype.item_path(ctx.mesh, name))
    if status == 404:
        raise CliError(f'there is no {rtype.name} with name "{name}"')
    if status >= 400:
        raise error_from(status, raw)
    ctx.out.write(f'deleted {rtype.name} "{name}"\n')


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("delete", parents=[common], help="Delete Kuma resources", description="Delete Kuma resources.",
                       epilog=f"TYPE is one of: {', '.join(all_args())}")
    p.add_argument("type", metavar="TYPE")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-m", "--mesh", default="default", help="mesh to use")
    p.set_defaults(run=_run)
