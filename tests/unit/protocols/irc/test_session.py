"""ServerSession: registration as tmi.js and RFC clients do it, CAPs, rooms, messages, limits, rendering."""

from __future__ import annotations

import pytest

from edged.chat.model import ChatLine, EventKind, NoticeId, RoomEvent, RoomModes, RoomSnapshot, Verdict
from edged.errors import LocalProtocolError
from edged.protocols.irc import tmi
from edged.protocols.irc.session import (
    JoinRequested,
    LoginRequested,
    MessageSubmitted,
    PartRequested,
    PongReceived,
    ProtocolViolation,
    QuitRequested,
    State,
)
from edged.protocols.irc.tmi import Cap
from tests.unit.protocols.irc.helpers import (
    ANON,
    BOB,
    DEMO,
    MOD,
    TMIJS_CAPS,
    commands,
    joined,
    logged_in,
    new_session,
    only,
    read,
)

# --- registration ------------------------------------------------------------------------------------


def test_tmijs_login_frames_without_crlf() -> None:
    s = new_session()
    assert s.receive_frame("CAP REQ :twitch.tv/tags twitch.tv/commands twitch.tv/membership", 0.0) == []
    [ack] = read(s.data_to_send())
    assert (
        ack.serialize() == ":tmi.twitch.tv CAP * ACK :twitch.tv/tags twitch.tv/commands twitch.tv/membership"
    )
    assert s.caps == Cap.TAGS | Cap.COMMANDS | Cap.MEMBERSHIP
    assert s.receive_frame("PASS oauth:eyJ.abc.DEF", 0.0) == []
    login = only(s.receive_frame(b"NICK bob", 0.0))
    assert login == LoginRequested("bob", "oauth:eyJ.abc.DEF")
    assert isinstance(login, LoginRequested) and login.token == "eyJ.abc.DEF"
    assert s.state is State.LOGIN_PENDING
    burst = s.accept_login(BOB)
    assert commands(burst) == ["001", "002", "003", "004", "375", "372", "376", "GLOBALUSERSTATE"]
    assert read(burst)[-1].tags["user-id"] == "42"
    assert s.registered and s.nick == "bob" and s.chatter == BOB


def test_tmijs_anonymous_login() -> None:
    s = new_session()
    login = only(s.receive(TMIJS_CAPS + b"PASS SCHMOOPIIE\r\nNICK justinfan123\r\n", 0.0))
    assert login == LoginRequested("justinfan123", "SCHMOOPIIE")
    assert isinstance(login, LoginRequested) and login.token == ""
    burst = s.accept_login(ANON)
    assert "GLOBALUSERSTATE" not in commands(burst)  # as TMI: none for an anonymous reader


def test_token_prefix_any_case() -> None:
    assert LoginRequested("a", "OAuth:xyz").token == "xyz"
    assert LoginRequested("a", "").token == ""


def test_rfc_client_nick_then_user() -> None:
    s = new_session()
    events = s.receive(b"NICK Guest_1\r\nUSER guest 0 * :Guest Person\r\n", 0.0)
    assert events == [LoginRequested("guest_1", "")]
    s.accept_login(ANON.__class__("", "guest_1"))
    assert s.receive(b"", 0.0) == []  # USER after login: accepted, ignored
    assert s.data_to_send() == b""


def test_user_before_nick_and_pass_first() -> None:
    s = new_session()
    events = s.receive(b"PASS secret\r\nUSER guest 0 * :Guest\r\nNICK guest\r\n", 0.0)
    assert events == [LoginRequested("guest", "secret")]


def test_burst_without_caps_has_no_tags_and_no_globaluserstate() -> None:
    s = new_session()
    s.receive(b"PASS oauth:t\r\nNICK bob\r\n", 0.0)
    burst = s.accept_login(BOB)
    assert commands(burst) == ["001", "002", "003", "004", "375", "372", "376"]
    assert b"@" not in burst


def test_cap_ls_holds_registration_until_cap_end() -> None:
    s = new_session()
    assert s.receive(b"CAP LS 302\r\nNICK bob\r\nUSER bob 0 * :Bob\r\n", 0.0) == []
    [ls] = read(s.data_to_send())
    assert ls.params == ("*", "LS", "twitch.tv/tags twitch.tv/commands twitch.tv/membership")
    assert s.state is State.NEW
    assert s.receive(b"CAP REQ :twitch.tv/tags\r\n", 0.0) == []
    assert s.receive(b"CAP END\r\n", 0.0) == [LoginRequested("bob", "")]
    assert s.caps == Cap.TAGS


