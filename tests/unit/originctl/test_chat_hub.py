"""The controller's chat hub with a real SQLite store: order, fan-out, verdicts, resume, persistence, bounds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edged.chat.model import (
    Chatter,
    EventKind,
    Moderation,
    ModerationAction,
    NoticeId,
    Restriction,
    RoomModes,
    Submission,
    Verdict,
)
from originctl.errors import UsageError
from originctl.metrics import ControllerMetrics
from originctl.server.chat_hub import (
    SEQ_BLOCK,
    ChatHub,
    DroppedItem,
    HistoryItem,
    HubSession,
    OutItem,
    SnapshotItem,
    Stamped,
)
from originctl.server.store import SqliteStore

T0 = 1_800_000_000.0  # wall clock, s

ALICE = Chatter(user_id="1", login="alice", display_name="Alice")
BOB = Chatter(user_id="2", login="bob")
MOD = Chatter(user_id="3", login="mia", roles=frozenset({"moderator"}))


class Clock:
    def __init__(self) -> None:
        self.wall = T0
        self.mono = 100.0

    def advance(self, s: float) -> None:
        self.wall += s
        self.mono += s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "origin.db")
    await s.open()
    yield s
    await s.close()


def make_hub(store: SqliteStore, clock: Clock, **kw: int) -> ChatHub:
    return ChatHub(store, ControllerMetrics(), wall=lambda: clock.wall, monotonic=lambda: clock.mono, **kw)


_n = 0


def sub(chatter: Chatter, text: str, room: str = "demo", sub_id: str = "", nonce: str = "") -> Submission:
    global _n
    _n += 1
    return Submission(id=sub_id or f"id-{_n}", room=room, chatter=chatter, text=text, sent_ms=int(T0 * 1000),
                      client_nonce=nonce)


def events(items: list[OutItem]) -> list[Stamped]:
    return [i for i in items if isinstance(i, Stamped)]


def texts(items: list[OutItem]) -> list[str]:
    return [i.event.line.text for i in events(items) if i.event.line is not None]


async def test_two_edges_in_a_room_get_the_same_events_with_the_same_seqs(store: SqliteStore, clock: Clock) -> None:
    hub = make_hub(store, clock)
    a, b, c = hub.attach("nd-a"), hub.attach("nd-b"), hub.attach("nd-c")
    hub.watch(a, "demo", None)
    hub.watch(b, "demo", None)
    hub.watch(c, "other", None)
    for s in (a, b, c):
        first = s.take_nowait()
        assert [type(i) for i in first] == [SnapshotItem, HistoryItem]
    hub.submit(a, sub(ALICE, "hello", sub_id="m1"))
    hub.submit(b, sub(BOB, "hi there", sub_id="m2"))
    hub.submit(a, sub(ALICE, "again", sub_id="m3"))
    got_a, got_b = a.take_nowait(), b.take_nowait()
    assert [(s.event.seq, s.event.line.id if s.event.line else "") for s in events(got_a)] == \
        [(1, "m1"), (2, "m2"), (3, "m3")]
    assert [(s.event.seq, s.cause_id) for s in events(got_a)] == [(s.event.seq, s.cause_id) for s in events(got_b)]
    assert events(got_a)[1].event.line.origin_node == ""  # the service stamps the origin; the hub keeps it
    assert c.take_nowait() == []  # fan-out only to edges watching the room


async def test_a_refusal_goes_to_the_submitting_edge_only(store: SqliteStore, clock: Clock) -> None:
    hub = make_hub(store, clock)
    a, b = hub.attach("nd-a"), hub.attach("nd-b")
    hub.watch(a, "demo", None)
    hub.watch(b, "demo", None)
    a.take_nowait(), b.take_nowait()
    hub.submit(a, sub(Chatter(user_id="", login="justinfan1"), "anon"))
    [verdict] = a.take_nowait()
    assert isinstance(verdict, Verdict) and not verdict.ok and verdict.notice_id == NoticeId.REQUIRES_LOGIN
    assert b.take_nowait() == []


async def test_a_moderators_command_fans_out_and_confirms_to_the_sender(store: SqliteStore, clock: Clock) -> None:
    hub = make_hub(store, clock)
    a, b = hub.attach("nd-a"), hub.attach("nd-b")
    hub.watch(a, "demo", None)
    hub.watch(b, "demo", None)
    a.take_nowait(), b.take_nowait()
    hub.submit(b, sub(BOB, "spam"))
    hub.submit(a, sub(MOD, "/timeout bob 60 spamming", sub_id="cmd"))
    got_a, got_b = a.take_nowait(), b.take_nowait()
    clear = [s for s in events(got_b) if s.event.kind is EventKind.CLEARCHAT]
    assert len(clear) == 1 and clear[0].event.target_login == "bob" and clear[0].event.duration_s == 60
    assert clear[0].cause_id == "cmd"
    assert not any(isinstance(i, Verdict) for i in got_b)
    [confirm] = [i for i in got_a if isinstance(i, Verdict)]
    assert confirm.ok and confirm.notice_id == "timeout_success"
    hub.submit(b, sub(BOB, "still here?"))
    [refused] = b.take_nowait()
    assert isinstance(refused, Verdict) and refused.notice_id == NoticeId.TIMEDOUT


async def test_a_replayed_submission_is_dropped_and_only_its_edge_is_told(store: SqliteStore, clock: Clock) -> None:
    hub = make_hub(store, clock)
    a, b = hub.attach("nd-a"), hub.attach("nd-b")
    hub.watch(a, "demo", None)
    hub.watch(b, "demo", None)
    a.take_nowait(), b.take_nowait()
    s = sub(ALICE, "once", sub_id="same")
    hub.submit(a, s)
    hub.submit(a, s)
    got = a.take_nowait()
    assert texts(got) == ["once"]
    assert got[-1] == DroppedItem("same", "demo")
    assert texts(b.take_nowait()) == ["once"]


async def test_resume_from_the_ring_then_a_snapshot_or_a_gap(store: SqliteStore, clock: Clock) -> None:
    hub = make_hub(store, clock, resume_events=3)
    a = hub.attach("nd-a")
    hub.watch(a, "demo", None)
    a.take_nowait()
    for i in range(5):
        hub.submit(a, sub(ALICE if i % 2 else BOB, f"line {i}"))
    assert [s.event.seq for s in events(a.take_nowait())] == [1, 2, 3, 4, 5]
    hub.detach(a)
    again = hub.attach("nd-a")
    hub.watch(again, "demo", 3)  # the ring holds 3..5
    got = again.take_nowait()
    assert [s.event.seq for s in events(got)] == [4, 5]
    assert isinstance(got[-1], SnapshotItem) and got[-1].head_seq == 5
    hub.watch(again, "demo", 5)  # nothing missed
    got = again.take_nowait()
    assert events(got) == [] and isinstance(got[0], SnapshotItem)
    hub.watch(again, "demo", 1)  # 2 is gone: a gap up to the ring's start, what the ring holds, the snapshot
    got = again.take_nowait()
    gap, *held = events(got)
    assert gap.event.kind is EventKind.GAP and gap.event.seq == 2
    assert [s.event.seq for s in held] == [3, 4, 5]
    assert isinstance(got[-1], SnapshotItem)
    hub.watch(again, "demo", 9)  # ahead of the hub (a hub that lost numbers): a gap too
    assert events(again.take_nowait())[0].event.kind is EventKind.GAP


async def test_history_on_a_fresh_watch_leaves_out_moderated_lines(store: SqliteStore, clock: Clock) -> None:
    hub = make_hub(store, clock)
    a = hub.attach("nd-a")
    hub.submit(a, sub(ALICE, "keep"))
    hub.submit(a, sub(BOB, "bad words", sub_id="bad"))
    await hub.moderate(Moderation(room="demo", action=ModerationAction.DELETE, target_msg_id="bad"))
    hub.watch(a, "demo", None)
    snap, history = a.take_nowait()
    assert isinstance(history, HistoryItem) and [ln.text for ln in history.lines] == ["keep"]
    assert isinstance(snap, SnapshotItem) and snap.head_seq == 3


async def test_operator_bans_and_modes_survive_a_restart(tmp_path: Path, clock: Clock) -> None:
    store = SqliteStore(tmp_path / "origin.db")
    await store.open()
    hub = make_hub(store, clock)
    a = hub.attach("nd-a")
    hub.watch(a, "demo", None)
    a.take_nowait()
    out = await hub.moderate(Moderation(room="demo", action=ModerationAction.BAN, target_login="bob", reason="rude"))
    assert out.verdict is not None and out.verdict.ok and out.verdict.notice_id == "ban_success"
    await hub.moderate(Moderation(room="demo", action=ModerationAction.TIMEOUT, target_login="carl", seconds=60))
    await hub.moderate(Moderation(room="demo", action=ModerationAction.SLOW, seconds=10))
    again = await hub.moderate(Moderation(room="demo", action=ModerationAction.BAN, target_login="bob"))
    assert again.verdict is not None and not again.verdict.ok and again.verdict.notice_id == "already_banned"
    kinds = [s.event.kind for s in events(a.take_nowait())]
    assert kinds == [EventKind.CLEARCHAT, EventKind.CLEARCHAT, EventKind.ROOMSTATE]
    hub.submit(a, sub(MOD, "/ban dave"))  # a moderator's command is stored too (in the background)
    await hub.stop()
    await store.close()

    store = SqliteStore(tmp_path / "origin.db")
    await store.open()
    hub = make_hub(store, clock)
    await hub.load()
    view = hub.view("demo")
    assert [(r.login, r.permanent, r.reason) for r in view.restrictions] == \
        [("bob", True, "rude"), ("carl", False, ""), ("dave", True, "")]
    assert view.modes == RoomModes(slow_seconds=10)
    assert view.head_seq == 4  # a clean stop stored the exact head
    s = hub.attach("nd-b")
    hub.watch(s, "demo", 4)  # resumes without a gap
    assert events(s.take_nowait()) == []
    hub.submit(s, sub(BOB, "back?"))
    [refused] = s.take_nowait()
    assert isinstance(refused, Verdict) and refused.notice_id == NoticeId.BANNED
    clock.advance(61)  # carl's timeout lapses: the store forgets it at the next load
    await hub.moderate(Moderation(room="demo", action=ModerationAction.UNBAN, target_login="bob"))
    await hub.stop()
    await store.close()

    store = SqliteStore(tmp_path / "origin.db")
    await store.open()
    hub = make_hub(store, clock)
    await hub.load()
    assert [r.login for r in hub.view("demo").restrictions] == ["dave"]
    await store.close()


async def test_after_a_crash_seqs_continue_above_every_issued_one(tmp_path: Path, clock: Clock) -> None:
    store = SqliteStore(tmp_path / "origin.db")
    await store.open()
    hub = make_hub(store, clock)
    a = hub.attach("nd-a")
    for i in range(3):
        hub.submit(a, sub(ALICE if i % 2 else BOB, f"m{i}"))
    await hub.drain()  # the reservation is stored; no clean stop follows
    await store.close()
    store = SqliteStore(tmp_path / "origin.db")
    await store.open()
    hub = make_hub(store, clock)
    await hub.load()
    assert hub.view("demo").head_seq == 1 + SEQ_BLOCK  # the first event reserved a block; 3 were issued
    a = hub.attach("nd-a")
    hub.watch(a, "demo", 3)  # the edge cannot know what a crashed hub had sent: a gap
    assert events(a.take_nowait())[0].event.kind is EventKind.GAP
    hub.submit(a, sub(ALICE, "after"))
    assert events(a.take_nowait())[0].event.seq == SEQ_BLOCK + 2
    await store.close()


async def test_an_edge_too_far_behind_has_its_stream_ended(store: SqliteStore, clock: Clock) -> None:
    hub = make_hub(store, clock, outbox_limit=5)
    slow, fast = hub.attach("nd-slow"), hub.attach("nd-fast")
    hub.watch(slow, "demo", None)
    hub.watch(fast, "demo", None)
    for i in range(10):
        hub.submit(fast, sub(Chatter(user_id=str(10 + i), login=f"u{i}"), f"x{i}"))
        if i % 2:
            fast.take_nowait()
    assert slow.closed.is_set() and "reads too slowly" in slow.close_reason
    assert not fast.closed.is_set()


async def test_a_second_stream_of_a_node_supersedes_the_first(store: SqliteStore, clock: Clock) -> None:
    hub = make_hub(store, clock)
    old = hub.attach("nd-a")
    hub.watch(old, "demo", None)
    new = hub.attach("nd-a")
    assert old.closed.is_set() and not new.closed.is_set()
    assert hub.view("demo").watching_nodes == ()
    hub.watch(new, "demo", None)
    assert hub.view("demo").watching_nodes == ("nd-a",)


async def test_rooms_nobody_watches_are_forgotten_but_keep_their_seq_and_bans(store: SqliteStore,
                                                                               clock: Clock) -> None:
    hub = make_hub(store, clock)
    a = hub.attach("nd-a")
    hub.watch(a, "demo", None)
    hub.submit(a, sub(ALICE, "one"))
    await hub.moderate(Moderation(room="demo", action=ModerationAction.BAN, target_login="bob"))
    hub.unwatch(a, "demo")
    hub._evict()
    assert hub.room_count == 1  # idle for less than the history window
    clock.advance(hub.limits.history_seconds)
    hub._evict()
    assert hub.room_count == 0
    assert hub.view("demo").head_seq == 2 and [r.login for r in hub.view("demo").restrictions] == ["bob"]
    hub.watch(a, "demo", None)
    snap = a.take_nowait()[-2]
    assert isinstance(snap, SnapshotItem) and snap.head_seq == 2
    assert snap.snapshot.restrictions == (Restriction(login="bob", user_id="", until_ms=0),)


async def test_room_cap_and_bad_names(store: SqliteStore, clock: Clock) -> None:
    hub = make_hub(store, clock, max_rooms=2)
    a = hub.attach("nd-a")
    for name in ("r1", "r2", "r3"):
        hub.watch(a, name, None)
    assert hub.room_count == 2  # watched rooms are never evicted for a new one
    hub.watch(a, "#bad name", None)
    assert "#bad name" not in a.rooms
    with pytest.raises(UsageError, match="invalid room"):
        hub.view("no spaces allowed")
    hub.unwatch(a, "r1")
    hub.watch(a, "r3", None)  # an unwatched room makes way
    assert hub.room_count == 2 and "r3" in a.rooms


async def test_metrics_count_results_and_fanout(store: SqliteStore, clock: Clock) -> None:
    hub = make_hub(store, clock)
    m = hub.metrics
    a, b = hub.attach("nd-a"), hub.attach("nd-b")
    hub.watch(a, "demo", None)
    hub.watch(b, "demo", None)
    hub.submit(a, sub(ALICE, "hi", sub_id="x"))
    hub.submit(a, sub(ALICE, "hi", sub_id="x"))
    hub.submit(a, sub(Chatter(user_id="", login="justinfan9"), "anon"))
    hub.submit(a, sub(MOD, "/slow 5"))

    def value(name: str, labels: dict[str, str] | None = None) -> float:
        v = m.registry.get_sample_value(name, labels or {})
        assert v is not None
        return v

    assert value("originctl_chat_messages_total", {"result": "accepted"}) == 1
    assert value("originctl_chat_messages_total", {"result": "duplicate"}) == 1
    assert value("originctl_chat_messages_total", {"result": "refused"}) == 1
    assert value("originctl_chat_messages_total", {"result": "command"}) == 1
    assert value("originctl_chat_fanout_total") == 4  # two events, two edges
    assert value("originctl_chat_rooms") == 1


async def test_a_stopping_hub_orders_nothing_more(store: SqliteStore, clock: Clock) -> None:
    hub = make_hub(store, clock)
    a = hub.attach("nd-a")
    hub.watch(a, "demo", None)
    await hub.stop()
    assert a.closed.is_set()
    late = hub.attach("nd-b")
    assert late.closed.is_set()
    hub.submit(late, sub(ALICE, "too late"))
    assert hub.view("demo").head_seq == 0


def test_session_queue_is_bounded_and_closing_empties_it() -> None:
    s = HubSession("nd", limit=2)
    assert s.push(DroppedItem("1", "r")) and s.push(DroppedItem("2", "r"))
    assert not s.push(DroppedItem("3", "r"))
    assert s.closed.is_set() and s.take_nowait() == []
