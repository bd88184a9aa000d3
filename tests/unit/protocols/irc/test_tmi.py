"""TMI line shapes, as dev.twitch.tv documents them and tmi.js 1.8.5 (lib/client.js) reads them."""

from __future__ import annotations

from edged.chat.model import ChatLine, Chatter, EventKind, RoomEvent, RoomModes, Verdict
from edged.protocols.irc import tmi
from edged.protocols.irc.message import parse

MOD = Chatter("42", "bob", "Bob", frozenset({"moderator", "subscriber"}), "#FF0000")
BROADCASTER = Chatter("1", "demo", "Demo", frozenset({"broadcaster"}))
AMY = Chatter("7", "amy", "", frozenset({"vip"}))


def test_welcome_burst_numerics_and_source() -> None:
    lines = [m.serialize() for m in tmi.welcome("bob")]
    assert [parse(x).command for x in lines] == ["001", "002", "003", "004", "375", "372", "376"]
    assert all(x.startswith(":tmi.twitch.tv ") for x in lines)
    assert lines[0] == ":tmi.twitch.tv 001 bob :Welcome, GLHF!"  # tmi.js takes the username from 001
    assert lines[-1] == ":tmi.twitch.tv 376 bob :>"


def test_server_name_is_configurable() -> None:
    assert tmi.welcome("bob", "chat.example")[0].source == "chat.example"
    assert tmi.join("demo", "bob", "chat.example").source == "bob!bob@bob.chat.example"
    assert tmi.ping("chat.example").serialize() == "PING :chat.example"


def test_cap_replies() -> None:
    assert tmi.cap("ACK", "twitch.tv/tags twitch.tv/commands").serialize() == (
        ":tmi.twitch.tv CAP * ACK :twitch.tv/tags twitch.tv/commands"
    )
    assert tmi.cap("NAK", "x").serialize() == ":tmi.twitch.tv CAP * NAK :x"


def test_globaluserstate() -> None:
    assert tmi.globaluserstate(MOD).serialize() == (
        "@badge-info=;badges=moderator/1,subscriber/0;color=#FF0000;display-name=Bob;emote-sets=0;"
        "user-id=42;user-type=mod :tmi.twitch.tv GLOBALUSERSTATE"
    )


def test_join_names_userstate_roomstate() -> None:
    assert tmi.join("demo", "bob").serialize() == ":bob!bob@bob.tmi.twitch.tv JOIN #demo"
    assert tmi.part("demo", "bob").serialize() == ":bob!bob@bob.tmi.twitch.tv PART #demo"
    assert [m.serialize() for m in tmi.names("demo", "bob")] == [
        ":bob.tmi.twitch.tv 353 bob = #demo :bob",
        ":bob.tmi.twitch.tv 366 bob #demo :End of /NAMES list",
    ]
    assert tmi.userstate("demo", MOD).serialize() == (
        "@badge-info=;badges=moderator/1,subscriber/0;color=#FF0000;display-name=Bob;emote-sets=0;mod=1;"
        "subscriber=1;user-type=mod :tmi.twitch.tv USERSTATE #demo"
    )
    state = tmi.roomstate("demo", "1001", RoomModes())
    assert state is not None
    assert state.serialize() == (
        "@emote-only=0;followers-only=-1;r9k=0;room-id=1001;slow=0;subs-only=0 :tmi.twitch.tv ROOMSTATE #demo"
    )


def test_names_split_to_fit_lines() -> None:
    members = [f"user{i:04d}" for i in range(300)]
    msgs = tmi.names("demo", "bob", members)
    assert msgs[-1].command == "366"
    listed = [n for m in msgs[:-1] for n in m.params[3].split(" ")]
    assert listed == ["bob", *members]
    assert len(msgs) > 2
    assert all(len(m.to_bytes()) <= 512 for m in msgs)


def test_names_does_not_list_self_twice() -> None:
    [names, _end] = tmi.names("demo", "bob", ["amy", "bob"])
    assert names.params[3] == "bob amy"


def test_roomstate_change_carries_only_what_changed() -> None:
    before = RoomModes()
    slow = tmi.roomstate("demo", "1001", RoomModes(slow_seconds=30), before)
    assert slow is not None and slow.serialize() == "@room-id=1001;slow=30 :tmi.twitch.tv ROOMSTATE #demo"
    both = tmi.roomstate("demo", "1", RoomModes(emote_only=True, r9k=True, subscribers_only=True), before)
    assert both is not None and dict(both.tags) == {
        "emote-only": "1",
        "r9k": "1",
        "room-id": "1",
        "subs-only": "1",
    }
    assert tmi.roomstate("demo", "1", before, before) is None


