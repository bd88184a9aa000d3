"""The room's rules (edged.chat.room): messages, limits, commands, permissions, expiry, history, bounds."""

from __future__ import annotations

import itertools

import pytest

from edged.chat.commands import emotes_cover, normalize_login, parse_duration
from edged.chat.model import (
    ChatLimits,
    Chatter,
    EventKind,
    Moderation,
    ModerationAction,
    Restriction,
    RoomEvent,
    RoomModes,
    RoomSnapshot,
    Submission,
)
from edged.chat.room import Outcome, Room, changed_modes

T0 = 1_700_000_000_000  # ms since the epoch; every test passes its own clock
_ids = itertools.count(1)

ALICE = Chatter(user_id="1", login="alice", display_name="Alice")
BOB = Chatter(user_id="2", login="bob")
CAROL = Chatter(user_id="3", login="carol")
SUB = Chatter(user_id="4", login="sub", roles=frozenset({"subscriber"}))
VIP = Chatter(user_id="5", login="vip", roles=frozenset({"vip"}))
MOD = Chatter(user_id="10", login="mod", roles=frozenset({"moderator"}))
MOD2 = Chatter(user_id="11", login="mod2", roles=frozenset({"moderator"}))
OWNER = Chatter(user_id="100", login="demo", roles=frozenset({"broadcaster"}))
ANON = Chatter(user_id="", login="justinfan123")


NO_MODES = RoomModes()


def make_room(modes: RoomModes = NO_MODES, restrictions: tuple[Restriction, ...] = (), **kw: int) -> Room:
    return Room(
        RoomSnapshot(room="demo", room_id="4242", modes=modes, restrictions=restrictions), ChatLimits(), **kw
    )


def sub(chatter: Chatter, text: str, *, id: str = "", nonce: str = "", emotes: str = "") -> Submission:
    return Submission(
        id=id or f"id-{next(_ids)}",
        room="demo",
        chatter=chatter,
        text=text,
        sent_ms=0,
        client_nonce=nonce,
        emotes=emotes,
    )


def say(room: Room, chatter: Chatter, text: str, now: int, **kw: str) -> Outcome:
    return room.submit(sub(chatter, text, **kw), now)


def assert_delivered(out: Outcome) -> None:
    assert out.verdict is None and not out.duplicate
    assert [e.kind for e in out.events] == [EventKind.MESSAGE]


def assert_refused(out: Outcome, notice: str) -> None:
    assert out.events == ()
    assert out.verdict is not None and not out.verdict.ok
    assert out.verdict.notice_id == notice


def assert_done(out: Outcome, notice: str) -> None:
    assert out.events
    assert out.verdict is not None and out.verdict.ok
    assert out.verdict.notice_id == notice


# -- messages ----------------------------------------------------------------------------------


def test_a_message_becomes_one_message_event_with_the_orderers_time_and_room_id() -> None:
    room = make_room()
    s = sub(ALICE, "hello", nonce="n1", emotes="")
    out = room.submit(s, T0)
    assert_delivered(out)
    (event,) = out.events
    assert (event.room, event.seq, event.time_ms, event.room_id) == ("demo", 0, T0, "4242")
    assert event.line is not None
    assert (event.line.id, event.line.text, event.line.sent_ms, event.line.chatter) == (
        s.id,
        "hello",
        T0,
        ALICE,
    )
    assert event.line.client_nonce == "n1" and not event.line.action
    assert room.history(T0) == [event.line]


@pytest.mark.parametrize("text", ["/me waves", ".me waves", "\x01ACTION waves\x01"])
def test_me_and_ctcp_action_are_action_messages_for_anyone(text: str) -> None:
    out = say(make_room(), BOB, text, T0)
    assert_delivered(out)
    line = out.events[0].line
    assert line is not None and line.action and line.text == "waves"


def test_anonymous_cannot_send() -> None:
    assert_refused(say(make_room(), ANON, "hi", T0), "msg_requires_login")


def test_the_body_limit_is_500_characters() -> None:
    room = make_room()
    assert_delivered(say(room, ALICE, "x" * 500, T0))
    assert_refused(say(room, BOB, "y" * 501, T0), "msg_too_long")


