"""The edge's identity: its key, its certificate, the controller CA it pinned, and how it got them.

Enrollment trust (mirrors originctl/trust.py; edged does not import originctl): the bootstrap token
is "SECRET.FINGERPRINT", the fingerprint being the first 32 hex digits of the SHA-256 of the
controller CA certificate. Before sending the token anywhere, the edge reads the certificate chain the
controller presents on an unverified TLS connection, keeps the certificate with that fingerprint, and
from then on trusts only that CA (pinned in DATA_DIR/agent/ca.crt).

Files in DATA_DIR/agent/ (node.key mode 0600; identity.json is written last, so it marks completeness):
    node.key  node.crt  ca.crt  identity.json
Blocking file, socket and crypto work: call these off the event loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edged.agent.errors import ControllerUnavailable, EnrollmentError

CONTROLLER_TLS_NAME = "originctl.edgenet.internal"  # in every controller certificate (originctl/trust.py)
FINGERPRINT_HEX_DIGITS = 32


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


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


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
    _write(d / "node.key", ident.key_pem, 0o600)
    _write(d / "node.crt", ident.cert_pem)
    _write(d / "ca.crt", ident.ca_pem)
    meta = {k: v for k, v in asdict(ident).items() if k not in ("key_pem", "cert_pem", "ca_pem")}
    meta["enrolled_unix"] = meta["enrolled_unix"] or time.time()
    _write(d / "identity.json", (json.dumps(meta, indent=2) + "\n").encode())


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
    secret, dot, fp = token.strip().rpartition(".")
    if not dot or not secret or len(fp) != FINGERPRINT_HEX_DIGITS or any(c not in "0123456789abcdef" for c in fp):
        raise EnrollmentError("the enrollment token is malformed: copy it whole from `originctl token create` "
                              "(it looks like SECRET.FINGERPRINT)")
    return secret, fp


def fingerprint_der(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()[:FINGERPRINT_HEX_DIGITS]


def fetch_ca(host: str, port: int, fingerprint: str, timeout: float = 5.0) -> bytes:
    """Read the chain the controller presents; return the CA certificate (PEM) with `fingerprint`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # nothing is trusted yet: the fingerprint check below is the trust
    ctx.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=CONTROLLER_TLS_NAME) as tls,
        ):
            getter = getattr(tls, "get_unverified_chain", None) or tls._sslobj.get_unverified_chain  # type: ignore[attr-defined]
            chain = [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
                     for c in getter() or ()]
    except (OSError, ssl.SSLError) as exc:
        raise ControllerUnavailable(f"cannot reach the controller at {host}:{port}: {exc}") from exc
    for der in chain:
        if fingerprint_der(der) == fingerprint:
            return ssl.DER_cert_to_PEM_cert(der).encode("ascii")
    raise EnrollmentError(
        f"the controller at {host}:{port} is not the one that issued this token (its CA fingerprint differs "
        "from the token's): check --origin, or create a token on this controller")
