"""kumactl: Kuma's command line (config, apply, get, delete, inspect, export, generate, completion, version,
install/uninstall transparent-proxy).

`main(argv)` parses the arguments, runs one command and answers the exit status: 0, or 1 after
printing one `Error: ...` line on stderr, as Kuma's kumactl does.
"""
from __future__ import annotations

import argparse
import re
import sys
import traceback
from typing import Callable, NoReturn

from appliance import KUMA_COMPAT_VERSION, __version__
from appliance.kumactl import apply, completion, config, delete, export, generate, get, inspect, transparent_proxy
from appliance.kumactl.client import CliError
from appliance.kumactl.context import PRODUCT, Context
from appliance.kumactl.flags import duration

__all__ = ["main", "CliError"]


class _Parser(argparse.ArgumentParser):
    """Argument errors in cobra's words, as one line."""

    def error(self, message: str) -> NoReturn:
        choice = re.match(r"argument (\w+): invalid choice: '([^']*)'", message)
        required = re.match(r"the following arguments are required: (.*)", message)
        if choice:
            message = f'unknown command "{choice.group(2)}" for "{self.prog}"'
        elif required and all(a.startswith("--") for a in required.group(1).split(", ")):
            flags = sorted(a.split("/")[0][2:] for a in required.group(1).split(", "))
            message = "required flag(s) " + ", ".join(f'"{f}"' for f in flags) + " not set"
        raise CliError(f"{message}. Run '{self.prog} --help' for usage.")


def _global_flags() -> argparse.ArgumentParser:
    """Flags every command accepts, before or after its name (cobra's persistent flags)."""
    common = _Parser(add_help=False)
    flags = common.add_argument_group("global flags")
    flags.add_argument("--config-file", default=argparse.SUPPRESS, help="path to the configuration file to use")
    flags.add_argument("--context", default=argparse.SUPPRESS, help="context to use")
    flags.add_argument("--log-level", default=argparse.SUPPRESS, choices=["off", "info", "debug"],
                        help="log level: one of off|info|debug")
    flags.add_argument("--no-config", action="store_true", default=argparse.SUPPRESS,
                        help="if set no config file and config directory will be created")
    flags.add_argument("--api-timeout", type=duration, default=argparse.SUPPRESS,
                        help="the timeout for api calls (default 1m0s)")
    return common


def _version(ctx: Context) -> None:
    if ctx.args.detailed:
        ctx.out.write(f"Product:       {PRODUCT}\nVersion:       {__version__}\nGit Tag:       \nGit Commit:    \n"
                      f"Build Date:    \nBased on Kuma: {KUMA_COMPAT_VERSION}\n")
    else:
        ctx.out.write(f"Client: {PRODUCT} {__version__}\n")
    try:
        index = ctx.server_index()
    except CliError as e:
        ctx.err.write(f"Unable to connect to control plane: Unable to retrieve server version: {e}\n")
        return
    if ctx.args.detailed:
        body = "\n".join(f'   "{k}": "{v}"' for k, v in index.items())
        ctx.out.write(f"Server: {{\n{body}\n}}\n")
    else:
        ctx.out.write(f"Server: {index.get('product')} {index.get('version')}\n")


def build_parser() -> argparse.ArgumentParser:
    common = _global_flags()
    root = _Parser(prog="kumactl", parents=[common], description="Management tool for Kuma.")
    commands = root.add_subparsers(dest="command", metavar="COMMAND")
    for module in (apply, completion, config, delete, export, generate, get, inspect, transparent_proxy):
        module.register(commands, common)
    version = commands.add_parser("version", parents=[common], help="Print version")
    version.add_argument("-a", "--detailed", action="store_true", help="Print detailed version")
    version.set_defaults(run=_version)
    root.set_defaults(parser=root)
    return root


def _defaults() -> argparse.Namespace:
    return argparse.Namespace(config_file="", context="", log_level="off", no_config=False, api_timeout=60.0)


def main(argv: list[str] | None = None, make_context: Callable[[argparse.Namespace], Context] = Context) -> int:
    """Run kumactl; `make_context` lets tests bring their own control plane and clock."""
    args = _defaults()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["__complete"]:   # the completion scripts' callback: candidates, one a line
        sys.stdout.write("".join(f"{c}\n" for c in completion.candidates(build_parser(), argv[1:])))
        return 0
    try:
        parser = build_parser()
        parser.parse_args(argv, namespace=args)
        if getattr(args, "run", None) is None:
            parser.print_help()
            return 0
        args.run(make_context(args))
        return 0
    except CliError as e:
        sys.stderr.write(f"Error: {e}\n")
        return 1
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except Exception as e:  # a bug: still one line; the traceback with --log-level debug
        if args.log_level == "debug":
            traceback.print_exc()
        sys.stderr.write(f"Error: unexpected {type(e).__name__}: {e} (run with --log-level debug for details)\n")
        return 1
