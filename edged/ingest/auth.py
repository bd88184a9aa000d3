"""Stream-key authorization behind one interface (embedded map now, origin controller later)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from edged.errors import AuthError


class StreamKeyAuthorizer(Protocol):
    """Maps a publisher's stream key to the channel it may publish; raises AuthError if refused."""

    async def authorize(self, stream_key: str, *, protocol: str, remote: str) -> str: ...

    def lookup(self, stream_key: str) -> str | None:
        """Synchronous best-effort answer (from a map or a cache) for callers that cannot await,
        such as libsrt's listen callback; `authorize` stays the definitive check."""
        ...


class StaticAuthorizer:
    """Authorizes against the embedded key → channel map from the config or `--channel` flags."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._keys = dict(keys)

    async def authorize(self, stream_key: str, *, protocol: str, remote: str) -> str:
        channel = self._keys.get(stream_key)
        if channel is None:
            raise AuthError("unknown stream key")
        return channel

    def lookup(self, stream_key: str) -> str | None:
        return self._keys.get(stream_key)
