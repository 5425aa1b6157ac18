"""Kuma's builtin-CA mTLS: the SDS secrets and the TLS contexts that reference them.

Certificates travel only as Secret resources (SDS over ADS); listeners and clusters name them. So a
certificate rotation is a Secret update and never touches a listener or a cluster.
"""
from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from appliance import gocompat
from appliance.model import names
from appliance.xds.generate._proto import ads_source, pack
from appliance.model.proxy import ExternalTls, GatewayCertificate, Identity, MeshSnapshot


def identity_secret(mesh: str, identity: Identity) -> secret_pb2.Secret:
    secret = secret_pb2.Secret(name=names.identity_secret(mesh))
    secret.tls_certificate.certificate_chain.inline_bytes = identity.cert_pem
    secret.tls_certificate.private_key.inline_bytes = identity.key_pem
    return secret


def ca_secret(snapshot: MeshSnapshot) -> secret_pb2.Secret:
    """The mesh CA as a validation context; depends only on the snapshot, so it can be shared."""
    secret = secret_pb2.Secret(name=names.mesh_ca_secret(snapshot.mesh))
    if snapshot.mtls is not None:
        secret.validation_context.trusted_ca.inline_bytes = snapshot.mtls.trusted_ca_pem or snapshot.mtls.ca_cert_pem
    return secret


def _sds(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads_source())


def _uri_san(matcher: string_pb2.StringMatcher) -> common_pb2.SubjectAltNameMatcher:
    return common_pb2.SubjectAltNameMatcher(san_type=common_pb2.SubjectAltNameMatcher.URI, matcher=matcher)


def _common_context(mesh: str, *sans: common_pb2.SubjectAltNameMatcher) -> tls_pb2.CommonTlsContext:
    context = tls_pb2.CommonTlsContext()
    combined = context.combined_validation_context
    combined.default_validation_context.match_typed_subject_alt_names.extend(sans)
    combined.validation_context_sds_secret_config.CopyFrom(_sds(names.mesh_ca_secret(mesh)))
    context.tls_certificate_sds_secret_configs.append(_sds(names.identity_secret(mesh)))
    return context


def downstream_transport_socket(mesh: str) -> base_pb2.TransportSocket:
    """Inbound side: a client certificate is required, signed by the mesh CA, with a SPIFFE id of this mesh."""
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=_common_context(
            mesh, _uri_san(string_pb2.StringMatcher(prefix=names.spiffe_prefix(mesh)))))
    context.require_client_certificate.value = True
    return base_pb2.TransportSocket(name=names.TLS_TRANSPORT_SOCKET, typed_config=pack(context))


def upstream_transport_socket(mesh: str, service: str, sni: str = "",
                              spiffe_ids: tuple[str, ...] = ()) -> base_pb2.TransportSocket:
    """Outbound side: SNI `<service>{mesh=<mesh>}`, ALPN `kuma`, and the server must be `spiffe://<mesh>/<service>`.
    A MeshService destination gives its own `sni` and the `spiffe_ids` its servers may have instead.

    The `kuma` ALPN is what lets a PERMISSIVE inbound tell mesh mTLS from an application's own TLS.
    """
    ids = spiffe_ids if sni else (names.spiffe_id(mesh, service),)
    common = _common_context(mesh, *(_uri_san(string_pb2.StringMatcher(exact=i)) for i in ids))
    common.alpn_protocols.append(names.KUMA_ALPN)
    context = tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=sni or names.sni(service, mesh))
    return base_pb2.TransportSocket(name=names.TLS_TRANSPORT_SOCKET, typed_config=pack(context))


def trusted_ca_secret(name: str, ca_pem: bytes) -> secret_pb2.Secret:
    """A validation context of other CAs: another mesh's (`mesh_ca:secret:<mesh>`), or every mesh's
    (Kuma's all-in-one CA, `mesh_ca:secret:all`, what a crossMesh gateway listener trusts)."""
    secret = secret_pb2.Secret(name=name)
    secret.validation_context.trusted_ca.inline_bytes = ca_pem
    return secret


def cross_mesh_downstream_socket(mesh: str) -> base_pb2.TransportSocket:
    """A crossMesh gateway listener: a client certificate is required, signed by the CA of any mesh, with any
    SPIFFE id (Kuma clears the SAN matchers: the client may be of any mesh); the gateway presents its own."""
    context = tls_pb2.DownstreamTlsContext()
    common = context.common_tls_context
    common.combined_validation_context.default_validation_context.SetInParent()
    common.combined_validation_context.validation_context_sds_secret_config.CopyFrom(
        _sds(names.ALL_MESHES_CA_SECRET))
    common.tls_certificate_sds_secret_configs.append(_sds(names.identity_secret(mesh)))
    context.require_client_certificate.value = True
    return base_pb2.TransportSocket(name=names.TLS_TRANSPORT_SOCKET, typed_config=pack(context))


