"""What every reader of the NATS chat stream shares (edged.chat.nats_stream): subjects back to rooms, one
record through the room's rules, and the checkpoint moments."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.chat.model import ChatLimits, Chatter, Moderation, ModerationAction, RoomSnapshot, Submission
from edged.chat.nats_stream import StreamLayout, changes_durable_state, checkpoint_due, decide_record
from edged.chat.nats_wire import WireError, encode_moderation, encode_submission, room_from_token, room_token
from edged.chat.room import Room

MOD = Chatter(user_id="10", login="mod", roles=frozenset({"moderator"}))
ALICE = Chatter(user_id="1", login="alice")


def room() -> Room:
    return Room(RoomSnapshot(room="demo", room_id="1"), ChatLimits())


@given(st.text(min_size=1, max_size=80))
def test_a_room_token_names_its_room_back(name: str) -> None:
    assert room_from_token(room_token(name)) == name


def test_tokens_no_room_has_are_refused() -> None:
    for token in ("", "=", "=zz", "=ff", "Demo", "a-b", "=64656d6f"):  # "=64656d6f" is demo's hex: not its token
        assert room_from_token(token) is None, token


def test_layout_subjects() -> None:
    layout = StreamLayout()
    assert layout.wildcard == "chat.room.*" and layout.bucket == "CHAT_ROOMS"
    assert layout.subject("demo") == "chat.room.demo" and layout.room_of("chat.room.demo") == "demo"
    assert layout.room_of(layout.subject("Big.Room")) == "Big.Room"
    assert layout.room_of("chat.other.demo") is None and layout.room_of("demo") is None
    assert StreamLayout(prefix="fleet2.chat").room_of("fleet2.chat.x") == "x"


def test_decide_record_runs_the_rules_and_says_what_is_durable() -> None:
    r = room()
    said = decide_record(r, encode_submission(Submission(id="1", room="demo", chatter=ALICE, text="hi",
                                                         sent_ms=0)), 1000)
    assert said.outcome.accepted and not said.durable
    ban = decide_record(r, encode_moderation(Moderation(room="demo", action=ModerationAction.BAN,
                                                        target_login="alice")), 2000)
    assert ban.durable and ban.outcome.verdict is not None and ban.outcome.verdict.notice_id == "ban_success"
    again = decide_record(r, encode_moderation(Moderation(room="demo", action=ModerationAction.BAN,
                                                          target_login="alice")), 3000)
    assert not again.durable and again.outcome.verdict is not None
    assert again.outcome.verdict.notice_id == "already_banned"
    clear = decide_record(r, encode_submission(Submission(id="2", room="demo", chatter=MOD, text="/clear",
                                                          sent_ms=0)), 4000)
    assert clear.outcome.accepted and not changes_durable_state(clear.outcome)  # /clear changes no ban
    slow = decide_record(r, encode_submission(Submission(id="3", room="demo", chatter=MOD, text="/slow 5",
                                                         sent_ms=0)), 5000)
    assert slow.durable and r.modes.slow_seconds == 5
    with pytest.raises(WireError):
        decide_record(r, b"{", 6000)


def test_checkpoint_moments() -> None:
    assert checkpoint_due(None, 5, 1000, False)  # the room's first record
    assert not checkpoint_due(1001, 1999, 1000, False)
    assert checkpoint_due(1999, 2000, 1000, False)  # a new bucket of JetStream time
    assert checkpoint_due(1500, 1501, 1000, True)  # a durable change
