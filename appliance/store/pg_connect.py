"""How kuma-cp reaches PostgreSQL: Kuma 2.14's `store.postgres.*` settings, turned into libpq parameters,
and connection failures turned into one line that names the server."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from appliance.config import Config, ConfigError
from appliance.store.base import StoreUnavailable

# Kuma's TLS modes and the libpq sslmode each one means (Kuma maps them the same way).
_SSLMODE = {"disable": "disable", "verifyNone": "require", "verifyCa": "verify-ca", "verifyFull": "verify-full"}


@dataclass(frozen=True)
class PostgresSettings:
    host: str = "127.0.0.1"
    port: int = 15432
    user: str = "kuma"
    password: str = "kuma"
    db_name: str = "kuma"
    connection_timeout: int = 5             # seconds, libpq's connect_timeout
    min_open_connections: int = 0
    max_open_connections: int = 50          # 0 = no bound, as in Kuma
    min_reconnect_interval: float = 10.0    # seconds; the listener's first wait after a failed reconnect
    max_reconnect_interval: float = 60.0
    tls_mode: str = "disable"
    tls_cert_path: str = ""
    tls_key_path: str = ""
    tls_ca_path: str = ""
    tolerate_newer_db_versions: bool = False

    @classmethod
    def from_config(cls, config: Config) -> "PostgresSettings":
        """Read `store.postgres.*`; an inconsistent combination is a ConfigError naming the setting."""
        p = "store.postgres."
        settings = cls(
            host=config[p + "host"], port=config[p + "port"], user=config[p + "user"],
            password=config[p + "password"], db_name=config[p + "dbName"],
            connection_timeout=config[p + "connectionTimeout"],
            min_open_connections=config[p + "minOpenConnections"],
            max_open_connections=config[p + "maxOpenConnections"],
            min_reconnect_interval=config.seconds(p + "minReconnectInterval"),
            max_reconnect_interval=config.seconds(p + "maxReconnectInterval"),
            tls_mode=config[p + "tls.mode"], tls_cert_path=config[p + "tls.certPath"],
            tls_key_path=config[p + "tls.keyPath"], tls_ca_path=config[p + "tls.caPath"],
            tolerate_newer_db_versions=config[p + "tolerateNewerDBVersions"],
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        p = "store.postgres."
        for name, value in (("host", self.host), ("user", self.user), ("dbName", self.db_name)):
            if not value:
                raise ConfigError(f"{p}{name} must not be empty when store.type is postgres")
        if self.tls_mode in ("verifyCa", "verifyFull") and not self.tls_ca_path:
            raise ConfigError(f"{p}tls.caPath is required with {p}tls.mode={self.tls_mode}")
        if bool(self.tls_cert_path) != bool(self.tls_key_path):
            raise ConfigError(f"{p}tls.certPath and {p}tls.keyPath go together: set both or neither")
        if self.max_open_connections < 0 or self.min_open_connections < 0:
            raise ConfigError(f"{p}maxOpenConnections and {p}minOpenConnections must not be negative")
        if self.max_open_connections and self.min_open_connections > self.max_open_connections:
            raise ConfigError(f"{p}minOpenConnections ({self.min_open_connections}) is above "
                              f"{p}maxOpenConnections ({self.max_open_connections})")
        if self.min_reconnect_interval <= 0:
            raise ConfigError(f"{p}minReconnectInterval must be longer than 0s")
        if self.min_reconnect_interval > self.max_reconnect_interval:
            raise ConfigError(f"{p}minReconnectInterval is longer than {p}maxReconnectInterval")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def connect_kwargs(self) -> dict[str, Any]:
        """libpq parameters for psycopg. Keepalives (an idle connection) and tcp_user_timeout (a query
        in flight) make a silently dead server (network cut, VM gone) show up as a broken connection
        in seconds, not after the kernel's two hours or fifteen minutes of retransmissions."""
        kwargs: dict[str, Any] = {
            "host": self.host, "port": self.port, "user": self.user, "password": self.password,
            "dbname": self.db_name, "connect_timeout": self.connection_timeout,
            "sslmode": _SSLMODE[self.tls_mode], "application_name": "kuma-cp",
            "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
            "tcp_user_timeout": 15_000,
        }
        for key, value in (("sslcert", self.tls_cert_path), ("sslkey", self.tls_key_path),
                           ("sslrootcert", self.tls_ca_path)):
            if value:
                kwargs[key] = value
        return kwargs


def reason(error: Exception) -> str:
    """libpq's reason in one line, without its multi-line detail."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def unavailable(settings: PostgresSettings, error: Exception) -> StoreUnavailable:
    """One line for the operator: which server, and why not."""
    return StoreUnavailable(f"cannot reach PostgreSQL at {settings.address} (store.postgres.host/port, "
                            f"database {settings.db_name!r}): {reason(error)}")


def connect(settings: PostgresSettings) -> psycopg.Connection:
    """A dedicated autocommit connection (migrations, the change listener), outside the pool."""
    try:
        return psycopg.connect(autocommit=True, **settings.connect_kwargs())
    except psycopg.Error as e:
        raise unavailable(settings, e) from e
