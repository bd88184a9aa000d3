"""Tokens that carry trust: "SECRET.FINGERPRINT".

Both the one-time bootstrap tokens (`originctl token create`) and the admin token (DATA_DIR/admin.token)
have the form `<secret>.<fingerprint>`, where the fingerprint is the first 32 hex digits (128 bits) of
the SHA-256 of the controller CA certificate (DER). Whoever holds a token can therefore verify the
controller on first contact, before any certificate is trusted:

1. open a plain TLS connection to the controller without verification and read the certificate
   chain it presents (its server certificate followed by its CA certificate);
2. keep the certificate whose SHA-256 starts with the fingerprint; if none matches, stop: it is not
   the controller that issued the token;
3. dial gRPC with that CA as the only root.

The controller's server certificate always carries the name CONTROLLER_TLS_NAME, and clients verify
that name (gRPC `ssl_target_name_override`), so a controller reached by any address verifies.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
import ssl

from originctl.errors import ControllerUnavailable, TrustError, UsageError

FINGERPRINT_HEX_DIGITS = 32  # 128 bits of SHA-256: collision resistance is not needed, only preimage
SECRET_BYTES = 24  # 192 bits, 32 URL-safe characters
CONTROLLER_TLS_NAME = "originctl.edgenet.internal"  # in every controller server cert's SAN


def fingerprint_der(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()[:FINGERPRINT_HEX_DIGITS]


def fingerprint_pem(pem: bytes) -> str:
    return fingerprint_der(ssl.PEM_cert_to_DER_cert(pem.decode("ascii")))


def new_secret() -> str:
    while True:
        secret = secrets.token_urlsafe(SECRET_BYTES)
        if not secret.startswith("-"):  # `--enroll-token -abc...` would read as an option
            return secret


def make_token(secret: str, ca_fingerprint: str) -> str:
    return f"{secret}.{ca_fingerprint}"


def split_token(token: str) -> tuple[str, str]:
    """Token → (secret, CA fingerprint); raises UsageError when it has not the SECRET.FINGERPRINT form."""
    secret, dot, fp = token.strip().rpartition(".")
    if not dot or not secret or len(fp) != FINGERPRINT_HEX_DIGITS or any(c not in "0123456789abcdef" for c in fp):
        raise UsageError(
            "the token is not in the form SECRET.FINGERPRINT; copy it whole from `originctl token create` "
            "or DATA_DIR/admin.token"
        )
    return secret, fp


def secret_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def fetch_ca(host: str, port: int, fingerprint: str, timeout: float = 5.0) -> bytes:
    """Blocking: read the chain the controller presents and return the CA (PEM) matching `fingerprint`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # nothing is trusted yet: the fingerprint check below is the trust
    ctx.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=CONTROLLER_TLS_NAME) as tls,
        ):
            chain = _unverified_chain(tls)
    except (OSError, ssl.SSLError) as exc:
        raise ControllerUnavailable(f"cannot reach the controller at {host}:{port} ({exc}): is `originctl serve` "
                                    "running there? point at it with --origin HOST:PORT") from exc
    seen = []
    for der in chain:
        fp = fingerprint_der(der)
        if fp == fingerprint:
            return ssl.DER_cert_to_PEM_cert(der).encode("ascii")
        seen.append(fp)
    raise TrustError(
        f"the controller at {host}:{port} presents no CA with fingerprint {fingerprint} (it offers "
        f"{', '.join(seen) or 'none'}): the token belongs to another controller, or something is "
        "intercepting the connection"
    )


def _unverified_chain(tls: ssl.SSLSocket) -> list[bytes]:
    # Public from Python 3.13 (returns DER bytes); on 3.11/3.12 the same method sits on the
    # private _sslobj and returns Certificate objects.
    getter = getattr(tls, "get_unverified_chain", None)
    if getter is None:
        getter = tls._sslobj.get_unverified_chain  # type: ignore[attr-defined]
    out: list[bytes] = []
    for cert in getter() or ():
        if isinstance(cert, bytes):
            out.append(cert)
        else:
            out.append(cert.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
    return out
