"""One connected proxy as the xDS cache sees it: what its node announced, when to push, what it was last given."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from google.protobuf.json_format import MessageToDict

from appliance.core.resources.model import Resource
from appliance.model.proxy import Proxy, TransparentProxy
from appliance.xds.generate.admin import AdminEndpoint, admin_endpoint
from appliance.xds.resources import Packed


class Signal:
    """Set when a proxy's config may have changed; calls the stream's callback once until cleared
    (cheaper than an asyncio.Event and a task waiting on it per push)."""
    __slots__ = ("pending", "callback")

    def __init__(self) -> None:
        self.pending = False
        self.callback: Callable[[], None] | None = None

    def set(self) -> None:
        if not self.pending:
            self.pending = True
            if self.callback is not None:
                self.callback()

    def clear(self) -> None:
        self.pending = False


@dataclass(frozen=True)
class NodeMetadata:
    """What kuma-dp/Envoy announced in the node metadata."""
    features: frozenset[str] = frozenset()
    ipv6: bool = False
    workdir: str = ""
    metrics_cert_path: str = ""
    metrics_key_path: str = ""
    admin: AdminEndpoint | None = None       # where its Envoy admin API is
    dns_port: int = 0                        # dataplane.dns.port: kuma-dp's embedded DNS server
    # transparentProxy: kuma-dp's `--transparent-proxy` config, as `redirect_ports` reads it
    transparent_proxy: tuple[int, int, bool] | None = None

    def apply(self, proxy: Proxy) -> Proxy:
        """`proxy` (as its Dataplane says) with what its kuma-dp announced (the access log pipe is in its work dir)."""
        return replace(proxy, features=self.features, ipv6_enabled=self.ipv6, work_dir=self.workdir,
                       metrics_cert_path=self.metrics_cert_path, metrics_key_path=self.metrics_key_path,
                       transparent_proxy=self._transparent_proxy(proxy.transparent_proxy))

    def _transparent_proxy(self, from_dataplane: TransparentProxy | None) -> TransparentProxy | None:
        """Kuma's GetDataplaneConfig: with the feature, kuma-dp's config (Kuma's defaults when it sent none)
        overrides the Dataplane's redirect ports; the DNS port always comes from kuma-dp."""
        tp = from_dataplane
        if FEATURE_TP_IN_METADATA in self.features:
            inbound, outbound, ipv6 = self.transparent_proxy or (15006, 15001, True)
            tp = replace(tp or TransparentProxy(), inbound_port=inbound, outbound_port=outbound, ipv6=ipv6)
        if tp is None or not self.dns_port:
            return tp
        return replace(tp, dns_port=self.dns_port)


FEATURE_TP_IN_METADATA = "feature-transparent-proxy-in-dataplane-metadata"


def redirect_ports(config: dict) -> tuple[int, int, bool]:
    """kuma-dp's `transparentProxy` metadata (Kuma's DataplaneConfig JSON) as (inbound port, outbound port,
    IPv6 captured); a flow that is not enabled has port 0."""
    redirect = config.get("redirect") or {}

    def port(flow: str) -> int:
        found = redirect.get(flow) if isinstance(redirect, dict) else None
        if not isinstance(found, dict) or not found.get("enabled"):
            return 0
        try:
            return int(found.get("port") or 0)
        except (TypeError, ValueError):
            return 0   # not a port: nothing is redirected there
    return port("inbound"), port("outbound"), str(config.get("ipFamilyMode") or "dualstack").lower() != "ipv4"


@dataclass(eq=False)
class ProxyWatch:
    key: tuple[str, str]
    node: NodeMetadata = field(default_factory=NodeMetadata)
    admin_cert: tuple[str, bytes, bytes] | None = None   # (address, cert PEM, key PEM) of its admin listener
    changed: Signal = field(default_factory=Signal)
    memo_key: tuple = ()
    memo: dict[str, dict[str, Packed]] = field(default_factory=dict)
    memo_revision: int = -1                  # the snapshot revision whose endpoints `memo` holds
    renewal: asyncio.TimerHandle | None = None
    # the proxy's Dataplane as last read, until a change of it arrives (not read again per push or ACK)
    dataplane: tuple[Resource, Proxy] | None = None
    dataplane_fresh: bool = False

    def schedule_renewal(self, loop: asyncio.AbstractEventLoop, at: float | None) -> None:
        """Wake the proxy at `at` (epoch seconds; None: never), when its certificate is due for renewal."""
        self.cancel_renewal()
        if at is not None:
            self.renewal = loop.call_later(max(1.0, at - time.time()), self.changed.set)

    def cancel_renewal(self) -> None:
        if self.renewal:
            self.renewal.cancel()
            self.renewal = None


def node_metadata(node: object) -> NodeMetadata:
    """What kuma-dp announced in the Envoy node's metadata (the bootstrap puts it there)."""
    fields = getattr(getattr(node, "metadata", None), "fields", {})
    features = fields.get("features")
    names = frozenset(v.string_value for v in features.list_value.values) if features is not None else frozenset()
    ipv6 = fields.get("ipv6Enabled")

    def text(key: str) -> str:
        value = fields.get(key)
        return value.string_value if value is not None else ""

    tp = fields.get("transparentProxy")
    dns_port = text("dataplane.dns.port")
    return NodeMetadata(names, bool(ipv6.bool_value) if ipv6 is not None else False, text("workdir"),
                        text("metricsCertPath"), text("metricsKeyPath"),
                        admin_endpoint({k: text(k) for k in _ADMIN_FIELDS if k in fields}),
                        dns_port=int(dns_port) if dns_port.isdigit() else 0,
                        transparent_proxy=redirect_ports(MessageToDict(tp.struct_value))
                        if tp is not None and tp.HasField("struct_value") else None)


_ADMIN_FIELDS = ("dataplane.admin.port", "dataplane.admin.address", "dataplane.admin.socketPath")
