"""The controller's certificate authority, its server certificate, and the admin token file.

Files in the data dir (keys mode 0600, written atomically):
    ca.key, ca.crt          EC P-256 CA, created on first start, valid CA_VALID_DAYS
    server.key, server.crt  re-issued at every start (names can change), signed by the CA
    admin.token             SECRET.FINGERPRINT (originctl/trust.py)

Node certificates: CN = node ID, SAN DNS = node ID, EKU clientAuth (the edge link) and serverAuth (the
node's relay listener: a child dials its parent naming the parent's node ID), valid NODE_CERT_VALID_DAYS;
those issued before the relay carry clientAuth only (gRPC does not check the extended usage). The controller
certificate: EKU serverAuth only, SAN = CONTROLLER_TLS_NAME, localhost, 127.0.0.1, ::1, the host
name and any configured names/addresses. Blocking (file and crypto): call off the event loop.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edged.common.files import write_atomic
from originctl import trust
from originctl.errors import EnrollmentRefused

CA_VALID_DAYS = 3650
SERVER_CERT_VALID_DAYS = 397  # browsers' ceiling; re-issued at every start anyway
NODE_CERT_VALID_DAYS = 825
MAX_CSR_BYTES = 16 * 1024  # a PEM CSR with an RSA-4096 key is about 1.7 KiB


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600, atomically (temp file + rename)."""
    write_atomic(path, data, 0o600)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True, slots=True)
class IssuedCert:
    cert_pem: bytes
    serial_hex: str
    not_after_unix_ms: int


class CertificateAuthority:
    """The fleet's CA: signs the controller's server certificate and every node's client certificate."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self._key = key
        self.cert = cert
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self.fingerprint = trust.fingerprint_der(cert.public_bytes(serialization.Encoding.DER))

    @classmethod
    def load_or_create(cls, data_dir: Path) -> CertificateAuthority:
        key_path, cert_path = data_dir / "ca.key", data_dir / "ca.crt"
        if key_path.exists() and cert_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path}: expected an EC private key")
            return cls(key, x509.load_pem_x509_certificate(cert_path.read_bytes()))
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgenet"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"originctl CA {socket.gethostname()}"),
        ])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=True,
                              crl_sign=True, encipher_only=False, decipher_only=False),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        data_dir.mkdir(parents=True, exist_ok=True)
        write_private(key_path, _pem_key(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(key, cert)

    def _builder(self, subject: x509.Name, public_key: object, days: int) -> x509.CertificateBuilder:
        now = _now()
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate small clock skew
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )

    def issue_server(self, names: list[str]) -> tuple[bytes, bytes]:
        """A fresh key and server certificate for `names` (DNS names or IP literals) → (key, chain PEM).

        The chain holds the CA too, so a client with only a token fingerprint can find it.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        seen: set[str] = set()
        for name in [trust.CONTROLLER_TLS_NAME, "localhost", "127.0.0.1", "::1", socket.gethostname(), *names]:
            if not name or name in seen or name in ("0.0.0.0", "::"):
                continue
            seen.add(name)
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        cert = self._sign_leaf(trust.CONTROLLER_TLS_NAME, key.public_key(), SERVER_CERT_VALID_DAYS, sans,
                               (ExtendedKeyUsageOID.SERVER_AUTH,))
        return _pem_key(key), cert.public_bytes(serialization.Encoding.PEM) + self.cert_pem

    def _sign_leaf(self, common_name: str, public_key: object, days: int, sans: list[x509.GeneralName],
                   usages: tuple[x509.ObjectIdentifier, ...]) -> x509.Certificate:
        """An end-entity certificate signed by the CA: signature-only key usage, the given extended usages."""
        return (
            self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), public_key, days)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
            .add_extension(
                x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=False,
                              crl_sign=False, encipher_only=False, decipher_only=False),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )

    def sign_node_csr(self, csr_pem: bytes, node_id: str) -> IssuedCert:
        """Check the CSR and sign `node_id`'s certificate (client for the edge link, server for its relay
        listener); the CSR's subject is ignored."""
        if len(csr_pem) > MAX_CSR_BYTES:
            raise EnrollmentRefused(f"the CSR is larger than {MAX_CSR_BYTES} bytes")
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise EnrollmentRefused(f"the CSR is not a PEM PKCS#10 request: {exc}") from None
        if not csr.is_signature_valid:
            raise EnrollmentRefused("the CSR's signature does not verify")
        pub = csr.public_key()
        if isinstance(pub, rsa.RSAPublicKey):
            if pub.key_size < 2048:
                raise EnrollmentRefused("RSA keys must be at least 2048 bits")
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            if pub.curve.name not in ("secp256r1", "secp384r1"):
                raise EnrollmentRefused("EC keys must be on P-256 or P-384")
        elif not isinstance(pub, ed25519.Ed25519PublicKey):
            raise EnrollmentRefused("the CSR's key must be EC P-256/P-384, RSA or Ed25519")
        cert = self._sign_leaf(node_id, pub, NODE_CERT_VALID_DAYS, [x509.DNSName(node_id)],
                               (ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH))
        return IssuedCert(
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            serial_hex=format(cert.serial_number, "x"),
            not_after_unix_ms=int(cert.not_valid_after_utc.timestamp() * 1000),
        )


def peer_serial_hex(cert_pem: bytes) -> str:
    """Serial number (hex) of a PEM certificate: identifies which of a node's certificates connected."""
    return format(x509.load_pem_x509_certificate(cert_pem).serial_number, "x")


def ensure_admin_token(data_dir: Path, ca_fingerprint: str) -> tuple[str, Path]:
    """Read DATA_DIR/admin.token, or write a new one (mode 0600) → (token, path)."""
    path = data_dir / "admin.token"
    if path.exists():
        token = path.read_text().strip()
        secret, _, fp = token.rpartition(".")
        if secret and fp == ca_fingerprint:
            return token, path
    token = trust.make_token(trust.new_secret(), ca_fingerprint)
    write_private(path, (token + "\n").encode())
    return token, path
