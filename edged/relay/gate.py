"""What the HTTP front asks of the relay before serving a channel (no gRPC in here)."""

from __future__ import annotations

import enum
from typing import Protocol


class Availability(enum.Enum):
    LOCAL = "local"  # a publisher is here
    READY = "ready"  # relayed, and ready at once
    WAITED = "relay_wait"  # relayed; the request waited for the subscription
    ABSENT = "404"  # live nowhere
    UNAVAILABLE = "503"  # not ready within relay.start_timeout, or no subscription possible now


class Gate(Protocol):
    """edged.relay.manager.RelayManager, as the HTTP handlers use it."""

    async def request(self, channel: str, path: tuple[str, ...] = ()) -> Availability: ...
    def touch(self, channel: str) -> None: ...
    async def segment_soon(self, channel: str, rendition: str, seq: int) -> bool:
        """Whether a relayed segment just past what this edge holds arrived within a short wait."""
        ...
