"""The controller in a fleet whose chat runs on NATS JetStream (`[chat] bus = "nats"`).

Edges on the NATS bus (edged/chat/nats_bus.py) have no orderer process: the stream orders each room and
every edge decides with the same room rules. The controller joins them as one more reader, of every room
at once, so that `originctl chat` speaks to that fleet:

- following: one ordered push consumer on every room's subject (`<prefix>.*`), in stream order, from the
  first stream sequence not applied yet. Each record goes through its room's `edged.chat.room.Room` with
  the JetStream timestamp as the clock (`edged.chat.nats_stream.decide_record`, the code an edge decides
  with), so the rooms here hold what every edge that watched them holds: the bans, timeouts and modes
  that `originctl chat bans|mode` show. Those and the position are written to the store together, in one
  transaction (batched every `flush_s`, at once after a ban, a timeout, an unban or a mode), so a
  restarted controller reloads them and resumes at the stored position: nothing applied twice, nothing
  skipped;
- operators: `moderate` publishes the action on the room's subject (`publish_moderation`) and answers with
  what applying it at its place in the room's order decided (the Verdict each edge computes too:
  ban_success, already_banned, bad_unban_no_ban, ...) once that is stored. NATS unreachable: refused
  (UNAVAILABLE), never queued. Published but not applied here within `answer_timeout_s` (the controller
  is still catching up): the answer says so and has no verdict;
- checkpoints: it writes each room's checkpoints in the rooms' KV bucket at the moments the edges do
  (`checkpoint_due`; compare-and-set, so one checkpoint is written once whoever writes it), which keeps an
  operator's action on a room no edge watches past the stream's retention. After a restart it waits one
  replay window of stream time first (its rooms' rate, duplicate and history windows start empty, so a
  borderline decision in that window can differ from the edges' - the bound a new edge watcher has too);
- gaps: a position older than the stream's first record (records aged out while the controller was away,
  or the first start on a fleet that ran without it) seeds each room from its newest checkpoint older than
  that first record, where that is newer than what the store holds; a stream deleted and made again (its
  creation time changed) is followed from its start, the rooms keeping their state. Quiet for `check_s`,
  it asks the stream: gone or made again, following starts over; records past the position that were not
  delivered (a stalled consumer), the consumer is made again at the position;
- outage: NATS unreachable or JetStream not answering is logged (rate-limited), shown on /healthz
  (`health()`) and as `originctl_chat_nats_connected` 0; following resumes at the position when it is back.

Memory: a room idle for `idle_s` of stream time is kept as its durable state only (its windows have lapsed;
what a long-idle room forgets is the moderators it saw, as an edge that starts watching it does); at most
`max_rooms` are held whole. Loop-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.kv import KeyValue

from edged.chat.commands import MAX_SLOW_SECONDS
from edged.chat.local_bus import room_id_for
from edged.chat.model import (
    ChatLimits,
    EventKind,
    Moderation,
    Restriction,
    RoomSnapshot,
    Submission,
)
from edged.chat.nats_bus import publish_moderation
from edged.chat.nats_checkpoints import read_checkpoints, replay_window_ms, write_checkpoint
from edged.chat.nats_stream import StreamLayout, checkpoint_due, decide_record, ensure_layout, record_time_ms
from edged.chat.nats_wire import Checkpoint, WireError, room_from_token, room_token
from edged.chat.room import Outcome, Room
from edged.log import QuietLog
from originctl.errors import ControllerUnavailable
from originctl.metrics import ControllerMetrics
from originctl.model import ChatNatsState, ChatRoomRecord, ChatRoomView
from originctl.server.chat_hub import check_room
from originctl.server.store import Store

log = logging.getLogger("originctl.chat")

MAX_ROOMS = 100_000  # rooms held whole in memory
MAX_ANSWERS = 1_024  # outcomes of recent operator actions kept for their callers
IDLE_S = 3_600.0


def redact(url: str) -> str:
    """The URL without a password, for logs and /healthz."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True, slots=True)
class NatsModeration:
    """What an operator's action published on NATS came to: its stream sequence, and the room's outcome
    (None: published, not applied here in time)."""

    sseq: int
    outcome: Outcome | None


