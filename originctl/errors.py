"""One exception tree for originctl (controller and CLI).

    OriginctlError
    ├── UsageError             bad flags, config or missing credentials: one line, exit 2
    │   └── ConfigError        the config file or a flag value is invalid; names the key
    ├── ControllerUnavailable  the controller cannot be reached or answered with an outage, exit 1
    ├── NotAuthenticated       the admin token was refused, exit 1
    ├── NotFound               no such node (or other object), exit 1
    ├── Conflict               the request contradicts the current state (e.g. an ambiguous ID), exit 1
    ├── EnrollmentRefused      a bootstrap token or CSR was refused
    │   ├── TokenInvalid       unknown or malformed token
    │   ├── TokenUsed          the one-time token was already used
    │   └── TokenExpired       the token's TTL has passed
    ├── TrustError             the controller's CA does not match the fingerprint the token carries
    └── StoreError             the SQLite store failed

Servicers map these to gRPC status codes in one place (originctl/server/convert.py); the CLI maps
gRPC status codes back to these (originctl/client.py) and prints `originctl: message`.
"""

from __future__ import annotations


class OriginctlError(Exception):
    """Root of every error originctl raises on purpose."""

    exit_code = 1


class UsageError(OriginctlError):
    """The command line, the config, or the credentials given are unusable."""

    exit_code = 2


class ConfigError(UsageError):
    """Invalid configuration; the message names the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config: {key}: {message}")
        self.key = key


class ControllerUnavailable(OriginctlError):
    """The controller could not be reached."""


class NotAuthenticated(OriginctlError):
    """The admin token is missing on the server side or wrong."""


class NotFound(OriginctlError):
    """The named object does not exist."""


class Conflict(OriginctlError):
    """The request contradicts the current state."""


class EnrollmentRefused(OriginctlError):
    """An enrollment was refused; the message says why and what to do."""


class TokenInvalid(EnrollmentRefused):
    """The bootstrap token is unknown or malformed."""


class TokenUsed(EnrollmentRefused):
    """The one-time bootstrap token was already used."""


class TokenExpired(EnrollmentRefused):
    """The bootstrap token's TTL has passed."""


class TrustError(OriginctlError):
    """The controller presented a CA that the token's fingerprint does not match."""


class StoreError(OriginctlError):
    """The store failed."""
