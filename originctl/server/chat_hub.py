"""The controller's chat hub: the single orderer of every room when the controller is the chat bus.

Each edge opens one chat stream (originctl/server/chat_service.py) and becomes a `HubSession`: it watches
the rooms that have local members, submits its chatters' messages and '/commands', and is sent what it
must deliver. The hub keeps one `edged.chat.room.Room` per live room (the same rules every other orderer
applies), and for each input:

- stamps the room's events with the room's next seq and appends them to a bounded ring (`resume_events`
  per room) that edges resume from after a reconnect;
- queues them to every session watching the room, and to no other (fan-out);
- queues the Verdict (a refusal, or a command's confirmation) to the submitting session only, and a
  `DroppedItem` for a submission the room dropped as a retry (same id or client-nonce), so the edge stops
  replaying it;
- persists bans, timeouts and modes (the store's chat tables), so they survive a restart and reload into
  the rooms; an operator's action (`moderate`, from `originctl chat`) is answered once it is stored.

Watching: a fresh watch gets the room's snapshot and history; a last_seq the ring still covers gets the events
after it, then a snapshot; anything else gets a GAP event (seq = just before the ring's first event), the
ring's events, and a snapshot.

Seq across restarts: the store keeps, per room, a bound no issued seq exceeds, reserved `SEQ_BLOCK` ahead
(one write per thousand events) and written exactly at a clean stop. A restarted hub continues after the
bound: after a clean stop edges resume without a gap; after a crash they get a GAP (the hub cannot know
what it had sent).

Bounds: a session's queue holds at most `outbox_limit` items; an edge further behind has its stream ended
(it reconnects and resumes, or gets a GAP), so a slow edge never stalls a room. A room nobody watches is
dropped from memory after `history_seconds` idle (its state is in the store and in a small record); at
most `max_rooms` rooms are held. Loop-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from edged.chat.local_bus import room_id_for
from edged.chat.model import (
    ChatLimits,
    ChatLine,
    EventKind,
    Moderation,
    ModerationAction,
    Restriction,
    RoomEvent,
    RoomModes,
    RoomSnapshot,
    Submission,
    Verdict,
)
from edged.chat.room import Outcome, Room
from originctl.errors import ControllerUnavailable, UsageError
from originctl.metrics import ControllerMetrics
from originctl.model import ChatRoomRecord, ChatRoomView
from originctl.server.store import Store
from originctl.server.writes import PendingWrites

log = logging.getLogger("originctl.chat")

SEQ_BLOCK = 1000  # seqs reserved in the store ahead of use
OUTBOX_LIMIT = 20_000  # items queued for one edge before its stream is ended
MAX_ROOMS = 100_000  # rooms held in memory
HOUSEKEEP_SECONDS = 30.0
ROOM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a channel name (originctl/server/channels.py)

MESSAGE_RESULTS = ("accepted", "refused", "command", "duplicate")


@dataclass(slots=True, eq=False)
class Stamped:
    """A sequenced event in a room's ring; `wire` caches its encoding so a fan-out encodes it once."""

    event: RoomEvent
    cause_id: str = ""  # the submission it came from; "" for an operator's action
    wire: Any = None


@dataclass(frozen=True, slots=True)
class SnapshotItem:
    snapshot: RoomSnapshot
    head_seq: int


@dataclass(frozen=True, slots=True)
class HistoryItem:
    room: str
    lines: tuple[ChatLine, ...]


@dataclass(frozen=True, slots=True)
class DroppedItem:
    submission_id: str
    room: str


OutItem = Stamped | SnapshotItem | HistoryItem | Verdict | DroppedItem


