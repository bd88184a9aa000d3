"""NatsBus against Debian's nats-server with JetStream: several buses ("edges") in one process, one real server."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from edged.chat.model import (
    ChatLimits,
    Chatter,
    EventKind,
    Moderation,
    ModerationAction,
    Submission,
)
from edged.chat.nats_bus import NatsBus, publish_moderation, publish_moderation_to
from edged.chat.nats_wire import decode_checkpoint, encode_submission
from tests.integration.chat.nats_server import NatsServer
from tests.unit.chat.recording_sink import RecordingSink

ROOM = "demo"
LIMITS = ChatLimits(messages_per_window=100_000, moderator_messages_per_window=100_000)
MOD = Chatter(user_id="10", login="mod", roles=frozenset({"moderator"}))
TROLL = Chatter(user_id="66", login="troll")


async def until(predicate: Callable[[], object], what: str, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s}s waiting for {what}")
        await asyncio.sleep(0.02)


def chatter(n: int) -> Chatter:
    return Chatter(user_id=str(1000 + n), login=f"user{n}")


def say(who: Chatter, text: str, room: str = ROOM) -> Submission:
    return Submission(id=str(uuid.uuid4()), room=room, chatter=who, text=text, sent_ms=int(time.time() * 1000))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    srv = NatsServer(tmp_path / "nats").start()
    try:
        yield srv
    finally:
        srv.stop()


class Fleet:
    """Started buses ("edges") on one server, each with its own RecordingSink; all closed when the test ends."""

    def __init__(self, server: NatsServer) -> None:
        self.server = server
        self.buses: list[NatsBus] = []
        self.sinks: dict[int, RecordingSink] = {}

    async def edge(self, node: str, **kw: Any) -> NatsBus:
        bus = NatsBus(self.server.url, node, LIMITS, reconnect_wait_s=0.2, heartbeat_s=1.0, **kw)
        self.sinks[id(bus)] = RecordingSink()
        await bus.start(self.sinks[id(bus)])
        self.buses.append(bus)
        return bus

    def sink(self, bus: NatsBus) -> RecordingSink:
        return self.sinks[id(bus)]

    async def watching(self, *buses: NatsBus, room: str = ROOM) -> list[RecordingSink]:
        sinks = [self.sink(b) for b in buses]
        for b in buses:
            b.watch(room)
        await until(lambda: all(any(r == room for r, _ in s.histories) and any(x.room == room for x in s.snapshots)
                                for s in sinks), "every edge to be live in the room")
        return sinks

    async def close(self) -> None:
        for bus in self.buses:
            await bus.close()


@pytest.fixture
async def fleet(server: NatsServer) -> AsyncIterator[Fleet]:
    f = Fleet(server)
    try:
        yield f
    finally:
        await f.close()


async def test_three_edges_deliver_the_same_sequence(fleet: Fleet) -> None:
    # the cross-edge check at the bus: 5,000 interleaved messages from 20 chatters on 3 edges
    buses = [await fleet.edge(f"edge-{x}") for x in "abc"]
    sinks = await fleet.watching(*buses)
    assert all(s.states[-1] for s in sinks) and all(b.connected for b in buses)
    sent: list[list[str]] = [[], [], []]
    for i in range(5000):
        edge = i % 3
        sub = say(chatter(i % 20), f"message {i} from edge {edge}")
        sent[edge].append(sub.id)
        buses[edge].submit(sub)
        if i % 50 == 0:
            await asyncio.sleep(0)
    total = sum(len(ids) for ids in sent)
    await until(lambda: all(len(s.messages()) >= total for s in sinks), "5,000 messages on every edge", 120)
    last = say(chatter(0), "sentinel")
    buses[0].submit(last)
    await until(lambda: all(s.ids()[-1:] == [last.id] for s in sinks), "the sentinel after them")
    orders = [[(e.seq, e.line.id if e.line else "") for e in s.messages()] for s in sinks]
    assert orders[0] == orders[1] == orders[2]
    ids = [i for _, i in orders[0]][:-1]
    assert sorted(ids) == sorted(i for edge in sent for i in edge) and len(set(ids)) == len(ids)
    seqs = [q for q, _ in orders[0]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] > 0
    assert all(not e.local for s in sinks for e in s.events)
    for edge in range(3):  # each edge's submissions kept their order in the room
        mine = set(sent[edge])
        assert [i for i in ids if i in mine] == sent[edge]
    assert all(not s.verdicts for s in sinks)


async def test_a_replayed_submission_is_stored_and_delivered_once(fleet: Fleet,
                                                                   server: NatsServer) -> None:
    a, b = await fleet.edge("edge-a"), await fleet.edge("edge-b")
    sa, sb = await fleet.watching(a, b)
    first = say(chatter(1), "hello once")
    a.submit(first)
    await until(lambda: first.id in sb.ids(), "the first copy on edge b")
    a.submit(first)  # the same submission again: a retry after a lost ack
    b.submit(first)  # and the same id through another edge
    last = say(chatter(2), "sentinel")
    a.submit(last)
    await until(lambda: last.id in sa.ids() and last.id in sb.ids(), "the sentinel everywhere")
    for s in (sa, sb):
        assert s.ids() == [first.id, last.id]
    # JetStream's duplicate window kept one record per id: the copies never reached the subject
    nc = await nats.connect(server.url)
    try:
        info = await nc.jetstream().stream_info("CHAT", subjects_filter="chat.room.demo")
        assert info.state.subjects == {"chat.room.demo": 2}
    finally:
        await nc.close()


async def test_a_ban_applies_on_every_edge(fleet: Fleet, server: NatsServer) -> None:
    a, b, c = [await fleet.edge(f"edge-{x}") for x in "abc"]
    sa, sb, sc = await fleet.watching(a, b, c)
    ban = say(MOD, "/ban troll spamming")
    a.submit(ban)
    await until(lambda: all(any(e.kind == EventKind.CLEARCHAT for e in s.events) for s in (sa, sb, sc)),
                "the CLEARCHAT everywhere")
    clears = [[e for e in s.events if e.kind == EventKind.CLEARCHAT] for s in (sa, sb, sc)]
    assert clears[0] == clears[1] == clears[2] and len(clears[0]) == 1
    assert clears[0][0].target_login == "troll" and clears[0][0].duration_s == 0 and clears[0][0].seq > 0
    await until(lambda: sa.verdicts, "the moderator's confirmation on edge a")
    assert [(v.ok, v.notice_id, v.submission_id) for v in sa.verdicts] == [(True, "ban_success", ban.id)]
    spam = say(TROLL, "buy followers")
    c.submit(spam)
    await until(lambda: sc.verdicts, "the banned chatter's refusal on edge c")
    assert [(v.ok, v.notice_id, v.login) for v in sc.verdicts] == [(False, "msg_banned", "troll")]
    # an operator lifts it (what the controller calls), and the troll speaks again, on every edge
    nc = await nats.connect(server.url)
    try:
        seq = await publish_moderation(nc.jetstream(), Moderation(room=ROOM, action=ModerationAction.UNBAN,
                                                                  target_login="troll"))
    finally:
        await nc.close()
    await until(lambda: all(any(e.kind == EventKind.UNBAN for e in s.events) for s in (sa, sb, sc)),
                "the UNBAN everywhere")
    assert {e.seq for s in (sa, sb, sc) for e in s.events if e.kind == EventKind.UNBAN} == {seq}
    sorry = say(TROLL, "sorry")
    b.submit(sorry)
    await until(lambda: all(sorry.id in s.ids() for s in (sa, sb, sc)), "the troll's message")
    assert spam.id not in sa.ids() + sb.ids() + sc.ids()
    assert [v.notice_id for v in sb.verdicts] == [] and len(sa.verdicts) == 1 and len(sc.verdicts) == 1
    assert [e.seq for e in sa.events] == [e.seq for e in sb.events] == [e.seq for e in sc.events]


async def test_degraded_while_nats_is_down_then_replayed_once(fleet: Fleet,
                                                               server: NatsServer) -> None:
    a, b = await fleet.edge("edge-a"), await fleet.edge("edge-b")
    sa, sb = await fleet.watching(a, b)
    before = say(chatter(1), "before the outage")
    a.submit(before)
    await until(lambda: before.id in sb.ids(), "a message before the outage")
    server.stop()
    await until(lambda: not a.connected and not b.connected and sa.states[-1] is False and sb.states[-1] is False,
                "both edges to see NATS gone")
    during = [say(chatter(2), f"during the outage {i}") for i in range(3)]
    for sub in during:
        a.submit(sub)
    await until(lambda: len(sa.messages()) == 4, "edge a's own chatters to see their messages locally")
    local = sa.messages()[1:]
    assert [e.line.id for e in local if e.line] == [s.id for s in during]
    assert all(e.local and e.seq == 0 for e in local)
    assert sb.ids() == [before.id]  # edge b cannot have them yet
    server.start()
    await until(lambda: a.connected and b.connected, "both edges back on NATS")
    await until(lambda: all(s.id in sb.ids() for s in during), "the buffered messages on edge b")
    after = say(chatter(3), "after the outage")
    b.submit(after)
    await until(lambda: after.id in sa.ids(), "a message after the outage on edge a")
    assert sb.ids() == [before.id, *(s.id for s in during), after.id]
    assert all(not e.local and e.seq > 0 for e in sb.messages())
    assert sa.ids() == [before.id, *(s.id for s in during), after.id]  # not delivered twice on a
    assert sa.states[-2:] == [False, True] and sb.states[-2:] == [False, True]
    assert len(sa.snapshots) >= 2  # resynced with the fleet's state once caught up
    nc = await nats.connect(server.url)
    try:
        info = await nc.jetstream().stream_info("CHAT", subjects_filter="chat.room.demo")
        assert info.state.subjects == {"chat.room.demo": 5}  # each buffered message stored once
    finally:
        await nc.close()


async def test_a_malformed_record_is_skipped_and_logged(fleet: Fleet, server: NatsServer,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edged.chat.nats_bus")
    a, b = await fleet.edge("edge-a"), await fleet.edge("edge-b")
    sa, sb = await fleet.watching(a, b)
    ok1 = say(chatter(1), "fine")
    a.submit(ok1)
    await until(lambda: ok1.id in sa.ids() and ok1.id in sb.ids(), "the first message")
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        for junk in (b"\xff\xfe not utf-8", b"{not json", b"[1, 2]", b'{"v": 2, "type": "submission"}',
                     b'{"v": 1, "type": "submission", "submission": {"id": 5}}',
                     encode_submission(say(chatter(9), "for another room", room="other"))):
            await js.publish("chat.room.demo", junk)
    finally:
        await nc.close()
    ok2 = say(chatter(2), "still fine")
    b.submit(ok2)
    await until(lambda: ok2.id in sa.ids() and ok2.id in sb.ids(), "the message after the junk")
    assert sa.ids() == sb.ids() == [ok1.id, ok2.id]
    assert [e.seq for e in sa.events] == [e.seq for e in sb.events]
    assert a.connected and b.connected
    assert any("skipped" in r.getMessage() and "not UTF-8" in r.getMessage() for r in caplog.records)


async def test_a_late_watcher_gets_the_state_and_the_same_events(fleet: Fleet) -> None:
    a, b = await fleet.edge("edge-a"), await fleet.edge("edge-b")
    sa, sb = await fleet.watching(a, b)
    said = [say(chatter(i), f"early {i}") for i in range(5)]
    for sub in said:
        a.submit(sub)
    b.submit(say(MOD, "/timeout troll 1h"))
    b.submit(say(MOD, "/slow 5"))
    await until(lambda: len(sa.events) == 7 and len(sb.events) == 7, "the early events")
    late = await fleet.edge("edge-late")
    (sl,) = await fleet.watching(late)
    snap = sl.snapshots[-1]
    assert snap.modes.slow_seconds == 5 and [r.login for r in snap.restrictions] == ["troll"]
    assert snap.room_id == a._room_id(ROOM)
    assert [ln.id for ln in sl.histories[0][1]] == [s.id for s in said]
    assert sl.events == []  # the past came as state and history, not as events
    now = say(chatter(7), "after the late watcher came")
    late.submit(now)
    await until(lambda: all(now.id in s.ids() for s in (sa, sb, sl)), "the new message everywhere")
    assert sl.events == sa.events[-1:] == sb.events[-1:]


async def test_a_late_watcher_starts_from_a_checkpoint(fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    # checkpoints only when a record changes bans or modes (buckets of an hour); the late watcher's clock
    # is two hours ahead, so every checkpoint is old enough and it starts from the newest, the ban's: the
    # ban comes from the checkpoint, and only the records after it are replayed
    caplog.set_level(logging.DEBUG, logger="edged.chat.nats_bus")
    a, b = [await fleet.edge(f"edge-{x}", checkpoint_s=3600.0) for x in "ab"]
    sa, sb = await fleet.watching(a, b)
    a.submit(say(chatter(1), "before the ban"))
    await until(lambda: sb.messages(), "the first message")
    b.submit(say(MOD, "/ban troll"))
    await until(lambda: len(sa.events) == 2 and len(sb.events) == 2, "the ban")
    ban_seq = sa.events[1].seq
    for i in range(2, 5):
        a.submit(say(chatter(i), f"after the ban {i}"))
    await until(lambda: len(sb.events) == 5, "the messages after the ban")
    nc = await nats.connect(fleet.server.url)
    try:  # the edges' checkpoint writes are their own business; wait until the ban's is in the bucket
        kv = await nc.jetstream().key_value("CHAT_ROOMS")

        async def newest() -> int:
            entry = await kv.get(ROOM)
            return decode_checkpoint(entry.value or b"").sseq

        deadline = time.monotonic() + 30
        while await newest() != ban_seq:
            assert time.monotonic() < deadline, "the ban's checkpoint was never written"
            await asyncio.sleep(0.05)
    finally:
        await nc.close()
    late = await fleet.edge("edge-late", checkpoint_s=3600.0, wall=lambda: time.time() + 7200)
    (sl,) = await fleet.watching(late)
    assert [r.login for r in sl.snapshots[-1].restrictions] == ["troll"]
    replays = [r.getMessage() for r in caplog.records if "replaying from stream sequence" in r.getMessage()]
    assert replays[-1].endswith(f"replaying from stream sequence {ban_seq + 1}")
    spam = say(TROLL, "hi")
    late.submit(spam)
    await until(lambda: sl.verdicts, "the troll refused on the late edge")
    assert sl.verdicts[0].notice_id == "msg_banned"


async def test_unreachable_at_start_orders_locally_then_joins(tmp_path: Path) -> None:
    srv = NatsServer(tmp_path / "nats")  # not started yet
    bus = NatsBus(srv.url, "edge-a", LIMITS, reconnect_wait_s=0.2, heartbeat_s=1.0, connect_grace_s=0.5)
    other = NatsBus(srv.url, "edge-b", LIMITS)
    sink, other_sink = RecordingSink(), RecordingSink()
    await bus.start(sink)
    try:
        bus.watch(ROOM)
        await until(lambda: sink.snapshots and sink.histories, "a local snapshot while NATS is unreachable")
        assert not bus.connected and sink.states == [False]
        sub = say(chatter(1), "nobody else hears this yet")
        bus.submit(sub)
        await until(lambda: sink.messages(), "the local copy")
        assert sink.messages()[0].local
        srv.start()
        await until(lambda: bus.connected, "the bus on NATS")
        await other.start(other_sink)
        other.watch(ROOM)
        await until(lambda: other_sink.histories, "edge b live")
        assert [ln.id for ln in other_sink.histories[0][1]] == [sub.id]  # published once NATS answered
        assert sink.ids() == [sub.id]
    finally:
        await other.close()
        await bus.close()
        srv.stop()


async def test_publish_moderation_to_with_its_own_connection(fleet: Fleet,
                                                             server: NatsServer) -> None:
    a = await fleet.edge("edge-a")
    (sa,) = await fleet.watching(a)
    await publish_moderation_to(server.url, Moderation(room=ROOM, action=ModerationAction.SLOW, seconds=10))
    await until(lambda: any(e.kind == EventKind.ROOMSTATE for e in sa.events), "the ROOMSTATE")
    (event,) = sa.events
    assert event.modes is not None and event.modes.slow_seconds == 10


async def test_the_outage_buffer_is_bounded(tmp_path: Path) -> None:
    srv = NatsServer(tmp_path / "nats")  # never started: NATS stays unreachable
    bus = NatsBus(srv.url, "edge-a", LIMITS, connect_grace_s=0.2, max_buffered=2)
    sink = RecordingSink()
    await bus.start(sink)
    try:
        bus.watch(ROOM)
        await until(lambda: sink.snapshots, "the local snapshot")
        subs = [say(chatter(i), f"kept {i}") for i in range(3)]
        for sub in subs:
            bus.submit(sub)
        await until(lambda: sink.verdicts, "the refusal past the buffer")
        assert [(v.submission_id, v.notice_id) for v in sink.verdicts] == [(subs[2].id, "msg_ratelimit")]
        assert sink.ids() == [subs[0].id, subs[1].id]  # not shown: it would never reach the room
    finally:
        await bus.close()


async def test_an_unwatched_room_is_no_longer_delivered(fleet: Fleet) -> None:
    a, b = await fleet.edge("edge-a"), await fleet.edge("edge-b")
    sa, sb = await fleet.watching(a, b)
    await fleet.watching(a, b, room="other")
    a.unwatch("other")
    gone = say(chatter(1), "in the other room", room="other")
    b.submit(gone)
    here = say(chatter(2), "in demo")
    b.submit(here)
    await until(lambda: here.id in sa.ids() and gone.id in sb.ids(), "both messages")
    assert gone.id not in sa.ids()
    assert {e.room for e in sb.events} == {ROOM, "other"} and {e.room for e in sa.events} == {ROOM}
