"""The controller CA, its certificates, the admin token file, and the token format."""

from __future__ import annotations

import ipaddress
import socket
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from originctl import trust
from originctl.errors import EnrollmentRefused, UsageError
from originctl.server.enrollment import CertificateAuthority, ensure_admin_token


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def csr_for(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, cn: str = "whatever") -> bytes:
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def test_ca_is_created_once_and_reloaded(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path)
    assert mode(tmp_path / "ca.key") == 0o600
    again = CertificateAuthority.load_or_create(tmp_path)
    assert again.fingerprint == ca.fingerprint == trust.fingerprint_pem(ca.cert_pem)
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_server_certificate_names_and_chain(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path)
    key_pem, chain = ca.issue_server(["origin.example.net", "192.0.2.10", "0.0.0.0"])
    certs = x509.load_pem_x509_certificates(chain)
    assert len(certs) == 2 and certs[1].fingerprint(hashes.SHA256()) == ca.cert.fingerprint(hashes.SHA256())
    san = certs[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = san.get_values_for_type(x509.DNSName)
    ips = san.get_values_for_type(x509.IPAddress)
    assert {"localhost", trust.CONTROLLER_TLS_NAME, socket.gethostname(), "origin.example.net"} <= set(dns)
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("192.0.2.10")} <= set(ips)
    assert ipaddress.ip_address("0.0.0.0") not in ips
    eku = certs[0].extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ca.cert.public_key().verify(certs[0].signature, certs[0].tbs_certificate_bytes,
                                ec.ECDSA(certs[0].signature_hash_algorithm))
    assert serialization.load_pem_private_key(key_pem, None)


def test_node_certificate_from_a_csr(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path)
    issued = ca.sign_node_csr(csr_for(ec.generate_private_key(ec.SECP256R1()), "evil-admin"), "nd-1234abcd")
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "nd-1234abcd"  # CSR subject ignored
    assert format(cert.serial_number, "x") == issued.serial_hex
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]  # edge link, relay port
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["nd-1234abcd"]  # what a relay child names its parent by
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@pytest.mark.parametrize("csr, message", [
    (b"-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n-----END CERTIFICATE REQUEST-----\n", "not a PEM"),
    (b"x" * 20000, "larger than"),
])
def test_bad_csrs_are_refused(tmp_path: Path, csr: bytes, message: str) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path)
    with pytest.raises(EnrollmentRefused, match=message):
        ca.sign_node_csr(csr, "nd-1")


def test_weak_rsa_keys_are_refused(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(EnrollmentRefused, match="2048"):
        ca.sign_node_csr(csr_for(weak), "nd-1")


def test_admin_token_file(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path)
    token, path = ensure_admin_token(tmp_path, ca.fingerprint)
    assert mode(path) == 0o600 and path == tmp_path / "admin.token"
    secret, fp = trust.split_token(token)
    assert fp == ca.fingerprint and len(secret) >= 32
    assert ensure_admin_token(tmp_path, ca.fingerprint)[0] == token  # stable across restarts
    other, _ = ensure_admin_token(tmp_path, "0" * 32)  # a new CA invalidates the old token
    assert other != token and other.endswith("." + "0" * 32)


@pytest.mark.parametrize("bad", ["", "abc", "abc.", ".0123456789abcdef0123456789abcdef", "s.0123456789ABCDEF0123456789ABCDEF",
                                 "s.0123"])
def test_malformed_tokens(bad: str) -> None:
    with pytest.raises(UsageError, match="SECRET.FINGERPRINT"):
        trust.split_token(bad)


def test_token_round_trip() -> None:
    token = trust.make_token(trust.new_secret(), "a" * 32)
    secret, fp = trust.split_token(token + "\n")
    assert fp == "a" * 32 and "." not in secret