def test_cap_end_without_nick_waits_for_nick() -> None:
    s = new_session()
    s.receive(b"CAP LS\r\nCAP END\r\n", 0.0)
    assert s.receive(b"NICK bob\r\n", 0.0) == [LoginRequested("bob", "")]


def test_cap_req_unknown_is_naked_as_a_whole() -> None:
    s = new_session()
    s.receive(b"CAP REQ :twitch.tv/tags sasl\r\n", 0.0)
    [nak] = read(s.data_to_send())
    assert nak.params == ("*", "NAK", "twitch.tv/tags sasl")
    assert s.caps == Cap.NONE
    s.receive(b"CAP REQ :\r\nCAP REQ\r\n", 0.0)
    assert [m.params[1] for m in read(s.data_to_send())] == ["NAK", "NAK"]


def test_cap_req_removal_and_list() -> None:
    s = new_session()
    s.receive(TMIJS_CAPS + b"CAP REQ :-twitch.tv/membership\r\nCAP LIST\r\n", 0.0)
    replies = read(s.data_to_send())
    assert [m.params[1] for m in replies] == ["ACK", "ACK", "LIST"]
    assert replies[1].params[2] == "-twitch.tv/membership"
    assert replies[2].params[2] == "twitch.tv/tags twitch.tv/commands"
    assert s.caps == Cap.TAGS | Cap.COMMANDS


def test_cap_after_login_changes_caps() -> None:
    s = logged_in(caps=b"")
    s.receive(b"CAP REQ :twitch.tv/commands\r\n", 1.0)
    assert read(s.data_to_send())[0].params[1] == "ACK"
    assert s.caps == Cap.COMMANDS


def test_bad_cap_subcommand() -> None:
    s = new_session()
    s.receive(b"CAP FOO\r\nCAP\r\n", 0.0)
    assert commands(s.data_to_send()) == ["410", "410"]


def test_lines_after_nick_wait_for_the_login_answer() -> None:
    s = new_session()
    events = s.receive(b"NICK bob\r\nJOIN #demo\r\nPING\r\n", 0.0)
    assert events == [LoginRequested("bob", "")]
    assert s.data_to_send() == b""
    assert s.receive(b"PRIVMSG #demo :x\r\n", 0.0) == []
    s.accept_login(BOB)
    events = s.receive(b"", 0.0)
    assert events[0] == JoinRequested(("demo",))
    assert isinstance(events[1], MessageSubmitted)  # pending rooms accept messages
    assert commands(s.data_to_send()) == ["PONG"]


def test_too_much_data_while_login_pending() -> None:
    s = new_session(max_paused_bytes=100)
    s.receive(b"NICK bob\r\n", 0.0)
    assert only(s.receive(b"PING\r\n" * 20, 0.0)) == ProtocolViolation("too much data before login")
    assert s.closed


def test_reject_login() -> None:
    s = new_session()
    s.receive(b"PASS oauth:bad\r\nNICK bob\r\nJOIN #demo\r\n", 0.0)
    out = s.reject_login()
    assert read(out)[0].serialize() == ":tmi.twitch.tv NOTICE * :Login authentication failed"
    assert s.closed and s.close_reason == "login refused"
    assert s.receive(b"", 0.0) == [] and s.receive(b"JOIN #x\r\n", 0.0) == []


def test_accept_and_reject_login_only_when_pending() -> None:
    s = new_session()
    with pytest.raises(LocalProtocolError):
        s.accept_login(BOB)
    with pytest.raises(LocalProtocolError):
        s.reject_login()
    s.receive(b"NICK bob\r\n", 0.0)
    with pytest.raises(LocalProtocolError):
        s.accept_login(BOB.__class__("1", "Bad Login"))
    s.accept_login(BOB)
    with pytest.raises(LocalProtocolError):
        s.accept_login(BOB)


def test_login_uses_the_chatters_login_not_the_nick() -> None:
    s = new_session()
    s.receive(b"PASS oauth:t\r\nNICK whatever\r\n", 0.0)
    burst = s.accept_login(BOB)
    assert read(burst)[0].params[0] == "bob"
    assert s.nick == "bob"