def test_privmsg_tags() -> None:
    line = ChatLine("m-1", MOD, "Kappa hi", 1700000000123, emotes="25:0-4", client_nonce="n1")
    msg = tmi.privmsg("demo", "1001", line)
    assert msg.serialize() == (
        "@badge-info=;badges=moderator/1,subscriber/0;client-nonce=n1;color=#FF0000;display-name=Bob;"
        "emotes=25:0-4;first-msg=0;flags=;id=m-1;mod=1;returning-chatter=0;room-id=1001;subscriber=1;"
        "tmi-sent-ts=1700000000123;turbo=0;user-id=42;user-type=mod "
        ":bob!bob@bob.tmi.twitch.tv PRIVMSG #demo :Kappa hi"
    )


def test_privmsg_details() -> None:
    single = tmi.privmsg("demo", "1", ChatLine("m", AMY, "x", 5))
    assert single.serialize().endswith("PRIVMSG #demo :x")  # trailing colon even for one word
    assert single.tags["display-name"] == "amy"  # the login when no display name
    assert single.tags["vip"] == "1" and single.tags["badges"] == "vip/1"
    assert "client-nonce" not in single.tags
    action = tmi.privmsg("demo", "1", ChatLine("m", AMY, "waves", 5, action=True))
    assert action.params[1] == "\x01ACTION waves\x01"
    unsafe = tmi.privmsg("demo", "1", ChatLine("m", AMY, "a\r\nJOIN #x\x00", 5))
    assert unsafe.params[1] == "a  JOIN #x "
    historical = tmi.privmsg("demo", "1", ChatLine("m", AMY, "x", 5), historical=True)
    assert historical.tags["historical"] == "1"
    assert tmi.badges(BROADCASTER) == "broadcaster/1"
    assert tmi.privmsg("demo", "1", ChatLine("m", BROADCASTER, "x", 5)).tags["mod"] == "0"  # as TMI


def test_clearchat_ban_timeout_clear() -> None:
    ban = RoomEvent("demo", 3, EventKind.CLEARCHAT, 99, "1001", target_login="amy", target_user_id="7")
    assert tmi.clearchat(ban).serialize() == (
        "@room-id=1001;target-user-id=7;tmi-sent-ts=99 :tmi.twitch.tv CLEARCHAT #demo :amy"
    )
    timeout = RoomEvent(
        "demo", 3, EventKind.CLEARCHAT, 99, "1001", target_login="amy", target_user_id="7", duration_s=600
    )
    assert tmi.clearchat(timeout).serialize() == (
        "@ban-duration=600;room-id=1001;target-user-id=7;tmi-sent-ts=99 :tmi.twitch.tv CLEARCHAT #demo :amy"
    )
    clear = RoomEvent("demo", 3, EventKind.CLEARCHAT, 99, "1001")
    assert tmi.clearchat(clear).serialize() == "@room-id=1001;tmi-sent-ts=99 :tmi.twitch.tv CLEARCHAT #demo"


def test_clearmsg_always_has_the_text_param() -> None:
    line = ChatLine("m-9", AMY, "bad words", 5)
    event = RoomEvent("demo", 4, EventKind.CLEARMSG, 100, "1001", line=line)
    assert tmi.clearmsg(event).serialize() == (
        "@login=amy;room-id=1001;target-msg-id=m-9;tmi-sent-ts=100 :tmi.twitch.tv CLEARMSG #demo :bad words"
    )
    empty = tmi.clearmsg(
        RoomEvent("demo", 4, EventKind.CLEARMSG, 100, "1001", line=ChatLine("m", AMY, "", 5))
    )
    assert empty.serialize().endswith("CLEARMSG #demo :")
    assert len(parse(empty.serialize()).params) == 2  # tmi.js needs params.length > 1


def test_notices() -> None:
    verdict = Verdict("s1", "demo", "amy", False, "msg_timedout", "You are timed out for 5 more seconds.")
    assert tmi.verdict_notice(verdict).serialize() == (
        "@msg-id=msg_timedout :tmi.twitch.tv NOTICE #demo :You are timed out for 5 more seconds."
    )
    assert tmi.login_failed().serialize() == ":tmi.twitch.tv NOTICE * :Login authentication failed"
    assert tmi.gap_notice("demo").tags["msg-id"] == tmi.NOTICE_GAP
    assert tmi.notice("*", "x\ny").params == ("*", "x y")


def test_ping_pong_reconnect() -> None:
    assert tmi.ping().serialize() == "PING :tmi.twitch.tv"  # no source: tmi.js answers only that
    assert tmi.pong("tmi.twitch.tv").serialize() == "PONG :tmi.twitch.tv"
    assert tmi.reconnect().serialize() == ":tmi.twitch.tv RECONNECT"


def test_errors_replies() -> None:
    assert tmi.unknown_command("bob", "WHO").serialize() == ":tmi.twitch.tv 421 bob WHO :Unknown command"
    assert tmi.not_registered("JOIN").serialize() == ":tmi.twitch.tv 451 * JOIN :You have not registered"


def test_lines_to_bytes() -> None:
    assert tmi.lines_to_bytes([tmi.ping(), tmi.reconnect()]) == (
        b"PING :tmi.twitch.tv\r\n:tmi.twitch.tv RECONNECT\r\n"
    )