def test_a_blank_message_is_dropped_without_a_verdict() -> None:
    out = say(make_room(), ALICE, "   ", T0)
    assert out == Outcome()


def test_the_same_submission_id_or_client_nonce_within_5_minutes_is_dropped_silently() -> None:
    room = make_room()
    assert_delivered(say(room, ALICE, "one", T0, id="u-1", nonce="c-1"))
    again = say(room, ALICE, "one", T0 + 1000, id="u-1")
    assert again.duplicate and again.events == () and again.verdict is None
    by_nonce = say(room, ALICE, "one again", T0 + 2000, id="u-2", nonce="c-1")
    assert by_nonce.duplicate and by_nonce.events == ()
    # another user's nonce is theirs
    assert_delivered(say(room, BOB, "one", T0 + 3000, nonce="c-1"))
    # past 5 minutes the id is forgotten
    assert_delivered(say(room, ALICE, "one later", T0 + 300_000, id="u-1"))


def test_a_refused_submission_is_not_remembered_so_its_retry_is_decided_again() -> None:
    room = make_room(RoomModes(slow_seconds=10))
    assert_delivered(say(room, ALICE, "first", T0))
    assert_refused(say(room, ALICE, "second", T0 + 1000, id="retry"), "msg_slowmode")
    assert_delivered(say(room, ALICE, "second", T0 + 10_000, id="retry"))


# -- rate limit --------------------------------------------------------------------------------


def test_the_21st_message_in_30_seconds_is_refused_and_the_window_slides() -> None:
    room = make_room()
    for i in range(20):
        assert_delivered(say(room, ALICE, f"m{i}", T0 + i))
    assert_refused(say(room, ALICE, "m20", T0 + 20), "msg_ratelimit")
    assert_delivered(say(room, BOB, "other user", T0 + 21))
    # the first message leaves the window 30 s after it was counted
    assert_refused(say(room, ALICE, "m21", T0 + 29_999), "msg_ratelimit")
    assert_delivered(say(room, ALICE, "m22", T0 + 30_000))


@pytest.mark.parametrize("chatter", [MOD, OWNER])
def test_moderators_and_the_broadcaster_get_100_per_window(chatter: Chatter) -> None:
    room = make_room()
    for i in range(100):
        assert_delivered(say(room, chatter, f"m{i}", T0 + i))
    assert_refused(say(room, chatter, "m100", T0 + 100), "msg_ratelimit")


# -- bans and timeouts -------------------------------------------------------------------------


def test_a_banned_chatter_is_refused_msg_banned() -> None:
    room = make_room(restrictions=(Restriction(login="bob", user_id="2"),))
    assert_refused(say(room, BOB, "hi", T0), "msg_banned")


def test_a_timeout_refuses_msg_timedout_until_it_lapses_by_time() -> None:
    room = make_room()
    assert_done(say(room, MOD, "/timeout bob 10", T0), "timeout_success")
    out = say(room, BOB, "hi", T0 + 1)
    assert_refused(out, "msg_timedout")
    assert out.verdict is not None and "10 more seconds" in out.verdict.text
    assert room.restriction("bob", T0 + 9_999) is not None
    assert room.restriction("bob", T0 + 10_000) is None
    assert room.snapshot(T0 + 10_000).restrictions == ()
    assert_delivered(say(room, BOB, "back", T0 + 10_000))


# -- modes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chatter", "passes"),
    [(ALICE, False), (SUB, True), (VIP, True), (MOD, True), (OWNER, True)],
)
def test_subscribers_only_lets_subs_vips_mods_and_the_broadcaster_speak(
    chatter: Chatter, passes: bool
) -> None:
    out = say(make_room(RoomModes(subscribers_only=True)), chatter, "hello", T0)
    if passes:
        assert_delivered(out)
    else:
        assert_refused(out, "msg_subsonly")


def test_emote_only_needs_the_whole_text_to_be_emotes() -> None:
    room = make_room(RoomModes(emote_only=True))
    assert_delivered(say(room, ALICE, "Kappa Keepo", T0, emotes="25:0-4/1902:6-10"))
    assert_refused(say(room, BOB, "Kappa lol", T0, emotes="25:0-4"), "msg_emoteonly")
    assert_refused(say(room, CAROL, "Kappa", T0), "msg_emoteonly")
    assert_delivered(say(room, MOD, "mods may type", T0))


