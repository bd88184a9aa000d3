"""The server side of one IRC/TMI connection, sans-IO: bytes and a monotonic ``now`` in, events out.

Driving it (what ``edged.chat.irc_server`` and ``edged.chat.ws`` do)::

    s = ServerSession(server_name="tmi.twitch.tv")
    events = s.receive(data, now)      # TCP bytes; WebSocket: s.receive_frame(text, now)
    write(s.data_to_send())            # the session's own replies (CAP, PONG, 421, NOTICEs): ALWAYS
                                       # write these after every receive(), before anything else
    for ev in events: ...

Events (frozen dataclasses, all subclasses of ``Event``):

- ``LoginRequested(nick, password)``: NICK arrived (after ``CAP END`` if the client opened with ``CAP LS``).
  ``ev.token`` is the password without ``oauth:`` ("" when there is none). The session now reads no more
  lines until the server answers ``accept_login(chatter) -> bytes`` (001-004, MOTD, GLOBALUSERSTATE) or
  ``reject_login(text) -> bytes`` (``NOTICE * :Login authentication failed``; write it, then close).
  After ``accept_login`` call ``receive(b"", now)`` to get the events of lines the client pipelined.
- ``JoinRequested(rooms)``: rooms (names without '#', lower case) this connection asks to join, already
  checked against the JOIN rate and room cap. Answer each with ``accept_join(room, snapshot, members)``
  -> bytes (JOIN echo, 353/366, USERSTATE, ROOMSTATE) or ``reject_join(room, msg_id, text)`` -> bytes.
- ``PartRequested(rooms)``: the rooms are already left (the PART echo is in ``data_to_send()``).
- ``MessageSubmitted(room, text, id, ...)``: a PRIVMSG to a joined room; ``ev.submission(sent_ms,
  origin_node)`` is the ``Submission`` for the bus (its ``id`` was assigned here: the session remembers
  it, so that when the MESSAGE comes back this connection gets USERSTATE instead of its own line, as TMI
  does). A CTCP ACTION arrives as ``action=True`` and its submission text is ``/me ...``.
- ``PongReceived(rtt)``: the client answered a ``ping(now)`` (``rtt`` None for an unsolicited PONG).
- ``QuitRequested(reason)``: QUIT; close the connection.
- ``ProtocolViolation(reason)``: garbage, an oversized line, invalid UTF-8, flooding: write
  ``data_to_send()``, close, log ``reason`` (a few words, no client data). Nothing more is read.

Rendering (each returns bytes to write, b"" when the client's caps or rooms exclude it):

- ``render_event(event, shared=None)``: MESSAGE -> PRIVMSG (sender: USERSTATE), CLEARCHAT, CLEARMSG,
  ROOMSTATE (only what changed since this session last rendered the room's modes), GAP -> NOTICE, UNBAN
  -> nothing. Pass one dict as ``shared`` to every session of a room for the same event: connections with
  the same caps then share one rendering (``Cap`` flags are the key).
- ``render_history(room, lines)``, ``render_verdict(verdict)``, ``render_join(room, login)``,
  ``render_part(room, login)`` (membership cap only; never the session's own login),
  ``render_roomstate(room, modes)`` (a snapshot's modes), ``render_notice(room, msg_id, text)``,
  ``render_reconnect()`` (commands cap only).
- ``ping(now) -> bytes`` sends ``PING :tmi.twitch.tv``; ``pong_overdue(now)`` is True once a PING has gone
  unanswered for ``pong_timeout`` seconds (the server closes then).

Caps: ``twitch.tv/tags`` (tags on every line), ``twitch.tv/commands`` (USERSTATE, ROOMSTATE, CLEARCHAT,
CLEARMSG, GLOBALUSERSTATE, RECONNECT), ``twitch.tv/membership`` (others' JOIN/PART); ``CAP REQ`` of
anything else is NAKed as a whole. NOTICE is sent whatever the caps (tags only with twitch.tv/tags).

Registration, as TMI: NICK completes it (USER is optional and ignored, PASS before NICK is the
password); a client that opened with ``CAP LS`` is held until ``CAP END`` (IRCv3), one that sent only
``CAP REQ`` (tmi.js, most Twitch bots) is not. NICK/PASS after login are ignored. Before login, JOIN,
PART and PRIVMSG get 451; an unknown command is a ProtocolViolation (not an IRC client). After login an
unknown command gets 421.

Limits (constructor arguments): ``join_limit`` room joins per ``join_window`` s (default 20 per 10 s,
each room of a comma list counts): over it the room is refused with a NOTICE ``msg_ratelimit``; past
twice as many refusals within the window (60 attempts at the defaults) it is a ProtocolViolation; ``max_rooms`` rooms per connection
(NOTICE ``msg_too_many_rooms``); ``login_limit`` NICK/PASS lines per ``login_window`` s (20 per 10 s),
over it a ProtocolViolation; line, tag and PRIVMSG text sizes as ``framing.LineBuffer`` (512 bytes a
line, 8191 of tags, a PRIVMSG's text may go 2000 bytes past the 512 since bodies are 500 characters); while a login is pending at
most ``max_paused_bytes`` are held.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from edged.chat.model import (
    ChatLine,
    Chatter,
    EventKind,
    NoticeId,
    RoomEvent,
    RoomModes,
    RoomSnapshot,
    Verdict,
)
from edged.errors import LocalProtocolError
from edged.protocols.irc import tmi
from edged.protocols.irc.events import (
    Event,
    JoinRequested,
    LoginRequested,
    MessageSubmitted,
    PartRequested,
    PongReceived,
    ProtocolViolation,
    QuitRequested,
)
from edged.protocols.irc.framing import MAX_LINE_BYTES, MAX_TAGS_BYTES, MAX_TEXT_BYTES, LineBuffer
from edged.protocols.irc.message import IrcError, Message
from edged.protocols.irc.tmi import Cap

__all__ = [
    "Event",
    "JoinRequested",
    "LoginRequested",
    "MessageSubmitted",
    "PartRequested",
    "PongReceived",
    "ProtocolViolation",
    "QuitRequested",
    "ServerSession",
    "State",
]

NICK_RE = re.compile(r"^[a-z0-9_][a-z0-9_-]{0,63}$")  # after lower-casing
ROOM_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")  # edged channel names, lower case
_EMOTES_RE = re.compile(r"^[A-Za-z0-9_]+:\d+-\d+(?:,\d+-\d+)*(?:/[A-Za-z0-9_]+:\d+-\d+(?:,\d+-\d+)*)*$")
MAX_NONCE = 128
OWN_IDS = 1024  # submission ids remembered to recognise this connection's own messages


class State(enum.Enum):
    NEW = enum.auto()  # before NICK (or while CAP LS negotiation holds registration)
    LOGIN_PENDING = enum.auto()  # LoginRequested emitted; waiting for accept_login / reject_login
    REGISTERED = enum.auto()
    CLOSED = enum.auto()  # rejected, QUIT, violation or close()


class _Window:
    """At most ``limit`` hits per ``seconds`` (sliding), on the caller's clock."""

    __slots__ = ("limit", "seconds", "_hits")

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self._hits: deque[float] = deque()

    def hit(self, now: float) -> bool:
        hits = self._hits
        while hits and now - hits[0] >= self.seconds:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        return True