@pytest.mark.parametrize(
    "line", [b"NICK", b"NICK :a b", b"NICK #chan", b"NICK -x", b"NICK " + b"x" * 65, "NICK jörg".encode()]
)
def test_invalid_nick(line: bytes) -> None:
    s = new_session()
    events = s.receive(line + b"\r\n", 0.0)
    assert events == [ProtocolViolation("invalid NICK")]
    assert b"Invalid NICK" in s.data_to_send()  # tmi.js looks for these words and stops reconnecting


def test_nick_and_pass_after_login_are_ignored() -> None:
    s = logged_in()
    assert s.receive(b"NICK other\r\nPASS x\r\n", 1.0) == []
    assert s.nick == "bob" and s.data_to_send() == b""


def test_login_flood() -> None:
    s = new_session()
    events = s.receive(b"PASS x\r\n" * 21, 0.0)
    assert events == [ProtocolViolation("login flood")]


def test_login_rate_window_slides() -> None:
    s = logged_in()  # PASS and NICK already spent two at t=0
    for i in range(18):
        assert s.receive(b"NICK again\r\n", 1.0 + i * 0.01) == []
    assert s.receive(b"NICK again\r\n", 10.0) == []  # the two from t=0 have left the window
    assert s.receive(b"NICK again\r\n", 10.5) == []
    assert s.receive(b"NICK again\r\n", 10.6) == [ProtocolViolation("login flood")]


def test_commands_before_login() -> None:
    s = new_session()
    assert s.receive(b"JOIN #demo\r\nPRIVMSG #demo :x\r\nPART #demo\r\n", 0.0) == []
    assert commands(s.data_to_send()) == ["451", "451", "451"]


def test_not_irc_before_login_is_a_violation() -> None:
    s = new_session()
    assert s.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0.0) == [
        ProtocolViolation("unknown command before login")
    ]


def test_unknown_command_after_login() -> None:
    s = logged_in()
    assert s.receive(b"WHO #demo\r\nMODE bob +i\r\n", 1.0) == []
    assert [m.serialize() for m in read(s.data_to_send())] == [
        ":tmi.twitch.tv 421 bob WHO :Unknown command",
        ":tmi.twitch.tv 421 bob MODE :Unknown command",
    ]


# --- connection --------------------------------------------------------------------------------------


def test_client_ping() -> None:
    s = new_session()
    s.receive(b"PING\r\nPING :abc\r\nPING tmi.twitch.tv\r\n", 0.0)
    assert [m.serialize() for m in read(s.data_to_send())] == [
        "PONG :tmi.twitch.tv",
        "PONG :abc",
        "PONG :tmi.twitch.tv",
    ]


def test_server_ping_and_pong_bookkeeping() -> None:
    s = logged_in()
    assert not s.pong_overdue(100.0)
    assert s.ping(100.0) == b"PING :tmi.twitch.tv\r\n"
    s.ping(105.0)  # already outstanding: the clock keeps the first PING's time
    assert not s.pong_overdue(109.9)
    assert s.pong_overdue(110.0)
    assert s.receive(b"PONG\r\n", 102.5) == [PongReceived(2.5)]
    assert not s.pong_overdue(1000.0)
    assert s.receive(b"PONG :tmi.twitch.tv\r\n", 103.0) == [PongReceived(None)]


def test_pong_timeout_is_configurable() -> None:
    s = new_session(pong_timeout=2.0)
    s.ping(0.0)
    assert s.pong_overdue(2.0)


def test_quit() -> None:
    s = logged_in()
    assert s.receive(b"QUIT :bye now\r\nJOIN #x\r\n", 1.0) == [QuitRequested("bye now")]
    assert s.closed
    assert s.receive(b"PING\r\n", 1.0) == []


def test_garbage_is_a_violation_and_ends_reading() -> None:
    s = logged_in()
    events = s.receive(b"PING\r\n\xff\xfe\r\nPING\r\n", 1.0)
    assert events == [ProtocolViolation("invalid UTF-8")]
    assert s.closed and s.close_reason == "invalid UTF-8"
    assert commands(s.data_to_send()) == ["PONG"]  # what came before the garbage was answered


def test_oversized_line_is_a_violation() -> None:
    s = logged_in()
    assert s.receive(b"JOIN #" + b"x" * 3000, 1.0) == [ProtocolViolation("line too long")]