def test_slow_mode_spaces_a_chatters_messages_and_exempts_mods_and_vips() -> None:
    room = make_room(RoomModes(slow_seconds=5))
    assert_delivered(say(room, ALICE, "one", T0))
    out = say(room, ALICE, "two", T0 + 1_000)
    assert_refused(out, "msg_slowmode")
    assert out.verdict is not None and "again in 4 seconds" in out.verdict.text
    assert_delivered(say(room, ALICE, "two", T0 + 5_000))
    for chatter in (MOD, VIP, OWNER):
        assert_delivered(say(room, chatter, "a", T0))
        assert_delivered(say(room, chatter, "b", T0 + 1))


def test_the_same_text_from_the_same_user_within_30_seconds_is_msg_duplicate() -> None:
    room = make_room()
    assert_delivered(say(room, ALICE, "same thing", T0))
    assert_refused(say(room, ALICE, "Same   THING", T0 + 29_999), "msg_duplicate")
    assert_delivered(say(room, BOB, "same thing", T0 + 1))
    assert_delivered(say(room, ALICE, "same thing", T0 + 30_000))
    assert_delivered(say(room, MOD, "again", T0))
    assert_delivered(say(room, MOD, "again", T0 + 1))


def test_r9k_refuses_a_text_already_said_in_the_room() -> None:
    room = make_room()
    assert_delivered(say(room, ALICE, "first!", T0))
    assert_done(say(room, MOD, "/r9kbeta", T0 + 1), "r9k_on")
    assert_refused(say(room, BOB, "FIRST!", T0 + 2), "msg_r9k")
    assert_delivered(say(room, BOB, "second!", T0 + 3))
    assert_delivered(say(room, MOD, "first!", T0 + 4))
    assert_delivered(say(room, CAROL, "first!", T0 + 600_004))


# -- commands ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["/ban bob", "/unban bob", "/timeout bob 5", "/untimeout bob", "/delete x", "/clear", "/slow 5", "/slowoff",
     "/subscribers", "/subscribersoff", "/emoteonly", "/emoteonlyoff", "/r9kbeta", "/r9kbetaoff", ".ban bob"],
)  # fmt: skip
def test_commands_from_others_than_mods_are_no_permission(text: str) -> None:
    room = make_room()
    for chatter in (ALICE, SUB, VIP):
        assert_refused(say(room, chatter, text, T0), "no_permission")
    assert room.snapshot(T0).restrictions == () and room.modes == RoomModes()


def test_an_unknown_command_is_unrecognized_cmd() -> None:
    assert_refused(say(make_room(), MOD, "/frobnicate now", T0), "unrecognized_cmd")


def test_ban_emits_a_permanent_clearchat_and_removes_the_users_lines() -> None:
    room = make_room()
    bob_line = say(room, BOB, "spam", T0).events[0].line
    alice = say(room, ALICE, "hi", T0 + 1)
    assert bob_line is not None
    out = say(room, MOD, "/ban @Bob being rude", T0 + 2)
    assert_done(out, "ban_success")
    assert out.verdict is not None and out.verdict.text == "bob is now banned from this channel."
    (event,) = out.events
    assert event.kind is EventKind.CLEARCHAT
    assert (event.target_login, event.target_user_id, event.duration_s) == ("bob", "2", 0)
    assert room.history(T0 + 2) == [alice.events[0].line]
    assert room.snapshot(T0 + 2).restrictions == (Restriction(login="bob", user_id="2", reason="being rude"),)
    assert_refused(say(room, MOD, "/ban bob", T0 + 3), "already_banned")


