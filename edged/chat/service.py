"""The edge's chat service: local rooms whose members are this edge's client connections, fed by a ChatBus.

Who does what:
- the IRC core (`edged.protocols.irc.session.ServerSession`, one per connection) parses what a client
  sends and renders what it receives, honouring its capabilities;
- the servers (`edged.chat.irc_server` for TCP and TLS, `edged.chat.ws` for WebSocket) own sockets; each
  connection is a `ChatConnection` subclass that writes bytes, reports its backlog and closes;
- this service logs chatters in (anonymous `justinfanNNNN` readers, or `PASS oauth:<jwt>` verified by
  `edged.chat.identity.TokenVerifier`), keeps the local rooms (members, the room's modes for ROOMSTATE,
  recent history for web clients), hands submissions to the bus, and delivers what the bus sends back.

Delivery. A room's events are batched: the first event after a quiet spell arms a timer of
`[chat] batch_seconds` (about 20 ms), and the batch is then written to every member in one write each.
Members with the same capabilities share one rendering of a batch (the common case: one encode per batch,
not per member); the sender of a message in the batch gets its own rendering (USERSTATE instead of its own
PRIVMSG, as TMI does). A batch with a ROOMSTATE or a GAP is rendered per member (the session tracks the
modes each client has seen). The write never waits: what a client has not read yet queues in its
transport, and a client with more than `[chat] max_queue_bytes` waiting is dropped (`slow_reader`,
counted as `dropped_slow`), so one slow reader never stalls a room.

Big rooms: JOIN/PART of other chatters, and the NAMES list beyond one's own name, are sent only while a
room has at most `[chat] big_room_members` members (anonymous readers are never announced).

History: the service keeps each room's recent messages as the bus gave them (`on_history`) and as they
arrive, less what moderation removed; a WebSocket client gets them on join (`historical=1` tag).

Tokens: `PASS oauth:<jwt>`, or `PASS oauth:<the JWT in base32>` (RFC 4648 alphabet, any case, no padding:
`case_safe_token`) for clients that lower-case the password, as tmi.js does (a JWT is case-sensitive; a
base32 text has no '.', so the two forms cannot be confused).

Liveness: one sweep for all connections closes a connection that has not logged in within
`[chat] login_timeout`, sends a PING every `[chat] ping_interval`, and closes one whose PONG is
`[chat] pong_timeout` late. A connection that sends more than `[chat] lines_per_second` (bursts of 5 s
worth) is closed as a flood. Every close by this edge is counted in edged_chat_closed_total{reason} and
logged through QuietLog (one line per reason per interval).

Drain and stop: `reconnect_all()` sends RECONNECT to every client (tmi.js and Twitch bots reconnect on
it) and closes the connections shortly after, so clients move before this edge drains or stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from edged.chat import metrics as m
from edged.chat.bus import ChatBus
from edged.chat.identity import InvalidToken, TokenVerifier, token_from_password
from edged.chat.model import ChatLine, Chatter, EventKind, NoticeId, RoomEvent, RoomSnapshot, Verdict
from edged.config import ChatConfig
from edged.log import QuietLog
from edged.protocols.irc.session import (
    Event,
    JoinRequested,
    LoginRequested,
    MessageSubmitted,
    PartRequested,
    ProtocolViolation,
    QuitRequested,
    ServerSession,
)
from edged.protocols.irc.tmi import Cap

log = logging.getLogger(__name__)

ANONYMOUS_RE = re.compile(r"^justinfan[0-9]{1,20}$")
FLOOD_BURST_SECONDS = 5.0  # the line bucket holds this many seconds of [chat] lines_per_second
CLOSE_GRACE = 2.0  # s a closing connection may take to flush before it is aborted
RECONNECT_GRACE = 1.0  # s clients get after RECONNECT before this edge closes their connections
STOP_FLUSH = 1.0  # s stop() waits for connections to close after RECONNECT (then they are aborted)
SUBMITTED_KEEP = 60.0  # s a submission is remembered to route its verdict to its connection
MAX_SUBMITTED = 100_000
JOIN_WAIT = 5.0  # s a join waits for the bus's snapshot of a new room before it is completed without
_RATE_NOTICES = frozenset({NoticeId.RATELIMIT.value, NoticeId.SLOWMODE.value})
_PER_MEMBER = frozenset({EventKind.ROOMSTATE, EventKind.GAP})  # rendered per member, never shared


class ChatConnection:
    """One client connection, whatever carries it. Subclasses provide the I/O (`write`, `backlog`,
    `shutdown`) and call the service's `connection_made` / `data_received` / `connection_lost`."""

    kind = "irc"  # transport, the metric label: irc, ircs, ws
    wants_history = False  # recent messages on join (web clients)

    def __init__(self, service: ChatService, remote: str = "?") -> None:
        self.service = service
        self.remote = remote
        self.session = service.new_session()
        now = service.clock()
        self.opened = now
        self.next_ping = now + service.cfg.ping_interval
        self.closing = ""  # why this edge is closing it ("" while open)
        self.closing_since = 0.0
        self._credit = service.cfg.lines_per_second * FLOOD_BURST_SECONDS
        self._credit_at = now
        self.admitted = False

    # --- I/O, provided by the transport ---------------------------------------------------------------

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def backlog(self) -> int:
        """Bytes written but not yet taken by the kernel (the client's queue)."""
        raise NotImplementedError

    def shutdown(self, abort: bool) -> None:
        """Close the transport: after what is queued (abort False) or at once."""
        raise NotImplementedError

    # --- used by the service --------------------------------------------------------------------------

    @property
    def login(self) -> str:
        chatter = self.session.chatter
        return chatter.login if chatter is not None else ""

    def send(self, data: bytes, messages: int = 0) -> bool:
        """Queue `data` for the client; False (and the connection dropped) when it reads too slowly.
        `messages` is how many chat messages `data` carries (counted as dropped_slow if it is dropped)."""
        if self.closing:
            return False
        if not data:
            return True
        self.write(data)
        if self.backlog() > self.service.cfg.max_queue_bytes:
            m.OUT_DROPPED_SLOW.inc(messages)
            self.service.close(self, "slow_reader", f"more than {self.service.cfg.max_queue_bytes} bytes "
                               "waiting for it (chat.max_queue_bytes)", abort=True)
            return False
        return True

    def take_lines(self, lines: int, now: float) -> bool:
        """Spend line credit; False when the connection sends faster than [chat] lines_per_second allows."""
        rate = self.service.cfg.lines_per_second
        cap = rate * FLOOD_BURST_SECONDS
        self._credit = min(cap, self._credit + (now - self._credit_at) * rate) - lines
        self._credit_at = now
        return self._credit >= 0


