"""What every command runs with: parsed flags, the config file, a client for the current control
plane, the clock and the output streams."""
from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from appliance import PRODUCT, __version__
from appliance.kumactl import config as kconfig
from appliance.kumactl.client import ApiClient, CliError

__all__ = ["Context", "PRODUCT"]


class Context:
    def __init__(self, args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None,
                 stdin: TextIO | None = None, now: datetime | None = None) -> None:
        self.args = args
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.stdin = stdin or sys.stdin
        self._now = now
        self._config: kconfig.Configuration | None = None
        self._client: ApiClient | None = None

    # --- config --------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        given = getattr(self.args, "config_file", "")
        return Path(given) if given else kconfig.default_config_file()

    @property
    def config(self) -> kconfig.Configuration:
        """The configuration; on first use (no file yet) the default one, saved as Kuma does."""
        if self._config is None:
            if getattr(self.args, "no_config", False):
                self._config = kconfig.Configuration(kconfig.default_configuration())
            else:
                if not self.config_path.exists():
                    kconfig.save(self.config_path, kconfig.Configuration(kconfig.default_configuration()))
                self._config = kconfig.load(self.config_path, explicit=bool(getattr(self.args, "config_file", "")))
        return self._config

    def save_config(self) -> None:
        if not getattr(self.args, "no_config", False):
            kconfig.save(self.config_path, self.config)

    @property
    def timeout(self) -> float:
        return float(getattr(self.args, "api_timeout", 60.0))

    # --- the control plane ---------------------------------------------------------------------

    def client(self) -> ApiClient:
        if self._client is None:
            cp = self.config.current_control_plane(getattr(self.args, "context", "") or "")
            try:
                self._client = ApiClient(kconfig.api_server(cp, self.timeout))
            except CliError as e:
                raise CliError(f'failed to create a client for Control Plane "{cp.get("name", "")}": {e}') from e
        return self._client

    def server_index(self) -> dict[str, Any]:
        index = self.client().get_json("/")
        if not isinstance(index, dict):
            raise CliError("Unable to retrieve server version: unexpected answer to GET /")
        return index

    def connected_client(self) -> ApiClient:
        """The client, after checking (as kumactl does before every command) that the server is a
        control plane of our version; a mismatch is a warning, an unreachable server an error."""
        index = self.server_index()
        version, product = index.get("version"), index.get("product")
        if version != __version__ or product != PRODUCT:
            self.err.write(f"WARNING: You are using kumactl version {__version__} for {PRODUCT}, but the server "
                           f"returned version: {product} for {version}\n")
        return self.client()

    # --- the rest ------------------------------------------------------------------------------

    @property
    def mesh(self) -> str:
        return getattr(self.args, "mesh", None) or "default"

    @property
    def output(self) -> str:
        return getattr(self.args, "output", None) or "table"

    def now(self) -> datetime:
        return self._now or datetime.now().astimezone()
