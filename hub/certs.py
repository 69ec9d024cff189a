"""``bupmesh hub gen-cert``: a private CA and a hub server certificate, with ``cryptography``.

Agents cross the internet, so the hub serves TLS off loopback. Most owners have
no public certificate for their hub, and need none: a CA of their own, whose
certificate every agent gets as ``--ca-file``, signs the hub's server
certificate. This writes

- ``ca.pem`` (give to agents), ``ca.key`` (0600; keep it offline, it signs more
  hub certificates later),
- ``hub.crt`` (the server certificate, followed by the CA certificate so the
  chain is complete) and ``hub.key`` (0600).

Keys are ECDSA P-256: small, fast, supported by gRPC's BoringSSL and by every
TLS client the project uses. The server certificate names every
``--hostname`` and ``--ip`` as subjectAltNames (clients match those, never the
CN), is valid 825 days (the longest browsers accept) and is for serverAuth
only. Existing files are never overwritten unless ``--force``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bupmesh.config import ConfigError

CA_DAYS = 3650
SERVER_DAYS = 825
FILES = ("ca.pem", "ca.key", "hub.crt", "hub.key")


@dataclass(frozen=True)
class CertFiles:
    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", default="./tls",
                        help="directory for ca.pem, ca.key, hub.crt, hub.key (default ./tls)")
    parser.add_argument("--hostname", action="append", default=[], metavar="H",
                        help="DNS name agents dial (repeatable; default localhost)")
    parser.add_argument("--ip", action="append", default=[], metavar="IP",
                        help="IP address agents dial (repeatable; default 127.0.0.1)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite existing files in --out")


def run(args: argparse.Namespace) -> int:
    files = generate(Path(args.out), hostnames=args.hostname, ips=args.ip, force=args.force)
    print(f"wrote {files.ca_cert}, {files.ca_key} (keep offline), {files.cert}, {files.key}")
    print(f"hub:    bupmesh hub --tls-cert {files.cert} --tls-key {files.key} ...")
    print(f"agents: bupmesh agent --ca-file {files.ca_cert} ...   (copy ca.pem to each agent)")
    print(f"upload: bupmesh upload --ca-file {files.ca_cert} ...")
    return 0


def generate(out: Path, *, hostnames: list[str] | None = None, ips: list[str] | None = None,
             force: bool = False, now: dt.datetime | None = None) -> CertFiles:
    hostnames = [h.strip() for h in hostnames or [] if h.strip()]
    try:
        addresses = [ipaddress.ip_address(ip.strip()) for ip in ips or []]
    except ValueError as exc:
        raise ConfigError(f"--ip: {exc}") from None
    if not hostnames and not addresses:
        hostnames, addresses = ["localhost"], [ipaddress.ip_address("127.0.0.1")]
    files = CertFiles(out / "ca.pem", out / "ca.key", out / "hub.crt", out / "hub.key")
    existing = [p for p in (files.ca_cert, files.ca_key, files.cert, files.key) if p.exists()]
    if existing and not force:
        raise ConfigError(f"--out: {existing[0]} exists (pass --force to replace it)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out: cannot create {out}: {exc.strerror or exc}") from None

    now = now or dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bupmesh CA"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bupmesh")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    names += [x509.IPAddress(a) for a in addresses]
    common = hostnames[0] if hostnames else str(addresses[0])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=False, key_cert_sign=False,
            crl_sign=False, content_commitment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    _write(files.ca_key, _key_pem(ca_key), private=True)
    _write(files.key, _key_pem(key), private=True)
    _write(files.ca_cert, ca_cert.public_bytes(pem), private=False)
    _write(files.cert, cert.public_bytes(pem) + ca_cert.public_bytes(pem), private=False)
    return files


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Create with the final mode from the start: a key is never readable by others."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