def test_unban_and_untimeout() -> None:
    room = make_room()
    assert_refused(say(room, MOD, "/unban bob", T0), "bad_unban_no_ban")
    assert_done(say(room, MOD, "/ban bob", T0), "ban_success")
    assert_refused(say(room, MOD, "/untimeout bob", T0), "bad_untimeout_banned")
    out = say(room, MOD, "/unban bob", T0)
    assert_done(out, "unban_success")
    assert out.events[0].kind is EventKind.UNBAN and out.events[0].target_login == "bob"
    assert_done(say(room, MOD, "/timeout bob 1m", T0), "timeout_success")
    assert_done(say(room, MOD, "/untimeout bob", T0), "untimeout_success")
    assert_refused(say(room, MOD, "/untimeout bob", T0), "bad_untimeout_no_timeout")
    assert_done(say(room, MOD, "/timeout bob", T0), "timeout_success")
    assert_done(say(room, MOD, "/unban bob", T0), "untimeout_success")  # /unban lifts a timeout too
    assert_delivered(say(room, BOB, "free", T0))


def test_timeout_duration_default_units_and_bounds() -> None:
    room = make_room()
    out = say(room, MOD, "/timeout bob", T0)
    assert out.events[0].duration_s == 600
    out = say(room, MOD, "/timeout carol 2h flooding the chat", T0)
    assert out.events[0].duration_s == 7200
    assert room.restriction("carol", T0) == Restriction(
        login="carol", until_ms=T0 + 7_200_000, reason="flooding the chat"
    )
    out = say(room, MOD, "/timeout alice being rude", T0)  # no duration: the default, the rest is the reason
    assert out.events[0].duration_s == 600
    assert_refused(say(room, MOD, "/timeout alice 0", T0), "bad_timeout_duration")
    assert_refused(say(room, MOD, "/timeout alice 3w", T0), "bad_timeout_duration")
    assert_refused(say(room, MOD, "/timeout", T0), "usage_timeout")
    assert_refused(say(room, MOD, "/timeout bad-name!", T0), "invalid_user")


def test_nobody_bans_themselves_mods_cannot_ban_the_broadcaster_or_mods_the_broadcaster_can() -> None:
    room = make_room()
    assert_delivered(say(room, MOD2, "i am a mod", T0))
    assert_refused(say(room, MOD, "/ban mod", T0), "bad_ban_self")
    assert_refused(say(room, MOD, "/timeout mod 5", T0), "bad_timeout_self")
    assert_refused(say(room, OWNER, "/ban demo", T0), "bad_ban_self")
    assert_refused(say(room, MOD, "/ban demo", T0), "bad_ban_broadcaster")
    assert_refused(say(room, MOD, "/timeout demo 5", T0), "bad_timeout_broadcaster")
    assert_refused(say(room, MOD, "/ban mod2", T0), "bad_ban_mod")
    assert_refused(say(room, MOD, "/timeout mod2 5", T0), "bad_timeout_mod")
    assert_done(say(room, OWNER, "/timeout mod2 5", T0), "timeout_success")


def test_delete_removes_one_line_and_respects_the_broadcaster_and_other_mods() -> None:
    room = make_room()
    bob = say(room, BOB, "oops", T0).events[0].line
    keep = say(room, ALICE, "fine", T0).events[0].line
    owner = say(room, OWNER, "owner's", T0).events[0].line
    mod2 = say(room, MOD2, "mod2's", T0).events[0].line
    assert bob is not None and owner is not None and mod2 is not None
    out = say(room, MOD, f"/delete {bob.id}", T0 + 1)
    assert_done(out, "delete_message_success")
    assert out.events[0].kind is EventKind.CLEARMSG and out.events[0].line == bob
    assert room.history(T0 + 1) == [keep, owner, mod2]
    assert_refused(say(room, MOD, f"/delete {bob.id}", T0 + 1), "bad_delete_message_error")
    assert_refused(say(room, MOD, f"/delete {owner.id}", T0 + 1), "bad_delete_message_broadcaster")
    assert_refused(say(room, MOD, f"/delete {mod2.id}", T0 + 1), "bad_delete_message_mod")
    assert_done(say(room, OWNER, f"/delete {mod2.id}", T0 + 1), "delete_message_success")
    assert_refused(say(room, MOD, "/delete", T0 + 1), "usage_delete")


def test_clear_empties_the_history_and_is_confirmed_by_the_clearchat_alone() -> None:
    room = make_room()
    say(room, ALICE, "a", T0)
    out = say(room, MOD, "/clear", T0 + 1)
    assert out.verdict is None
    (event,) = out.events
    assert event.kind is EventKind.CLEARCHAT and event.target_login == ""
    assert room.history(T0 + 1) == []


