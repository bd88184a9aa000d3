"""Helpers for the IRC session tests: a client's view of what the server wrote."""

from __future__ import annotations

from collections.abc import Iterator

from edged.chat.model import Chatter, RoomSnapshot
from edged.protocols.irc.framing import LineBuffer
from edged.protocols.irc.message import Message
from edged.protocols.irc.session import Event, LoginRequested, ServerSession

BOB = Chatter("42", "bob", "Bob", frozenset({"subscriber"}), "#00FF00")
MOD = Chatter("43", "mia", "Mia", frozenset({"moderator"}))
ANON = Chatter("", "justinfan123")
DEMO = RoomSnapshot("demo", "1001")
TMIJS_CAPS = b"CAP REQ :twitch.tv/tags twitch.tv/commands twitch.tv/membership\r\n"


def ids() -> Iterator[str]:
    n = 0
    while True:
        n += 1
        yield f"sub-{n}"


def new_session(**kwargs: object) -> ServerSession:
    counter = ids()
    return ServerSession(new_id=lambda: next(counter), **kwargs)  # type: ignore[arg-type]


def read(data: bytes) -> list[Message]:
    """Parse what a client would read (no limits: server lines may be longer than a client's)."""
    buf = LineBuffer(max_line_bytes=1 << 20, max_tags_bytes=1 << 20)
    buf.feed(data)
    out = buf.messages()
    assert buf.buffered == 0, "every server line ends with CRLF"
    assert data.count(b"\r\n") == len(out)
    return out


def commands(data: bytes) -> list[str]:
    return [m.command for m in read(data)]


def logged_in(chatter: Chatter = BOB, caps: bytes = TMIJS_CAPS, **kwargs: object) -> ServerSession:
    """A session past login (its welcome burst drained)."""
    s = new_session(**kwargs)
    events = s.receive(caps + b"PASS oauth:tok\r\nNICK " + chatter.login.encode() + b"\r\n", 0.0)
    assert isinstance(events[-1], LoginRequested)
    s.data_to_send()
    s.accept_login(chatter)
    return s


def joined(
    room: str = "demo", chatter: Chatter = BOB, caps: bytes = TMIJS_CAPS, **kwargs: object
) -> ServerSession:
    s = logged_in(chatter, caps, **kwargs)
    s.receive(f"JOIN #{room}\r\n".encode(), 0.0)
    s.accept_join(room, RoomSnapshot(room, "1001"))
    return s


def only(events: list[Event]) -> Event:
    assert len(events) == 1, events
    return events[0]
