"""kuma-dp's side of transparent proxying: `--transparent-proxy` / `--transparent-proxy-config` become
Kuma 2.14's DataplaneConfig (pkg/transparentproxy/config/dataplane), sent at bootstrap as
`dataplaneConfig` with the feature `feature-transparent-proxy-in-dataplane-metadata`, and where the
embedded DNS proxy listens (app/kuma-dp/cmd/run.go, dnsProxyAddresses). As in Kuma, the Dataplane
resource itself is left as written: the control plane takes the redirect ports from the node's metadata.

The files are Kuma's transparent-proxy config, the one `kumactl install transparent-proxy --config`
reads (appliance/transparentproxy/config.py parses it): kuma-dp takes ipFamilyMode and the redirect
ports from it, so one file serves both commands.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

from appliance.dp.config import DpConfig, DpError
from appliance.transparentproxy.config import ConfigError, TransparentProxyConfig, apply_document, load_documents

log = logging.getLogger("kuma-dp")

FEATURE_TPROXY_METADATA = "feature-transparent-proxy-in-dataplane-metadata"
FEATURE_EMBEDDED_DNS = "feature-embedded-dns"


def dataplane_config(cfg: DpConfig, stdin: TextIO = sys.stdin) -> dict[str, Any] | None:
    """Kuma's DataplaneConfig JSON, or None without --transparent-proxy(-config). As Kuma: defaults, then
    the files in order; DNS redirection is kuma-dp's own --dns-enabled and --dns-envoy-port."""
    if not cfg.transparent_proxy and not cfg.transparent_proxy_config:
        return None
    if sys.platform != "linux":
        raise DpError("transparent proxy is supported only on Linux systems")
    tp = TransparentProxyConfig()
    try:
        for doc in load_documents(cfg.transparent_proxy_config, stdin):
            tp = apply_document(tp, doc)
    except ConfigError as e:
        raise DpError(f"failed to load transparent proxy configuration from provided input: {e}") from None
    return {
        "ipFamilyMode": tp.ip_family_mode,
        "redirect": {
            "inbound": {"enabled": tp.inbound.enabled, "port": tp.inbound.port},
            "outbound": {"enabled": tp.outbound.enabled, "port": tp.outbound.port},
            "dns": {"enabled": cfg.dns_enabled, "port": cfg.dns_envoy_port},
            "vnet": {"networks": list(tp.vnet_networks)} if tp.vnet_networks else {},
        },
    }


def dns_port(cfg: DpConfig) -> int:
    """Where the embedded DNS proxy listens: --dns-proxy-port, else where Kuma's CoreDNS would (15053)."""
    port = cfg.dns_proxy_port or cfg.dns_coredns_port
    if port == 0:
        raise DpError("DNS is enabled but --dns-proxy-port and --dns-coredns-port are both 0: "
                      "give a port or --dns-enabled=false")
    return port


def dns_runs(cfg: DpConfig, tp: dict[str, Any] | None) -> bool:
    """DNS only makes sense with transparent proxying (Kuma's control plane serves no names otherwise),
    and only on a sidecar."""
    if not cfg.dns_enabled or cfg.proxy_type != "dataplane":
        return False
    if tp is None:
        log.info("DNS is not started: it serves the mesh's names to an app whose traffic is transparently "
                 "proxied (--transparent-proxy)")
        return False
    return True


def dns_addresses(tp: dict[str, Any], port: int) -> list[tuple[str, int]]:
    """Kuma's dnsProxyAddresses: loopback, where the OUTPUT chain's REDIRECT sends the app's queries; every
    interface with vnet networks (PREROUTING REDIRECT goes to the interface's address); IPv6 too unless
    ipFamilyMode is ipv4, on a socket of its own."""
    dual = tp["ipFamilyMode"] != "ipv4"
    vnet = bool(tp["redirect"]["vnet"].get("networks"))
    hosts = ["0.0.0.0", "::"] if vnet else ["127.0.0.1", "::1"]
    return [(host, port) for host in (hosts if dual else hosts[:1])]