def test_a_500_character_message_is_not_a_violation() -> None:
    s = joined()
    event = only(s.receive(("PRIVMSG #demo :" + "ж" * 500 + "\r\n").encode(), 1.0))
    assert isinstance(event, MessageSubmitted) and len(event.text) == 500


def test_close() -> None:
    s = logged_in()
    s.close()
    assert s.closed and s.receive(b"PING\r\n", 0.0) == []


def test_frame_with_several_lines() -> None:
    s = new_session()
    events = s.receive_frame("PASS oauth:t\r\nNICK bob\r\n", 0.0)
    assert events == [LoginRequested("bob", "oauth:t")]
    s.accept_login(BOB)
    assert s.receive_frame("JOIN #a\r\nJOIN #b", 0.0) == [JoinRequested(("a",)), JoinRequested(("b",))]


# --- rooms -------------------------------------------------------------------------------------------


def test_join_list() -> None:
    s = logged_in()
    assert s.receive(b"JOIN #Demo,#other,#demo,,#DEMO\r\n", 1.0) == [JoinRequested(("demo", "other"))]
    assert s.pending_rooms == {"demo", "other"} and s.rooms == frozenset()
    assert s.receive(b"JOIN #demo\r\n", 1.0) == []  # already pending


def test_join_invalid_names_and_join_zero() -> None:
    s = logged_in()
    assert s.receive(b"JOIN demo,#,#a~b,#ok\r\nJOIN 0\r\nJOIN\r\n", 1.0) == [JoinRequested(("ok",))]
    notices = read(s.data_to_send())
    assert [m.tags["msg-id"] for m in notices] == [tmi.NOTICE_ROOM_NOT_FOUND] * 3


def test_accept_join_burst_in_tmi_order() -> None:
    s = logged_in()
    s.receive(b"JOIN #demo\r\n", 1.0)
    snapshot = RoomSnapshot("demo", "1001", RoomModes(slow_seconds=5, r9k=True))
    out = read(s.accept_join("demo", snapshot, ["amy", "carl"]))
    assert [m.command for m in out] == ["JOIN", "353", "366", "USERSTATE", "ROOMSTATE"]
    assert out[0].serialize() == ":bob!bob@bob.tmi.twitch.tv JOIN #demo"
    assert out[1].params[3] == "bob amy carl"
    assert out[3].tags["subscriber"] == "1"
    assert dict(out[4].tags) == {
        "emote-only": "0",
        "followers-only": "-1",
        "r9k": "1",
        "room-id": "1001",
        "slow": "5",
        "subs-only": "0",
    }
    assert s.rooms == {"demo"} and s.pending_rooms == frozenset()


def test_accept_join_without_commands_or_anonymous() -> None:
    s = logged_in(caps=b"")
    s.receive(b"JOIN #demo\r\n", 1.0)
    assert commands(s.accept_join("demo", DEMO)) == ["JOIN", "353", "366"]
    anon = logged_in(ANON)
    anon.receive(b"JOIN #demo\r\n", 1.0)
    assert commands(anon.accept_join("demo", DEMO)) == ["JOIN", "353", "366", "ROOMSTATE"]


def test_accept_join_of_a_room_not_pending() -> None:
    s = logged_in()
    assert s.accept_join("demo", DEMO) == b""
    assert s.rooms == frozenset()


def test_reject_join() -> None:
    s = logged_in()
    s.receive(b"JOIN #demo\r\n", 1.0)
    [notice] = read(s.reject_join("demo", NoticeId.CHANNEL_SUSPENDED, "This channel is suspended."))
    assert notice.serialize() == (
        "@msg-id=msg_channel_suspended :tmi.twitch.tv NOTICE #demo :This channel is suspended."
    )
    assert s.pending_rooms == frozenset()
    assert s.reject_join("demo", "x", "y") == b""


def test_join_rate_limit() -> None:
    s = logged_in()
    rooms = ",".join(f"#r{i}" for i in range(25)).encode()
    [event] = s.receive(b"JOIN " + rooms + b"\r\n", 1.0)
    assert isinstance(event, JoinRequested) and event.rooms == tuple(f"r{i}" for i in range(20))
    refused = read(s.data_to_send())
    assert [m.params[0] for m in refused] == [f"#r{i}" for i in range(20, 25)]
    assert {m.tags["msg-id"] for m in refused} == {"msg_ratelimit"}
    assert s.receive(b"JOIN #r20\r\n", 10.9) == []
    assert s.receive(b"JOIN #r20\r\n", 11.0) == [JoinRequested(("r20",))]  # the window slid


