"""A relayed record lands in the child's store under the ingest edge's keys and metadata, in one transaction."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.relay import storeio
from edged.relay.records import ChannelRecord, Position, Rendition
from edged.store.segments import SegmentMeta, SegmentStore

MIB = 1024 * 1024


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[SegmentStore, SegmentStore]]:
    a, b = SegmentStore(tmp_path / "a", 16 * MIB), SegmentStore(tmp_path / "b", 16 * MIB)
    yield a, b
    a.close()
    b.close()


def _commit(store: SegmentStore, seq: int, disc_seq: int = 0, rendition: str = "source") -> SegmentMeta:
    meta = SegmentMeta(channel="news", rendition=rendition, seq=seq, duration=2.0 + seq / 100, discontinuity=seq == 3,
                       disc_seq=disc_seq, start_pts=seq * 2.0, program_date_time=1.7e9 + seq * 2, size=100 + seq,
                       written_ns=time.time_ns(), first_arrival=123.0)
    store.put_segment(meta, bytes([seq % 256]) * (100 + seq), keep=100)
    return meta


def test_applied_segments_keep_the_ingest_keys_and_metadata(stores: tuple[SegmentStore, SegmentStore]) -> None:
    a, b = stores
    metas = [_commit(a, seq, disc_seq=1 if seq >= 3 else 0) for seq in range(5)]
    for m in metas:
        payload = a.read("news", "source", m.seq)
        assert payload is not None
        rec = storeio.segment_record(m, payload)
        assert rec.ingest_ns == m.written_ns  # committed there: its own write time
        stored, _ = b.apply_segment(storeio.segment_meta("news", rec, time.time_ns()), payload, keep=100)
        assert stored
    got = b.recent("news", "source", 10)
    for mine, theirs in zip(got, metas, strict=True):
        assert mine.origin_ns == theirs.written_ns and mine.ingest_ns == theirs.written_ns
        assert mine.first_arrival == 0.0  # a monotonic figure of the ingest host means nothing here
        strip = {"written_ns": 0, "origin_ns": 0, "first_arrival": 0.0}
        assert dataclasses.replace(mine, **strip) == dataclasses.replace(theirs, **strip)
        assert b.read("news", "source", mine.seq) == a.read("news", "source", theirs.seq)
    # the numbering follows, so this node would continue it if the channel were ingested here later
    assert b.sequence_state("news", "source") == (5, 1)
    assert storeio.positions(b, "news") == {}  # no channel record yet: nothing is listed to resume
    b.apply_channel("news", ChannelRecord(renditions=(Rendition("source"),), live=True).fields())
    assert storeio.positions(b, "news") == {"source": Position("source", 5, 1)}


def test_a_number_held_is_never_overwritten_and_retention_applies(stores: tuple[SegmentStore, SegmentStore]) -> None:
    a, b = stores
    for seq in range(12):
        _commit(a, seq)
    for m in a.recent("news", "source", 20):
        payload = a.read("news", "source", m.seq)
        assert payload is not None
        b.apply_segment(storeio.segment_meta("news", storeio.segment_record(m, payload), time.time_ns()), payload,
                        keep=5)
    assert [m.seq for m in b.recent("news", "source", 20)] == [7, 8, 9, 10, 11]
    m = a.recent("news", "source", 1)[0]
    other = storeio.segment_record(m, b"other bytes")
    stored, _ = b.apply_segment(storeio.segment_meta("news", other, time.time_ns()), b"other bytes", keep=5)
    assert not stored and b.read("news", "source", 11) == a.read("news", "source", 11)
    # an older number arriving late does not move the numbering back
    old = storeio.segment_record(a.recent("news", "source", 12)[0], b"late")
    b.apply_segment(storeio.segment_meta("news", dataclasses.replace(old, seq=2), time.time_ns()), b"late", keep=100)
    assert b.sequence_state("news", "source")[0] == 12
    assert b.total_bytes() == sum(len(b.read("news", "source", s) or b"") for _, _, s in b.iter_segment_keys())


def test_metas_from_reads_forward(stores: tuple[SegmentStore, SegmentStore]) -> None:
    a, _ = stores
    for seq in (0, 1, 2, 5, 6):
        _commit(a, seq)
    _commit(a, 0, rendition="720p")
    assert [m.seq for m in a.metas_from("news", "source", 2, 10)] == [2, 5, 6]
    assert [m.seq for m in a.metas_from("news", "source", 3, 2)] == [5, 6]
    assert a.metas_from("news", "source", 7, 10) == []
    assert a.meta("news", "source", 5) is not None and a.meta("news", "source", 4) is None
