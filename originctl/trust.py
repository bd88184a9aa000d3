"""Tokens that carry trust: "SECRET.FINGERPRINT" (the scheme is edged/common/fingerprint.py's).

Both the one-time bootstrap tokens (`originctl token create`) and the admin token (DATA_DIR/admin.token)
have the form `<secret>.<fingerprint>`, where the fingerprint is the first 32 hex digits (128 bits) of
the SHA-256 of the controller CA certificate (DER). Whoever holds a token can therefore verify the
controller on first contact, before any certificate is trusted: read the chain the controller presents
without verification, keep the certificate with the token's fingerprint (none: it is not the
controller that issued the token), and dial gRPC with that CA as the only root, verifying the name
CONTROLLER_TLS_NAME that every controller server certificate carries.

This module adds what only the controller and its CLI need (new secrets, their digests) and the
originctl errors around the shared checks.
"""

from __future__ import annotations

import hashlib
import secrets
import ssl

from edged.common import fingerprint
from edged.common.fingerprint import CONTROLLER_TLS_NAME as CONTROLLER_TLS_NAME
from edged.common.fingerprint import FINGERPRINT_HEX_DIGITS as FINGERPRINT_HEX_DIGITS
from edged.common.fingerprint import fingerprint_der as fingerprint_der
from edged.common.fingerprint import fingerprint_pem as fingerprint_pem
from originctl.errors import ControllerUnavailable, TrustError, UsageError

SECRET_BYTES = 24  # 192 bits, 32 URL-safe characters


def new_secret() -> str:
    while True:
        secret = secrets.token_urlsafe(SECRET_BYTES)
        if not secret.startswith("-"):  # `--enroll-token -abc...` would read as an option
            return secret


def make_token(secret: str, ca_fingerprint: str) -> str:
    return f"{secret}.{ca_fingerprint}"


def split_token(token: str) -> tuple[str, str]:
    """Token → (secret, CA fingerprint); raises UsageError when it has not the SECRET.FINGERPRINT form."""
    parts = fingerprint.parse_token(token)
    if parts is None:
        raise UsageError(
            "the token is not in the form SECRET.FINGERPRINT; copy it whole from `originctl token create` "
            "or DATA_DIR/admin.token"
        )
    return parts


def secret_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def fetch_ca(host: str, port: int, ca_fingerprint: str, timeout: float = 5.0) -> bytes:
    """Blocking: read the chain the controller presents and return the CA (PEM) matching `ca_fingerprint`."""
    try:
        chain = fingerprint.presented_chain(host, port, timeout)
    except (OSError, ssl.SSLError) as exc:
        raise ControllerUnavailable(f"cannot reach the controller at {host}:{port} ({exc}): is `originctl serve` "
                                    "running there? point at it with --origin HOST:PORT") from exc
    ca = fingerprint.ca_matching(chain, ca_fingerprint)
    if ca is None:
        seen = [fingerprint_der(der) for der in chain]
        raise TrustError(
            f"the controller at {host}:{port} presents no CA with fingerprint {ca_fingerprint} (it offers "
            f"{', '.join(seen) or 'none'}): the token belongs to another controller, or something is "
            "intercepting the connection"
        )
    return ca