class HubSession:
    """One edge's chat stream as the hub sees it: the rooms it watches and what is queued for it."""

    def __init__(self, node_id: str, limit: int = OUTBOX_LIMIT) -> None:
        self.node_id = node_id
        self.rooms: set[str] = set()
        self.limit = limit
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._queue: deque[OutItem] = deque()
        self._wake = asyncio.Event()

    def push(self, item: OutItem) -> bool:
        if self.closed.is_set():
            return False
        if len(self._queue) >= self.limit:
            self.close(f"more than {self.limit} chat items queued (the edge reads too slowly)")
            return False
        self._queue.append(item)
        self._wake.set()
        return True

    async def take(self, most: int = 256) -> list[OutItem]:
        """The next queued items (at least one; waits while there are none)."""
        while not self._queue:
            self._wake.clear()
            await self._wake.wait()
        n = min(most, len(self._queue))
        return [self._queue.popleft() for _ in range(n)]

    def take_nowait(self) -> list[OutItem]:
        """Everything queued now (possibly nothing)."""
        items = list(self._queue)
        self._queue.clear()
        return items

    def close(self, reason: str) -> None:
        if not self.closed.is_set():
            self.close_reason = reason
            self.closed.set()
            self._queue.clear()


@dataclass(slots=True, eq=False)
class _HubRoom:
    room: Room
    head: int  # the last seq issued
    reserved: int  # the store's bound (no seq above it is issued before it is raised)
    ring: deque[Stamped]
    watchers: dict[HubSession, None]
    idle_since: float  # monotonic: when the last watcher left (or the last input, when none watched)