def cross_mesh_upstream_socket(mesh: str, upstream_mesh: str, service: str) -> base_pb2.TransportSocket:
    """A sidecar's mTLS to another mesh's crossMesh gateway: its own identity, the server checked against the
    other mesh's CA as `spiffe://<other mesh>/<service>`, SNI `<service>{mesh=<other mesh>}`, ALPN `kuma`."""
    common = tls_pb2.CommonTlsContext(alpn_protocols=[names.KUMA_ALPN])
    combined = common.combined_validation_context
    combined.default_validation_context.match_typed_subject_alt_names.append(
        _uri_san(string_pb2.StringMatcher(exact=names.spiffe_id(upstream_mesh, service))))
    combined.validation_context_sds_secret_config.CopyFrom(_sds(names.mesh_ca_secret(upstream_mesh)))
    common.tls_certificate_sds_secret_configs.append(_sds(names.identity_secret(mesh)))
    context = tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=names.sni(service, upstream_mesh))
    return base_pb2.TransportSocket(name=names.TLS_TRANSPORT_SOCKET, typed_config=pack(context))


def _san_exact(san_type: int, value: str) -> common_pb2.SubjectAltNameMatcher:
    return common_pb2.SubjectAltNameMatcher(san_type=san_type, matcher=string_pb2.StringMatcher(exact=value))


def outside_mesh_context(settings: ExternalTls, address: str) -> tls_pb2.UpstreamTlsContext:
    """TLS to a server outside the mesh at `address`, as its ExternalService's (or MeshExternalService's)
    `tls` says.

    Without a CA certificate the server is not verified (Kuma does the same); with one, its certificate
    must name `serverName` (or the host) unless `skipHostnameVerification`."""
    sni = settings.server_name or ("" if gocompat.is_ip(address) else address)
    context = tls_pb2.UpstreamTlsContext(sni=sni, allow_renegotiation=settings.allow_renegotiation)
    if settings.client_cert and settings.client_key:
        pair = context.common_tls_context.tls_certificates.add()
        pair.certificate_chain.inline_bytes = settings.client_cert
        pair.private_key.inline_bytes = settings.client_key
    if settings.ca_cert:
        validation = context.common_tls_context.validation_context
        validation.trusted_ca.inline_bytes = settings.ca_cert
        if not settings.skip_hostname_verification:
            expected = sni or address
            validation.match_typed_subject_alt_names.extend([
                _san_exact(common_pb2.SubjectAltNameMatcher.DNS, expected),
                _san_exact(common_pb2.SubjectAltNameMatcher.IP_ADDRESS, expected)])
    return context


def to_egress_transport_socket(mesh: str, sni: str) -> base_pb2.TransportSocket:
    """A sidecar's mTLS to the zone egress: SNI names the external service, the server must be the egress."""
    common = _common_context(mesh, _uri_san(string_pb2.StringMatcher(
        exact=names.spiffe_id(mesh, names.ZONE_EGRESS_SERVICE))))
    common.alpn_protocols.append(names.KUMA_ALPN)
    context = tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=sni)
    return base_pb2.TransportSocket(name=names.TLS_TRANSPORT_SOCKET, typed_config=pack(context))


def gateway_certificate_secret(certificate: GatewayCertificate) -> secret_pb2.Secret:
    """A certificate an HTTPS gateway listener presents, under Kuma's name for it."""
    secret = secret_pb2.Secret(name=certificate.name)
    secret.tls_certificate.certificate_chain.inline_bytes = certificate.chain_pem
    secret.tls_certificate.private_key.inline_bytes = certificate.key_pem
    return secret


def gateway_terminating_socket(certificates: tuple[str, ...],
                               alpn: tuple[str, ...] = ("h2", "http/1.1")) -> base_pb2.TransportSocket:
    """A gateway's HTTPS (or TLS) listener: TLS terminated with these SDS certificates, no client certificate
    asked, `alpn` offered (HTTP/2 or HTTP/1.1 on HTTPS, none on TLS), TLS 1.2 at least (Kuma's gateway defaults)."""
    context = tls_pb2.DownstreamTlsContext()
    common = context.common_tls_context
    common.alpn_protocols.extend(alpn)
    common.tls_certificate_sds_secret_configs.extend(_sds(name) for name in certificates)
    common.tls_params.tls_minimum_protocol_version = common_pb2.TlsParameters.TLSv1_2
    context.require_client_certificate.value = False
    return base_pb2.TransportSocket(name=names.TLS_TRANSPORT_SOCKET, typed_config=pack(context))
