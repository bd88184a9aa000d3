"""Hypothesis fuzzing of the IRC core: random bytes only ever raise IrcError (the session turns that into
a ProtocolViolation), parse and serialize are inverses, and how the bytes are cut never matters."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.chat.model import ChatLine, Chatter, EventKind, RoomEvent, RoomModes, RoomSnapshot
from edged.protocols.irc.framing import LineBuffer
from edged.protocols.irc.message import IrcError, Message, parse
from edged.protocols.irc.session import (
    Event,
    JoinRequested,
    LoginRequested,
    MessageSubmitted,
    ProtocolViolation,
    QuitRequested,
    ServerSession,
)
from tests.unit.protocols.irc.helpers import new_session

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_NO_LINE_BREAK = st.characters(codec="utf-8", exclude_characters="\x00\r\n")
tag_keys = st.from_regex(r"\A\+?([a-z0-9.-]{1,8}/)?[A-Za-z0-9-]{1,10}\Z")
tag_values = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
middle_params = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00\r\n "), min_size=1, max_size=12
).filter(lambda p: not p.startswith(":"))
last_params = st.text(_NO_LINE_BREAK, max_size=40)
sources = st.text(st.characters(codec="utf-8", exclude_characters="\x00\r\n "), max_size=20)
commands = st.one_of(st.from_regex(r"\A[A-Z]{1,10}\Z"), st.from_regex(r"\A[0-9]{3}\Z"))


@st.composite
def messages(draw: st.DrawFn) -> Message:
    params = draw(st.lists(middle_params, max_size=6))
    if draw(st.booleans()):
        params.append(draw(last_params))
    return Message(
        draw(commands),
        tuple(params),
        draw(sources),
        draw(st.dictionaries(tag_keys, tag_values, max_size=5)),
        draw(st.booleans()),
    )


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    pieces, start = [], 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        pieces.append(data[start:cut])
        start = cut
    pieces.append(data[start:])
    return pieces


# --- message -----------------------------------------------------------------------------------------


@FUZZ
@given(messages())
def test_parse_inverts_serialize(msg: Message) -> None:
    assert parse(msg.serialize()) == msg


def check_parse(line: str) -> None:
    try:
        msg = parse(line)
    except IrcError as exc:
        assert exc.reason
        return
    assert parse(msg.serialize()) == msg  # anything accepted can be written back


@FUZZ
@given(st.text(max_size=200))
def test_parse_of_any_text_raises_only_irc_error(line: str) -> None:
    check_parse(line)


@FUZZ
@given(st.text(alphabet="@:;= \\abAB01#\r\n\x00\x01", max_size=60))
def test_parse_of_irc_like_text_raises_only_irc_error(line: str) -> None:
    check_parse(line)


# --- framing -----------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0), max_size=8))
def test_random_bytes_raise_only_irc_error(data: bytes, cuts: list[int]) -> None:
    buf = LineBuffer()
    try:
        for piece in split(data, cuts):
            buf.feed(piece)
            buf.messages()
    except IrcError as exc:
        assert exc.reason


@FUZZ
@given(st.lists(messages(), min_size=1, max_size=8))
def test_one_byte_feeds_give_the_same_messages(msgs: list[Message]) -> None:
    data = b"".join(m.to_bytes() for m in msgs)
    whole = LineBuffer(max_line_bytes=1 << 16)
    whole.feed(data)
    bytewise = LineBuffer(max_line_bytes=1 << 16)
    out: list[Message] = []
    for i in range(len(data)):
        bytewise.feed(data[i : i + 1])
        out.extend(bytewise.messages())
    assert out == whole.messages() == msgs


@FUZZ
@given(
    st.dictionaries(tag_keys, st.text(alphabet="a\r\n; \\", max_size=10), min_size=1, max_size=4),
    middle_params,
)
def test_escaped_crlf_in_tags_stays_inside_one_line(tags: dict[str, str], param: str) -> None:
    msg = Message("PRIVMSG", ("#demo", param), "", tags)
    buf = LineBuffer(max_line_bytes=1 << 16)
    buf.feed(msg.to_bytes())
    assert buf.messages() == [msg]


@FUZZ
@given(
    st.text(alphabet="ab=;\\", max_size=10),
    st.text(alphabet="ab=; \\", max_size=10),
    st.sampled_from(["\r\n", "\n", "\r"]),
    st.lists(st.integers(min_value=0), max_size=4),
)
def test_raw_crlf_inside_tags(before: str, after: str, ending: str, cuts: list[int]) -> None:
    """A raw line break inside a tag value ends the line there: IrcError or two lines, never a crash."""
    data = f"@k={before}{ending}{after} PRIVMSG #demo :x\r\n".encode()
    buf = LineBuffer()
    got: list[Message] = []
    try:
        for piece in split(data, cuts):
            buf.feed(piece)
            got.extend(buf.messages())
    except IrcError:
        return
    assert all(m.command for m in got)
    assert not any("\r" in v or "\n" in v for m in got for v in m.tags.values())


# --- session -----------------------------------------------------------------------------------------

CHATTER = Chatter("9", "fuzz", "Fuzz", frozenset({"moderator"}))
irc_commands = st.sampled_from(
    ["CAP", "PASS", "NICK", "USER", "JOIN", "PART", "PRIVMSG", "PING", "PONG", "QUIT", "WHO", "MODE"]
)
cap_params = st.sampled_from(
    [
        "LS",
        "LS 302",
        "REQ :twitch.tv/tags twitch.tv/commands",
        "REQ :x",
        "END",
        "LIST",
        "REQ :twitch.tv/membership -twitch.tv/tags",
        "FOO",
    ]
)
plain = st.text(st.characters(codec="utf-8", exclude_characters="\x00\r\n"), max_size=20)


@st.composite
def client_lines(draw: st.DrawFn) -> bytes:
    command = draw(irc_commands)
    if command == "CAP":
        rest = draw(cap_params)
    elif command in ("JOIN", "PART"):
        rest = ",".join(
            draw(st.lists(st.sampled_from(["#demo", "#Other", "#x~y", "demo", "#", "0"]), max_size=3))
        )
    elif command == "PRIVMSG":
        target = draw(st.sampled_from(["#demo", "#other", "someone", "#demo,#other"]))
        rest = f"{target} :{draw(plain)}"
    else:
        rest = draw(plain)
    tags = ""
    if draw(st.booleans()):
        tags = (
            "@"
            + ";".join(
                f"{k}={v}"
                for k, v in draw(
                    st.dictionaries(
                        st.sampled_from(["client-nonce", "emotes", "a", "+x/y"]), plain, max_size=3
                    )
                ).items()
            )
            + " "
        )
    return f"{tags}{command} {rest}".encode() + draw(st.sampled_from([b"\r\n", b"\n"]))


def run(
    session: ServerSession, pieces: list[bytes], tick: float = 0.25, joins_at_end: bool = False
) -> tuple[list[Event], bytes]:
    """Feed pieces, answering every login at once and every join at once or after the last piece;
    nothing but events may come out."""
    events: list[Event] = []
    out: list[bytes] = []
    waiting: list[str] = []
    now = 0.0
    for piece in pieces:
        now += tick
        batch = session.receive(piece, now)
        while batch:
            events.extend(batch)
            out.append(session.data_to_send())
            again = False
            for event in batch:
                if isinstance(event, LoginRequested):
                    out.append(session.accept_login(CHATTER))
                    again = True
                elif isinstance(event, JoinRequested):
                    waiting.extend(event.rooms)
            if not joins_at_end:
                out.extend(session.accept_join(room, RoomSnapshot(room, "1")) for room in waiting)
                waiting.clear()
            batch = session.receive(b"", now) if again else []
        out.append(session.data_to_send())
    out.extend(session.accept_join(room, RoomSnapshot(room, "1")) for room in waiting)
    for event in events:
        if isinstance(event, MessageSubmitted):
            line = ChatLine(
                event.id, event.chatter, event.text, 1, event.emotes, event.client_nonce, action=event.action
            )
            out.append(session.render_event(RoomEvent(event.room, 1, EventKind.MESSAGE, 1, "1", line)))
            out.append(
                session.render_event(
                    RoomEvent(event.room, 2, EventKind.ROOMSTATE, 1, "1", modes=RoomModes(slow_seconds=3))
                )
            )
    return events, b"".join(out)


def check_output(data: bytes) -> None:
    buf = LineBuffer(max_line_bytes=1 << 16)
    buf.feed(data)
    buf.messages()  # what the server writes always parses
    assert buf.buffered == 0


@FUZZ
@given(st.binary(max_size=1500), st.lists(st.integers(min_value=0), max_size=6))
def test_session_survives_random_bytes(data: bytes, cuts: list[int]) -> None:
    session = new_session()
    events, out = run(session, split(b"NICK fuzz\r\n" + data, cuts))
    check_output(out)
    violations = [e for e in events if isinstance(e, ProtocolViolation)]
    assert len(violations) <= 1
    if violations:
        assert session.closed and events[-1] is violations[0] and violations[0].reason


@FUZZ
@given(st.booleans(), st.lists(client_lines(), max_size=25), st.lists(st.integers(min_value=0), max_size=6))
def test_session_survives_plausible_clients(login: bool, lines: list[bytes], cuts: list[int]) -> None:
    session = new_session()
    events, out = run(session, split((b"NICK fuzz\r\n" if login else b"") + b"".join(lines), cuts))
    check_output(out)
    ends = [e for e in events if isinstance(e, (ProtocolViolation, QuitRequested))]
    assert len(ends) <= 1 and (not ends or events[-1] is ends[0])


@FUZZ
@given(st.lists(client_lines(), max_size=20))
def test_session_one_byte_feeds_behave_as_one_feed(lines: list[bytes]) -> None:
    data = b"CAP REQ :twitch.tv/tags twitch.tv/commands\r\nNICK fuzz\r\n" + b"".join(lines)
    # joins are answered after the last piece: answering between pieces would interleave differently
    whole = run(new_session(), [data], tick=0.0, joins_at_end=True)
    bytewise = run(new_session(), [data[i : i + 1] for i in range(len(data))], tick=0.0, joins_at_end=True)
    assert whole == bytewise