@dataclass(slots=True)
class _Room:
    room_id: str
    modes: RoomModes


def _new_id() -> str:
    return str(uuid.uuid4())


class ServerSession:
    """One client connection's IRC state machine (see the module docstring)."""

    def __init__(
        self,
        *,
        server_name: str = tmi.SERVER,
        new_id: Callable[[], str] = _new_id,
        pong_timeout: float = 10.0,
        join_limit: int = 20,
        join_window: float = 10.0,
        login_limit: int = 20,
        login_window: float = 10.0,
        max_rooms: int = 100,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_tags_bytes: int = MAX_TAGS_BYTES,
        max_text_bytes: int = MAX_TEXT_BYTES,
        max_paused_bytes: int = 16 * 1024,
    ) -> None:
        self.server = server_name
        self._new_id = new_id
        self.pong_timeout = pong_timeout
        self.max_rooms = max_rooms
        self.max_paused_bytes = max_paused_bytes
        self._lines = LineBuffer(max_line_bytes, max_tags_bytes, max_text_bytes)
        self._joins = _Window(join_limit, join_window)
        self._join_refusals = _Window(2 * join_limit, join_window)
        self._logins = _Window(login_limit, login_window)
        self._out: list[bytes] = []
        self.state = State.NEW
        self.caps = Cap.NONE
        self.nick = ""
        self.chatter: Chatter | None = None
        self._password = ""
        self._cap_hold = False  # CAP LS seen: registration waits for CAP END
        self._rooms: dict[str, _Room] = {}
        self._pending: set[str] = set()
        self._ping_at: float | None = None
        self._own_ids: set[str] = set()
        self._own_order: deque[str] = deque()
        self.close_reason = ""

    # --- state ------------------------------------------------------------------------------------

    @property
    def registered(self) -> bool:
        return self.state is State.REGISTERED

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def rooms(self) -> frozenset[str]:
        """Rooms joined (accepted); pending joins are not in it."""
        return frozenset(self._rooms)

    @property
    def pending_rooms(self) -> frozenset[str]:
        return frozenset(self._pending)

    def close(self) -> None:
        """The server closed the connection; nothing more is read."""
        self.state = State.CLOSED

    def data_to_send(self) -> bytes:
        """The session's own replies since the last call."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    # --- input ------------------------------------------------------------------------------------

    def receive_frame(self, frame: str | bytes, now: float) -> list[Event]:
        """A WebSocket text frame: one or more lines, the last one possibly without its CRLF."""
        data = frame.encode("utf-8") if isinstance(frame, str) else frame
        if data and not data.endswith(b"\n"):
            data += b"\r\n"
        return self.receive(data, now)

    def receive(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the client (b"" to resume after accept_login); returns what happened."""
        events: list[Event] = []
        if self.state is State.CLOSED:
            return events
        self._lines.feed(data)
        while not self.closed:
            if self.state is State.LOGIN_PENDING:
                if self._lines.buffered > self.max_paused_bytes:
                    self._violate(events, "too much data before login")
                break
            try:
                msg = self._lines.next_message()
            except IrcError as exc:
                self._violate(events, exc.reason)
                break
            if msg is None:
                break
            self._handle(msg, now, events)
        return events

    def _violate(self, events: list[Event], reason: str) -> None:
        self.state = State.CLOSED
        self.close_reason = reason
        events.append(ProtocolViolation(reason))

    def _send(self, *messages: Message) -> None:
        self._out.extend(self._encode(m) for m in messages)

    def _encode(self, msg: Message) -> bytes:
        if msg.tags and Cap.TAGS not in self.caps:
            msg = Message(msg.command, msg.params, msg.source, {}, msg.trailing)
        return msg.to_bytes()

    def _handle(self, msg: Message, now: float, events: list[Event]) -> None:
        command = msg.command
        handler = _HANDLERS.get(command)
        if handler is not None:
            handler(self, msg, now, events)
        elif command in _NEEDS_LOGIN:
            if self.registered:
                _NEEDS_LOGIN[command](self, msg, now, events)
            else:
                self._send(tmi.not_registered(command, self.server))
        elif self.registered:
            self._send(tmi.unknown_command(self.nick, command, self.server))
        else:
            self._violate(events, "unknown command before login")

    # registration ----------------------------------------------------------------------------------

    def _on_cap(self, msg: Message, now: float, events: list[Event]) -> None:
        sub = msg.params[0].upper() if msg.params else ""
        if sub == "LS":
            if self.state is State.NEW:
                self._cap_hold = True
            self._send(tmi.cap("LS", " ".join(tmi.CAP_NAMES), self.server))
        elif sub == "LIST":
            enabled = [name for name, flag in tmi.CAP_NAMES.items() if flag in self.caps]
            self._send(tmi.cap("LIST", " ".join(enabled), self.server))
        elif sub == "REQ":
            text = msg.params[1] if len(msg.params) > 1 else ""
            add, remove, ok = Cap.NONE, Cap.NONE, bool(text.split())
            for name in text.split():
                flag = tmi.CAP_NAMES.get(name.removeprefix("-"))
                if flag is None:
                    ok = False
                elif name.startswith("-"):
                    remove |= flag
                else:
                    add |= flag
            if ok:
                self.caps = (self.caps | add) & ~remove
            self._send(tmi.cap("ACK" if ok else "NAK", text.strip(), self.server))
        elif sub == "END":
            if self._cap_hold:
                self._cap_hold = False
                if self.state is State.NEW and self.nick:
                    self._request_login(events)
        else:
            self._send(tmi.invalid_cap(sub[:32], self.server))

    def _on_pass(self, msg: Message, now: float, events: list[Event]) -> None:
        if not self._logins.hit(now):
            self._violate(events, "login flood")
            return
        if self.state is State.NEW:
            self._password = msg.params[0] if msg.params else ""

    def _on_nick(self, msg: Message, now: float, events: list[Event]) -> None:
        if not self._logins.hit(now):
            self._violate(events, "login flood")
            return
        if self.state is not State.NEW:
            return  # TMI ignores a change of nick
        nick = msg.params[0].lower() if msg.params else ""
        if not NICK_RE.match(nick):
            self._send(tmi.login_failed("Invalid NICK", self.server))
            self._violate(events, "invalid NICK")
            return
        self.nick = nick
        if not self._cap_hold:
            self._request_login(events)

    def _request_login(self, events: list[Event]) -> None:
        self.state = State.LOGIN_PENDING
        events.append(LoginRequested(self.nick, self._password))
        self._password = ""

    def _on_user(self, msg: Message, now: float, events: list[Event]) -> None:
        pass  # accepted and ignored, before and after login

    def accept_login(self, chatter: Chatter) -> bytes:
        """The login is good: the welcome burst. Then call ``receive(b"", now)`` for pipelined lines."""
        if self.state is not State.LOGIN_PENDING:
            raise LocalProtocolError(f"accept_login in state {self.state.name}")
        if not NICK_RE.match(chatter.login):
            raise LocalProtocolError("a chatter's login must be a valid lower-case nick")
        self.state = State.REGISTERED
        self.chatter = chatter
        self.nick = chatter.login
        out = tmi.welcome(self.nick, self.server)
        if Cap.COMMANDS in self.caps and not chatter.anonymous:
            out.append(tmi.globaluserstate(chatter, self.server))
        return b"".join(self._encode(m) for m in out)

    def reject_login(self, text: str = "Login authentication failed") -> bytes:
        """The login is refused: write the NOTICE, then close."""
        if self.state is not State.LOGIN_PENDING:
            raise LocalProtocolError(f"reject_login in state {self.state.name}")
        self.state = State.CLOSED
        self.close_reason = "login refused"
        return self._encode(tmi.login_failed(text, self.server))

    # connection ------------------------------------------------------------------------------------

    def _on_ping(self, msg: Message, now: float, events: list[Event]) -> None:
        token = msg.params[0] if msg.params and msg.params[0] else self.server
        self._send(tmi.pong(token))

    def _on_pong(self, msg: Message, now: float, events: list[Event]) -> None:
        rtt = None if self._ping_at is None else max(0.0, now - self._ping_at)
        self._ping_at = None
        events.append(PongReceived(rtt))

    def _on_quit(self, msg: Message, now: float, events: list[Event]) -> None:
        self.state = State.CLOSED
        self.close_reason = "quit"
        events.append(QuitRequested(tmi.safe_text(msg.params[0])[:200] if msg.params else ""))

    def ping(self, now: float) -> bytes:
        """A PING for the client; starts the PONG clock unless a PING is already outstanding."""
        if self._ping_at is None:
            self._ping_at = now
        return self._encode(tmi.ping(self.server))

    def pong_overdue(self, now: float) -> bool:
        return self._ping_at is not None and now - self._ping_at >= self.pong_timeout

    # rooms -----------------------------------------------------------------------------------------

    def _room_name(self, target: str) -> str | None:
        if not target.startswith("#"):
            return None
        room = target[1:].lower()
        return room if ROOM_RE.match(room) else None

    def _on_join(self, msg: Message, now: float, events: list[Event]) -> None:
        if not msg.params or msg.params[0] == "0":
            return
        accepted: list[str] = []
        for target in msg.params[0].split(","):
            if not target:
                continue
            room = self._room_name(target)
            if room is None:
                self._send(tmi.notice("*", "Invalid channel name.", tmi.NOTICE_ROOM_NOT_FOUND, self.server))
                continue
            if room in self._rooms or room in self._pending or room in accepted:
                continue
            if not self._joins.hit(now):
                if not self._join_refusals.hit(now):
                    self._violate(events, "JOIN flood")
                    return
                self._send(
                    tmi.notice(
                        tmi.channel(room),
                        "You are joining channels too quickly.",
                        tmi.NOTICE_JOIN_RATELIMIT,
                        self.server,
                    )
                )
                continue
            if len(self._rooms) + len(self._pending) + len(accepted) >= self.max_rooms:
                self._send(
                    tmi.notice(
                        tmi.channel(room),
                        "You have joined too many channels.",
                        tmi.NOTICE_TOO_MANY_ROOMS,
                        self.server,
                    )
                )
                continue
            accepted.append(room)
        if accepted:
            self._pending.update(accepted)
            events.append(JoinRequested(tuple(accepted)))

    def accept_join(self, room: str, snapshot: RoomSnapshot, members: Iterable[str] = ()) -> bytes:
        """The room is joined: JOIN echo, NAMES, USERSTATE, ROOMSTATE. b"" if the client left meanwhile."""
        if room not in self._pending or self.state is not State.REGISTERED:
            return b""
        self._pending.discard(room)
        self._rooms[room] = _Room(snapshot.room_id, snapshot.modes)
        out = [tmi.join(room, self.nick, self.server)]
        out.extend(tmi.names(room, self.nick, members, self.server))
        if Cap.COMMANDS in self.caps:
            if self.chatter is not None and not self.chatter.anonymous:
                out.append(tmi.userstate(room, self.chatter, self.server))
            state = tmi.roomstate(room, snapshot.room_id, snapshot.modes, None, self.server)
            if state is not None:
                out.append(state)
        return b"".join(self._encode(m) for m in out)

    def reject_join(self, room: str, msg_id: str, text: str) -> bytes:
        """The room cannot be joined (e.g. ``msg_channel_suspended``)."""
        if room not in self._pending:
            return b""
        self._pending.discard(room)
        return self._encode(tmi.notice(tmi.channel(room), text, msg_id, self.server))

    def _on_part(self, msg: Message, now: float, events: list[Event]) -> None:
        if not msg.params:
            return
        left: list[str] = []
        for target in msg.params[0].split(","):
            room = self._room_name(target)
            if room is None or room in left:
                continue
            if room in self._rooms:
                del self._rooms[room]
                self._send(tmi.part(room, self.nick, self.server))
                left.append(room)
            elif room in self._pending:
                self._pending.discard(room)
                left.append(room)
        if left:
            events.append(PartRequested(tuple(left)))

    # messages --------------------------------------------------------------------------------------

    def _on_privmsg(self, msg: Message, now: float, events: list[Event]) -> None:
        if len(msg.params) < 2 or not msg.params[1]:
            return
        text = msg.params[1]
        action = False
        if text.startswith("\x01"):
            inner = text[1:].removesuffix("\x01")
            if not inner.startswith("ACTION "):
                return  # other CTCP requests are not relayed
            text, action = inner[7:], True
        if not text.strip():
            return
        chatter = self.chatter
        assert chatter is not None  # registered
        for target in dict.fromkeys(msg.params[0].split(",")):
            if not target.startswith("#"):
                continue  # whispers are not supported
            room = self._room_name(target)
            if room is None or (room not in self._rooms and room not in self._pending):
                self._send(
                    tmi.notice(
                        target if room else "*",
                        "You are not in this channel.",
                        tmi.NOTICE_NOT_JOINED,
                        self.server,
                    )
                )
                continue
            if chatter.anonymous:
                self._send(
                    tmi.notice(
                        tmi.channel(room), "You need to log in to chat.", NoticeId.REQUIRES_LOGIN, self.server
                    )
                )
                continue
            nonce = msg.tags.get("client-nonce", "")
            if len(nonce) > MAX_NONCE:
                nonce = ""
            msg_id = self._new_id()
            self._remember(msg_id)
            events.append(
                MessageSubmitted(
                    room,
                    text,
                    msg_id,
                    chatter,
                    nonce,
                    _valid_emotes(msg.tags.get("emotes", ""), text),
                    action,
                )
            )

    def _remember(self, msg_id: str) -> None:
        self._own_ids.add(msg_id)
        self._own_order.append(msg_id)
        if len(self._own_order) > OWN_IDS:
            self._own_ids.discard(self._own_order.popleft())

    # --- rendering --------------------------------------------------------------------------------

    def render_event(self, event: RoomEvent, shared: dict[Cap, bytes] | None = None) -> bytes:
        """One room event for this client (b"" when its caps or rooms exclude it)."""
        room = self._rooms.get(event.room)
        if room is None or self.state is not State.REGISTERED:
            return b""
        kind = event.kind
        if kind is EventKind.MESSAGE:
            line = event.line
            if line is None:
                return b""
            if line.id in self._own_ids:
                self._own_ids.discard(line.id)
                if Cap.COMMANDS in self.caps and self.chatter is not None:
                    return self._encode(tmi.userstate(event.room, self.chatter, self.server))
                return b""
            return self._shared(
                shared, lambda: tmi.privmsg(event.room, event.room_id or room.room_id, line, self.server)
            )
        if kind is EventKind.ROOMSTATE:
            return self.render_roomstate(event.room, event.modes) if event.modes is not None else b""
        if kind is EventKind.GAP:
            return self._encode(tmi.gap_notice(event.room, self.server))
        if Cap.COMMANDS not in self.caps:
            return b""
        event_ = event if event.room_id else dataclasses.replace(event, room_id=room.room_id)
        if kind is EventKind.CLEARCHAT:
            return self._shared(shared, lambda: tmi.clearchat(event_, self.server))
        if kind is EventKind.CLEARMSG:
            return self._shared(shared, lambda: tmi.clearmsg(event_, self.server))
        return b""  # UNBAN: nothing for clients

    def _shared(self, shared: dict[Cap, bytes] | None, build: Callable[[], Message]) -> bytes:
        if shared is None:
            return self._encode(build())
        key = self.caps
        data = shared.get(key)
        if data is None:
            data = shared[key] = self._encode(build())
        return data

    def render_history(self, room: str, lines: Sequence[ChatLine]) -> bytes:
        """Recent messages of a joined room, oldest first, tagged ``historical=1``."""
        state = self._rooms.get(room)
        if state is None:
            return b""
        return b"".join(
            self._encode(tmi.privmsg(room, state.room_id, line, self.server, historical=True))
            for line in lines
        )

    def render_roomstate(self, room: str, modes: RoomModes) -> bytes:
        """ROOMSTATE with what changed since this session last rendered the room's modes."""
        state = self._rooms.get(room)
        if state is None:
            return b""
        previous, state.modes = state.modes, modes
        if Cap.COMMANDS not in self.caps:
            return b""
        msg = tmi.roomstate(room, state.room_id, modes, previous, self.server)
        return b"" if msg is None else self._encode(msg)

    def render_verdict(self, verdict: Verdict) -> bytes:
        return self._encode(tmi.verdict_notice(verdict, self.server))

    def render_notice(self, room: str, msg_id: str, text: str) -> bytes:
        """A NOTICE to a joined room ('#room'), or a server notice (``room`` "")."""
        return self._encode(tmi.notice(tmi.channel(room) if room else "*", text, msg_id, self.server))

    def render_join(self, room: str, login: str) -> bytes:
        if Cap.MEMBERSHIP not in self.caps or room not in self._rooms or login == self.nick:
            return b""
        return self._encode(tmi.join(room, login, self.server))

    def render_part(self, room: str, login: str) -> bytes:
        if Cap.MEMBERSHIP not in self.caps or room not in self._rooms or login == self.nick:
            return b""
        return self._encode(tmi.part(room, login, self.server))

    def render_reconnect(self) -> bytes:
        if Cap.COMMANDS not in self.caps:
            return b""
        return self._encode(tmi.reconnect(self.server))


def _valid_emotes(value: str, text: str) -> str:
    """The client's ``emotes`` tag if well-formed with every range inside ``text`` (code points), else ""."""
    if not value or len(value) > 2048 or not _EMOTES_RE.match(value):
        return ""
    n = len(text)
    for group in value.split("/"):
        for span in group.split(":", 1)[1].split(","):
            first, last = span.split("-")
            if not int(first) <= int(last) < n:
                return ""
    return value


_Handler = Callable[[ServerSession, Message, float, list[Event]], None]
_HANDLERS: dict[str, _Handler] = {
    "CAP": ServerSession._on_cap,
    "PASS": ServerSession._on_pass,
    "NICK": ServerSession._on_nick,
    "USER": ServerSession._on_user,
    "PING": ServerSession._on_ping,
    "PONG": ServerSession._on_pong,
    "QUIT": ServerSession._on_quit,
}
_NEEDS_LOGIN: dict[str, _Handler] = {
    "JOIN": ServerSession._on_join,
    "PART": ServerSession._on_part,
    "PRIVMSG": ServerSession._on_privmsg,
}
