"""One exception tree for edged.

    EdgedError
    ├── ConfigError              bad configuration: one line naming the key, exit 2
    ├── ProtocolError            a peer or we broke a wire protocol; ends one connection
    │   ├── LocalProtocolError   we tried something the state machine forbids
    │   └── RemoteProtocolError  the peer sent bytes we cannot accept (carries a reply hint)
    ├── AuthError                stream key refused
    ├── PublisherBusy            a channel already has a live publisher
    ├── StoreError               the LMDB store failed
    ├── TranscodeError           a transcoder could not start or died
    └── DependencyMissing        an optional system library is absent (says what to install)
"""

from __future__ import annotations


class EdgedError(Exception):
    """Root of every error edged raises on purpose."""


class ConfigError(EdgedError):
    """Invalid configuration; the message names the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config: {key}: {message}")
        self.key = key


class ProtocolError(EdgedError):
    """A wire protocol was broken; the connection that did it is closed."""

    def __init__(self, message: str, reply_hint: str | None = None) -> None:
        super().__init__(message)
        self.reply_hint = reply_hint


class LocalProtocolError(ProtocolError):
    """We asked the protocol core for something its state forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something we cannot accept."""


class AuthError(EdgedError):
    """A stream key was refused."""


class PublisherBusy(EdgedError):
    """The channel already has a live publisher."""


class StoreError(EdgedError):
    """The segment store failed."""


class TranscodeError(EdgedError):
    """A transcoder could not start or failed."""


class DependencyMissing(EdgedError):
    """An optional system library is missing; the message says which package provides it."""