def test_join_flood_closes() -> None:
    s = logged_in()
    events = []
    for i in range(70):
        events += s.receive(f"JOIN #r{i}\r\n".encode(), 1.0)
        if s.closed:
            break
    assert events[-1] == ProtocolViolation("JOIN flood")
    assert i == 60  # 20 joins, 40 refused with a NOTICE, then the connection is closed


def test_max_rooms() -> None:
    s = logged_in(max_rooms=2)
    assert s.receive(b"JOIN #a,#b,#c\r\n", 1.0) == [JoinRequested(("a", "b"))]
    [notice] = read(s.data_to_send())
    assert notice.tags["msg-id"] == tmi.NOTICE_TOO_MANY_ROOMS and notice.params[0] == "#c"


def test_part() -> None:
    s = joined()
    s.receive(b"JOIN #later\r\n", 1.0)
    events = s.receive(b"PART #demo,#later,#never,#DEMO\r\n", 1.0)
    assert events == [PartRequested(("demo", "later"))]
    assert [m.serialize() for m in read(s.data_to_send())] == [":bob!bob@bob.tmi.twitch.tv PART #demo"]
    assert s.rooms == frozenset() and s.pending_rooms == frozenset()
    assert s.accept_join("later", DEMO) == b""  # left before the join completed
    assert s.receive(b"PART #demo\r\nPART\r\n", 1.0) == []


# --- messages ----------------------------------------------------------------------------------------


def test_privmsg() -> None:
    s = joined()
    event = only(s.receive(b"@client-nonce=abc123 PRIVMSG #demo :hello world\r\n", 1.0))
    assert event == MessageSubmitted("demo", "hello world", "sub-1", BOB, "abc123", "", False)
    assert isinstance(event, MessageSubmitted)
    sub = event.submission(1_700_000_000_000, "node-a")
    assert (sub.id, sub.room, sub.chatter, sub.text, sub.sent_ms, sub.origin_node, sub.client_nonce) == (
        "sub-1",
        "demo",
        BOB,
        "hello world",
        1_700_000_000_000,
        "node-a",
        "abc123",
    )


def test_privmsg_action() -> None:
    s = joined()
    event = only(s.receive(b"PRIVMSG #demo :\x01ACTION dances\x01\r\n", 1.0))
    assert isinstance(event, MessageSubmitted) and event.action and event.text == "dances"
    assert event.submission(1).text == "/me dances"
    event = only(s.receive(b"PRIVMSG #demo :\x01ACTION no end\r\n", 1.0))
    assert isinstance(event, MessageSubmitted) and event.text == "no end"


def test_privmsg_dropped_silently() -> None:
    s = joined()
    assert (
        s.receive(
            b"PRIVMSG #demo :\x01VERSION\x01\r\nPRIVMSG #demo :\r\nPRIVMSG #demo :   \r\n"
            b"PRIVMSG #demo\r\nPRIVMSG\r\nPRIVMSG someone :whisper\r\n",
            1.0,
        )
        == []
    )
    assert s.data_to_send() == b""


def test_privmsg_to_a_room_not_joined() -> None:
    s = joined()
    assert s.receive(b"PRIVMSG #other :hi\r\nPRIVMSG #b~ad :hi\r\n", 1.0) == []
    notices = read(s.data_to_send())
    assert [(m.params[0], m.tags["msg-id"]) for m in notices] == [
        ("#other", "msg_not_joined"),
        ("*", "msg_not_joined"),
    ]


def test_privmsg_from_anonymous() -> None:
    s = joined(chatter=ANON)
    assert s.receive(b"PRIVMSG #demo :hi\r\n", 1.0) == []
    [notice] = read(s.data_to_send())
    assert notice.tags["msg-id"] == "msg_requires_login"


def test_privmsg_to_several_rooms() -> None:
    s = joined()
    s.receive(b"JOIN #b\r\n", 1.0)
    events = s.receive(b"PRIVMSG #demo,#b,#demo :x\r\n", 1.0)
    assert [(e.room, e.id) for e in events if isinstance(e, MessageSubmitted)] == [
        ("demo", "sub-1"),
        ("b", "sub-2"),
    ]


