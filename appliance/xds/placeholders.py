"""What the inspect views (`GET .../_config`) are generated from in place of secrets.

Kuma 2.14's ProxyConfigInspector (pkg/core/xds/inspect/config.go) generates a proxy's config with
dummy secrets: the identity certificate is `CERT` with the key `KEY`, every mesh CA is `CA`. We do
the same, and go one step further: the certificates and keys an ExternalService or
MeshExternalService gives for TLS to its server (which Kuma's view shows as loaded), and those a
MeshGateway's HTTPS listeners present, are placeholders too. So the view shows every name, SNI, SAN and reference a proxy gets, and never a
private key or a Secret's payload, whoever asks.
"""
from __future__ import annotations

from dataclasses import replace

from appliance.model.proxy import ExternalTls, Identity, MeshGateway, MeshSnapshot

CERT = b"CERT"
KEY = b"KEY"
CA = b"CA"
IDENTITY = Identity(cert_pem=CERT, key_pem=KEY, expires=0.0)


def _tls(settings: ExternalTls | None) -> ExternalTls | None:
    if settings is None:
        return None
    return replace(settings, ca_cert=CA if settings.ca_cert else None,
                   client_cert=CERT if settings.client_cert else None,
                   client_key=KEY if settings.client_key else None)


def _gateway(gateway: MeshGateway) -> MeshGateway:
    return replace(gateway, listeners=tuple(
        replace(l, certificates=tuple(replace(c, chain_pem=CERT, key_pem=KEY) for c in l.certificates))
        for l in gateway.listeners))


def without_secrets(snapshot: MeshSnapshot) -> MeshSnapshot:
    """`snapshot` with every certificate and key replaced by its placeholder (same shape, same presence)."""
    return replace(
        snapshot,
        mtls=replace(snapshot.mtls, ca_cert_pem=CA, ca_key_pem=KEY,
                     trusted_ca_pem=CA if snapshot.mtls.trusted_ca_pem else b"") if snapshot.mtls is not None else None,
        external_services={s: replace(es, tls=_tls(es.tls)) for s, es in snapshot.external_services.items()},
        mesh_external_services={d: replace(mes, tls=_tls(mes.tls))
                                for d, mes in snapshot.mesh_external_services.items()},
        gateways=tuple(_gateway(g) for g in snapshot.gateways))
