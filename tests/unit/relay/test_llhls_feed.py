"""A parent's feed of a CMAF channel, with a real store: INIT once before what names it, the replay's
complete segments then the pending segment's parts, live parts as they commit; and a child applying
those records ends up with the parent's parts, init segments, segments and pending state."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edged.relay.apply import Applier
from edged.relay.commits import CommitBus
from edged.relay.feed import Feed
from edged.relay.records import (
    ChannelRecord,
    InitRecord,
    Keepalive,
    PartRecord,
    Position,
    Record,
    RecordError,
    SegmentRecord,
)
from edged.relay.storeio import StoreWriter, positions
from edged.store.segments import PendingMeta, SegmentMeta, SegmentStore, cmaf_init_id

PARTS = 4  # parts per segment
INIT_A = b"ftyp moov (tracks A)"
INIT_B = b"ftyp moov (tracks B)"


class Pipeline:
    """Commits as the CMAF worker does: init, each part with the pending state, then the segment."""

    def __init__(self, store: SegmentStore, bus: CommitBus, rendition: str = "source") -> None:
        self.store, self.bus, self.rendition = store, bus, rendition
        self.pending: PendingMeta | None = None
        self.chunks: list[bytes] = []

    def part(self, seq: int, init: bytes = INIT_A, disc_seq: int = 0, notify: bool = True, gap: bool = False) -> bytes:
        init_id = cmaf_init_id(init)
        self.store.put_init("news", self.rendition, init_id, init)
        if self.pending is None or self.pending.seq != seq:
            self.pending = PendingMeta(seq, seq * 2.0, 1.7e9 + seq * 2, disc_seq > 0 and not self.chunks, disc_seq,
                                       init_id)
            self.chunks = []
        index = len(self.pending.parts)
        data = b"" if gap else f"moof+mdat {self.rendition} {seq}.{index} ".encode() * 20
        self.pending = PendingMeta(self.pending.seq, self.pending.start_pts, self.pending.program_date_time,
                                   self.pending.discontinuity, self.pending.disc_seq, self.pending.init,
                                   (*self.pending.parts, (0.5, index == 0 and not gap)),
                                   gaps=(*self.pending.gaps, index) if gap else self.pending.gaps)
        self.store.put_part("news", self.rendition, self.pending, data)
        self.chunks.append(data)
        if notify:
            self.bus.part("news", self.rendition, seq, index)
        return data

    def segment(self, notify: bool = True) -> None:
        p = self.pending
        assert p is not None
        payload = b"".join(self.chunks)
        meta = SegmentMeta("news", self.rendition, p.seq, 0.5 * len(p.parts), p.discontinuity, p.disc_seq,
                           p.start_pts, p.program_date_time, len(payload), time.time_ns(), fmt="cmaf", init=p.init,
                           parts=p.parts, gaps=p.gaps)
        self.store.put_segment(meta, payload, keep=100, part_keep=8)
        self.pending, self.chunks = None, []
        if notify:
            self.bus.segment("news", self.rendition, p.seq)

    def whole(self, seq: int, **kw: object) -> None:
        for _ in range(PARTS):
            self.part(seq, **kw)  # type: ignore[arg-type]
        self.segment()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SegmentStore]:
    s = SegmentStore(tmp_path / "parent", 16 << 20)
    s.update_channel("news", live=True, session=1, renditions=[{"name": "source"}], target_duration=2, window=6,
                     format="cmaf", part_target=0.5)
    yield s
    s.close()


@pytest.fixture
def child(tmp_path: Path) -> Iterator[SegmentStore]:
    s = SegmentStore(tmp_path / "child", 16 << 20)
    yield s
    s.close()


def _feed(store: SegmentStore, bus: CommitBus, pos: dict[str, Position] | None = None, **kw: float) -> Feed:
    return Feed(store, bus, "news", pos or {}, window=6, keepalive=kw.get("keepalive", 5.0), max_backlog=32)


def _shape(recs: list[Record]) -> list[str]:
    out = []
    for r in recs:
        if isinstance(r, InitRecord):
            out.append(f"init {r.init_id}")
        elif isinstance(r, SegmentRecord):
            out.append(f"seg {r.seq}" + (" joined" if r.from_parts else ""))
        elif isinstance(r, PartRecord):
            out.append(f"part {r.seq}.{r.index}")
        else:
            out.append(type(r).__name__)
    return out


async def _take(it: AsyncIterator[Record], n: int) -> list[Record]:
    return [await asyncio.wait_for(anext(it), 5) for _ in range(n)]


def _whole(seq: int) -> list[str]:
    return [*(f"part {seq}.{i}" for i in range(PARTS)), f"seg {seq} joined"]


async def _until_keepalive(it: AsyncIterator[Record]) -> list[Record]:
    out: list[Record] = []
    while not isinstance(rec := await asyncio.wait_for(anext(it), 5), Keepalive):
        out.append(rec)
    return out


A, B = cmaf_init_id(INIT_A), cmaf_init_id(INIT_B)


async def test_replay_sends_init_once_then_segments_then_the_pending_segments_parts(store: SegmentStore) -> None:
    """Segments whose parts are kept go as their parts and a SEGMENT joined from them (a child holds
    the parts a playlist lists); older ones (parts dropped: part_keep) go with their bytes."""
    bus = CommitBus()
    pipe = Pipeline(store, bus)
    for seq in range(10, 20):  # more than the window (6); the parts of 10 are dropped (part_keep 8)
        pipe.whole(seq)
    pipe.part(20)
    pipe.part(20)
    assert store.read_part("news", "source", 10, 0) is None and store.read_part("news", "source", 11, 0) is not None
    recs = await _until_keepalive(_feed(store, bus).records())
    assert _shape(recs) == ["ChannelRecord", f"init {A}", *(s for seq in range(14, 20) for s in _whole(seq)),
                            "part 20.0", "part 20.1"]
    chan, init, part0, seg, part = recs[0], recs[1], recs[2], recs[6], recs[-1]
    assert isinstance(chan, ChannelRecord) and (chan.format, chan.part_target) == ("cmaf", 0.5)
    assert isinstance(init, InitRecord) and init.payload == INIT_A
    assert isinstance(part0, PartRecord) and part0.payload == store.read_part("news", "source", 14, 0)
    assert isinstance(seg, SegmentRecord) and seg.fmt == "cmaf" and seg.init == A and seg.payload == b""
    assert seg.parts == ((0.5, True), (0.5, False), (0.5, False), (0.5, False))
    assert seg.from_parts == len(store.read("news", "source", 14) or b"") > 0
    assert isinstance(part, PartRecord) and part.payload == store.read_part("news", "source", 20, 1)
    assert (part.init, part.start_pts, part.independent, part.duration) == (A, 40.0, False, 0.5)
    old = await _until_keepalive(_feed(store, bus, {"source": Position("source", 10, 0)}).records())
    assert _shape(old)[:4] == ["ChannelRecord", f"init {A}", "seg 10", *_whole(11)[:1]]
    assert isinstance(old[2], SegmentRecord) and old[2].payload == store.read("news", "source", 10)


async def test_a_resumed_child_gets_the_pending_parts_and_the_init_it_names(store: SegmentStore) -> None:
    bus = CommitBus()
    pipe = Pipeline(store, bus)
    for seq in range(10, 14):
        pipe.whole(seq)
    pipe.part(14)
    recs = await _until_keepalive(_feed(store, bus, {"source": Position("source", 14, 0)}).records())
    assert _shape(recs) == ["ChannelRecord", f"init {A}", "part 14.0"]  # (13 is the child's already)
    ahead = await _until_keepalive(_feed(store, bus, {"source": Position("source", 15, 0)}).records())
    assert _shape(ahead) == ["ChannelRecord"]  # the child holds 14 whole (a sibling was ahead): no stale parts


async def test_live_parts_follow_commits_and_a_new_init_goes_first(store: SegmentStore) -> None:
    bus = CommitBus()
    pipe = Pipeline(store, bus)
    pipe.whole(0)
    pipe.part(1)
    feed = _feed(store, bus)
    it = feed.records()
    assert _shape(await _until_keepalive(it)) == ["ChannelRecord", f"init {A}", *_whole(0), "part 1.0"]
    pipe.part(1)
    assert _shape(await _take(it, 1)) == ["part 1.1"]
    pipe.part(1)
    pipe.part(1)
    assert _shape(await _take(it, 2)) == ["part 1.2", "part 1.3"]
    pipe.segment()
    assert _shape(await _take(it, 1)) == ["seg 1 joined"]  # all its parts went: it goes without its bytes
    pipe.part(2, init=INIT_B, disc_seq=1)  # the tracks changed: a new init segment, sent before its first part
    assert _shape(await _take(it, 2)) == [f"init {B}", "part 2.0"]
    pipe.part(2, init=INIT_B, disc_seq=1)
    pipe.segment(notify=False)
    pipe.part(3, init=INIT_B, disc_seq=1)  # one wake finds a segment and the next one's part: segment first,
    assert _shape(await _take(it, 3)) == ["part 2.1", "seg 2 joined", "part 3.0"]  # after its part not sent yet
    await it.aclose()  # type: ignore[attr-defined]
    assert bus.watchers("news") == 0


async def test_a_child_applying_the_feed_holds_the_parents_parts_inits_segments_and_pending(
        store: SegmentStore, child: SegmentStore) -> None:
    bus, child_bus = CommitBus(), CommitBus()
    pipe = Pipeline(store, bus)
    for seq in range(3):
        pipe.whole(seq)
    pipe.part(3)
    pipe.part(3)
    writer = StoreWriter(child, 100)
    woken: list[tuple[str, str]] = []
    child_bus.add_rendition_listener(lambda ch, r: woken.append((ch, r)))
    watcher = child_bus.watch("news")
    watcher.take()
    try:
        applier = Applier("news", writer, child_bus, positions(child, "news"))
        it = _feed(store, bus).records()
        for rec in await _until_keepalive(it):
            await applier.apply(rec)
        # the child's own children and blocked requests wake (the lowest part committed: 0.0, replayed)
        assert watcher.take_parts() == {"source": (0, 0)}
        assert ("news", "source") in woken
        pipe.part(3)
        pipe.part(3)
        pipe.segment()
        pipe.part(4, init=INIT_B, disc_seq=1)
        for rec in await _take(it, 5):  # parts 3.2 3.3, segment 3 (joined here), init B, part 4.0
            await applier.apply(rec)
        for seq in range(4):
            mine, theirs = child.meta("news", "source", seq), store.meta("news", "source", seq)
            assert mine is not None and theirs is not None
            assert (mine.fmt, mine.init, mine.parts) == (theirs.fmt, theirs.init, theirs.parts) == ("cmaf", A, mine.parts)
            assert child.read("news", "source", seq) == store.read("news", "source", seq)
            for i in range(PARTS):
                assert child.read_part("news", "source", seq, i) == store.read_part("news", "source", seq, i)
        assert child.read_init("news", "source", A) == INIT_A and child.read_init("news", "source", B) == INIT_B
        mine_p, theirs_p = child.pending("news", "source"), store.pending("news", "source")
        assert mine_p is not None and theirs_p is not None
        assert mine_p.origin_ns > 0 and theirs_p.origin_ns == 0
        assert mine_p == dataclasses.replace(theirs_p, origin_ns=mine_p.origin_ns)
        assert child.read_part("news", "source", 4, 0) == store.read_part("news", "source", 4, 0)
        # a resubscription replays the pending segment's parts from its first: held ones are not written twice
        again = Applier("news", writer, child_bus, positions(child, "news"))
        before = again.applied
        for rec in await _until_keepalive(_feed(store, bus, positions(child, "news")).records()):
            await again.apply(rec)
        assert again.applied == before + 1  # the channel record only
        assert child.pending("news", "source") == mine_p
        # a part past a hole is refused by the order check, before anything is written
        hole = PartRecord("source", 4, 5, 0.5, False, 8.0, 1.7e9, True, 1, B, 1, b"x")
        with pytest.raises(RecordError, match="after part 4.0|next part"):
            await again.apply(hole)
        await it.aclose()  # type: ignore[attr-defined]
    finally:
        writer.close()


async def test_gap_parts_relay_empty_and_the_child_lists_them(store: SegmentStore, child: SegmentStore) -> None:
    """A gap part (no bytes) goes as a PART with `gap` and an empty payload, live and in the replay; the child
    stores it empty with its index in the pending state's gaps, joins the segment from the other parts, and a
    segment whose parts are gone here goes whole with its gaps listed."""
    bus, child_bus = CommitBus(), CommitBus()
    pipe = Pipeline(store, bus)
    pipe.part(0)
    pipe.part(0, gap=True)
    pipe.part(0, gap=True)
    pipe.part(0)
    pipe.segment()
    pipe.part(1)
    pipe.part(1, gap=True)
    writer = StoreWriter(child, 100)
    try:
        applier = Applier("news", writer, child_bus, positions(child, "news"))
        it = _feed(store, bus).records()
        recs = await _until_keepalive(it)
        assert _shape(recs) == ["ChannelRecord", f"init {A}", *_whole(0), "part 1.0", "part 1.1"]
        gaps = [r for r in recs if isinstance(r, PartRecord) and r.gap]
        assert [(r.seq, r.index, r.payload) for r in gaps] == [(0, 1, b""), (0, 2, b""), (1, 1, b"")]
        seg = next(r for r in recs if isinstance(r, SegmentRecord))
        assert seg.gaps == (1, 2) and seg.from_parts == len(store.read("news", "source", 0) or b"")
        for rec in recs:
            await applier.apply(rec)
        pending = child.pending("news", "source")
        assert pending is not None and pending.gaps == (1,) and len(pending.parts) == 2
        assert child.read_part("news", "source", 1, 1) == b""
        pipe.part(1, gap=True)  # live
        pipe.part(1)
        pipe.segment()
        for rec in await _take(it, 3):
            assert not isinstance(rec, PartRecord) or rec.gap == (rec.index == 2)
            await applier.apply(rec)
        for seq in (0, 1):
            mine, theirs = child.meta("news", "source", seq), store.meta("news", "source", seq)
            assert mine is not None and theirs is not None and mine.gaps == theirs.gaps == ((1, 2), (1, 2))[seq]
            assert child.read("news", "source", seq) == store.read("news", "source", seq)
            assert [child.read_part("news", "source", seq, i) for i in range(PARTS)] == [
                store.read_part("news", "source", seq, i) for i in range(PARTS)]
            assert [child.read_part("news", "source", seq, i) == b"" for i in range(PARTS)] == [False, True, True, False]
        await it.aclose()  # type: ignore[attr-defined]
    finally:
        writer.close()
    for seq in range(2, 11):  # the parts of 0 and 1 are dropped (part_keep 8): they go whole, gaps listed
        pipe.whole(seq)
    assert store.read_part("news", "source", 0, 0) is None
    old = await _until_keepalive(_feed(store, bus, {"source": Position("source", 0, 0)}).records())
    whole = [r for r in old if isinstance(r, SegmentRecord) and r.seq in (0, 1)]
    assert [(r.gaps, r.from_parts, r.payload == store.read("news", "source", r.seq)) for r in whole] == [
        ((1, 2), 0, True), ((1, 2), 0, True)]