@pytest.mark.parametrize(
    ("on", "off", "field", "value", "on_id", "off_id"),
    [
        ("/slow 10", "/slowoff", "slow_seconds", 10, "slow_on", "slow_off"),
        ("/subscribers", "/subscribersoff", "subscribers_only", True, "subs_on", "subs_off"),
        ("/emoteonly", "/emoteonlyoff", "emote_only", True, "emote_only_on", "emote_only_off"),
        ("/r9kbeta", "/r9kbetaoff", "r9k", True, "r9k_on", "r9k_off"),
        ("/uniquechat", "/uniquechatoff", "r9k", True, "r9k_on", "r9k_off"),
    ],
)
def test_mode_commands_emit_roomstate_with_the_tmi_notice(
    on: str, off: str, field: str, value: object, on_id: str, off_id: str
) -> None:
    room = make_room()
    out = say(room, MOD, on, T0)
    assert_done(out, on_id)
    (event,) = out.events
    assert event.kind is EventKind.ROOMSTATE and event.modes == room.modes
    assert getattr(room.modes, field) == value
    assert changed_modes(RoomModes(), room.modes) == (field,)
    assert_refused(say(room, MOD, on, T0), "already_" + on_id.replace("slow_on", "slow_on"))
    assert_done(say(room, MOD, off, T0), off_id)
    assert room.modes == RoomModes()
    assert_refused(say(room, MOD, off, T0), "already_" + off_id)


def test_slow_without_an_argument_is_30_seconds_and_a_bad_one_is_usage() -> None:
    room = make_room()
    assert_done(say(room, MOD, "/slow", T0), "slow_on")
    assert room.modes.slow_seconds == 30
    assert_refused(say(room, MOD, "/slow abc", T0), "usage_slow_on")
    assert_refused(say(room, MOD, "/slow 0", T0), "usage_slow_on")


# -- operators ---------------------------------------------------------------------------------


def test_operators_can_ban_anyone_and_get_a_verdict() -> None:
    room = make_room()
    say(room, MOD, "hi", T0)
    out = room.moderate(
        Moderation(room="demo", action=ModerationAction.BAN, target_login="mod", reason="x"), T0
    )
    assert_done(out, "ban_success")
    assert out.verdict is not None and out.verdict.login == "operator" and out.verdict.submission_id == ""
    out = room.moderate(Moderation(room="demo", action=ModerationAction.SLOW, seconds=20), T0)
    assert_done(out, "slow_on")
    assert room.modes.slow_seconds == 20
    out = room.moderate(Moderation(room="demo", action=ModerationAction.TIMEOUT, target_login="bob"), T0)
    assert out.events[0].duration_s == 600


# -- replicas ----------------------------------------------------------------------------------


def test_a_replica_fed_the_events_has_the_same_snapshot_and_history() -> None:
    a, b = make_room(), make_room()
    inputs = [
        (ALICE, "hello"),
        (BOB, "spam"),
        (MOD, "/timeout bob 30"),
        (MOD, "/slow 3"),
        (CAROL, "hey"),
        (MOD, "/subscribers"),
    ]
    for i, (chatter, text) in enumerate(inputs):
        for event in say(a, chatter, text, T0 + i).events:
            b.apply(event)
    now = T0 + len(inputs)
    assert a.snapshot(now).modes == b.snapshot(now).modes
    assert [r.login for r in a.snapshot(now).restrictions] == [r.login for r in b.snapshot(now).restrictions]
    assert a.history(now) == b.history(now)
    # the replica also drops the retry of a message it learnt from the orderer
    line = a.history(now)[0]
    assert b.submit(sub(ALICE, "hello", id=line.id), now).duplicate


# -- bounds ------------------------------------------------------------------------------------


def test_history_keeps_100_lines_and_10_minutes() -> None:
    room = make_room()
    for i in range(150):
        say(room, Chatter(user_id=f"u{i}", login=f"user{i}"), f"m{i}", T0 + i)
    lines = room.history(T0 + 150)
    assert len(lines) == 100 and lines[0].text == "m50" and lines[-1].text == "m149"
    assert [ln.text for ln in room.history(T0 + 600_000 + 140)] == [f"m{i}" for i in range(140, 150)]


