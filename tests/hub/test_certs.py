"""hub/certs.py (``bupmesh hub gen-cert``): what the files contain. test_e2e_ops.py runs a
TLS hub and agents on them."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from bupmesh.config import ConfigError
from hub.certs import generate


def _certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_server_certificate_names_every_host_and_ip_and_chains_to_the_ca(tmp_path: Path) -> None:
    files = generate(tmp_path / "tls", hostnames=["hub.example", "localhost"],
                     ips=["127.0.0.1", "::1"])
    [ca] = _certs(files.ca_cert)
    server, chained_ca = _certs(files.cert)
    assert chained_ca == ca  # hub.crt carries the chain
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["hub.example", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"),
                                                       ipaddress.ip_address("::1")]
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    for key in (files.key, files.ca_key):
        assert key.stat().st_mode & 0o777 == 0o600
        assert b"PRIVATE KEY" in key.read_bytes()


def test_defaults_never_overwrite_and_bad_ip(tmp_path: Path) -> None:
    files = generate(tmp_path)
    san = _certs(files.cert)[0].extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    before = files.cert.read_bytes()
    with pytest.raises(ConfigError, match="exists"):
        generate(tmp_path)
    assert files.cert.read_bytes() == before
    generate(tmp_path, force=True)
    assert files.cert.read_bytes() != before
    with pytest.raises(ConfigError, match="--ip"):
        generate(tmp_path / "other", ips=["not-an-ip"])
