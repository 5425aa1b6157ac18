"""`kumactl generate dataplane-token|zone-token|user-token|signing-key|tls-certificate`."""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import ipaddress
import os
import secrets
from typing import TYPE_CHECKING, Any

from appliance.gocompat import format_seconds
from appliance.kumactl.client import ApiError, CliError, error_from
from appliance.kumactl.flags import KeyValues, StringSlice, duration

if TYPE_CHECKING:
    from appliance.kumactl.context import Context

ZONE_SCOPES = ["ingress", "egress"]


def _required(ctx: Context, *flags: str) -> None:
    missing = [f for f in flags if getattr(ctx.args, f.replace("-", "_")) is None]
    if missing:
        names = ", ".join('"' + f + '"' for f in sorted(missing))
        raise CliError(f"required flag(s) {names} not set")


def _offline_key(ctx: Context) -> bytes | None:
    """The signing key of --signing-key-path (then the control plane is not asked), or None."""
    a = ctx.args
    if not a.signing_key_path:
        if a.kid:
            raise CliError("--kid cannot be used when --signing-key-path is used")
        return None
    if not a.kid:
        raise CliError("--kid is required when --signing-key-path is used")
    try:
        with open(a.signing_key_path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CliError(f"open {a.signing_key_path}: {(e.strerror or str(e)).lower()}") from e


def _sign(ctx: Context, key: bytes, claims: dict[str, Any]) -> str:
    import jwt

    from appliance.tokens import signing
    try:
        return signing.sign(claims, key, ctx.args.kid, ctx.args.valid_for)
    except (ValueError, TypeError, jwt.PyJWTError, signing.InvalidToken) as e:
        raise CliError(f"could not sign the token with {ctx.args.signing_key_path}: {e}") from e


def _issue(ctx: Context, entity: str, request: dict[str, Any], what: str) -> str:
    status, raw = ctx.connected_client().request("POST", f"/tokens/{entity}", body=request)
    if status != 200:
        err = error_from(status, raw)
        if isinstance(err, ApiError):
            raise err
        raise CliError(f"failed to generate a {what}: {err}")
    return raw.decode()


def _dataplane_token(ctx: Context) -> None:
    _required(ctx, "valid-for")
    a = ctx.args
    tags = {k: v.split(",") for k, v in a.tag.items()}
    key = _offline_key(ctx)
    if key is not None:
        token = _sign(ctx, key, {"Name": a.name, "Mesh": ctx.mesh, "Tags": tags, "Type": a.proxy_type,
                                 "Workload": a.workload})
    else:
        if a.valid_for == 0:
            raise CliError("failed to generate a dataplane token: You must set a token validFor value")
        token = _issue(ctx, "dataplane", {"name": a.name, "mesh": ctx.mesh, "tags": tags, "type": a.proxy_type,
                                          "workload": a.workload, "validFor": format_seconds(a.valid_for)},
                       "dataplane token")
    ctx.out.write(token)


def _zone_token(ctx: Context) -> None:
    _required(ctx, "valid-for", "zone")
    a = ctx.args
    scope = a.scope if a.scope is not None else ZONE_SCOPES
    unsupported = [s for s in scope if s not in ZONE_SCOPES]
    if unsupported:
        raise CliError(f"invalid --scope values: [{' '.join(unsupported)}] (supported scopes: "
                       f"[{' '.join(ZONE_SCOPES)}])")
    key = _offline_key(ctx)
    if key is not None:
        token = _sign(ctx, key, {"Zone": a.zone, "Scope": scope})
    else:
        token = _issue(ctx, "zone", {"zone": a.zone, "scope": scope, "validFor": format_seconds(a.valid_for)},
                       "zone token")
    ctx.out.write(token)


def _user_token(ctx: Context) -> None:
    _required(ctx, "name", "valid-for")
    a = ctx.args
    groups = a.group or []
    key = _offline_key(ctx)
    if key is not None:
        token = _sign(ctx, key, {"Name": a.name, "Groups": groups})
    else:
        token = _issue(ctx, "user", {"name": a.name, "groups": groups, "validFor": format_seconds(a.valid_for)},
                       "user token")
    ctx.out.write(token)


def _rsa_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _signing_key(ctx: Context) -> None:
    pem = _key_pem(_rsa_key())
    if ctx.args.format == "pem":
        ctx.out.write(pem.decode())
    elif ctx.args.format == "pem-base64":
        ctx.out.write(base64.b64encode(pem).decode())
    else:
        raise CliError("invalid format")


def self_signed_certificate(cert_type: str, key_type: str, hostnames: list[str]) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM) as Kuma's `generate tls-certificate`: 10 years, SANs from hostnames."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = ec.generate_private_key(ec.SECP256R1()) if key_type == "ecdsa" else _rsa_key()
    not_before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    sans: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    usage = ExtendedKeyUsageOID.SERVER_AUTH if cert_type == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(x509.Name([]))
            .public_key(key.public_key()).serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
            .not_valid_before(not_before).not_valid_after(not_before + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=True,
                                         content_commitment=False, data_encipherment=False, key_agreement=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(key, hashes.SHA256()))
    if key_type == "ecdsa":
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
    else:
        key_pem = _key_pem(key)
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def _write(ctx: Context, path: str, data: bytes, mode: int, what: str) -> None:
    if path == "-":
        ctx.out.write(data.decode())
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as e:
        raise CliError(f"could not write the {what} file: open {path}: {(e.strerror or str(e)).lower()}") from e