class ChatHub:
    def __init__(self, store: Store, metrics: ControllerMetrics, limits: ChatLimits | None = None, *,
                 resume_events: int = 1000, outbox_limit: int = OUTBOX_LIMIT, max_rooms: int = MAX_ROOMS,
                 wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.metrics = metrics
        self.limits = limits or ChatLimits()
        self.resume_events = resume_events
        self.outbox_limit = outbox_limit
        self.max_rooms = max_rooms
        self._wall = wall
        self._mono = monotonic
        self._rooms: dict[str, _HubRoom] = {}
        self._records: dict[str, ChatRoomRecord] = {}  # rooms not in memory: their state and seq bound
        self._sessions: dict[str, HubSession] = {}  # node ID → its chat stream
        self._writes = PendingWrites()
        self._housekeeper: asyncio.Task[None] | None = None
        self.stopping = False  # set by stop(): no input is ordered any more (the heads are being stored)
        self._messages = {r: metrics.chat_messages.labels(r) for r in MESSAGE_RESULTS}

    # --- lifecycle ------------------------------------------------------------------------------

    async def load(self) -> None:
        """Rooms, bans, timeouts and modes from the store."""
        for rec in await self.store.list_chat_rooms(self._now_ms()):
            self._records[rec.room] = rec
        if self._records:
            bans = sum(len(r.restrictions) for r in self._records.values())
            log.info("chat: %d rooms loaded (%d bans and timeouts)", len(self._records), bans)

    def start(self) -> None:
        self._housekeeper = asyncio.create_task(self._housekeep_forever(), name="originctl-chat-housekeeping")

    async def stop(self) -> None:
        """End every chat stream and store each room's exact head (a restart then resumes without a gap)."""
        self.stopping = True
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeper
            self._housekeeper = None
        for session in list(self._sessions.values()):
            session.close("the controller is stopping")
        await self._writes.drain()
        heads = [(name, hr.room.room_id, hr.head) for name, hr in self._rooms.items() if hr.head]
        heads += [(name, rec.room_id, rec.seq) for name, rec in self._records.items() if rec.seq]
        if heads:
            await self.store.save_chat_heads(heads, self._now_ms())

    async def drain(self) -> None:
        await self._writes.drain()

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)

    # --- sessions -------------------------------------------------------------------------------

    def attach(self, node_id: str) -> HubSession:
        """A new chat stream from `node_id`; one it had before is ended (superseded). A session attached while
        the hub stops is closed already."""
        old = self._sessions.get(node_id)
        if old is not None:
            old.close("superseded by a newer chat stream of the same node")
            self.detach(old)
        session = HubSession(node_id, self.outbox_limit)
        if self.stopping:
            session.close("the controller is stopping")
            return session
        self._sessions[node_id] = session
        return session

    def detach(self, session: HubSession) -> None:
        if self._sessions.get(session.node_id) is session:
            del self._sessions[session.node_id]
        for name in list(session.rooms):
            self.unwatch(session, name)

    def watch(self, session: HubSession, name: str, last_seq: int | None) -> None:
        """`session` has members in room `name`: a fresh watch (`last_seq` None) or a resume after the last seq
        its edge delivered."""
        if self.stopping or session.closed.is_set():
            return
        hr = self._room(name)
        if hr is None:
            return
        hr.watchers[session] = None
        session.rooms.add(name)
        now = self._now_ms()
        if last_seq is None:
            session.push(SnapshotItem(hr.room.snapshot(now), hr.head))
            session.push(HistoryItem(name, tuple(hr.room.history(now))))
            return
        first = hr.ring[0].event.seq if hr.ring else hr.head + 1
        if last_seq <= hr.head and first <= last_seq + 1:
            for i in range(last_seq + 1 - first, len(hr.ring)):
                session.push(hr.ring[i])
        else:
            # the hole ends where the ring begins; what the ring holds follows (after a restart: everything
            # this hub ordered since, such as the messages other edges replayed when it came back)
            gap = RoomEvent(room=name, seq=first - 1, kind=EventKind.GAP, time_ms=now, room_id=hr.room.room_id)
            session.push(Stamped(gap))
            for stamped in hr.ring:
                session.push(stamped)
            log.info("chat: node %s: room %s resumes after seq %d but the hub holds %d..%d: gap", session.node_id,
                     name, last_seq, first, hr.head)
        session.push(SnapshotItem(hr.room.snapshot(now), hr.head))

    def unwatch(self, session: HubSession, name: str) -> None:
        session.rooms.discard(name)
        hr = self._rooms.get(name)
        if hr is not None and session in hr.watchers:
            del hr.watchers[session]
            if not hr.watchers:
                hr.idle_since = self._mono()

    def submit(self, session: HubSession | None, sub: Submission) -> None:
        """A chatter's message or '/command' from the edge of `session` (None: no edge to answer)."""
        if self.stopping:
            return
        hr = self._room(sub.room)
        if hr is None:
            return
        outcome = hr.room.submit(sub, self._now_ms())
        if outcome.duplicate:
            self._messages["duplicate"].inc()
            if session is not None:
                session.push(DroppedItem(sub.id, sub.room))
            return
        if any(e.kind is EventKind.MESSAGE for e in outcome.events):
            self._messages["accepted"].inc()
        elif outcome.verdict is not None:
            self._messages["command" if outcome.verdict.ok else "refused"].inc()
        for coro in self._emit(sub.room, hr, outcome, sub.id):
            self._writes.spawn(coro)
        if outcome.verdict is not None and session is not None:
            session.push(outcome.verdict)

    async def moderate(self, mod: Moderation) -> Outcome:
        """An operator's action: the room's rules, the same fan-out, answered once stored."""
        check_room(mod.room)
        if self.stopping:
            raise ControllerUnavailable("the controller is stopping: try again when it is back")
        try:
            ModerationAction(mod.action)
        except ValueError:
            raise UsageError(f"unknown moderation action {mod.action!r}") from None
        hr = self._room(mod.room)
        if hr is None:
            raise UsageError(f"the hub holds {self.max_rooms} rooms: try again later")
        outcome = hr.room.moderate(mod, self._now_ms())
        writes = self._emit(mod.room, hr, outcome, "")
        if writes:
            await asyncio.gather(*writes)
        log.info("chat: room %s: operator %s %s%s: %s", mod.room, mod.action, mod.target_login or mod.target_msg_id,
                 f" ({mod.seconds} s)" if mod.seconds else "", outcome.verdict.notice_id if outcome.verdict else "done")
        return outcome

    # --- reading --------------------------------------------------------------------------------

    def view(self, name: str) -> ChatRoomView:
        check_room(name)
        now = self._now_ms()
        hr = self._rooms.get(name)
        if hr is not None:
            snap = hr.room.snapshot(now)
            watching = tuple(sorted(s.node_id for s in hr.watchers))
            return ChatRoomView(room=name, room_id=snap.room_id, modes=snap.modes, restrictions=snap.restrictions,
                                head_seq=hr.head, watching_nodes=watching)
        rec = self._records.get(name)
        if rec is None:
            return ChatRoomView(room=name, room_id=room_id_for(name))
        live = tuple(r for r in rec.restrictions if r.until_ms == 0 or r.until_ms > now)
        return ChatRoomView(room=name, room_id=rec.room_id or room_id_for(name), modes=rec.modes, restrictions=live,
                            head_seq=rec.seq)

    @property
    def room_count(self) -> int:
        return len(self._rooms)

    # --- internals ------------------------------------------------------------------------------

    def _room(self, name: str) -> _HubRoom | None:
        hr = self._rooms.get(name)
        if hr is not None:
            if not hr.watchers:
                hr.idle_since = self._mono()
            return hr
        if not ROOM_RE.fullmatch(name):
            log.debug("chat: ignoring room name %r", name[:80])
            return None
        if len(self._rooms) >= self.max_rooms:
            self._evict(force=True)
            if len(self._rooms) >= self.max_rooms:
                log.warning("chat: %d rooms held: room %s is refused", len(self._rooms), name)
                return None
        rec = self._records.pop(name, None)
        snap = RoomSnapshot(room=name, room_id=room_id_for(name))
        head = 0
        if rec is not None:
            snap = RoomSnapshot(room=name, room_id=rec.room_id or snap.room_id, modes=rec.modes,
                                restrictions=rec.restrictions)
            head = rec.seq
        hr = _HubRoom(room=Room(snap, self.limits), head=head, reserved=head, ring=deque(maxlen=self.resume_events),
                      watchers={}, idle_since=self._mono())
        self._rooms[name] = hr
        self.metrics.chat_rooms.set(len(self._rooms))
        return hr

    def _emit(self, name: str, hr: _HubRoom, outcome: Outcome, cause_id: str) -> list[Coroutine[Any, Any, None]]:
        """Sequence, ring and fan out the outcome's events; the store writes they need (not started)."""
        if not outcome.events:
            return []
        fanout = 0
        for ev in outcome.events:
            hr.head += 1
            stamped = Stamped(dataclasses.replace(ev, seq=hr.head), cause_id)
            hr.ring.append(stamped)
            for session in hr.watchers:
                fanout += session.push(stamped)
        if fanout:
            self.metrics.chat_fanout.inc(fanout)
        writes: list[Coroutine[Any, Any, None]] = []
        now = self._now_ms()
        modes_changed = any(e.kind is EventKind.ROOMSTATE for e in outcome.events)
        if modes_changed or hr.head > hr.reserved - SEQ_BLOCK // 2:
            hr.reserved = max(hr.reserved, hr.head + SEQ_BLOCK)
            writes.append(self.store.save_chat_room(name, hr.room.room_id, hr.room.modes, hr.reserved, now))
        upsert: dict[str, Restriction] = {}
        delete: set[str] = set()
        for ev in outcome.events:
            if ev.kind is EventKind.CLEARCHAT and ev.target_login:
                r = hr.room.restriction(ev.target_login, now)
                if r is not None:
                    upsert[ev.target_login] = r
                    delete.discard(ev.target_login)
            elif ev.kind is EventKind.UNBAN and ev.target_login:
                upsert.pop(ev.target_login, None)
                delete.add(ev.target_login)
        if upsert or delete:
            writes.append(self.store.save_chat_restrictions(name, list(upsert.values()), sorted(delete), now))
        return writes

    async def _housekeep_forever(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEP_SECONDS)
            try:
                self._evict()
            except Exception:  # a bug here must not end chat
                log.exception("chat housekeeping failed")

    def _evict(self, force: bool = False) -> None:
        """Forget rooms nobody watched for the history window (all unwatched ones when `force`)."""
        now, limit = self._mono(), self.limits.history_seconds
        for name in [n for n, hr in self._rooms.items()
                     if not hr.watchers and (force or now - hr.idle_since >= limit)]:
            hr = self._rooms.pop(name)
            snap = hr.room.snapshot(self._now_ms())
            if hr.head or snap.restrictions or snap.modes != RoomModes():
                self._records[name] = ChatRoomRecord(room=name, room_id=snap.room_id, modes=snap.modes,
                                                     restrictions=snap.restrictions, seq=hr.head)
        self.metrics.chat_rooms.set(len(self._rooms))


def check_room(name: str) -> str:
    if not ROOM_RE.fullmatch(name):
        raise UsageError(f"invalid room {name!r}: a channel name (1-64 characters of A-Z a-z 0-9 _ . -)")
    return name

