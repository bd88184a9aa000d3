"""The NATS chat bus's records and checkpoints (edged.chat.nats_wire), and its choice of checkpoint."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.chat.model import (
    ChatLimits,
    Chatter,
    Moderation,
    ModerationAction,
    Restriction,
    RoomModes,
    RoomSnapshot,
    Submission,
)
from edged.chat.nats_checkpoints import SKEW_MS, choose_checkpoint, replay_window_ms
from edged.chat.nats_wire import (
    Checkpoint,
    WireError,
    decode_checkpoint,
    decode_record,
    encode_checkpoint,
    encode_moderation,
    encode_submission,
    room_token,
)

ALICE = Chatter(user_id="1", login="alice", display_name="Alice", roles=frozenset({"subscriber", "vip"}),
                color="#FF0000")
SUB = Submission(id="b9f1c2", room="demo", chatter=ALICE, text="héllo \x01ACTION waves\x01", sent_ms=1_700_000_000_123,
                 origin_node="edge-a", client_nonce="n-1", emotes="25:0-4")


def test_a_submission_round_trips() -> None:
    assert decode_record(encode_submission(SUB), "demo") == SUB


def test_a_moderation_round_trips() -> None:
    mod = Moderation(room="demo", action=ModerationAction.TIMEOUT, target_login="troll", seconds=600,
                     reason="spam", actor="operator")
    assert decode_record(encode_moderation(mod), "demo") == mod


def test_encoding_is_canonical() -> None:
    assert encode_submission(SUB) == encode_submission(SUB)
    assert json.loads(encode_submission(SUB))["submission"]["chatter"]["roles"] == ["subscriber", "vip"]


def test_unknown_roles_are_dropped() -> None:
    obj = json.loads(encode_submission(SUB))
    obj["submission"]["chatter"]["roles"] = ["moderator", "admin"]
    rec = decode_record(json.dumps(obj).encode(), "demo")
    assert isinstance(rec, Submission) and rec.chatter.roles == frozenset({"moderator"})


def _mutated(path: tuple[str, ...], value: object) -> bytes:
    obj = json.loads(encode_submission(SUB))
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{nope", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"v": 2, "type": "submission"}', "unknown version"),
        (b'{"v": 1, "type": "gossip"}', "unknown record type"),
        (b'{"v": 1, "type": "submission", "submission": 5}', "submission: not an object"),
        (_mutated(("submission", "id"), 5), "id: not a string"),
        (_mutated(("submission", "id"), ""), "id: empty"),
        (_mutated(("submission", "sent_ms"), True), "sent_ms: not an integer"),
        (_mutated(("submission", "sent_ms"), 2**70), "sent_ms: out of range"),
        (_mutated(("submission", "chatter", "login"), ""), "login: empty"),
        (_mutated(("submission", "chatter", "roles"), "moderator"), "roles: not a list"),
        (_mutated(("submission", "text"), "x" * 5000), "text: longer than"),
        (_mutated(("submission", "room"), "other"), "record for room 'other'"),
        (b'{"v": 1, "type": "moderation", "moderation": {"room": "demo", "action": "nuke", "actor": "op"}}',
         "unknown 'nuke'"),
        (b" " * 70_000, "bytes (limit"),
    ],
)
def test_malformed_records_are_wire_errors(data: bytes, reason: str) -> None:
    with pytest.raises(WireError) as err:
        decode_record(data, "demo")
    assert reason in err.value.reason


@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_wire_error(data: bytes) -> None:
    try:
        decode_record(data, "demo")
    except WireError:
        pass


@given(st.dictionaries(st.sampled_from(["v", "type", "submission", "moderation"]),
                       st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.none(),
                                 st.dictionaries(st.text(max_size=12), st.one_of(st.integers(), st.text(max_size=5),
                                                                                  st.lists(st.integers()))))))
def test_random_json_never_raises_anything_but_wire_error(obj: dict[str, object]) -> None:
    try:
        decode_record(json.dumps(obj).encode(), "demo")
    except WireError:
        pass


def test_room_tokens() -> None:
    assert room_token("demo_1") == "demo_1"
    assert room_token("Demo") == "=44656d6f"
    assert room_token("a.b") == "=612e62"
    assert room_token("a*b >") == "=612a62203e"
    assert room_token("Demo") != room_token("demo")
    assert room_token("x" * 65).startswith("=")


SNAP = RoomSnapshot(room="demo", room_id="4242", modes=RoomModes(slow_seconds=30, r9k=True),
                    restrictions=(Restriction(login="troll", user_id="66", until_ms=0, reason="spam"),
                                  Restriction(login="t2", until_ms=1_700_000_600_000)))


def test_a_checkpoint_round_trips() -> None:
    c = Checkpoint(sseq=42, time_ms=1_700_000_000_000, snapshot=SNAP)
    assert decode_checkpoint(encode_checkpoint(c)) == c


@pytest.mark.parametrize("data", [b'{"v": 9}', b'{"v": 1, "sseq": 0, "time_ms": 1, "snapshot": {}}', b"null",
                                  b'{"v": 1, "sseq": 3, "time_ms": 1, "snapshot": {"room": "demo", "modes": 1}}'])
def test_bad_checkpoints_are_wire_errors(data: bytes) -> None:
    with pytest.raises(WireError):
        decode_checkpoint(data)


# --- which checkpoint a new watcher replays from ------------------------------------------------------

LIMITS = ChatLimits()  # longest window: history and r9k, 600 s
NOW = 1_700_000_000_000


def _at(sseq: int, age_s: float, slow: int = 0) -> Checkpoint:
    snap = RoomSnapshot(room="demo", room_id="1", modes=RoomModes(slow_seconds=slow))
    return Checkpoint(sseq=sseq, time_ms=NOW - int(age_s * 1000), snapshot=snap)


def test_the_replay_window_covers_every_rule_window() -> None:
    assert replay_window_ms(LIMITS) == 600_000 + SKEW_MS
    assert replay_window_ms(LIMITS, slow_seconds=1800) == 1_800_000 + SKEW_MS
    assert replay_window_ms(ChatLimits(history_seconds=60, r9k_seconds=60, nonce_seconds=900)) == 900_000 + SKEW_MS


def test_the_newest_checkpoint_old_enough_is_chosen() -> None:
    entries = [_at(10, 3600), _at(20, 700), _at(30, 631), _at(40, 600), _at(50, 5)]
    assert choose_checkpoint(entries, NOW, LIMITS, complete=True) == entries[2]


def test_slow_mode_longer_than_the_windows_asks_for_an_older_one() -> None:
    entries = [_at(10, 3600, slow=1800), _at(20, 700, slow=1800)]
    assert choose_checkpoint(entries, NOW, LIMITS, complete=True) == entries[0]


def test_a_young_room_replays_from_its_first_record() -> None:
    assert choose_checkpoint([_at(5, 10), _at(9, 1)], NOW, LIMITS, complete=True) is None
    assert choose_checkpoint([], NOW, LIMITS, complete=True) is None


def test_when_older_checkpoints_were_dropped_the_oldest_kept_one_is_used() -> None:
    entries = [_at(5, 10), _at(9, 1)]
    assert choose_checkpoint(entries, NOW, LIMITS, complete=False) == entries[0]
