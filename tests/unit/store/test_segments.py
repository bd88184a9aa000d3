"""The LMDB segment store: transactions, sequence persistence, retention and size eviction."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edged.store import keys
from edged.store.segments import SegmentMeta, SegmentStore

MIB = 1024 * 1024


def _meta(seq: int, size: int, channel: str = "ch", rendition: str = "source", disc: bool = False,
          disc_seq: int = 0) -> SegmentMeta:
    return SegmentMeta(channel=channel, rendition=rendition, seq=seq, duration=2.0, discontinuity=disc,
                       disc_seq=disc_seq, start_pts=seq * 2.0, program_date_time=time.time(), size=size,
                       written_ns=time.time_ns())


@pytest.fixture
def store(tmp_path: Path) -> SegmentStore:
    s = SegmentStore(tmp_path / "store", 16 * MIB)
    yield s
    s.close()


def test_keys_order_and_round_trip() -> None:
    a = keys.segment_key("ch", "source", 9)
    b = keys.segment_key("ch", "source", 10)
    c = keys.segment_key("ch", "source", 256)
    assert a < b < c
    assert keys.split_segment_key(c) == ("ch", "source", 256)
    assert not keys.segment_key("ch2", "source", 0).startswith(keys.prefix("ch", "source"))


def test_put_read_recent(store: SegmentStore) -> None:
    for i in range(5):
        store.put_segment(_meta(i, 100), bytes([i]) * 100, keep=100)
    assert store.read("ch", "source", 3) == bytes([3]) * 100
    assert store.read("ch", "source", 99) is None
    assert [m.seq for m in store.recent("ch", "source", 3)] == [2, 3, 4]
    assert store.recent("ch", "other", 3) == []
    assert store.sequence_state("ch", "source") == (5, 0)
    assert store.total_bytes() == 500


def test_recent_does_not_leak_into_neighbour_prefix(store: SegmentStore) -> None:
    store.put_segment(_meta(0, 10, channel="a"), b"x" * 10, keep=10)
    store.put_segment(_meta(0, 10, channel="a", rendition="sourcf"), b"y" * 10, keep=10)
    store.put_segment(_meta(7, 10, channel="b"), b"z" * 10, keep=10)
    assert [m.channel for m in store.recent("a", "source", 10)] == ["a"]
    assert [m.seq for m in store.recent("b", "source", 10)] == [7]


def test_retention_per_rendition(store: SegmentStore) -> None:
    evicted = sum(store.put_segment(_meta(i, 10), b"x" * 10, keep=3) for i in range(10))
    assert evicted == 7
    assert [m.seq for m in store.recent("ch", "source", 100)] == [7, 8, 9]
    assert store.read("ch", "source", 6) is None
    assert store.total_bytes() == 30


def test_size_bound_evicts_oldest_first(store: SegmentStore) -> None:
    payload = b"p" * MIB
    for i in range(20):  # 20 MiB into a 16 MiB store, across two channels
        store.put_segment(_meta(i, MIB, channel="a" if i % 2 else "b"), payload, keep=1000)
    assert store.total_bytes() <= 16 * MIB
    remaining = sorted(seq for _, _, seq in store.iter_segment_keys())
    assert remaining == list(range(20 - len(remaining), 20))  # the newest survive


def test_sequence_survives_reopen(tmp_path: Path) -> None:
    s = SegmentStore(tmp_path / "s", 16 * MIB)
    s.put_segment(_meta(0, 1), b"a", keep=10)
    s.put_segment(_meta(1, 1, disc=True, disc_seq=1), b"b", keep=10)
    s.close()
    s2 = SegmentStore(tmp_path / "s", 16 * MIB)
    assert s2.sequence_state("ch", "source") == (2, 1)
    assert s2.read("ch", "source", 1) == b"b"
    s2.close()


def test_channel_records(store: SegmentStore) -> None:
    store.update_channel("ch", live=True, renditions=[{"name": "source"}])
    store.update_channel("ch", session=2)
    assert store.channel("ch") == {"live": True, "renditions": [{"name": "source"}], "session": 2}
    assert store.mark_all_offline() == ["ch"]
    assert store.channel("ch")["live"] is False
    assert store.channel("nope") is None


def test_rendition_state_is_written_with_the_segment(tmp_path: Path) -> None:
    s = SegmentStore(tmp_path / "s", 16 * MIB)
    assert s.rendition_state("ch", "source").next_seq == 0 and s.rendition_state("ch", "source").continuity == {}
    m = _meta(4, 1, disc=True, disc_seq=2)
    s.put_segment(m, b"a", keep=10, continuity={0: 3, 0x100: 15, 0x1000: 0})
    s.close()
    s2 = SegmentStore(tmp_path / "s", 16 * MIB)  # what a restarted worker reads
    state = s2.rendition_state("ch", "source")
    assert (state.next_seq, state.disc_seq) == (5, 2) == s2.sequence_state("ch", "source")
    assert state.continuity == {0: 3, 0x100: 15, 0x1000: 0}
    assert state.date_end == pytest.approx(m.program_date_time + m.duration)
    assert s2.rendition_state("ch", "480p30").continuity == {}  # per rendition
    s2.close()


def test_a_channel_left_live_by_a_killed_daemon_ended_at_restart_not_deliberately(store: SegmentStore) -> None:
    store.update_channel("a", live=True, target_duration=6)
    store.update_channel("b", live=False, ended=5.0, ended_deliberately=True)
    assert store.mark_all_offline(now=1234.0) == ["a"]
    assert store.channel("a") == {"live": False, "target_duration": 6, "ended": 1234.0, "ended_deliberately": False}
    assert store.channel("b") == {"live": False, "ended": 5.0, "ended_deliberately": True}  # untouched