@dataclass(eq=False, slots=True)
class _Followed:
    room: Room
    last_sseq: int = 0  # the stream sequence of the room's last record applied
    last_time_ms: int | None = None  # its JetStream time (None: not since this process loaded the room)


@dataclass(slots=True)
class _Pending:
    """Changes not in the store yet (the position is taken when they are written)."""

    rooms: dict[str, None] = field(default_factory=dict)
    upsert: dict[tuple[str, str], Restriction] = field(default_factory=dict)
    delete: set[tuple[str, str]] = field(default_factory=set)

    def restrict(self, room: str, r: Restriction) -> None:
        self.upsert[(room, r.login)] = r
        self.delete.discard((room, r.login))

    def lift(self, room: str, login: str) -> None:
        self.upsert.pop((room, login), None)
        self.delete.add((room, login))

    def merge_older(self, older: _Pending) -> None:
        """Take back a batch the store refused; what changed since wins."""
        for name in older.rooms:
            self.rooms[name] = None
        for key, r in older.upsert.items():
            if key not in self.upsert and key not in self.delete:
                self.upsert[key] = r
        for key in older.delete:
            if key not in self.upsert:
                self.delete.add(key)


class NatsChatFollower:
    """The controller's reader of the NATS chat stream: every room's state in the store, operators' actions
    published and answered. `nats_url`: the edges' NATS; `limits`: the room rules' limits, the same as the
    edges' (they are part of the decision)."""

    def __init__(self, nats_url: str, store: Store, metrics: ControllerMetrics, limits: ChatLimits | None = None,
                 *, layout: StreamLayout | None = None, checkpoint_s: float = 60.0, heartbeat_s: float = 2.0,
                 reconnect_wait_s: float = 1.0, connect_grace_s: float = 2.0, publish_timeout_s: float = 5.0,
                 answer_timeout_s: float = 10.0, flush_s: float = 0.5, idle_s: float = IDLE_S, check_s: float = 10.0,
                 max_rooms: int = MAX_ROOMS, wall: Callable[[], float] = time.time) -> None:
        self.nats_url = nats_url
        self.where = redact(nats_url)
        self.store = store
        self.metrics = metrics
        self.limits = limits or ChatLimits()
        self.layout = layout or StreamLayout()
        self.checkpoint_ms = max(1, int(checkpoint_s * 1000))
        self.heartbeat_s = heartbeat_s
        self.reconnect_wait_s = reconnect_wait_s
        self.connect_grace_s = connect_grace_s
        self.publish_timeout_s = publish_timeout_s
        self.answer_timeout_s = answer_timeout_s
        self.flush_s = flush_s
        self.check_s = check_s  # quiet this long: is the stream still there, and the consumer not stalled?
        self.idle_ms = int(idle_s * 1000)
        self.max_rooms = max_rooms
        self._wall = wall
        self._rooms: OrderedDict[str, _Followed] = OrderedDict()  # held whole, least recently fed first
        self._idle: dict[str, ChatRoomRecord] = {}  # the others: durable state and last sequence
        self.next_sseq = 1  # the first stream sequence not applied
        self.last_time_ms = 0  # JetStream time of the last record applied
        self.stream_created_ms = 0
        self.stored_next_sseq = 1  # the store holds everything before this
        self.stream_last_sseq = 0  # the stream's last sequence when following last (re)started
        self._cold_since_ms: int | None = None  # checkpoints wait for a replay window after a (re)start
        self._warm = False
        self._followed = False  # followed the stream once in this process
        self._pending = _Pending()
        self._dirty = asyncio.Event()
        self._urgent = asyncio.Event()
        self._stored_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._answers: OrderedDict[int, Outcome] = OrderedDict()
        self._waiters: dict[int, list[asyncio.Future[Outcome | None]]] = {}
        self._checkpoints: dict[str, Checkpoint] = {}
        self._checkpoint_wake = asyncio.Event()
        self._nc: NatsClient | None = None
        self._kv: KeyValue | None = None
        self._link = False
        self.connected = False
        self.state_since_ms = 0
        self.error = "not started"
        self._follow_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._quiet = QuietLog(log)
        self._messages = {r: metrics.chat_messages.labels(r) for r in
                          ("accepted", "refused", "command", "duplicate", "malformed")}

    # --- lifecycle ------------------------------------------------------------------------------------

    async def load(self) -> None:
        """The rooms' state and the position from the store."""
        state = await self.store.load_chat_nats(self.layout.stream, self._now_ms())
        self.next_sseq = self.stored_next_sseq = max(1, state.next_sseq)
        self.last_time_ms = state.time_ms
        self.stream_created_ms = state.stream_created_ms
        for rec in state.rooms:
            self._idle[rec.room] = rec
        self.metrics.chat_nats_sequence.set(self.next_sseq - 1)
        if state.rooms or self.next_sseq > 1:
            log.info("chat: NATS chat stream %s: %d rooms loaded (%d bans and timeouts), resuming at stream "
                     "sequence %d", self.layout.stream, len(state.rooms),
                     sum(len(r.restrictions) for r in state.rooms), self.next_sseq)

    async def start(self) -> None:
        """Begin connecting and following, in the background (the controller serves whether NATS is up)."""
        self._set_state(False, "connecting")
        self._spawn(self._connect())
        self._spawn(self._flush_forever())
        self._spawn(self._write_checkpoints_forever())

    async def stop(self) -> None:
        """Stop following, store what was applied, close the connection."""
        self._closed = True
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for futures in self._waiters.values():
            for f in futures:
                if not f.done():
                    f.set_result(None)
        self._waiters.clear()
        with contextlib.suppress(Exception):
            await self._flush_once()
        for _, stored in self._stored_waiters:
            if not stored.done():
                stored.set_result(None)
        self._stored_waiters.clear()
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        self.connected = False
        self.metrics.chat_nats_connected.set(0)

    # --- operators ------------------------------------------------------------------------------------

    async def moderate(self, mod: Moderation) -> NatsModeration:
        """Publish an operator's action on the room's subject; its outcome once applied and stored here."""
        check_room(mod.room)
        nc = self._nc
        if self._closed or nc is None or not nc.is_connected:
            raise ControllerUnavailable(f"chat: NATS at {self.where} is unreachable ({self.error}): the action "
                                        "was not published; try again when it is back")
        try:
            sseq = await publish_moderation(nc.jetstream(), mod, prefix=self.layout.prefix, stream=self.layout.stream,
                                            timeout_s=self.publish_timeout_s)
        except Exception as exc:
            raise ControllerUnavailable(
                f"chat: JetStream at {self.where} did not confirm the action ({type(exc).__name__}); it may still "
                "reach the edges: check with `originctl chat bans|mode` before trying again") from None
        outcome: Outcome | None = None
        try:
            async with asyncio.timeout(self.answer_timeout_s):
                outcome = await self._applied(sseq)
                if outcome is not None:
                    await self._stored(sseq)
        except TimeoutError:
            pass
        verdict = outcome.verdict if outcome is not None else None
        log.info("chat: room %s: operator %s %s%s on NATS at stream sequence %d: %s", mod.room, mod.action,
                 mod.target_login or mod.target_msg_id, f" ({mod.seconds} s)" if mod.seconds else "", sseq,
                 "not applied here yet" if outcome is None else verdict.notice_id if verdict else "done")
        return NatsModeration(sseq, outcome)

    def _applied(self, sseq: int) -> asyncio.Future[Outcome | None]:
        fut: asyncio.Future[Outcome | None] = asyncio.get_running_loop().create_future()
        if sseq < self.next_sseq:
            fut.set_result(self._answers.get(sseq))
        else:
            self._waiters.setdefault(sseq, []).append(fut)
        return fut

    def _stored(self, sseq: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if sseq < self.stored_next_sseq:
            fut.set_result(None)
        else:
            self._stored_waiters.append((sseq, fut))
            self._dirty.set()
            self._urgent.set()
        return fut

    # --- reading --------------------------------------------------------------------------------------

    def view(self, name: str) -> ChatRoomView:
        """The room as the stream decided it (the edges on NATS are not known here: no watching nodes)."""
        check_room(name)
        now = self._now_ms()
        fr = self._rooms.get(name)
        if fr is not None:
            snap = fr.room.snapshot(now)
            return ChatRoomView(room=name, room_id=snap.room_id, modes=snap.modes, restrictions=snap.restrictions,
                                head_seq=fr.last_sseq)
        rec = self._idle.get(name)
        if rec is None:
            return ChatRoomView(room=name, room_id=room_id_for(name))
        live = tuple(r for r in rec.restrictions if r.permanent or r.until_ms > now)
        return ChatRoomView(room=name, room_id=rec.room_id or room_id_for(name), modes=rec.modes,
                            restrictions=live, head_seq=rec.seq)

    def health(self) -> dict[str, Any]:
        return {"bus": "nats", "nats_url": self.where, "stream": self.layout.stream, "connected": self.connected,
                "since_unix_ms": self.state_since_ms, "error": "" if self.connected else self.error,
                "applied_sequence": self.next_sseq - 1, "stored_sequence": self.stored_next_sseq - 1,
                "caught_up": self.connected and self.next_sseq > self.stream_last_sseq,
                "rooms": len(self._rooms) + len(self._idle)}

    # --- connection -----------------------------------------------------------------------------------

    async def _connect(self) -> None:
        """Connect once (nats-py then reconnects by itself, for ever), then follow."""
        backoff = self.reconnect_wait_s
        while self._nc is None:
            attempt = asyncio.ensure_future(nats.connect(
                [self.nats_url], name="originctl-chat", allow_reconnect=True, max_reconnect_attempts=-1,
                reconnect_time_wait=self.reconnect_wait_s, connect_timeout=2,
                disconnected_cb=self._on_disconnected, reconnected_cb=self._on_reconnected, error_cb=self._on_error))
            try:
                try:
                    self._nc = await asyncio.wait_for(asyncio.shield(attempt), self.connect_grace_s)
                except TimeoutError:
                    self._down("NATS does not answer")
                    self._nc = await attempt
            except asyncio.CancelledError:
                attempt.cancel()
                raise
            except Exception as exc:  # a URL it cannot use, an authorization error
                self._down(f"cannot connect: {type(exc).__name__}: {exc}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        self._link = True
        self._start_follow()

    async def _on_disconnected(self) -> None:
        self._link = False
        if self._closed:
            return
        self._stop_follow()
        self._down("disconnected")

    async def _on_reconnected(self) -> None:
        self._link = True
        self._start_follow()

    async def _on_error(self, exc: Exception) -> None:
        self._quiet.log(f"nats-{type(exc).__name__}", logging.INFO, "chat: NATS client: %s: %s",
                        type(exc).__name__, exc)

    def _set_state(self, connected: bool, error: str = "") -> None:
        if not connected:
            self.error = error
        if connected == self.connected and self.state_since_ms:
            return
        self.connected = connected
        self.state_since_ms = self._now_ms()
        self.metrics.chat_nats_connected.set(1 if connected else 0)

    def _down(self, why: str) -> None:
        was = self.connected
        self._set_state(False, why)
        self._quiet.log("down", logging.WARNING, "chat: NATS chat stream at %s unavailable (%s); operators' chat "
                        "actions are refused and the store's chat state waits at stream sequence %d%s", self.where,
                        why, self.next_sseq - 1, "" if was else " (still)")

    def _start_follow(self) -> None:
        if self._closed or (self._follow_task is not None and not self._follow_task.done()):
            return
        self._follow_task = self._spawn(self._follow_forever())

    def _stop_follow(self) -> None:
        if self._follow_task is not None:
            self._follow_task.cancel()
            self._follow_task = None

    async def _follow_forever(self) -> None:
        backoff = 0.2
        while self._link and not self._closed:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._down(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _follow(self) -> None:
        nc = self._nc
        assert nc is not None
        js = nc.jetstream()
        self._kv = await ensure_layout(js, self.layout, self._quiet)
        info = await js.stream_info(self.layout.stream)
        first, last = int(info.state.first_seq or 0), int(info.state.last_seq or 0)
        created = int(info.created.timestamp() * 1000) if info.created is not None else 0
        if self.next_sseq > 1 and ((created and self.stream_created_ms and created != self.stream_created_ms)
                                   or self.next_sseq > last + 1):
            log.warning("chat: the NATS chat stream %s was made again (it ends at sequence %d, this controller had "
                        "applied %d): following it from its start; the rooms keep their state", self.layout.stream,
                        last, self.next_sseq - 1)
            self.next_sseq = 1
            self._forget_sequences()
        if created != self.stream_created_ms:
            self.stream_created_ms = created
            self._dirty.set()
        if last and self.next_sseq < first:
            await self._reseed(first)
        self.stream_last_sseq = last
        if not self._followed:
            self._followed = True
            # from the stream's very first record the rooms see everything; else their windows start empty
            self._warm = self.next_sseq == 1 and first <= 1
        if not self.connected:
            log.info("chat: following the NATS chat stream %s at %s from stream sequence %d (its last: %d)",
                     self.layout.stream, self.where, self.next_sseq, last)
        while await self._consume(js):
            log.debug("chat: NATS chat stream %s: nothing delivered for %g s while it holds records after %d: "
                      "consuming again from there", self.layout.stream, self.check_s, self.next_sseq - 1)

    async def _consume(self, js: JetStreamContext) -> bool:
        """Apply records from `next_sseq` on; True when the consumer went quiet while the stream holds records
        past the position (a consumer that stalls is made again). Raises when the stream is gone or was made
        again, or JetStream does not answer (`_follow` starts over)."""
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.next_sseq)
        sub = await js.subscribe(self.layout.wildcard, stream=self.layout.stream, ordered_consumer=True,
                                 config=config, idle_heartbeat=self.heartbeat_s)
        try:
            self._set_state(True)
            while True:
                try:
                    msg = await sub.next_msg(timeout=self.check_s)
                except nats.errors.TimeoutError:
                    info = await js.stream_info(self.layout.stream)
                    created = int(info.created.timestamp() * 1000) if info.created is not None else 0
                    if created and self.stream_created_ms and created != self.stream_created_ms:
                        raise RuntimeError("the chat stream was made again") from None
                    self.stream_last_sseq = int(info.state.last_seq or 0)
                    if self.stream_last_sseq >= self.next_sseq:
                        return True
                    continue
                self._on_message(msg)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _reseed(self, first: int) -> None:
        """Records before `first` are gone: each room from its newest checkpoint older than `first`, where that
        is newer than what the store holds."""
        kv = self._kv
        assert kv is not None
        try:
            keys = await kv.keys()
        except nats.js.errors.NoKeysError:
            keys = []
        seeded = 0
        for key in keys:
            name = room_from_token(key)
            if name is None:
                continue
            entries, _, skipped = await read_checkpoints(kv, key)
            for reason in skipped:
                self._quiet.log("checkpoint", logging.WARNING, "chat: room %s: checkpoint skipped (%s)", name, reason)
            older = [c for c in entries if c.sseq < first]
            if older and older[-1].sseq > self._known_sseq(name):
                self._replace(name, older[-1])
                seeded += 1
        self._warm, self._cold_since_ms = False, None  # the seeded rooms' windows are empty
        log.warning("chat: NATS chat stream %s: records %d..%d are gone (older than its retention, or from before "
                    "this controller followed it); %d rooms seeded from their checkpoints", self.layout.stream,
                    self.next_sseq, first - 1, seeded)
        self.next_sseq = first
        self._dirty.set()
        self._urgent.set()

    def _forget_sequences(self) -> None:
        """The rooms' last sequences belong to a stream that is gone."""
        for name, fr in self._rooms.items():
            fr.last_sseq = 0
            self._pending.rooms[name] = None
        for name, rec in list(self._idle.items()):
            self._idle[name] = dataclasses.replace(rec, seq=0)
            self._pending.rooms[name] = None
        self._warm, self._cold_since_ms = False, None

    def _known_sseq(self, name: str) -> int:
        fr = self._rooms.get(name)
        if fr is not None:
            return fr.last_sseq
        rec = self._idle.get(name)
        return rec.seq if rec is not None else 0

    def _replace(self, name: str, c: Checkpoint) -> None:
        before = {r.login for r in self._snapshot(name).restrictions}
        snap = dataclasses.replace(c.snapshot, room=name)
        self._idle.pop(name, None)
        self._rooms.pop(name, None)
        self._rooms[name] = _Followed(Room(snap, self.limits), last_sseq=c.sseq, last_time_ms=c.time_ms)
        self._pending.rooms[name] = None
        for login in sorted(before - {r.login for r in snap.restrictions}):
            self._pending.lift(name, login)
        for r in snap.restrictions:
            self._pending.restrict(name, r)

    def _snapshot(self, name: str) -> RoomSnapshot:
        fr = self._rooms.get(name)
        if fr is not None:
            return fr.room.snapshot(fr.last_time_ms or self.last_time_ms)
        rec = self._idle.get(name)
        if rec is not None:
            return RoomSnapshot(room=name, room_id=rec.room_id, modes=rec.modes, restrictions=rec.restrictions)
        return RoomSnapshot(room=name, room_id=room_id_for(name))

    # --- records --------------------------------------------------------------------------------------

    def _on_message(self, msg: Msg) -> None:
        sseq = msg.metadata.sequence.stream
        if sseq < self.next_sseq:  # seen before the consumer was recreated
            return
        now_ms = record_time_ms(msg)
        self.next_sseq = sseq + 1
        self.last_time_ms = now_ms
        self._dirty.set()
        name = self.layout.room_of(msg.subject)
        try:
            if name is None:
                self._messages["malformed"].inc()
                self._quiet.log("subject", logging.WARNING, "chat: record at stream sequence %d on %s skipped: no "
                                "room's subject", sseq, msg.subject)
            else:
                self._apply(name, msg.data, sseq, now_ms)
        except Exception:  # a bug in the rules must not stop following; every reader skips the same record
            log.exception("chat: record at stream sequence %d (%s) failed", sseq, msg.subject)
        self.metrics.chat_nats_sequence.set(sseq)
        if self._waiters:
            for k in [k for k in self._waiters if k <= sseq]:
                for fut in self._waiters.pop(k):
                    if not fut.done():
                        fut.set_result(self._answers.get(k))
        self._evict(now_ms)

    def _apply(self, name: str, data: bytes, sseq: int, now_ms: int) -> None:
        fr = self._room(name)
        previous = fr.last_time_ms
        fr.last_sseq, fr.last_time_ms = sseq, now_ms
        self._pending.rooms[name] = None
        try:
            decision = decide_record(fr.room, data, now_ms)
        except WireError as exc:
            self._messages["malformed"].inc()
            self._quiet.log("malformed", logging.WARNING, "chat: room %s: record at stream sequence %d skipped: %s",
                            name, sseq, exc.reason)
            return
        record, outcome = decision.record, decision.outcome
        if isinstance(record, Submission):
            if outcome.duplicate:
                self._messages["duplicate"].inc()
            elif any(e.kind is EventKind.MESSAGE for e in outcome.events):
                self._messages["accepted"].inc()
            elif outcome.verdict is not None:
                self._messages["command" if outcome.verdict.ok else "refused"].inc()
        else:
            self._answers[sseq] = outcome
            while len(self._answers) > MAX_ANSWERS:
                self._answers.popitem(last=False)
        if decision.durable:
            for ev in outcome.events:
                if ev.kind is EventKind.CLEARCHAT and ev.target_login:
                    r = fr.room.restriction(ev.target_login, now_ms)
                    if r is not None:
                        self._pending.restrict(name, r)
                elif ev.kind is EventKind.UNBAN and ev.target_login:
                    self._pending.lift(name, ev.target_login)
            self._urgent.set()
        if self._warm_for(fr, now_ms) and checkpoint_due(previous, now_ms, self.checkpoint_ms, decision.durable):
            self._checkpoints[name] = Checkpoint(sseq=sseq, time_ms=now_ms, snapshot=fr.room.snapshot(now_ms))
            self._checkpoint_wake.set()

    def _warm_for(self, fr: _Followed, now_ms: int) -> bool:
        """Whether the room's windows hold what the edges' do: this process has applied a replay window of the
        stream (the room's own: longer in slow mode) since its rooms started from stored state."""
        if self._warm:
            return True
        if self._cold_since_ms is None:
            self._cold_since_ms = now_ms
        elapsed = now_ms - self._cold_since_ms
        if elapsed >= replay_window_ms(self.limits, MAX_SLOW_SECONDS):
            self._warm = True
        return elapsed >= replay_window_ms(self.limits, fr.room.modes.slow_seconds)

    def _room(self, name: str) -> _Followed:
        fr = self._rooms.get(name)
        if fr is not None:
            self._rooms.move_to_end(name)
            return fr
        rec = self._idle.pop(name, None)
        if rec is None:
            snap = RoomSnapshot(room=name, room_id=room_id_for(name))
            fr = _Followed(Room(snap, self.limits))
        else:
            snap = RoomSnapshot(room=name, room_id=rec.room_id or room_id_for(name), modes=rec.modes,
                                restrictions=rec.restrictions)
            fr = _Followed(Room(snap, self.limits), last_sseq=rec.seq)
        self._rooms[name] = fr
        return fr

    def _evict(self, now_ms: int) -> None:
        """Keep rooms idle for `idle_s` of stream time (and those past `max_rooms`) as their state only."""
        while self._rooms:
            name, fr = next(iter(self._rooms.items()))
            idle = fr.last_time_ms is None or now_ms - fr.last_time_ms >= self.idle_ms
            if not idle and len(self._rooms) <= self.max_rooms:
                return
            del self._rooms[name]
            snap = fr.room.snapshot(fr.last_time_ms or now_ms)
            self._idle[name] = ChatRoomRecord(room=name, room_id=snap.room_id, modes=snap.modes,
                                              restrictions=snap.restrictions, seq=fr.last_sseq)

    # --- the store ------------------------------------------------------------------------------------

    async def _flush_forever(self) -> None:
        while True:
            await self._dirty.wait()
            if not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), self.flush_s)
            try:
                await self._flush_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._quiet.log("store", logging.ERROR, "chat: the NATS chat state was not stored (%s: %s); "
                                "retrying", type(exc).__name__, exc)
                await asyncio.sleep(1.0)

    async def _flush_once(self) -> None:
        """Write what changed, with the position it is as of (one transaction)."""
        self._dirty.clear()
        self._urgent.clear()
        batch, self._pending = self._pending, _Pending()
        position = ChatNatsState(next_sseq=self.next_sseq, time_ms=self.last_time_ms,
                                 stream_created_ms=self.stream_created_ms)
        rooms = []
        for name in batch.rooms:
            snap = self._snapshot(name)
            rooms.append(ChatRoomRecord(room=name, room_id=snap.room_id, modes=snap.modes,
                                        seq=self._known_sseq(name)))
        try:
            await self.store.save_chat_nats(self.layout.stream, position, rooms, [(room, r) for (room, _), r in batch.upsert.items()],
                                            sorted(batch.delete), self._now_ms())
        except BaseException:
            self._pending.merge_older(batch)  # what changed meanwhile is newer than the batch
            self._dirty.set()
            raise
        self.stored_next_sseq = position.next_sseq
        kept = []
        for sseq, fut in self._stored_waiters:
            if sseq < self.stored_next_sseq:
                if not fut.done():
                    fut.set_result(None)
            else:
                kept.append((sseq, fut))
        self._stored_waiters = kept

    # --- checkpoints ----------------------------------------------------------------------------------

    async def _write_checkpoints_forever(self) -> None:
        while True:
            await self._checkpoint_wake.wait()
            self._checkpoint_wake.clear()
            while self._checkpoints:
                name = next(iter(self._checkpoints))
                c = self._checkpoints.pop(name)
                kv = self._kv
                if kv is None:
                    break
                try:
                    await write_checkpoint(kv, room_token(name), c)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._quiet.log("checkpoint-write", logging.INFO, "chat: room %s: checkpoint not written (%s)",
                                    name, type(exc).__name__)

    # --- helpers --------------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)
