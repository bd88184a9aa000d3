"""The ChatBus port: how an edge's rooms reach the rest of the fleet. One port, several implementations.

An edge's chat service (the IRC and WebSocket servers with their local rooms) talks to the fleet only
through this port:

- `watch(room)` / `unwatch(room)`: this edge has (or no longer has) local members in a room. The bus
  then delivers that room's events here, starting with a `RoomSnapshot` (modes, bans, timeouts) and the
  room's recent history (`on_history`), and resumes from the last seq it delivered after a reconnect;
- `submit(submission)`: a local chatter's message or '/command'. It is never delivered locally straight
  away: the room's orderer sequences it and it comes back as a MESSAGE event (or a Verdict);
- events arrive through the `ChatSink` given to `start`, on the event loop, in each room's order.

Implementations:
- `edged.chat.local_bus.LocalBus`: in-process orderer for a standalone edge (no controller) and tests;
- `edged.chat.hub_bus.HubBus`: the controller is the hub (default on an enrolled edge), over its own
  gRPC stream on the edge's mutual-TLS link; while the hub is away it orders locally (events with
  `local=True`, rules from the last snapshot) and replays buffered submissions once when it is back;
- `edged.chat.nats_bus.NatsBus`: NATS JetStream subjects per room (`[chat] bus = "nats"`).
"""

from __future__ import annotations

from typing import Protocol

from edged.chat.model import ChatLine, RoomEvent, RoomSnapshot, Submission, Verdict


class ChatSink(Protocol):
    """What a bus calls on the edge's chat service (always on the event loop, never blocking)."""

    def on_snapshot(self, snapshot: RoomSnapshot) -> None:
        """A room's state, when it is first watched and whenever the bus (re)synchronises it."""

    def on_history(self, room: str, lines: list[ChatLine]) -> None:
        """The room's recent messages (oldest first, moderated ones removed), once per watch."""

    def on_event(self, event: RoomEvent) -> None:
        """One room event, in order."""

    def on_verdict(self, verdict: Verdict) -> None:
        """The answer to one of this edge's submissions that was not delivered as a MESSAGE."""

    def on_bus_state(self, connected: bool) -> None:
        """The bus went up or down (metrics, logs; rooms keep working locally while it is down)."""


class ChatBus(Protocol):
    @property
    def connected(self) -> bool: ...

    async def start(self, sink: ChatSink) -> None: ...

    async def close(self) -> None: ...

    def watch(self, room: str) -> None: ...

    def unwatch(self, room: str) -> None: ...

    def submit(self, submission: Submission) -> None: ...
