"""The edge's identity: its key, its certificate, the controller CA it pinned, and how it got them.

Enrollment trust (edged/common/fingerprint.py, shared with originctl): the bootstrap token is
"SECRET.FINGERPRINT", the fingerprint being the first 32 hex digits of the SHA-256 of the controller
CA certificate. Before sending the token anywhere, the edge reads the certificate chain the controller
presents on an unverified TLS connection, keeps the certificate with that fingerprint, and from then
on trusts only that CA (pinned in DATA_DIR/agent/ca.crt).

Files in DATA_DIR/agent/ (node.key mode 0600; identity.json is written last, so it marks completeness):
    node.key  node.crt  ca.crt  identity.json
Blocking file, socket and crypto work: call these off the event loop.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edged.agent.errors import ControllerUnavailable, EnrollmentError
from edged.common import fingerprint
from edged.common.files import write_atomic

CONTROLLER_TLS_NAME = fingerprint.CONTROLLER_TLS_NAME  # in every controller certificate


@dataclass(frozen=True, slots=True)
class Identity:
    node_id: str
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes
    origin: str  # HOST:PORT of the controller's main port it enrolled with
    edge_port: int  # the mutual-TLS port at enrollment time (asked again before each connection)
    site: str = ""
    enrolled_unix: float = 0.0


def identity_dir(data_path: Path) -> Path:
    return data_path / "agent"


def load_identity(data_path: Path) -> Identity | None:
    """The stored identity, None when this node never enrolled; EnrollmentError when it is damaged."""
    d = identity_dir(data_path)
    meta_path = d / "identity.json"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        return Identity(
            node_id=str(meta["node_id"]), origin=str(meta["origin"]), edge_port=int(meta["edge_port"]),
            site=str(meta.get("site", "")), enrolled_unix=float(meta.get("enrolled_unix", 0)),
            key_pem=(d / "node.key").read_bytes(), cert_pem=(d / "node.crt").read_bytes(),
            ca_pem=(d / "ca.crt").read_bytes(),
        )
    except (OSError, ValueError, KeyError) as exc:
        raise EnrollmentError(f"the identity in {d} is damaged ({exc}): move that directory away and enroll "
                              "again with --enroll-token") from None


def save_identity(data_path: Path, ident: Identity) -> None:
    d = identity_dir(data_path)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    write_atomic(d / "node.key", ident.key_pem, 0o600)
    write_atomic(d / "node.crt", ident.cert_pem)
    write_atomic(d / "ca.crt", ident.ca_pem)
    meta = {k: v for k, v in asdict(ident).items() if k not in ("key_pem", "cert_pem", "ca_pem")}
    meta["enrolled_unix"] = meta["enrolled_unix"] or time.time()
    write_atomic(d / "identity.json", (json.dumps(meta, indent=2) + "\n").encode())


def new_key_and_csr(name: str) -> tuple[bytes, bytes]:
    """A fresh EC P-256 key and a CSR for it → (key PEM, CSR PEM). The controller chooses the subject."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64] or "edged")]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def split_token(token: str) -> tuple[str, str]:
    """"SECRET.FINGERPRINT" → (secret, fingerprint); EnrollmentError when malformed."""
    parts = fingerprint.parse_token(token)
    if parts is None:
        raise EnrollmentError("the enrollment token is malformed: copy it whole from `originctl token create` "
                              "(it looks like SECRET.FINGERPRINT)")
    return parts


def fetch_ca(host: str, port: int, ca_fingerprint: str, timeout: float = 5.0) -> bytes:
    """Read the chain the controller presents; return the CA certificate (PEM) with `ca_fingerprint`."""
    try:
        chain = fingerprint.presented_chain(host, port, timeout)
    except (OSError, ssl.SSLError) as exc:
        raise ControllerUnavailable(f"cannot reach the controller at {host}:{port}: {exc}") from exc
    ca = fingerprint.ca_matching(chain, ca_fingerprint)
    if ca is None:
        raise EnrollmentError(
            f"the controller at {host}:{port} is not the one that issued this token (its CA fingerprint differs "
            "from the token's): check --origin, or create a token on this controller")
    return ca


def serves_tls(cert_pem: bytes) -> bool:
    """Whether a node certificate may serve TLS (the relay listener): certificates issued before the relay
    carry the clientAuth extended usage only, and a TLS client refuses them as a server's."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True  # no restriction on its use
    except ValueError:
        return False
    return ExtendedKeyUsageOID.SERVER_AUTH in eku
