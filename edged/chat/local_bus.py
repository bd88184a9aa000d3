"""LocalBus: the ChatBus of a standalone edge (no controller), and of tests. This process is the orderer.

Each room is an `edged.chat.room.Room` (the same rules the controller's hub applies); the bus stamps the
room's events with a sequence from 1 and hands them to the sink. Nothing is delivered from inside a call:
`watch` and `submit` schedule their callbacks on the loop, as a bus with a network in between would.

A room's state (bans, timeouts, modes, recent history) lives as long as the process: an unwatched room is
kept while it has restrictions, non-default modes or history (at most `history_seconds` old), and is
forgotten otherwise (at most MAX_IDLE_ROOMS unwatched rooms are kept, the oldest go first). The room's `room-id` is derived
from its name (stable across restarts and across standalone edges).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable

from edged.chat.bus import ChatSink
from edged.chat.model import ChatLimits, Moderation, RoomEvent, RoomModes, RoomSnapshot, Submission
from edged.chat.room import Outcome, Room

log = logging.getLogger(__name__)

MAX_IDLE_ROOMS = 10_000  # unwatched rooms kept for their bans/modes; the oldest go first beyond this


def room_id_for(room: str) -> str:
    """A stable numeric `room-id` for a room an in-process orderer creates: 12 decimal digits of its name's hash."""
    return str(int.from_bytes(hashlib.sha256(room.encode()).digest()[:5], "big") % 10**12 or 1)


class LocalBus:
    """In-process ChatBus: one `Room` per room, sequenced here."""

    def __init__(self, limits: ChatLimits | None = None, *, wall: Callable[[], float] = time.time,
                 room_id: Callable[[str], str] = room_id_for) -> None:
        self.limits = limits or ChatLimits()
        self._wall = wall
        self._room_id = room_id
        self._sink: ChatSink | None = None
        self._rooms: dict[str, Room] = {}
        self._seq: dict[str, int] = {}
        self._watched: set[str] = set()
        self._idle: dict[str, None] = {}  # unwatched rooms, oldest first
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def connected(self) -> bool:
        return True

    async def start(self, sink: ChatSink) -> None:
        self._sink = sink
        self._loop = asyncio.get_running_loop()
        sink.on_bus_state(True)

    async def close(self) -> None:
        self._sink = None

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)

    def _room(self, name: str) -> Room:
        room = self._rooms.get(name)
        if room is None:
            room = Room(RoomSnapshot(room=name, room_id=self._room_id(name)), self.limits)
            self._rooms[name] = room
            self._seq[name] = 0
        return room

    def _later(self, fn: Callable[[], None]) -> None:
        loop = self._loop or asyncio.get_running_loop()
        loop.call_soon(fn)

    # --- the port -------------------------------------------------------------------------------------

    def watch(self, room: str) -> None:
        self._watched.add(room)
        self._idle.pop(room, None)
        self._room(room)
        self._later(lambda: self._send_state(room))

    def _send_state(self, name: str) -> None:
        sink, room = self._sink, self._rooms.get(name)
        if sink is None or room is None or name not in self._watched:
            return
        now = self._now_ms()
        sink.on_snapshot(room.snapshot(now))
        sink.on_history(name, room.history(now))

    def unwatch(self, room: str) -> None:
        self._watched.discard(room)
        if room in self._rooms:
            self._idle[room] = None
            self._forget_idle()

    def _forget_idle(self) -> None:
        now = self._now_ms()
        for name in list(self._idle):
            room = self._rooms[name]
            snap = room.snapshot(now)
            if not snap.restrictions and snap.modes == RoomModes() and not room.history(now):
                del self._idle[name]
                del self._rooms[name]
                del self._seq[name]
        while len(self._idle) > MAX_IDLE_ROOMS:
            name = next(iter(self._idle))
            del self._idle[name]
            del self._rooms[name]
            del self._seq[name]

    def submit(self, submission: Submission) -> None:
        self._later(lambda: self._ordered(submission.room, lambda room, now: room.submit(submission, now)))

    def moderate(self, moderation: Moderation) -> None:
        """An operator's action (not part of the port: the controller's hub has `originctl chat`)."""
        self._later(lambda: self._ordered(moderation.room, lambda room, now: room.moderate(moderation, now)))

    def _ordered(self, name: str, decide: Callable[[Room, int], Outcome]) -> None:
        sink = self._sink
        if sink is None:
            return
        room = self._room(name)
        outcome = decide(room, self._now_ms())
        for event in outcome.events:
            self._seq[name] += 1
            stamped: RoomEvent = dataclasses.replace(event, seq=self._seq[name])
            if name in self._watched:
                sink.on_event(stamped)
        if outcome.verdict is not None:
            sink.on_verdict(outcome.verdict)
        if name not in self._watched:
            self._idle[name] = None
            self._forget_idle()