def test_privmsg_nonce_and_emotes_checked() -> None:
    s = joined()
    long_nonce = b"n" * 129
    [e1, e2, e3, e4] = s.receive(
        b"@client-nonce=" + long_nonce + b";emotes=25:0-4 PRIVMSG #demo :Kappa\r\n"
        b"@emotes=25:0-5 PRIVMSG #demo :Kappa\r\n"
        b"@emotes=25:0-4,6-10/1902:12-16 PRIVMSG #demo :Kappa Kappa Keepo\r\n"
        b"@emotes=bad PRIVMSG #demo :Kappa\r\n",
        1.0,
    )
    assert isinstance(e1, MessageSubmitted) and e1.client_nonce == "" and e1.emotes == "25:0-4"
    assert isinstance(e2, MessageSubmitted) and e2.emotes == ""  # range past the text
    assert isinstance(e3, MessageSubmitted) and e3.emotes == "25:0-4,6-10/1902:12-16"
    assert isinstance(e4, MessageSubmitted) and e4.emotes == ""


# --- rendering ---------------------------------------------------------------------------------------


def message_event(line: ChatLine, room: str = "demo", room_id: str = "1001") -> RoomEvent:
    return RoomEvent(room, 1, EventKind.MESSAGE, line.sent_ms, room_id, line)


def test_render_message_from_another_chatter() -> None:
    s = joined()
    line = ChatLine("m-1", MOD, "hi", 77)
    [msg] = read(s.render_event(message_event(line)))
    assert msg.command == "PRIVMSG" and msg.source == "mia!mia@mia.tmi.twitch.tv"
    assert msg.tags["id"] == "m-1" and msg.tags["room-id"] == "1001" and msg.tags["mod"] == "1"


def test_render_own_message_is_userstate_not_an_echo() -> None:
    s = joined()
    event = only(s.receive(b"PRIVMSG #demo :mine\r\n", 1.0))
    assert isinstance(event, MessageSubmitted)
    own = message_event(ChatLine(event.id, BOB, "mine", 88))
    [state] = read(s.render_event(own))
    assert state.command == "USERSTATE" and state.params == ("#demo",)
    # the same message id again (e.g. from history) is someone else's view of it
    assert commands(s.render_event(own)) == ["PRIVMSG"]
    bare = joined(caps=b"")
    event = only(bare.receive(b"PRIVMSG #demo :mine\r\n", 1.0))
    assert isinstance(event, MessageSubmitted)
    assert bare.render_event(message_event(ChatLine(event.id, BOB, "mine", 88))) == b""


def test_own_ids_are_bounded() -> None:
    s = joined()
    for _ in range(1100):
        s.receive(b"PRIVMSG #demo :x\r\n", 1.0)
    assert commands(s.render_event(message_event(ChatLine("sub-1", BOB, "x", 1)))) == ["PRIVMSG"]
    assert commands(s.render_event(message_event(ChatLine("sub-1100", BOB, "x", 1)))) == ["USERSTATE"]


def test_render_without_tags() -> None:
    s = joined(caps=b"CAP REQ :twitch.tv/commands\r\n")
    data = s.render_event(message_event(ChatLine("m", MOD, "hi there", 1)))
    assert data == b":mia!mia@mia.tmi.twitch.tv PRIVMSG #demo :hi there\r\n"


def test_shared_rendering_by_caps() -> None:
    a, b, c = joined(), joined(), joined(caps=b"")
    event = message_event(ChatLine("m", MOD, "hi", 1))
    shared: dict[Cap, bytes] = {}
    da, db, dc = (x.render_event(event, shared) for x in (a, b, c))
    assert da is db and da != dc
    assert set(shared) == {Cap.TAGS | Cap.COMMANDS | Cap.MEMBERSHIP, Cap.NONE}
    assert dc == c.render_event(event)


def test_render_events_of_rooms_not_joined() -> None:
    s = joined()
    assert s.render_event(message_event(ChatLine("m", MOD, "hi", 1), room="other")) == b""
    s.close()
    assert s.render_event(message_event(ChatLine("m", MOD, "hi", 1))) == b""


