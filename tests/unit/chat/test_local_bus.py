"""The in-process ChatBus of a standalone edge: snapshot and history on watch, sequence per room, verdicts,
nothing delivered from inside a call, rooms forgotten only when nothing about them matters."""

from __future__ import annotations

import asyncio

from edged.chat.local_bus import LocalBus, room_id_for
from edged.chat.model import (
    ChatLimits,
    Chatter,
    EventKind,
    Moderation,
    ModerationAction,
    RoomSnapshot,
    Submission,
)
from tests.unit.chat.recording_sink import RecordingSink

ALICE = Chatter(user_id="u1", login="alice")
MOD = Chatter(user_id="u2", login="moddy", roles=frozenset({"moderator"}))


def _sub(i: int, text: str, who: Chatter = ALICE, room: str = "demo") -> Submission:
    return Submission(id=f"s{i}", room=room, chatter=who, text=text, sent_ms=0)


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_watch_gives_snapshot_then_history_later_not_inside_the_call() -> None:
    bus, sink = LocalBus(wall=lambda: 1000.0), RecordingSink()
    await bus.start(sink)
    assert sink.states == [True] and bus.connected
    bus.watch("demo")
    assert sink.snapshots == []
    await _settle()
    assert sink.snapshots == [RoomSnapshot(room="demo", room_id=room_id_for("demo"))]
    assert sink.histories == [("demo", [])]


async def test_messages_are_sequenced_per_room_and_come_back_as_events() -> None:
    bus, sink = LocalBus(wall=lambda: 1000.0), RecordingSink()
    await bus.start(sink)
    bus.watch("demo")
    bus.watch("other")
    for i, room in enumerate(["demo", "demo", "other", "demo"]):
        bus.submit(_sub(i, f"hello {i}", room=room))
    assert sink.events == []
    await _settle()
    assert [(e.room, e.seq) for e in sink.events] == [("demo", 1), ("demo", 2), ("other", 1), ("demo", 3)]
    assert all(e.kind is EventKind.MESSAGE and e.line is not None for e in sink.events)
    assert [e.line.id for e in sink.events if e.line] == ["s0", "s1", "s2", "s3"]
    # a new watcher of demo gets its history
    bus.unwatch("demo")
    bus.watch("demo")
    await _settle()
    assert [line.text for line in sink.histories[-1][1]] == ["hello 0", "hello 1", "hello 3"]


async def test_refusals_and_command_answers_are_verdicts() -> None:
    bus, sink = LocalBus(ChatLimits(messages_per_window=1), wall=lambda: 1000.0), RecordingSink()
    await bus.start(sink)
    bus.watch("demo")
    bus.submit(_sub(1, "one"))
    bus.submit(_sub(2, "two"))
    bus.submit(_sub(3, "/ban alice", who=MOD))
    await _settle()
    assert [v.notice_id for v in sink.verdicts] == ["msg_ratelimit", "ban_success"]
    assert sink.verdicts[0].submission_id == "s2" and not sink.verdicts[0].ok
    assert [e.kind for e in sink.events] == [EventKind.MESSAGE, EventKind.CLEARCHAT]


async def test_an_unwatched_room_keeps_its_bans_and_forgets_otherwise() -> None:
    bus, sink = LocalBus(wall=lambda: 1000.0), RecordingSink()
    await bus.start(sink)
    bus.watch("kept")
    bus.watch("gone")
    await _settle()
    bus.moderate(Moderation(room="kept", action=ModerationAction.BAN, target_login="troll"))
    await _settle()
    bus.unwatch("kept")
    bus.unwatch("gone")
    bus.watch("kept")
    bus.watch("gone")
    await _settle()
    kept = [s for s in sink.snapshots if s.room == "kept"][-1]
    assert [r.login for r in kept.restrictions] == ["troll"]
    gone = [s for s in sink.snapshots if s.room == "gone"][-1]
    assert gone.restrictions == ()


def test_room_ids_are_stable_numbers() -> None:
    assert room_id_for("demo") == room_id_for("demo") != room_id_for("other")
    assert room_id_for("demo").isdigit()