def test_per_user_state_is_capped_and_evicted_by_time() -> None:
    room = make_room(max_users=10)
    for i in range(50):
        say(room, Chatter(user_id=f"u{i}", login=f"user{i}"), "hi", T0)
    assert room.tracked_users == 10
    say(room, ALICE, "later", T0 + 30_000)
    assert room.tracked_users == 1


def test_dedup_memory_is_capped_and_evicted_by_time() -> None:
    room = make_room(max_seen=20)
    for i in range(50):
        say(room, Chatter(user_id=f"u{i}", login=f"user{i}"), "hi", T0, nonce=f"n{i}")
    assert room.tracked_ids == 20
    say(room, ALICE, "later", T0 + 300_000)
    assert room.tracked_ids == 1


# -- helpers -----------------------------------------------------------------------------------


def test_parse_duration_and_normalize_login() -> None:
    assert [parse_duration(s) for s in ("5", "30s", "10m", "1h", "2d", "1w", "x", "-1", "5y")] == [
        5, 30, 600, 3600, 172_800, 604_800, None, None, None,
    ]  # fmt: skip
    assert [normalize_login(s) for s in ("@Bob", "#carol", "bad name", "", "a" * 26)] == [
        "bob",
        "carol",
        "",
        "",
        "",
    ]


def test_emotes_cover() -> None:
    assert emotes_cover("Kappa", "25:0-4")
    assert emotes_cover("Kappa  Kappa", "25:0-4,7-11")
    assert not emotes_cover("Kappa x", "25:0-4")
    assert not emotes_cover("Kappa", "")
    assert not emotes_cover("Kappa", "25:0-9")  # out of range: malformed
    assert not emotes_cover("Kappa", "garbage")


# -- more edges --------------------------------------------------------------------------------


def test_tmi_js_command_shapes_are_understood() -> None:
    # tmi.js sends `/timeout USER SECONDS REASON` and `/ban USER REASON` with a trailing space when empty
    room = make_room()
    out = say(room, MOD, "/timeout bob 300 ", T0)
    assert_done(out, "timeout_success")
    assert out.events[0].duration_s == 300
    assert_done(say(room, MOD, "/ban carol ", T0), "ban_success")
    assert_done(say(room, MOD, "/unban carol", T0), "unban_success")
    line = say(room, ALICE, "bye", T0).events[0].line
    assert line is not None
    assert_done(say(room, MOD, f"/delete {line.id}", T0), "delete_message_success")


def test_a_dot_word_is_a_message_unless_it_names_a_command() -> None:
    room = make_room()
    assert_delivered(say(room, ALICE, ".net rocks", T0))
    assert_delivered(say(room, BOB, "... right", T0))
    assert_delivered(say(room, BOB, "/ not a command", T0 + 1))
    assert_refused(say(room, ALICE, ".ban bob", T0 + 1), "no_permission")
    assert_refused(say(room, ALICE, "/net rocks", T0 + 2), "unrecognized_cmd")
    assert_done(say(room, MOD, ".BAN bob", T0), "ban_success")


def test_me_without_text_is_usage_me() -> None:
    assert_refused(say(make_room(), ALICE, "/me", T0), "usage_me")
    assert_refused(say(make_room(), ALICE, "/me   ", T0), "usage_me")


def test_a_successful_command_retried_with_its_id_is_dropped_a_refused_one_is_decided_again() -> None:
    room = make_room()
    assert_done(say(room, MOD, "/ban bob", T0, id="c1"), "ban_success")
    assert say(room, MOD, "/ban bob", T0 + 1, id="c1").duplicate
    assert_refused(say(room, MOD, "/unban nobody", T0, id="c2"), "bad_unban_no_ban")
    assert_refused(say(room, MOD, "/unban nobody", T0 + 1, id="c2"), "bad_unban_no_ban")