class _Room:
    """A room with members on this edge."""

    __slots__ = ("name", "members", "logins", "snapshot", "history", "history_known", "history_waiting",
                 "waiting", "pending", "flush", "watched_at")

    def __init__(self, name: str, now: float) -> None:
        self.name = name
        self.members: dict[ChatConnection, None] = {}
        self.logins: dict[str, int] = {}  # authenticated members' logins → connections
        self.snapshot: RoomSnapshot | None = None
        self.history: OrderedDict[str, ChatLine] = OrderedDict()
        self.history_known = False
        self.history_waiting: dict[ChatConnection, None] = {}  # joined, want history, not had it yet
        self.waiting: dict[ChatConnection, None] = {}  # joins waiting for the room's first snapshot
        self.pending: list[RoomEvent] = []
        self.flush: asyncio.TimerHandle | asyncio.Handle | None = None
        self.watched_at = now


class ChatService:
    """Local rooms and their members; the ChatSink of the edge's ChatBus (see the module docstring)."""

    def __init__(self, cfg: ChatConfig, bus: ChatBus, verifier: TokenVerifier | None = None, *,
                 node_id: Callable[[], str] = lambda: "", clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.bus = bus
        self.verifier = verifier
        self.node_id = node_id
        self.clock = clock
        self.wall = wall
        self.quiet = QuietLog(log)
        self._conns: dict[ChatConnection, None] = {}
        self._rooms: dict[str, _Room] = {}
        self._submitted: OrderedDict[str, tuple[ChatConnection, float]] = OrderedDict()
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closers: set[asyncio.TimerHandle] = set()
        self._all_gone = asyncio.Event()  # set when the last connection is gone (stop waits for it)
        self.bus_connected = False
        self.started = False

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        m.BUS_CONNECTED.set(0)
        await self.bus.start(self)
        self._sweeper = self._loop.create_task(self._sweep_forever(), name="edged-chat-sweep")
        self.started = True
        log.info("chat: ready (at most %d connections; bus %s)", self.cfg.max_connections, type(self.bus).__name__)

    async def stop(self) -> None:
        """RECONNECT to every client, a moment for it to leave, then close everything and the bus."""
        if not self.started:
            return
        self.started = False
        self.reconnect_all(grace=None)
        for conn in list(self._conns):  # a graceful close sends what is queued (the RECONNECT) first
            self.close(conn, "", "the edge is stopping")
        if self._conns:
            self._all_gone.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_gone.wait(), STOP_FLUSH)
        for conn in list(self._conns):
            conn.shutdown(True)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for h in self._closers:
            h.cancel()
        self._closers.clear()
        for room in self._rooms.values():
            if room.flush is not None:
                room.flush.cancel()
        await self.bus.close()

    def reconnect_all(self, grace: float | None = RECONNECT_GRACE) -> int:
        """RECONNECT to every logged-in client (those without twitch.tv/commands cannot get it); with
        `grace`, their connections are closed that many seconds later. Returns how many were told."""
        told = 0
        for conn in list(self._conns):
            if conn.closing or not conn.session.registered:
                continue
            data = conn.session.render_reconnect()
            if data and conn.send(data):
                told += 1
        if told:
            log.info("chat: RECONNECT sent to %d client(s)", told)
        if grace is not None and self._loop is not None:
            conns = [c for c in self._conns if not c.closing]
            handle: asyncio.TimerHandle

            def close_them() -> None:
                self._closers.discard(handle)
                for c in conns:
                    if c in self._conns:
                        self.close(c, "reconnect", "asked to reconnect (the edge drains)")

            handle = self._loop.call_later(grace, close_them)
            self._closers.add(handle)
        return told

    def new_session(self) -> ServerSession:
        cfg = self.cfg
        return ServerSession(server_name=cfg.server_name, pong_timeout=cfg.pong_timeout,
                             max_rooms=cfg.max_rooms_per_connection)

    # --- figures --------------------------------------------------------------------------------------

    def connections(self) -> int:
        return len(self._conns)

    def rooms(self) -> int:
        return len(self._rooms)

    def members(self, room: str) -> int:
        r = self._rooms.get(room)
        return len(r.members) if r is not None else 0

    def health(self) -> dict[str, object]:
        by: dict[str, int] = {}
        for c in self._conns:
            by[c.kind] = by.get(c.kind, 0) + 1
        return {"connections": len(self._conns), "by_transport": by, "rooms": len(self._rooms),
                "bus": type(self.bus).__name__, "bus_connected": self.bus_connected,
                "token_keys": len(self.verifier.keys) if self.verifier is not None else 0}

    # --- connections (called by the servers) ----------------------------------------------------------

    def connection_made(self, conn: ChatConnection) -> bool:
        """Admit a new connection (False: refused at the cap, the server closes it)."""
        if not self.started:
            return False
        if len(self._conns) >= self.cfg.max_connections:
            m.CLOSED.labels(reason="refused").inc()
            self.quiet.warning("refused", "chat conn=%s refused: %d connections open (chat.max_connections)",
                               conn.remote, len(self._conns))
            return False
        self._conns[conn] = None
        conn.admitted = True
        m.CONNECTIONS.labels(transport=conn.kind).inc()
        return True

    def connection_lost(self, conn: ChatConnection) -> None:
        if not conn.admitted:
            return
        conn.admitted = False
        self._detach(conn)
        self._conns.pop(conn, None)
        if not self._conns:
            self._all_gone.set()
        m.CONNECTIONS.labels(transport=conn.kind).dec()
        if not conn.closing:
            conn.closing = "lost"
            conn.session.close()
            log.debug("chat conn=%s nick=%s closed by the client", conn.remote, conn.login or "-")

    def data_received(self, conn: ChatConnection, data: bytes, *, frame: bool = False) -> None:
        """Bytes from the client (TCP), or one WebSocket frame (`frame`: its last line may lack CRLF)."""
        if conn.closing or not conn.admitted:
            return
        now = self.clock()
        lines = data.count(b"\n") + (1 if frame and data and not data.endswith(b"\n") else 0)
        if lines and not conn.take_lines(lines, now):
            self.close(conn, "flood", f"more than {self.cfg.lines_per_second:g} lines/s (chat.lines_per_second)")
            return
        session = conn.session
        events = session.receive_frame(data, now) if frame else session.receive(data, now)
        self._handle(conn, events, now)

    def close(self, conn: ChatConnection, reason: str, text: str, *, abort: bool = False) -> None:
        """This edge ends the connection. `reason` is the metric label ("" for none); `text` is logged."""
        if conn.closing:
            return
        conn.closing = reason or "closed"
        conn.closing_since = self.clock()
        conn.session.close()
        self._detach(conn)
        if reason:
            m.CLOSED.labels(reason=reason).inc()
            self.quiet.info(reason, "chat conn=%s nick=%s closed: %s", conn.remote, conn.login or "-", text)
        else:
            log.debug("chat conn=%s nick=%s closed: %s", conn.remote, conn.login or "-", text)
        conn.shutdown(abort)

    # --- session events -------------------------------------------------------------------------------

    def _handle(self, conn: ChatConnection, events: list[Event], now: float) -> None:
        session = conn.session
        out = session.data_to_send()
        if out and not conn.send(out):
            return
        for ev in events:
            if conn.closing:
                return
            if isinstance(ev, MessageSubmitted):
                self._submit(conn, ev)
            elif isinstance(ev, JoinRequested):
                for room in ev.rooms:
                    self._join(conn, room, now)
            elif isinstance(ev, PartRequested):
                for room in ev.rooms:
                    self._leave(conn, room)
                conn.send(session.data_to_send())
            elif isinstance(ev, LoginRequested):
                self._login(conn, ev, now)
            elif isinstance(ev, ProtocolViolation):
                conn.send(session.data_to_send())
                self.close(conn, "protocol", f"protocol error: {ev.reason}")
            elif isinstance(ev, QuitRequested):
                self.close(conn, "", "QUIT")
            # PongReceived: the session keeps the PONG clock

    def _login(self, conn: ChatConnection, ev: LoginRequested, now: float) -> None:
        session = conn.session
        chatter: Chatter | None = None
        why = ""
        if ANONYMOUS_RE.match(ev.nick):
            chatter = Chatter(user_id="", login=ev.nick, display_name=ev.nick)
        elif self.verifier is None or not self.verifier.has_keys:
            why = "no token verification keys on this edge (chat.jwt_public_keys, or the controller's)"
        else:
            try:
                chatter = self.verifier.verify(token_from_password(ev.token or ev.password))
            except InvalidToken as exc:
                why = f"token refused: {exc.reason}"
            else:
                if chatter.login != ev.nick:
                    why, chatter = f"the token is for {chatter.login!r}, not for NICK {ev.nick!r}", None
        if chatter is None:
            conn.send(session.reject_login())
            self.close(conn, "login_failed", f"login as {ev.nick!r} refused: {why}")
            return
        if not conn.send(session.accept_login(chatter)):
            return
        log.debug("chat conn=%s logged in as %s%s", conn.remote, chatter.login, " (anonymous)" if chatter.anonymous else "")
        self._handle(conn, session.receive(b"", now), now)  # lines the client pipelined behind NICK

    def _submit(self, conn: ChatConnection, ev: MessageSubmitted) -> None:
        sub = ev.submission(int(self.wall() * 1000), self.node_id())
        self._submitted[sub.id] = (conn, self.clock())
        while len(self._submitted) > MAX_SUBMITTED:
            self._submitted.popitem(last=False)
        self.bus.submit(sub)

    # --- rooms ----------------------------------------------------------------------------------------

    def _join(self, conn: ChatConnection, name: str, now: float) -> None:
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = _Room(name, now)
            m.ROOMS.set(len(self._rooms))
            self.bus.watch(name)
        if room.snapshot is None:
            room.waiting[conn] = None
            return
        self._complete_join(room, conn)

    def _complete_join(self, room: _Room, conn: ChatConnection) -> None:
        assert room.snapshot is not None
        session = conn.session
        small = len(room.members) < self.cfg.big_room_members
        members: Iterable[str] = room.logins if small and Cap.MEMBERSHIP in session.caps else ()
        data = session.accept_join(room.name, room.snapshot, members)
        if not data:
            return
        room.members[conn] = None
        chatter = session.chatter
        if chatter is not None and not chatter.anonymous:
            n = room.logins.get(chatter.login, 0)
            room.logins[chatter.login] = n + 1
            if n == 0 and small:
                for other in list(room.members):
                    if other is not conn:
                        other.send(other.session.render_join(room.name, chatter.login))
        if conn.wants_history and self.cfg.history_on_join:
            if room.history_known:
                data += session.render_history(room.name, self._history(room))
            else:
                room.history_waiting[conn] = None
        conn.send(data)

    def _leave(self, conn: ChatConnection, name: str) -> None:
        room = self._rooms.get(name)
        if room is None:
            return
        room.waiting.pop(conn, None)
        room.history_waiting.pop(conn, None)
        if room.members.pop(conn, "absent") is None:
            chatter = conn.session.chatter
            if chatter is not None and not chatter.anonymous:
                n = room.logins.get(chatter.login, 0) - 1
                if n > 0:
                    room.logins[chatter.login] = n
                else:
                    room.logins.pop(chatter.login, None)
                    if len(room.members) < self.cfg.big_room_members:
                        for other in list(room.members):
                            other.send(other.session.render_part(room.name, chatter.login))
        if not room.members and not room.waiting:
            del self._rooms[name]
            m.ROOMS.set(len(self._rooms))
            if room.flush is not None:
                room.flush.cancel()
            self.bus.unwatch(name)

    def _detach(self, conn: ChatConnection) -> None:
        """Take a closing connection out of every room it is in or waits for."""
        for name in [*conn.session.rooms, *conn.session.pending_rooms]:  # pending: waiting for a snapshot
            self._leave(conn, name)

    def _history(self, room: _Room) -> list[ChatLine]:
        """The room's recent lines: at most [chat.limits] history_messages, none older than history_seconds."""
        lim = self.cfg.limits
        oldest = self.wall() * 1000 - lim.history_seconds * 1000
        hist = room.history
        while hist and (len(hist) > lim.history_messages or next(iter(hist.values())).sent_ms < oldest):
            hist.popitem(last=False)
        return list(hist.values())

    # --- the bus's callbacks (ChatSink) ---------------------------------------------------------------

    def on_snapshot(self, snapshot: RoomSnapshot) -> None:
        room = self._rooms.get(snapshot.room)
        if room is None:
            return
        previous, room.snapshot = room.snapshot, snapshot
        if previous is not None and previous.modes != snapshot.modes:
            for conn in list(room.members):  # a resynchronisation changed the modes
                conn.send(conn.session.render_roomstate(room.name, snapshot.modes))
        waiting, room.waiting = room.waiting, {}
        for conn in waiting:
            if not conn.closing:
                self._complete_join(room, conn)

    def on_history(self, room_name: str, lines: list[ChatLine]) -> None:
        room = self._rooms.get(room_name)
        if room is None:
            return
        room.history = OrderedDict((line.id, line) for line in lines)
        room.history_known = True
        waiting, room.history_waiting = room.history_waiting, {}
        if waiting:
            hist = self._history(room)
            for conn in waiting:
                if conn in room.members:
                    conn.send(conn.session.render_history(room.name, hist), len(hist))

    def on_event(self, event: RoomEvent) -> None:
        room = self._rooms.get(event.room)
        if room is None:
            return
        room.pending.append(event)
        if room.flush is None:
            loop = self._loop or asyncio.get_running_loop()
            delay = self.cfg.batch_seconds
            room.flush = loop.call_later(delay, self._flush, room) if delay > 0 else loop.call_soon(self._flush, room)

    def on_verdict(self, verdict: Verdict) -> None:
        entry = self._submitted.pop(verdict.submission_id, None)
        if verdict.ok:
            m.IN_DELIVERED.inc()
        elif verdict.notice_id in _RATE_NOTICES:
            m.IN_RATE_LIMITED.inc()
        else:
            m.IN_REJECTED.inc()
        if entry is None:
            return
        conn = entry[0]
        if not conn.closing:
            conn.send(conn.session.render_verdict(verdict))

    def on_bus_state(self, connected: bool) -> None:
        if connected != self.bus_connected:
            log.log(logging.INFO if connected else logging.WARNING, "chat: bus %s", "connected" if connected else
                    "away: rooms are ordered on this edge until it is back (degraded)")
        self.bus_connected = connected
        m.BUS_CONNECTED.set(1 if connected else 0)

    # --- delivery -------------------------------------------------------------------------------------

    def _flush(self, room: _Room) -> None:
        room.flush = None
        events, room.pending = room.pending, []
        if self._rooms.get(room.name) is not room or not events:
            return
        own: dict[ChatConnection, int] = {}  # senders of messages in the batch → how many of them
        per_member = False
        messages = 0
        for ev in events:
            self._apply(room, ev)
            if ev.kind is EventKind.MESSAGE and ev.line is not None:
                messages += 1
                entry = self._submitted.pop(ev.line.id, None)
                if entry is not None:
                    m.IN_DELIVERED.inc()
                    own[entry[0]] = own.get(entry[0], 0) + 1
            elif ev.kind in _PER_MEMBER:
                per_member = True
        shared: list[dict[Cap, bytes]] = [{} for _ in events]
        by_caps: dict[Cap, bytes] = {}
        delivered = 0  # message lines written (a sender gets USERSTATE for its own)
        for conn in list(room.members):
            session = conn.session
            if per_member or conn in own:
                data = b"".join(session.render_event(ev, sh) for ev, sh in zip(events, shared, strict=True))
            else:
                caps = session.caps
                cached = by_caps.get(caps)
                if cached is None:
                    cached = by_caps[caps] = b"".join(session.render_event(ev, sh)
                                                      for ev, sh in zip(events, shared, strict=True))
                data = cached
            lines = messages - own.get(conn, 0)
            if conn.send(data, lines):
                delivered += lines
        if delivered:
            m.OUT_DELIVERED.inc(delivered)
        now_ms = self.wall() * 1000
        for ev in events:
            m.DELIVERY.observe(max(0.0, now_ms - ev.time_ms) / 1000)

    def _apply(self, room: _Room, ev: RoomEvent) -> None:
        """Keep the room's modes and history in step with one event."""
        kind = ev.kind
        if kind is EventKind.MESSAGE and ev.line is not None:
            room.history[ev.line.id] = ev.line
            if len(room.history) > self.cfg.limits.history_messages:
                room.history.popitem(last=False)
        elif kind is EventKind.CLEARCHAT:
            if ev.target_login:
                for key in [k for k, line in room.history.items() if line.chatter.login == ev.target_login]:
                    del room.history[key]
            else:
                room.history.clear()
        elif kind is EventKind.CLEARMSG and ev.line is not None:
            room.history.pop(ev.line.id, None)
        elif kind is EventKind.ROOMSTATE and ev.modes is not None and room.snapshot is not None:
            snap = room.snapshot
            room.snapshot = RoomSnapshot(snap.room, snap.room_id or ev.room_id, ev.modes, snap.restrictions)

    # --- the sweep ------------------------------------------------------------------------------------

    @property
    def sweep_interval(self) -> float:
        cfg = self.cfg
        return min(1.0, max(0.05, min(cfg.ping_interval, cfg.pong_timeout, cfg.login_timeout) / 4))

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                self.sweep(self.clock())
            except Exception as exc:  # a bug here must not end the timeouts for good
                self.quiet.log("sweep", logging.ERROR, "chat: sweep failed: %r", exc)

    def sweep(self, now: float) -> None:
        """Login and PONG deadlines, PINGs, closing connections that do not finish, old submissions."""
        cfg = self.cfg
        for conn in list(self._conns):
            if conn.closing:
                if now - conn.closing_since >= CLOSE_GRACE:
                    conn.shutdown(True)
                continue
            session = conn.session
            if not session.registered:
                if now - conn.opened >= cfg.login_timeout:
                    self.close(conn, "login_timeout", f"no login within {cfg.login_timeout:g}s (chat.login_timeout)")
                continue
            if session.pong_overdue(now):
                self.close(conn, "pong_timeout", f"no PONG within {cfg.pong_timeout:g}s of a PING (chat.pong_timeout)",
                           abort=True)
            elif now >= conn.next_ping:
                conn.next_ping = now + cfg.ping_interval
                conn.send(session.ping(now))
        while self._submitted:
            sub_id, (_conn, at) = next(iter(self._submitted.items()))
            if now - at < SUBMITTED_KEEP:
                break
            del self._submitted[sub_id]
        for room in list(self._rooms.values()):
            if room.snapshot is None and room.waiting and now - room.watched_at >= JOIN_WAIT:
                self.quiet.warning("join_wait", "chat room=%s: no snapshot from the bus within %gs; joins "
                                   "completed without it", room.name, JOIN_WAIT)
                self.on_snapshot(RoomSnapshot(room=room.name, room_id=""))
