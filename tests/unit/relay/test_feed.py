"""A parent's feed: where a child's position resumes (new, resumed, ahead, gone, another history), then live."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.relay.commits import CommitBus
from edged.relay.feed import Feed, SlowChild
from edged.relay.records import ChannelRecord, Keepalive, Position, Record, Resync, SegmentRecord
from edged.store.segments import SegmentMeta, SegmentStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SegmentStore]:
    s = SegmentStore(tmp_path / "s", 16 << 20)
    s.update_channel("news", live=True, session=1, renditions=[{"name": "source"}], target_duration=6)
    for seq in range(10, 20):
        disc = 1 if seq >= 15 else 0
        s.put_segment(SegmentMeta("news", "source", seq, 2.0, seq == 15, disc, 0.0, 1.7e9 + seq, 4, time.time_ns()),
                      b"abcd", keep=100)
    yield s
    s.close()


async def _until_caught_up(feed: Feed) -> list[Record]:
    out: list[Record] = []
    async for rec in feed.records():
        out.append(rec)
        if isinstance(rec, Keepalive):
            return out
    return out


def _seqs(recs: list[Record]) -> list[int]:
    return [r.seq for r in recs if isinstance(r, SegmentRecord)]


@pytest.mark.parametrize(("position", "resume", "seqs"), [
    (None, "new", list(range(14, 20))),  # the live window (6)
    (Position("source", 12, 0), "resumed", list(range(12, 20))),
    (Position("source", 16, 1), "resumed", [16, 17, 18, 19]),
    (Position("source", 20, 1), "resumed", []),  # nothing newer yet: from there on, live
    (Position("source", 25, 1), "resumed", []),  # ahead of this parent (a sibling was ahead): wait for it
    (Position("source", 5, 0), "gone", list(range(14, 20))),  # older than anything held
    (Position("source", 17, 0), "gone", list(range(14, 20))),  # another history: segment 16 is of epoch 1
])
async def test_where_a_position_resumes(store: SegmentStore, position: Position | None, resume: str,
                                        seqs: list[int]) -> None:
    feed = Feed(store, CommitBus(), "news", {"source": position} if position else {}, window=6, keepalive=0.1,
                max_backlog=32)
    recs = await _until_caught_up(feed)
    assert feed.resume == resume
    assert isinstance(recs[0], Resync) == (resume == "gone")
    assert any(isinstance(r, ChannelRecord) for r in recs[:2])
    assert _seqs(recs) == seqs


async def test_live_records_follow_commits_and_keepalives_fill_the_silence(store: SegmentStore) -> None:
    bus = CommitBus()
    feed = Feed(store, bus, "news", {"source": Position("source", 20, 1)}, window=6, keepalive=0.05, max_backlog=32)
    got: list[Record] = []

    async def read() -> None:
        async for rec in feed.records():
            got.append(rec)
            if isinstance(rec, SegmentRecord) and rec.seq == 21:
                return

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.2)  # idle: keepalives
    assert sum(isinstance(r, Keepalive) for r in got) >= 2
    for seq in (20, 21):
        store.put_segment(SegmentMeta("news", "source", seq, 2.0, False, 1, 0.0, 1.7e9 + seq, 4, time.time_ns()),
                          b"abcd", keep=100)
        bus.segment("news", "source", seq)
    await asyncio.wait_for(reader, 5)
    assert _seqs(got) == [20, 21]
    assert bus.watchers("news") == 0  # the feed let go of its waiter


async def test_a_child_that_falls_too_far_behind_is_dropped(store: SegmentStore) -> None:
    """A child that does not read while the parent commits past `max_backlog` segments is dropped (it
    resubscribes by position), rather than held with an ever-growing replay."""
    bus = CommitBus()
    feed = Feed(store, bus, "news", {"source": Position("source", 20, 1)}, window=6, keepalive=5.0, max_backlog=4)
    records = feed.records()
    while not isinstance(await anext(records), Keepalive):  # caught up; now it stops reading
        pass
    waiting = asyncio.ensure_future(anext(records))
    for seq in range(20, 26):  # six commits while the child reads nothing
        store.put_segment(SegmentMeta("news", "source", seq, 2.0, False, 1, 0.0, 1.7e9 + seq, 4, time.time_ns()),
                          b"abcd", keep=100)
    for seq in range(20, 26):
        bus.segment("news", "source", seq)
    with pytest.raises(SlowChild, match="6 segments behind"):
        await asyncio.wait_for(waiting, 5)
