"""Relay records: the codec round-trips, refuses what a hostile peer could send, and checks order."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.relay import records
from edged.relay.records import (
    ChannelRecord,
    Keepalive,
    OrderCheck,
    Position,
    RecordError,
    Rendition,
    Resync,
    SegmentRecord,
    StreamEnd,
    StreamStart,
)

CAP = 1 << 20
names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,20}\Z")
finite = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)
seqs = st.integers(min_value=0, max_value=records.MAX_SEQ)

segments = st.builds(
    SegmentRecord, rendition=names, seq=seqs, duration=st.floats(min_value=0, max_value=3600),
    discontinuity=st.booleans(), disc_seq=seqs, start_pts=st.floats(min_value=-1e6, max_value=1e6),
    program_date_time=finite, ingest_ns=st.integers(min_value=0, max_value=1 << 62), payload=st.binary(max_size=4096),
)
renditions = st.builds(
    Rendition, name=names, width=st.integers(0, 16384), height=st.integers(0, 16384),
    codecs=st.from_regex(r"\A[A-Za-z0-9.,]{0,40}\Z"), bandwidth=st.integers(0, 1 << 40),
    average_bandwidth=st.integers(0, 1 << 40), frame_rate=st.none() | st.floats(min_value=0, max_value=240),
)
channels = st.builds(
    ChannelRecord, renditions=st.lists(renditions, max_size=6, unique_by=lambda r: r.name).map(tuple),
    target_duration=st.integers(0, 3600), window=st.integers(0, 100), reconnect_grace=st.just(-1.0) | st.floats(0, 3600),
    independent=st.booleans(), live=st.booleans(), session=st.integers(0, 1 << 40), started=finite,
    ended=st.none() | finite, ended_deliberately=st.booleans(),
)
any_record = st.one_of(
    segments, channels, st.builds(StreamStart, session=seqs, started=finite),
    st.builds(StreamEnd, ended=finite, deliberate=st.booleans()), st.just(Keepalive()),
    st.builds(Resync, reason=st.text(max_size=50)),
)


@given(any_record)
@settings(max_examples=150, deadline=None)
def test_every_record_round_trips(rec: records.Record) -> None:
    kind, header, payload = records.encode(rec)
    assert records.decode(kind, header, payload, max_bytes=CAP) == rec


@given(st.integers(-5, 20), st.binary(max_size=300), st.binary(max_size=64))
@settings(max_examples=500)
def test_arbitrary_bytes_raise_only_record_error(kind: int, header: bytes, payload: bytes) -> None:
    try:
        records.decode(kind, header, payload, max_bytes=CAP)
    except RecordError:
        pass


@given(st.dictionaries(st.sampled_from(["rendition", "seq", "duration", "discontinuity", "disc_seq", "start_pts",
                                        "program_date_time", "ingest_ns", "size", "renditions", "live", "ended"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=4),
                                                                                      st.integers(), max_size=2))))
@settings(max_examples=500)
def test_hostile_json_headers_raise_only_record_error(d: dict[str, object]) -> None:
    header = json.dumps(d).encode()
    for kind in records.Kind:
        try:
            records.decode(int(kind), header, b"", max_bytes=CAP)
        except RecordError:
            pass


def _seg(seq: int, rendition: str = "source", disc_seq: int = 0, payload: bytes = b"x") -> SegmentRecord:
    return SegmentRecord(rendition=rendition, seq=seq, duration=2.0, discontinuity=False, disc_seq=disc_seq,
                         start_pts=0.0, program_date_time=1.7e9, ingest_ns=1, payload=payload)


def test_size_cap_kind_and_payload_rules() -> None:
    kind, header, payload = records.encode(_seg(1, payload=b"y" * 1000))
    with pytest.raises(RecordError, match="over the cap"):
        records.decode(kind, header, payload, max_bytes=500)
    with pytest.raises(RecordError, match="size"):
        records.decode(kind, header, payload[:-1], max_bytes=CAP)  # a payload that is not the size it says
    with pytest.raises(RecordError, match="unknown record kind"):
        records.decode(99, b"{}", b"", max_bytes=CAP)
    with pytest.raises(RecordError, match="with a payload"):
        records.decode(int(records.Kind.KEEPALIVE), b"{}", b"x", max_bytes=CAP)
    with pytest.raises(RecordError, match="header"):
        records.decode(int(records.Kind.CHANNEL), b"x" * (records.MAX_HEADER_BYTES + 1), b"", max_bytes=CAP * 2)
    # a CODECS value that would break the master playlist's quoting is refused
    bad = json.dumps({"renditions": [{"name": "source", "codecs": 'avc1"\n#EXT-X-'}]}).encode()
    with pytest.raises(RecordError, match="CODECS"):
        records.decode(int(records.Kind.CHANNEL), bad, b"", max_bytes=CAP)
    with pytest.raises(RecordError, match="twice"):
        records.decode(int(records.Kind.CHANNEL), json.dumps({"renditions": [{"name": "a"}, {"name": "a"}]}).encode(),
                       b"", max_bytes=CAP)


def test_order_check() -> None:
    chan = ChannelRecord(renditions=(Rendition("source"),))
    check = OrderCheck()
    with pytest.raises(RecordError, match="before the CHANNEL"):
        check.check(_seg(0))
    check.check(chan)
    check.check(_seg(5))
    check.check(_seg(7))  # a gap is allowed (a rung shed and restored keeps the source's numbers)
    check.check(_seg(3, rendition="720p"))  # renditions are numbered apart
    with pytest.raises(RecordError, match="after 7"):
        check.check(_seg(7))
    check.check(_seg(8, disc_seq=2))
    with pytest.raises(RecordError, match="discontinuity 1"):
        check.check(_seg(9, disc_seq=1))
    with pytest.raises(RecordError, match="RESYNC after"):
        check.check(Resync("late"))


def test_order_check_from_a_position_and_after_resync() -> None:
    check = OrderCheck({"source": Position("source", 10, 1)})
    check.check(ChannelRecord())
    with pytest.raises(RecordError):
        check.check(_seg(9, disc_seq=1))  # before the position resumed from
    check.check(_seg(10, disc_seq=1))
    after_gone = OrderCheck({"source": Position("source", 10, 1)})
    after_gone.check(Resync("gone"))  # the parent starts at its live window: numbers are checked from there
    after_gone.check(ChannelRecord())
    after_gone.check(_seg(40, disc_seq=1))
