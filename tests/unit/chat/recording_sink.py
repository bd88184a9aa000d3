"""A ChatSink for bus tests: records what the edge's chat service would be told, in order."""

from __future__ import annotations

from edged.chat.model import ChatLine, EventKind, RoomEvent, RoomSnapshot, Verdict


class RecordingSink:
    """What the edge's chat service would be told, in order."""

    def __init__(self) -> None:
        self.snapshots: list[RoomSnapshot] = []
        self.histories: list[tuple[str, list[ChatLine]]] = []
        self.events: list[RoomEvent] = []
        self.verdicts: list[Verdict] = []
        self.states: list[bool] = []

    def on_snapshot(self, snapshot: RoomSnapshot) -> None:
        self.snapshots.append(snapshot)

    def on_history(self, room: str, lines: list[ChatLine]) -> None:
        self.histories.append((room, lines))

    def on_event(self, event: RoomEvent) -> None:
        self.events.append(event)

    def on_verdict(self, verdict: Verdict) -> None:
        self.verdicts.append(verdict)

    def on_bus_state(self, connected: bool) -> None:
        self.states.append(connected)

    def messages(self, room: str | None = None) -> list[RoomEvent]:
        """The MESSAGE events received, in one room or (None) in every room."""
        return [e for e in self.events if e.kind is EventKind.MESSAGE and (room is None or e.room == room)]

    def ids(self, room: str | None = None) -> list[str]:
        """The ids of those messages' lines."""
        return [e.line.id for e in self.messages(room) if e.line is not None]
