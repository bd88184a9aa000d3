"""The controller's NATS chat mode without a NATS server: [chat] bus/nats_url, the store's NATS chat tables, and
the follower fed records by hand (what it decides, stores, answers, evicts and checkpoints)."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from nats.aio.msg import Msg

from edged.chat.model import (
    ChatLimits,
    Chatter,
    Moderation,
    ModerationAction,
    Restriction,
    RoomModes,
    Submission,
)
from edged.chat.nats_checkpoints import replay_window_ms
from edged.chat.nats_wire import encode_moderation, encode_submission
from originctl.config import load_serve
from originctl.errors import ConfigError
from originctl.metrics import ControllerMetrics
from originctl.model import ChatNatsState, ChatRoomRecord
from originctl.server.app import Controller
from originctl.server.chat_nats import NatsChatFollower, _Pending, redact
from originctl.server.store import SqliteStore

T0_MS = 1_800_000_000_000
MOD = Chatter(user_id="10", login="mod", roles=frozenset({"moderator"}))
ALICE = Chatter(user_id="1", login="alice")


def test_chat_bus_config(tmp_path: Path) -> None:
    cfg_file = tmp_path / "origin.toml"
    cfg_file.write_text('[chat]\nbus = "nats"\nnats_url = "tls://user:secret@nats.example.net:4222"\n')
    cfg = load_serve(str(cfg_file), {})
    assert cfg.chat.bus == "nats" and cfg.chat.nats_url == "tls://user:secret@nats.example.net:4222"
    assert Controller(cfg).chat_nats is not None
    cfg_file.write_text("")
    assert load_serve(str(cfg_file), {}).chat.bus == "hub" and Controller(load_serve(None, {})).chat_nats is None
    for bad, key in (('[chat]\nbus = "kafka"\n', "chat.bus"),
                     ('[chat]\nbus = "nats"\nnats_url = "http://x:4222"\n', "chat.nats_url"),
                     ('[chat]\nbus = "nats"\nnats_url = "nats://x"\n', "chat.nats_url"),
                     ('[chat]\nbus = "nats"\nnats_url = "nats://:4222"\n', "chat.nats_url"),
                     ('[chat]\nbus = "nats"\nnats_url = "nats://x:99999"\n', "chat.nats_url"),
                     ('[chat]\nbus = "nats"\nnats_url = "nats://x:4222/path"\n', "chat.nats_url"),
                     ('[chat]\nbus = "nats"\nnats_url = 4222\n', "chat.nats_url")):
        cfg_file.write_text(bad)
        with pytest.raises(ConfigError, match=key) as err:
            load_serve(str(cfg_file), {})
        assert "secret" not in str(err.value)
    cfg_file.write_text('[chat]\nnats_url = "not checked unless the bus is nats"\n')
    load_serve(str(cfg_file), {})


def test_redact() -> None:
    assert redact("nats://u:pw@h:4222") == "nats://u:***@h:4222"
    assert redact("tls://h:4222") == "tls://h:4222"


def test_pending_changes_merge_back_newest_first() -> None:
    older, newer = _Pending(), _Pending()
    older.restrict("demo", Restriction("a"))
    older.restrict("demo", Restriction("b"))
    older.lift("demo", "c")
    older.rooms["demo"] = None
    newer.lift("demo", "a")  # unbanned after the batch that failed
    newer.restrict("demo", Restriction("c", until_ms=5))
    newer.merge_older(older)
    assert set(newer.upsert) == {("demo", "b"), ("demo", "c")} and newer.delete == {("demo", "a")}
    assert newer.upsert[("demo", "c")].until_ms == 5 and list(newer.rooms) == ["demo"]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "origin.db")
    await s.open()
    yield s
    await s.close()


async def test_store_keeps_the_nats_chat_state_apart_from_the_hubs(store: SqliteStore) -> None:
    assert await store.load_chat_nats("CHAT", T0_MS) == ChatNatsState()
    await store.save_chat_nats(
        "CHAT", ChatNatsState(next_sseq=42, time_ms=T0_MS, stream_created_ms=7),
        [ChatRoomRecord(room="demo", room_id="9", modes=RoomModes(slow_seconds=5), seq=41)],
        [("demo", Restriction("troll", user_id="66", reason="spam")), ("demo", Restriction("carl", until_ms=T0_MS + 10))],
        [], T0_MS)
    state = await store.load_chat_nats("CHAT", T0_MS)
    assert (state.next_sseq, state.time_ms, state.stream_created_ms) == (42, T0_MS, 7)
    (room,) = state.rooms
    assert (room.room, room.room_id, room.modes.slow_seconds, room.seq) == ("demo", "9", 5, 41)
    assert [(r.login, r.user_id, r.until_ms, r.reason) for r in room.restrictions] == [
        ("carl", "", T0_MS + 10, ""), ("troll", "66", 0, "spam")]
    assert await store.list_chat_rooms(T0_MS) == []  # the hub's tables know nothing of it
    assert (await store.load_chat_nats("OTHER", T0_MS)).rooms == ()
    await store.save_chat_nats("CHAT", ChatNatsState(next_sseq=43, time_ms=T0_MS + 1), [], [], [("demo", "troll")],
                               T0_MS + 1)
    state = await store.load_chat_nats("CHAT", T0_MS + 10)  # carl's timeout lapsed: gone
    assert state.next_sseq == 43 and state.rooms[0].restrictions == ()


def msg(sseq: int, time_ms: int, data: bytes, room: str = "demo", subject: str = "") -> Msg:
    meta = SimpleNamespace(sequence=SimpleNamespace(stream=sseq),
                           timestamp=datetime.datetime.fromtimestamp(time_ms / 1000, tz=datetime.UTC))
    return cast(Msg, SimpleNamespace(metadata=meta, subject=subject or f"chat.room.{room}", data=data))


def sub(who: Chatter, text: str, room: str = "demo") -> bytes:
    return encode_submission(Submission(id=str(uuid.uuid4()), room=room, chatter=who, text=text, sent_ms=0))


def mod(action: ModerationAction, login: str = "", room: str = "demo", **kw: Any) -> bytes:
    return encode_moderation(Moderation(room=room, action=action, target_login=login, **kw))


def follower(store: SqliteStore, **kw: Any) -> NatsChatFollower:
    return NatsChatFollower("nats://127.0.0.1:1", store, ControllerMetrics(), ChatLimits(), **kw)


async def test_records_decide_count_answer_and_store(store: SqliteStore) -> None:
    f = follower(store)
    await f.load()
    f._on_message(msg(1, T0_MS, sub(ALICE, "hi")))
    f._on_message(msg(2, T0_MS + 1, sub(MOD, "/timeout alice 60 calm")))
    f._on_message(msg(3, T0_MS + 2, sub(ALICE, "let me talk")))
    f._on_message(msg(4, T0_MS + 3, mod(ModerationAction.BAN, "troll", reason="spam")))
    f._on_message(msg(5, T0_MS + 4, mod(ModerationAction.BAN, "troll")))
    f._on_message(msg(6, T0_MS + 5, b"garbage"))
    f._on_message(msg(7, T0_MS + 6, sub(ALICE, "x"), subject="chat.room.=zz"))
    f._on_message(msg(3, T0_MS + 2, sub(ALICE, "a copy the consumer delivered again")))
    counts = {r: f.metrics.registry.get_sample_value("originctl_chat_messages_total", {"result": r})
              for r in ("accepted", "refused", "command", "duplicate", "malformed")}
    assert counts == {"accepted": 1, "refused": 1, "command": 1, "duplicate": 0, "malformed": 2}
    assert f.next_sseq == 8
    assert (await f._applied(4)).verdict.notice_id == "ban_success"  # type: ignore[union-attr]
    assert (await f._applied(5)).verdict.notice_id == "already_banned"  # type: ignore[union-attr]
    assert await f._applied(6) is None
    view = f.view("demo")
    assert [(r.login, r.until_ms, r.reason) for r in view.restrictions] == [
        ("alice", T0_MS + 1 + 60_000, "calm"), ("troll", 0, "spam")]
    assert view.head_seq == 6
    await f._flush_once()
    state = await store.load_chat_nats("CHAT", T0_MS)
    assert state.next_sseq == 8 and state.time_ms == T0_MS + 6 and f.stored_next_sseq == 8
    assert [r.login for r in state.rooms[0].restrictions] == ["alice", "troll"] and state.rooms[0].seq == 6

    again = follower(store)  # a restart: the same state, the same position
    await again.load()
    assert again.next_sseq == 8 and again.view("demo").restrictions == view.restrictions
    again._on_message(msg(8, T0_MS + 7, mod(ModerationAction.UNBAN, "troll")))
    assert (await again._applied(8)).verdict.notice_id == "unban_success"  # type: ignore[union-attr]
    assert [r.login for r in again.view("demo").restrictions] == ["alice"]


async def test_idle_rooms_keep_their_state_only_and_come_back(store: SqliteStore) -> None:
    f = follower(store, idle_s=60.0, max_rooms=2)
    await f.load()
    f._on_message(msg(1, T0_MS, mod(ModerationAction.SLOW, room="a", seconds=5), "a"))
    f._on_message(msg(2, T0_MS, mod(ModerationAction.BAN, "x", room="b"), "b"))
    f._on_message(msg(3, T0_MS, sub(ALICE, "hi", room="c"), "c"))  # past max_rooms: a, the least recent, goes
    assert list(f._rooms) == ["b", "c"] and f._idle["a"].modes.slow_seconds == 5
    f._on_message(msg(4, T0_MS + 61_000, sub(ALICE, "later", room="c"), "c"))  # b idle for a minute
    assert list(f._rooms) == ["c"] and [r.login for r in f.view("b").restrictions] == ["x"]
    assert f.view("b").head_seq == 2
    f._on_message(msg(5, T0_MS + 62_000, mod(ModerationAction.BAN, "x", room="b"), "b"))  # b back, with its ban
    assert (await f._applied(5)).verdict.notice_id == "already_banned"  # type: ignore[union-attr]


async def test_checkpoints_wait_for_a_replay_window_after_a_restart(store: SqliteStore) -> None:
    f = follower(store)
    await f.store.save_chat_nats("CHAT", ChatNatsState(next_sseq=10, time_ms=T0_MS), [], [], [], T0_MS)
    await f.load()
    f._followed = True  # as _follow leaves it when resuming at a stored position
    window = replay_window_ms(ChatLimits())
    f._on_message(msg(10, T0_MS, mod(ModerationAction.BAN, "x")))
    assert f._checkpoints == {}
    f._on_message(msg(11, T0_MS + window, mod(ModerationAction.BAN, "y")))
    assert f._checkpoints["demo"].sseq == 11
    fresh = follower(store)
    fresh._warm = True  # from the stream's first record: checkpoints at once
    fresh._on_message(msg(1, T0_MS, mod(ModerationAction.BAN, "x")))
    assert fresh._checkpoints["demo"].sseq == 1
