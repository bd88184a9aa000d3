"""CMAF parts and init segments in the segment store: one transaction per part with the pending state,
parts go with their segment, the part window, relayed parts, init segments by content id."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from edged.store.segments import PendingMeta, SegmentMeta, SegmentStore, cmaf_init_id

MIB = 1024 * 1024


@pytest.fixture
def store(tmp_path: Path) -> SegmentStore:
    s = SegmentStore(tmp_path / "store", 16 * MIB)
    yield s
    s.close()


def _pending(seq: int, nparts: int, init: str = "00112233aabbccdd") -> PendingMeta:
    return PendingMeta(seq=seq, start_pts=seq * 2.0, program_date_time=1.7e9 + seq * 2.0, discontinuity=False,
                       disc_seq=0, init=init, parts=tuple((0.5, i == 0) for i in range(nparts)))


def _write_segment(store: SegmentStore, seq: int, nparts: int = 4, part_keep: int = 0, keep: int = 100) -> bytes:
    parts = [bytes([seq % 256, i]) * 100 for i in range(nparts)]
    for i, p in enumerate(parts):
        store.put_part("ch", "source", _pending(seq, i + 1), p)
    meta = SegmentMeta(channel="ch", rendition="source", seq=seq, duration=2.0, discontinuity=False, disc_seq=0,
                       start_pts=seq * 2.0, program_date_time=1.7e9 + seq * 2.0, size=200 * nparts,
                       written_ns=time.time_ns(), fmt="cmaf", init="00112233aabbccdd",
                       parts=tuple((0.5, i == 0) for i in range(nparts)))
    store.put_segment(meta, b"".join(parts), keep=keep, part_keep=part_keep)
    return b"".join(parts)


def test_a_part_and_the_pending_state_commit_together(store: SegmentStore) -> None:
    assert store.pending("ch", "source") is None
    store.put_part("ch", "source", _pending(0, 1), b"part-0")
    store.put_part("ch", "source", _pending(0, 2), b"part-1")
    pending = store.pending("ch", "source")
    assert pending == _pending(0, 2)
    assert store.read_part("ch", "source", 0, 0) == b"part-0"
    assert store.read_part("ch", "source", 0, 1) == b"part-1"
    assert store.read_part("ch", "source", 0, 2) is None
    assert store.rendition_state("ch", "source").pending == pending
    assert store.total_bytes() == 12


def test_the_finished_segment_clears_pending_and_keeps_its_part_list(store: SegmentStore) -> None:
    payload = _write_segment(store, 0)
    assert store.pending("ch", "source") is None
    assert store.read("ch", "source", 0) == payload
    meta = store.meta("ch", "source", 0)
    assert meta is not None and meta.fmt == "cmaf" and meta.parts == ((0.5, True), (0.5, False), (0.5, False),
                                                                      (0.5, False))
    assert store.read_part("ch", "source", 0, 3) is not None  # parts stay with their segment
    assert store.rendition_state("ch", "source").next_seq == 1


def test_parts_older_than_the_part_window_are_deleted_and_the_total_follows(store: SegmentStore) -> None:
    for seq in range(6):
        _write_segment(store, seq, part_keep=2)
    held = [seq for seq in range(6) if store.read_part("ch", "source", seq, 0) is not None]
    assert held == [3, 4, 5]  # older than 5 - part_keep: gone
    assert all(store.read("ch", "source", seq) is not None for seq in range(6))
    assert store.total_bytes() == 6 * 800 + 3 * 800


def test_evicting_a_segment_deletes_its_parts(store: SegmentStore) -> None:
    for seq in range(5):
        _write_segment(store, seq, keep=2)
    assert store.read("ch", "source", 2) is None and store.read_part("ch", "source", 2, 0) is None
    assert store.read_part("ch", "source", 4, 0) is not None
    assert store.total_bytes() == 2 * 800 * 2


def test_a_pending_state_behind_the_numbering_is_not_pending(store: SegmentStore) -> None:
    _write_segment(store, 0)
    store.put_part("ch", "source", _pending(1, 1), b"x")
    # a relayed complete segment 1 overtakes the pending one
    meta = dataclasses.replace(store.meta("ch", "source", 0), seq=1)  # type: ignore[type-var]
    stored, _ = store.apply_segment(meta, b"whole", keep=10)
    assert stored
    assert store.pending("ch", "source") is None


def test_relayed_parts_are_idempotent_and_never_behind(store: SegmentStore) -> None:
    assert store.apply_part("ch", "source", dataclasses.replace(_pending(3, 1), origin_ns=5), b"a")
    assert not store.apply_part("ch", "source", _pending(3, 1), b"a")  # held already
    assert store.apply_part("ch", "source", _pending(3, 2), b"b")
    assert not store.apply_part("ch", "source", _pending(2, 1), b"old")  # a segment before the pending one
    pending = store.pending("ch", "source")
    assert pending is not None and pending.seq == 3 and len(pending.parts) == 2
    assert store.read_part("ch", "source", 2, 0) is None


def test_init_segments_by_content_id(store: SegmentStore) -> None:
    init = b"ftyp....moov...."
    iid = cmaf_init_id(init)
    assert len(iid) == 16 and int(iid, 16) >= 0
    store.put_init("ch", "source", iid, init)
    store.put_init("ch", "source", iid, init)  # idempotent
    assert store.read_init("ch", "source", iid) == init
    assert store.read_init("ch", "720p", iid) is None
    assert cmaf_init_id(init + b"x") != iid


def test_a_part_without_parts_is_refused(store: SegmentStore) -> None:
    with pytest.raises(ValueError):
        store.put_part("ch", "source", _pending(0, 0), b"x")


def test_the_final_part_commits_with_its_segment(store: SegmentStore) -> None:
    store.put_part("ch", "source", _pending(0, 1), b"p0")
    meta = SegmentMeta(channel="ch", rendition="source", seq=0, duration=1.0, discontinuity=False, disc_seq=0,
                       start_pts=0.0, program_date_time=1.7e9, size=4, written_ns=time.time_ns(), fmt="cmaf",
                       init="00112233aabbccdd", parts=((0.5, True), (0.5, False)))
    store.put_segment(meta, b"p0p1", keep=10, last_part=(1, b"p1"))
    assert store.pending("ch", "source") is None
    assert store.read_part("ch", "source", 0, 1) == b"p1" and store.read("ch", "source", 0) == b"p0p1"
    assert store.total_bytes() == 2 + 4 + 2
