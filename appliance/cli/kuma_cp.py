"""`kuma-cp`: run the control plane, migrate the PostgreSQL schema, print the version."""
from __future__ import annotations

import argparse
import logging
import sys

from appliance import KUMA_COMPAT_VERSION, __version__
from appliance.config import ConfigError, load_config
from appliance.store import StoreError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kuma-cp", description="Kuma-compatible control plane for VMs (kuma-appliance).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="start the control plane (standalone/zone mode)",
                         description="Start the control plane: REST API on :5681, DP server on :5678, "
                                     "diagnostics on :5680. Settings come from defaults, then the config file, "
                                     "then KUMA_* environment variables.")
    run.add_argument("-c", "--config-file", help="path to a kuma-cp.conf.yaml")
    run.add_argument("--egress-enabled", action="store_true",
                     help="also run a zone egress proxy (Envoy) on this machine, supervised by kuma-cp "
                          "(egress.* settings, KUMA_EGRESS_*)")
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error", "off"),
                     help="log level (default: info)")
    migrate = sub.add_parser("migrate", help="manage the PostgreSQL schema",
                             description="Manage the schema of the PostgreSQL store (store.type: postgres).")
    migrate_sub = migrate.add_subparsers(dest="migrate_command", metavar="SUBCOMMAND", required=True)
    up = migrate_sub.add_parser("up", help="apply the schema migrations this kuma-cp needs (idempotent)",
                                description="Bring the PostgreSQL schema to this kuma-cp's version. Run it once "
                                            "before the first `kuma-cp run` and after every upgrade; running it "
                                            "again does nothing. Uses the same settings as `run`.")
    up.add_argument("-c", "--config-file", help="path to a kuma-cp.conf.yaml")
    sub.add_parser("version", help="print the version")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"kuma-cp: {__version__} (Kuma {KUMA_COMPAT_VERSION} compatible)")
        return 0
    if args.command == "migrate":
        from appliance.runtime.run import migrate
        try:
            config = load_config(args.config_file)
            for warning in config.warnings:
                print(f"kuma-cp: warning: {warning}", file=sys.stderr)
            print(migrate(config))
            return 0
        except (ConfigError, StoreError) as e:
            print(f"kuma-cp: {e}", file=sys.stderr)
            return 1
    if args.command != "run":
        parser.print_help()
        return 2
    level = logging.CRITICAL + 10 if args.log_level == "off" else getattr(logging, args.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from appliance.runtime.run import StartupError, run
    try:
        config = load_config(args.config_file)
        for warning in config.warnings:
            logging.getLogger("appliance.config").warning("%s", warning)
        if args.egress_enabled:
            config = config.with_value("egress.enabled", True)
        return run(config)
    except (ConfigError, StartupError, StoreError) as e:
        print(f"kuma-cp: {e}", file=sys.stderr)
        return 1
