"""HubBus before (or without) the hub: rooms are ordered by local replicas and nothing is lost silently."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import pytest

from edged.chat.hub_bus import HubBus
from edged.chat.model import (
    Chatter,
    EventKind,
    NoticeId,
    Submission,
)
from tests.unit.chat.recording_sink import RecordingSink

ALICE = Chatter(user_id="1", login="alice")


class NoHub:
    """A link that never has a session (an edge whose controller is down from the start)."""

    asked = 0

    async def chat_channel(self) -> grpc.aio.Channel:
        self.asked += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.fixture
async def bus() -> AsyncIterator[tuple[HubBus, RecordingSink]]:
    b, sink = HubBus(NoHub(), max_buffered=3), RecordingSink()
    await b.start(sink)
    yield b, sink
    await b.close()


def sub(n: int, chatter: Chatter = ALICE, room: str = "demo", text: str = "") -> Submission:
    return Submission(id=f"s{n}", room=room, chatter=chatter, text=text or f"message {n}", sent_ms=0)


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_rooms_are_ordered_here_while_the_hub_was_never_reached(bus: tuple[HubBus, RecordingSink]) -> None:
    b, sink = bus
    b.watch("demo")
    assert sink.snapshots == []  # never from inside the call
    await settle()
    assert [s.room for s in sink.snapshots] == ["demo"] and sink.histories == []
    b.submit(sub(1))
    b.submit(sub(2))
    assert sink.events == []
    await settle()
    assert [(e.kind, e.seq, e.local, e.line.id if e.line else "") for e in sink.events] == \
        [(EventKind.MESSAGE, 0, True, "s1"), (EventKind.MESSAGE, 0, True, "s2")]
    assert not b.connected and sink.states == []
    assert list(b._pending) == ["s1", "s2"]  # kept for the hub


async def test_refusals_answer_the_chatter_and_are_not_kept_for_the_hub(bus: tuple[HubBus, RecordingSink]) -> None:
    b, sink = bus
    b.watch("demo")
    b.submit(sub(1, Chatter(user_id="", login="justinfan5")))
    b.submit(sub(2, text="same text"))
    b.submit(sub(3, text="same text"))  # the replica's duplicate rule
    await settle()
    assert [v.notice_id for v in sink.verdicts] == [NoticeId.REQUIRES_LOGIN, NoticeId.DUPLICATE]
    assert list(b._pending) == ["s2"]


async def test_a_full_buffer_drops_the_oldest_with_a_log_line(bus: tuple[HubBus, RecordingSink],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    b, sink = bus
    b.watch("demo")
    with caplog.at_level(logging.WARNING, "edged.chat.hub"):
        for n in range(5):
            b.submit(sub(n))
    await settle()
    assert list(b._pending) == ["s2", "s3", "s4"]
    assert len(sink.events) == 5  # local members still saw every one
    assert sum("wait for the hub" in r.getMessage() for r in caplog.records) == 1  # rate-limited


async def test_a_room_not_watched_here_is_not_delivered_but_kept(bus: tuple[HubBus, RecordingSink]) -> None:
    b, sink = bus
    b.submit(sub(1, room="elsewhere"))
    b.watch("demo")
    b.unwatch("demo")
    await settle()
    assert sink.events == [] and sink.snapshots == []  # unwatched before the snapshot went out
    assert list(b._pending) == ["s1"]


async def test_close_stops_the_link_task() -> None:
    link = NoHub()
    b, sink = HubBus(link.chat_channel), RecordingSink()  # a bare channel source works too
    await b.start(sink)
    await settle()
    assert link.asked == 1
    await b.close()
    b.submit(sub(1))
    await settle()
    assert sink.events == []