def _tls_certificate(ctx: Context) -> None:
    _required(ctx, "hostname", "type")
    a = ctx.args
    if a.type not in ("client", "server"):
        raise CliError(f'invalid certificate type "{a.type}"')
    if not a.hostname:
        raise CliError("at least one hostname must be given")
    if a.key_type not in ("", "rsa", "ecdsa"):
        raise CliError(f'invalid key type "{a.key_type}"')
    key_pem, cert_pem = self_signed_certificate(a.type, a.key_type, a.hostname)
    _write(ctx, a.key_file, key_pem, 0o400, "key")
    _write(ctx, a.cert_file, cert_pem, 0o600, "cert")
    if a.key_file != "-" and a.cert_file != "-":
        ctx.out.write(f"Private key saved in {a.key_file}\nCertificate saved in {a.cert_file}\n")


def _offline_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--valid-for", type=duration, help='how long the token will be valid (for example "24h")')
    p.add_argument("--signing-key-path", default="", help="path to a file that contains private signing key. When "
                                                          "specified, control plane won't be used to issue the token.")
    p.add_argument("--kid", default="", help="ID of the key that is used to issue a token. Required when "
                                             "--signing-key-path is used.")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("generate", parents=[common], help="Generate resources, tokens, etc",
                       description="Generate resources, tokens, etc.")
    what = p.add_subparsers(dest="generate_command", metavar="COMMAND")
    p.set_defaults(run=lambda ctx, parser=p: parser.print_help(ctx.out))

    dp = what.add_parser("dataplane-token", parents=[common], help="Generate Dataplane Token",
                         description="Generate Dataplane Token that is used to prove Dataplane identity.")
    dp.add_argument("--name", default="", help="name of the Dataplane")
    dp.add_argument("-m", "--mesh", default="default", help="mesh to use")
    dp.add_argument("--proxy-type", "--type", dest="proxy_type", default="",
                    help='type of the Dataplane ("dataplane", "ingress", "egress")')
    dp.add_argument("--tag", action=KeyValues,
                    help="required tag values for dataplane (split values by comma to provide multiple values)")
    dp.add_argument("--workload", default="", help="required workload label value for dataplane")
    _offline_flags(dp)
    dp.set_defaults(run=_dataplane_token)

    zone = what.add_parser("zone-token", parents=[common], help="Generate Zone Token",
                           description="Generate Zone Token that is used to prove identity of zone components "
                                       "(Zone Ingress, Zone Egress).")
    zone.add_argument("--zone", help="name of the zone where resides")
    zone.add_argument("--scope", action=StringSlice, default=None,
                      help="scope of resources which the token will be able to identify (can be: [ingress egress])")
    _offline_flags(zone)
    zone.set_defaults(run=_zone_token)

    user = what.add_parser("user-token", parents=[common], help="Generate User Token",
                           description="Generate User Token that is used to prove User identity.")
    user.add_argument("--name", help="name of the user")
    user.add_argument("--group", action=StringSlice, default=None, help="group of the user")
    _offline_flags(user)
    user.set_defaults(run=_user_token)

    key = what.add_parser("signing-key", parents=[common], help="Generate signing keys",
                          description="Generate a private key for signing tokens.")
    key.add_argument("--format", default="pem-base64", help="format of signing key. Available values :pem-base64, pem")
    key.set_defaults(run=_signing_key)

    tls = what.add_parser("tls-certificate", parents=[common], help="Generate a TLS certificate",
                          description="Generate self signed key and certificate pair.")
    tls.add_argument("--type", help="type of the certificate: one of client|server")
    tls.add_argument("--hostname", action=StringSlice, default=None,
                     help="DNS hostname(s) to issue the certificate for")
    tls.add_argument("--key-type", default="", help="type of the private key: one of rsa|ecdsa")
    tls.add_argument("--key-file", default="key.pem", help="path to a file with a generated private key ('-' for "
                                                           "stdout)")
    tls.add_argument("--cert-file", default="cert.pem", help="path to a file with a generated TLS certificate ('-' "
                                                             "for stdout)")
    tls.set_defaults(run=_tls_certificate)