def test_the_broadcaster_and_mods_delete_their_own_lines_operators_delete_anything() -> None:
    room = make_room()
    own = say(room, OWNER, "mine", T0).events[0].line
    mods = say(room, MOD, "mod's", T0).events[0].line
    other = say(room, MOD2, "mod2's", T0).events[0].line
    assert own is not None and mods is not None and other is not None
    assert_done(say(room, OWNER, f"/delete {own.id}", T0), "delete_message_success")
    assert_done(say(room, MOD, f"/delete {mods.id}", T0), "delete_message_success")
    out = room.moderate(Moderation(room="demo", action=ModerationAction.DELETE, target_msg_id=other.id), T0)
    assert_done(out, "delete_message_success")
    assert room.history(T0) == []


def test_a_message_too_old_for_the_history_cannot_be_deleted() -> None:
    room = make_room()
    line = say(room, ALICE, "old", T0).events[0].line
    assert line is not None
    assert_refused(say(room, MOD, f"/delete {line.id}", T0 + 600_001), "bad_delete_message_error")


def test_a_moderator_who_lost_the_role_can_be_banned_by_a_moderator() -> None:
    room = make_room()
    say(room, MOD2, "still a mod", T0)
    assert_refused(say(room, MOD, "/ban mod2", T0), "bad_ban_mod")
    say(room, Chatter(user_id="11", login="mod2"), "not any more", T0 + 1)
    out = say(room, MOD, "/ban mod2", T0 + 2)
    assert_done(out, "ban_success")
    assert out.events[0].target_user_id == "11"


def test_a_ban_target_never_seen_has_no_user_id_and_the_broadcaster_is_the_rooms_login() -> None:
    room = make_room()
    out = say(room, MOD, "/ban stranger", T0)
    assert out.events[0].target_user_id == ""
    assert_refused(say(room, MOD, "/ban @Demo", T0), "bad_ban_broadcaster")  # never seen, named by the room


def test_restrictions_from_the_snapshot_apply_and_expired_ones_lapse() -> None:
    room = make_room(
        restrictions=(
            Restriction(login="bob", until_ms=T0 + 5_000),
            Restriction(login="carol", until_ms=T0 - 1),
        )
    )
    assert room.snapshot(T0).restrictions == (Restriction(login="bob", until_ms=T0 + 5_000),)
    assert_refused(say(room, BOB, "hi", T0), "msg_timedout")
    assert_delivered(say(room, CAROL, "hi", T0))
    assert_delivered(say(room, BOB, "hi", T0 + 5_000))


def test_a_ban_replaces_a_timeout_and_a_timeout_does_not_weaken_a_ban() -> None:
    room = make_room()
    assert_done(say(room, MOD, "/timeout bob 10", T0), "timeout_success")
    assert_done(say(room, MOD, "/ban bob", T0), "ban_success")
    assert_refused(say(room, MOD, "/timeout bob 10", T0), "already_banned")
    assert room.restriction("bob", T0 + 3_600_000) == Restriction(login="bob", user_id="")
    assert_done(say(room, MOD, "/timeout carol 10", T0), "timeout_success")
    assert_done(say(room, MOD, "/timeout carol 20", T0 + 5_000), "timeout_success")  # a new timeout replaces
    assert room.restriction("carol", T0 + 5_000) == Restriction(login="carol", until_ms=T0 + 25_000)


def test_a_ban_removes_only_the_targets_lines_and_clear_removes_all() -> None:
    room = make_room()
    a = say(room, ALICE, "a", T0).events[0].line
    say(room, BOB, "b1", T0)
    say(room, BOB, "b2", T0 + 1)
    c = say(room, CAROL, "c", T0 + 2).events[0].line
    say(room, MOD, "/timeout bob 5", T0 + 3)
    assert room.history(T0 + 3) == [a, c]
    say(room, MOD, "/clear", T0 + 4)
    assert room.history(T0 + 4) == []


