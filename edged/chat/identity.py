"""Chatter identity: a JWT that the platform's auth service signs, verified on the edge with public keys.

An authenticated chatter logs in with `PASS oauth:<jwt>`. The token is signed with EdDSA (Ed25519), ES256
(EC P-256) or RS256 (RSA) and carries these claims:

    sub           the user's stable ID (the `user-id` tag); required, non-empty
    login         the IRC nick, 1-25 of a-z 0-9 _ (lower-cased here); required
    display_name  optional (default: the login)
    roles         optional list of "broadcaster", "moderator", "subscriber", "vip" (others are ignored)
    color         optional "#RRGGBB"
    exp           required; nbf and iat are checked when present

The controller holds the verification keys (`[chat] jwt_public_keys`, else its own Ed25519 key) and pushes
them down each edge's controller stream; the edge caches them in its data directory so it keeps verifying
through a controller outage and a restart (edged/agent/link.py), and hands them to `update_keys`.

Which key checks a token: the one whose key ID (`kid` header: `key_id(public key)`, the first 16 hex digits
of the SHA-256 of its SubjectPublicKeyInfo) it names, else every key whose type matches the token's `alg`.
The algorithm is taken from the key, never from the token alone: a token whose `alg` does not fit the key
(e.g. HS256 with a public key as the secret) is refused.

Pure and synchronous (one signature check per login: tens of microseconds).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from edged.chat.model import ROLES, Chatter

log = logging.getLogger("edged.chat.identity")

ALGORITHMS = ("EdDSA", "ES256", "RS256")
LEEWAY_SECONDS = 30.0  # clock skew allowed on exp/nbf between the signer and this edge
MAX_TOKEN_CHARS = 8192  # a PASS line is at most 512 bytes anyway; bound the work on junk
LOGIN = re.compile(r"[a-z0-9_]{1,25}")
COLOR = re.compile(r"#[0-9A-Fa-f]{6}")

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class InvalidToken(Exception):
    """The token cannot log anyone in; `reason` says why (for the edge's log, not for the client)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadKey(ValueError):
    """A PEM that is not a usable verification key (wrong type, damaged)."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str
    algorithm: str
    key: PublicKey
    pem: bytes


def algorithm_for(key: object) -> str:
    """The JWS algorithm a key of this type signs or verifies with; BadKey for other types."""
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise BadKey(f"EC keys must be on P-256 for ES256, not {key.curve.name}")
        return "ES256"
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise BadKey(f"RSA keys must have at least 2048 bits, not {key.key_size}")
        return "RS256"
    raise BadKey(f"unsupported key type {type(key).__name__} (use Ed25519, EC P-256 or RSA)")


def key_id(key: PublicKey) -> str:
    """A public key's ID: the first 16 hex digits of the SHA-256 of its DER SubjectPublicKeyInfo."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def load_public_key(pem: bytes) -> VerificationKey:
    """A verification key from a PEM public key (or a certificate's); BadKey when it is not one."""
    try:
        if b"BEGIN CERTIFICATE" in pem:
            from cryptography import x509

            key: Any = x509.load_pem_x509_certificate(pem).public_key()
        else:
            key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise BadKey(f"not a PEM public key: {exc}") from None
    alg = algorithm_for(key)
    canonical = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return VerificationKey(kid=key_id(key), algorithm=alg, key=key, pem=canonical)


def split_pem_bundle(data: bytes) -> list[bytes]:
    """The PEM blocks of a file that may hold several (each from BEGIN to END, with its end line)."""
    blocks = re.findall(rb"-----BEGIN [A-Z0-9 ]+-----.*?-----END [A-Z0-9 ]+-----\r?\n?", data, re.DOTALL)
    return [b if b.endswith(b"\n") else b + b"\n" for b in blocks]


def chatter_from_claims(claims: dict[str, Any]) -> Chatter:
    """The Chatter a verified token's claims describe; InvalidToken when a claim is missing or malformed."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise InvalidToken("the token has no sub claim (the user ID)")
    login = claims.get("login")
    if not isinstance(login, str) or not LOGIN.fullmatch(login.lower()):
        raise InvalidToken("the token's login claim is not 1-25 characters of a-z 0-9 _")
    login = login.lower()
    display = claims.get("display_name", "")
    if not isinstance(display, str):
        raise InvalidToken("the token's display_name claim is not a string")
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise InvalidToken("the token's roles claim is not a list of strings")
    color = claims.get("color", "")
    if not isinstance(color, str) or (color and not COLOR.fullmatch(color)):
        color = ""
    return Chatter(user_id=sub, login=login, display_name=display.strip()[:64] or login,
                   roles=frozenset(r for r in roles if r in ROLES), color=color)


def mint(private_key: Any, *, user_id: str, login: str, display_name: str = "", roles: Iterable[str] = (),
         ttl_seconds: float = 3600.0, now: float, color: str = "") -> str:
    """A token for a chatter, signed with `private_key` (Ed25519, EC P-256 or RSA) and naming its key ID;
    `now` is the wall clock (s since the epoch). What `originctl chat token` asks the controller for."""
    alg = algorithm_for(private_key)
    claims: dict[str, Any] = {"sub": user_id, "login": login, "roles": sorted(set(roles)), "iat": int(now),
                              "exp": int(now + ttl_seconds)}
    if display_name:
        claims["display_name"] = display_name
    if color:
        claims["color"] = color
    return jwt.encode(claims, private_key, algorithm=alg, headers={"kid": key_id(private_key.public_key())})


class TokenVerifier:
    """Verifies chatters' JWTs against the keys the controller distributes (`update_keys`).

    Without keys (a standalone edge, or an enrolled one before its first key push) every token is refused,
    so only anonymous read-only logins work."""

    def __init__(self, pems: Iterable[bytes] = (), *, leeway: float = LEEWAY_SECONDS) -> None:
        self.leeway = leeway
        self._keys: tuple[VerificationKey, ...] = ()
        self._by_kid: dict[str, VerificationKey] = {}
        self.update_keys(pems)

    @property
    def keys(self) -> tuple[VerificationKey, ...]:
        return self._keys

    @property
    def has_keys(self) -> bool:
        return bool(self._keys)

    def update_keys(self, pems: Iterable[bytes]) -> None:
        """Replace the trusted keys. A PEM that is not a usable public key is skipped with a log line (one
        bad file must not stop the others from verifying)."""
        keys: list[VerificationKey] = []
        for pem in pems:
            try:
                k = load_public_key(pem)
            except BadKey as exc:
                log.warning("chat: ignoring a token verification key: %s", exc)
                continue
            if k.kid not in {x.kid for x in keys}:
                keys.append(k)
        self._keys = tuple(keys)
        self._by_kid = {k.kid: k for k in keys}

    def verify(self, token: str) -> Chatter:
        """The chatter the token names; InvalidToken(reason) when it is malformed, expired, not yet valid,
        signed by no trusted key, or its claims are unusable."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("empty or oversized token")
        if not self._keys:
            raise InvalidToken("no token verification keys yet (the controller pushes them)")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise InvalidToken(f"token algorithm {alg!r} is not accepted (only {', '.join(ALGORITHMS)})")
        kid = header.get("kid")
        named = self._by_kid.get(kid) if isinstance(kid, str) else None
        candidates: Sequence[VerificationKey] = [named] if named is not None else self._keys
        candidates = [k for k in candidates if k.algorithm == alg]
        if not candidates:
            raise InvalidToken(f"no trusted {alg} key" + (f" with kid {kid}" if isinstance(kid, str) else ""))
        for k in candidates:
            try:
                claims = jwt.decode(token, k.key, algorithms=[k.algorithm], leeway=self.leeway,
                                    options={"require": ["exp", "sub"], "verify_aud": False})
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise InvalidToken("the token has expired") from None
            except jwt.ImmatureSignatureError:
                raise InvalidToken("the token is not valid yet (nbf/iat in the future)") from None
            except jwt.MissingRequiredClaimError as exc:
                raise InvalidToken(f"the token has no {exc.claim} claim") from None
            except jwt.PyJWTError as exc:
                raise InvalidToken(f"invalid token: {exc}") from None
            return chatter_from_claims(claims)
        raise InvalidToken("the token's signature matches no trusted key")


def case_safe_token(jwt: str) -> str:
    """A JWT in a form that survives lower-casing (tmi.js lower-cases its password): base32, no padding."""
    return base64.b32encode(jwt.encode()).decode().rstrip("=").lower()


def token_from_password(token: str) -> str:
    """The JWT a PASS carried: as it is, or decoded from `case_safe_token`'s form (a text without '.')."""
    if "." in token or not token:
        return token
    try:
        raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
        jwt = raw.decode("ascii")
    except (binascii.Error, ValueError):
        return token
    return jwt if jwt.count(".") == 2 else token


def key_files_problem(paths: Iterable[str]) -> tuple[str, str] | None:
    """The first `[chat] jwt_public_keys` file that cannot be read or holds no PEM key, as (config key, why),
    or None: the one check edged's and originctl's configs both make."""
    for i, path in enumerate(paths):
        try:
            with open(path, "rb") as fh:
                head = fh.read(1 << 16)
        except OSError as exc:
            return f"chat.jwt_public_keys[{i}]", f"cannot read {path}: {exc.strerror or exc}"
        if b"-----BEGIN" not in head:
            return f"chat.jwt_public_keys[{i}]", f"no PEM key in {path}"
    return None