def test_render_moderation_needs_commands() -> None:
    s = joined()
    ban = RoomEvent("demo", 2, EventKind.CLEARCHAT, 5, "", target_login="mia", target_user_id="43")
    [line] = read(s.render_event(ban))
    assert line.command == "CLEARCHAT" and line.tags["room-id"] == "1001"  # filled from the join snapshot
    deleted = RoomEvent("demo", 3, EventKind.CLEARMSG, 6, "1001", ChatLine("m", MOD, "oops", 1))
    [clear] = read(s.render_event(deleted))
    assert clear.params == ("#demo", "oops") and clear.tags["target-msg-id"] == "m"
    unban = RoomEvent("demo", 4, EventKind.UNBAN, 7, "1001", target_login="mia")
    assert s.render_event(unban) == b""
    bare = joined(caps=b"CAP REQ :twitch.tv/tags\r\n")
    assert bare.render_event(ban) == b"" and bare.render_event(deleted) == b""


def test_render_roomstate_changes() -> None:
    s = joined()
    slow = RoomEvent("demo", 2, EventKind.ROOMSTATE, 5, "1001", modes=RoomModes(slow_seconds=30))
    [line] = read(s.render_event(slow))
    assert line.serialize() == "@room-id=1001;slow=30 :tmi.twitch.tv ROOMSTATE #demo"
    assert s.render_event(slow) == b""  # nothing changed since
    assert commands(s.render_roomstate("demo", RoomModes())) == ["ROOMSTATE"]
    bare = joined(caps=b"CAP REQ :twitch.tv/tags\r\n")
    assert bare.render_event(slow) == b""
    bare.receive(b"CAP REQ :twitch.tv/commands\r\n", 1.0)  # the modes were kept in step meanwhile
    assert bare.render_event(slow) == b""
    assert commands(bare.render_roomstate("demo", RoomModes())) == ["ROOMSTATE"]
    assert s.render_roomstate("other", RoomModes()) == b""
    assert s.render_event(RoomEvent("demo", 3, EventKind.ROOMSTATE, 5, "1001")) == b""


def test_render_gap_always() -> None:
    bare = joined(caps=b"")
    [notice] = read(bare.render_event(RoomEvent("demo", 0, EventKind.GAP, 5, "1001")))
    assert notice.command == "NOTICE" and notice.params[0] == "#demo" and not notice.tags


def test_render_history() -> None:
    s = joined()
    lines = [ChatLine("h1", MOD, "one", 1), ChatLine("h2", MOD, "two", 2, action=True)]
    out = read(s.render_history("demo", lines))
    assert [m.tags["id"] for m in out] == ["h1", "h2"]
    assert {m.tags["historical"] for m in out} == {"1"}
    assert out[1].params[1] == "\x01ACTION two\x01"
    assert s.render_history("other", lines) == b""


def test_render_verdict_and_notice() -> None:
    s = joined()
    verdict = Verdict("sub-1", "demo", "bob", True, "ban_success", "mia is now banned from this channel.")
    [line] = read(s.render_verdict(verdict))
    assert line.serialize() == (
        "@msg-id=ban_success :tmi.twitch.tv NOTICE #demo :mia is now banned from this channel."
    )
    assert read(s.render_notice("", "", "hello"))[0].serialize() == ":tmi.twitch.tv NOTICE * :hello"


def test_render_membership() -> None:
    s = joined()
    assert s.render_join("demo", "mia") == b":mia!mia@mia.tmi.twitch.tv JOIN #demo\r\n"
    assert s.render_part("demo", "mia") == b":mia!mia@mia.tmi.twitch.tv PART #demo\r\n"
    assert s.render_join("demo", "bob") == b""  # the session's own JOIN came with accept_join
    assert s.render_join("other", "mia") == b""
    bare = joined(caps=b"CAP REQ :twitch.tv/tags twitch.tv/commands\r\n")
    assert bare.render_join("demo", "mia") == b"" and bare.render_part("demo", "mia") == b""


def test_render_reconnect() -> None:
    assert joined().render_reconnect() == b":tmi.twitch.tv RECONNECT\r\n"
    assert joined(caps=b"").render_reconnect() == b""


def test_server_name() -> None:
    s = joined(server_name="chat.example")
    assert s.render_join("demo", "mia") == b":mia!mia@mia.chat.example JOIN #demo\r\n"
    assert s.ping(0.0) == b"PING :chat.example\r\n"