def test_apply_keeps_a_replica_in_step_with_each_kind_of_event() -> None:
    orderer, replica = make_room(), make_room()

    def both(out: Outcome) -> Outcome:
        for event in out.events:
            replica.apply(event)
        return out

    line = both(say(orderer, ALICE, "hello", T0)).events[0].line
    assert line is not None and replica.history(T0) == [line]
    both(say(orderer, MOD, "/emoteonly", T0))
    assert replica.modes == RoomModes(emote_only=True)
    both(say(orderer, MOD, "/timeout alice 60", T0 + 1))
    assert replica.restriction("alice", T0 + 1) == Restriction(
        login="alice", user_id="1", until_ms=T0 + 60_001
    )
    assert replica.history(T0 + 1) == []
    both(say(orderer, MOD, "/unban alice", T0 + 2))
    assert replica.restriction("alice", T0 + 2) is None
    bob = both(say(orderer, BOB, "Kappa", T0 + 3, emotes="25:0-4")).events[0].line
    both(say(orderer, MOD, f"/delete {bob.id if bob else ''}", T0 + 4))
    assert replica.history(T0 + 4) == []
    replica.apply(_gap(T0 + 5))  # nothing to keep: the bus resynchronises with a snapshot
    assert replica.modes == RoomModes(emote_only=True) and replica.history(T0 + 5) == []


def _gap(now: int) -> RoomEvent:
    return RoomEvent(room="demo", seq=7, kind=EventKind.GAP, time_ms=now)


def test_apply_counts_a_replicas_messages_towards_the_rate_limit() -> None:
    orderer, replica = make_room(), make_room()
    for i in range(20):
        for event in say(orderer, ALICE, f"m{i}", T0 + i).events:
            replica.apply(event)
    assert_refused(say(replica, ALICE, "one more", T0 + 100), "msg_ratelimit")


def test_load_history_seeds_history_dedup_and_the_duplicate_rule() -> None:
    orderer = make_room()
    lines = [ln for i in range(3) for ln in [say(orderer, ALICE, f"m{i}", T0 + i).events[0].line] if ln]
    replica = make_room()
    replica.load_history(lines)
    assert replica.history(T0 + 3) == lines
    assert replica.submit(sub(ALICE, "m2", id=lines[2].id), T0 + 3).duplicate
    assert_refused(say(replica, ALICE, "m2", T0 + 4), "msg_duplicate")


def test_inputs_for_another_room_are_refused_loudly() -> None:
    room = make_room()
    with pytest.raises(ValueError):
        room.submit(Submission(id="x", room="other", chatter=ALICE, text="hi", sent_ms=0), T0)
    with pytest.raises(ValueError):
        room.moderate(Moderation(room="other", action=ModerationAction.CLEAR), T0)
    with pytest.raises(ValueError):
        room.apply(RoomEvent(room="other", seq=1, kind=EventKind.GAP, time_ms=T0))


def test_operator_moderation_validates_its_arguments() -> None:
    room = make_room()

    def mod(
        action: ModerationAction, target_login: str = "", target_msg_id: str = "", seconds: int = 0
    ) -> Outcome:
        m = Moderation(
            room="demo",
            action=action,
            target_login=target_login,
            target_msg_id=target_msg_id,
            seconds=seconds,
        )
        return room.moderate(m, T0)

    assert_refused(mod(ModerationAction.BAN, target_login="bad name"), "invalid_user")
    assert_refused(mod(ModerationAction.TIMEOUT, target_login="bob", seconds=-5), "bad_timeout_duration")
    assert_refused(mod(ModerationAction.SLOW, seconds=100_000), "usage_slow_on")
    assert_refused(mod(ModerationAction.DELETE, target_msg_id="nope"), "bad_delete_message_error")
    assert_refused(mod(ModerationAction.UNBAN, target_login="bob"), "bad_unban_no_ban")
    assert_done(mod(ModerationAction.BAN, target_login="demo"), "ban_success")  # operators: anyone
    assert_done(mod(ModerationAction.CLEAR), "clear_success")
    for on, off, notice in [
        (ModerationAction.SUBSCRIBERS, ModerationAction.SUBSCRIBERSOFF, "subs"),
        (ModerationAction.EMOTEONLY, ModerationAction.EMOTEONLYOFF, "emote_only"),
        (ModerationAction.R9KBETA, ModerationAction.R9KBETAOFF, "r9k"),
    ]:
        assert_done(mod(on), f"{notice}_on")
        assert_done(mod(off), f"{notice}_off")
    assert_refused(mod(ModerationAction.SLOWOFF), "already_slow_off")


def test_changed_modes_names_what_differs() -> None:
    assert changed_modes(RoomModes(), RoomModes()) == ()
    assert changed_modes(RoomModes(), RoomModes(slow_seconds=5, r9k=True)) == ("slow_seconds", "r9k")
