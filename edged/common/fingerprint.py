"""The controller CA fingerprint and the tokens that carry it: "SECRET.FINGERPRINT".

Bootstrap tokens (`originctl token create`) and the admin token (DATA_DIR/admin.token) have the form
`<secret>.<fingerprint>`, the fingerprint being the first 32 hex digits (128 bits) of the SHA-256 of
the controller CA certificate (DER). Whoever holds a token can therefore verify the controller on
first contact, before any certificate is trusted:

1. open a plain TLS connection to the controller without verification and read the certificate
   chain it presents (its server certificate followed by its CA certificate): `presented_chain`;
2. keep the certificate whose fingerprint is the token's (`ca_matching`); if none matches, stop: it
   is not the controller that issued the token;
3. dial gRPC with that CA as the only root, verifying the name CONTROLLER_TLS_NAME, which every
   controller server certificate carries (so a controller reached by any address verifies).

Blocking socket work (`presented_chain`): call it off the event loop.
"""

from __future__ import annotations

import hashlib
import socket
import ssl

FINGERPRINT_HEX_DIGITS = 32  # 128 bits of SHA-256: collision resistance is not needed, only preimage
CONTROLLER_TLS_NAME = "originctl.edgenet.internal"  # in every controller server certificate's SAN
_HEX = frozenset("0123456789abcdef")


def fingerprint_der(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()[:FINGERPRINT_HEX_DIGITS]


def fingerprint_pem(pem: bytes) -> str:
    return fingerprint_der(ssl.PEM_cert_to_DER_cert(pem.decode("ascii")))


def parse_token(token: str) -> tuple[str, str] | None:
    """"SECRET.FINGERPRINT" (surrounding white space ignored) → (secret, fingerprint); None when malformed."""
    secret, dot, fp = token.strip().rpartition(".")
    if not dot or not secret or len(fp) != FINGERPRINT_HEX_DIGITS or not _HEX.issuperset(fp):
        return None
    return secret, fp


def presented_chain(host: str, port: int, timeout: float = 5.0) -> list[bytes]:
    """The certificates (DER) a TLS server presents, unverified; OSError or ssl.SSLError when it cannot be read."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # nothing is trusted yet: the fingerprint check is the trust
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        ctx.wrap_socket(raw, server_hostname=CONTROLLER_TLS_NAME) as tls,
    ):
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


def ca_matching(chain: list[bytes], fingerprint: str) -> bytes | None:
    """The certificate (PEM) of `chain` whose fingerprint is `fingerprint`, None when there is none."""
    for der in chain:
        if fingerprint_der(der) == fingerprint:
            return ssl.DER_cert_to_PEM_cert(der).encode("ascii")
    return None
