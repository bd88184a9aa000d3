"""LL-HLS relay records (PART, INIT, the CMAF fields of SEGMENT and CHANNEL): they round-trip, refuse
what a hostile peer could send, decode an older parent's headers, and are checked for order."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.relay import records
from edged.relay.records import (
    ChannelRecord,
    InitRecord,
    OrderCheck,
    PartRecord,
    Position,
    RecordError,
    Rendition,
    Resync,
    SegmentRecord,
)

CAP = 1 << 20
names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,20}\Z")
seqs = st.integers(min_value=0, max_value=records.MAX_SEQ)
finite = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)
init_ids = st.from_regex(r"\A[0-9a-f]{16}\Z")
part_lists = st.lists(st.tuples(st.floats(min_value=0, max_value=60), st.booleans()),
                      max_size=records.MAX_PARTS).map(tuple)


def _id(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:16]


cmaf_segments = st.builds(
    SegmentRecord, rendition=names, seq=seqs, duration=st.floats(min_value=0, max_value=3600),
    discontinuity=st.booleans(), disc_seq=seqs, start_pts=st.floats(min_value=-1e6, max_value=1e6),
    program_date_time=finite, ingest_ns=st.integers(0, 1 << 62), payload=st.binary(max_size=2048),
    fmt=st.just("cmaf"), init=init_ids, parts=part_lists,
)
joined_segments = st.builds(
    SegmentRecord, rendition=names, seq=seqs, duration=st.floats(min_value=0, max_value=3600),
    discontinuity=st.booleans(), disc_seq=seqs, start_pts=st.floats(min_value=-1e6, max_value=1e6),
    program_date_time=finite, ingest_ns=st.integers(0, 1 << 62), payload=st.just(b""),
    fmt=st.just("cmaf"), init=init_ids, parts=part_lists.filter(bool), from_parts=st.integers(1, 1 << 30),
)
parts = st.builds(
    PartRecord, rendition=names, seq=seqs, index=st.integers(0, records.MAX_PARTS - 1),
    duration=st.floats(min_value=0, max_value=60), independent=st.booleans(),
    start_pts=st.floats(min_value=-1e6, max_value=1e6), program_date_time=finite, discontinuity=st.booleans(),
    disc_seq=seqs, init=init_ids, ingest_ns=st.integers(0, 1 << 62), payload=st.binary(min_size=1, max_size=2048),
)
inits = st.builds(lambda r, b: InitRecord(r, _id(b), b), names, st.binary(min_size=1, max_size=2048))
channels = st.builds(
    ChannelRecord, renditions=st.lists(st.builds(Rendition, name=names), max_size=4,
                                       unique_by=lambda r: r.name).map(tuple),
    target_duration=st.integers(0, 60), live=st.booleans(), format=st.sampled_from(records.FORMATS),
    part_target=st.just(0.0) | st.floats(min_value=0.1, max_value=2.0),
    segment_seconds=st.just(0.0) | st.floats(min_value=0.5, max_value=30.0),
)


@given(st.one_of(cmaf_segments, joined_segments, parts, inits, channels))
@settings(max_examples=300, deadline=None)
def test_llhls_records_round_trip(rec: records.Record) -> None:
    kind, header, payload = records.encode(rec)
    assert records.decode(kind, header, payload, max_bytes=CAP) == rec


@given(st.dictionaries(
    st.sampled_from(["rendition", "seq", "index", "duration", "independent", "discontinuity", "disc_seq",
                     "start_pts", "program_date_time", "ingest_ns", "size", "init", "fmt", "parts", "format",
                     "part_target", "from_parts", "gap", "gaps"]),
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), init_ids,
              st.lists(st.one_of(st.integers(), st.lists(st.one_of(st.floats(), st.booleans(), st.text(max_size=3)),
                                                         max_size=3)), max_size=3))))
@settings(max_examples=500)
def test_hostile_llhls_headers_raise_only_record_error(d: dict[str, object]) -> None:
    header = json.dumps(d).encode()
    for kind in (records.Kind.PART, records.Kind.INIT, records.Kind.SEGMENT, records.Kind.CHANNEL):
        for payload in (b"", b"x"):
            try:
                records.decode(int(kind), header, payload, max_bytes=CAP)
            except RecordError:
                pass


INIT = _id(b"ftypmoov")


def _part(seq: int, index: int, rendition: str = "source", disc_seq: int = 0, init: str = INIT) -> PartRecord:
    return PartRecord(rendition=rendition, seq=seq, index=index, duration=0.5, independent=index == 0,
                      start_pts=seq * 2.0, program_date_time=1.7e9 + seq * 2, discontinuity=False, disc_seq=disc_seq,
                      init=init, ingest_ns=1, payload=b"moofmdat")


def _seg(seq: int, rendition: str = "source", init: str = INIT, disc_seq: int = 0) -> SegmentRecord:
    return SegmentRecord(rendition=rendition, seq=seq, duration=2.0, discontinuity=False, disc_seq=disc_seq,
                         start_pts=seq * 2.0, program_date_time=1.7e9, ingest_ns=1, payload=b"moofmdat" * 4,
                         fmt="cmaf", init=init, parts=((0.5, True), (0.5, False), (0.5, False), (0.5, False)))


def _joined(seq: int) -> SegmentRecord:
    return SegmentRecord(**{**{k: getattr(_seg(seq), k) for k in SegmentRecord.__slots__}, "payload": b"",
                            "from_parts": 32})


def _header(rec: records.Record, **changes: object) -> tuple[int, bytes, bytes]:
    kind, header, payload = records.encode(rec)
    d = json.loads(header)
    d.update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        del d[k]
    return kind, json.dumps(d).encode(), payload


@pytest.mark.parametrize(("rec", "changes", "match"), [
    (_part(3, 0), {"init": "ABCDEF0123456789"}, "16 lowercase hex"),  # an id is lowercase
    (_part(3, 0), {"init": "abc"}, "16 lowercase hex"),
    (_part(3, 0), {"init": None}, "16 lowercase hex"),  # a part always names its init segment
    (_part(3, 0), {"index": records.MAX_PARTS}, "index"),
    (_part(3, 0), {"index": -1}, "index"),
    (_part(3, 0), {"duration": 61}, "duration"),
    (_part(3, 0), {"independent": 1}, "independent"),
    (_part(3, 0), {"size": 3}, "size"),
    (_part(3, 0), {"seq": "3"}, "seq"),
    (_seg(3), {"fmt": "mp4"}, "fmt"),
    (_seg(3), {"init": "0" * 17}, "16 lowercase hex"),
    (_seg(3), {"parts": [[0.5, True]] * (records.MAX_PARTS + 1)}, "at most"),
    (_seg(3), {"parts": [[0.5]]}, "pairs"),
    (_seg(3), {"parts": [["0.5", True]]}, "parts.duration"),
    (_seg(3), {"parts": [[0.5, "yes"]]}, "parts.independent"),
    (_seg(3), {"parts": {"0": 1}}, "parts"),
    (_seg(3), {"fmt": "ts"}, "TS segment with"),  # a TS segment names no init segment and has no parts
    (_seg(3), {"from_parts": 32}, "joined from its parts"),  # joined, yet with a payload
    (_joined(3), {"parts": []}, "joined from its parts"),
    (_joined(3), {"fmt": "ts", "init": "", "parts": []}, "joined from its parts"),
    (_seg(3), {"from_parts": -1}, "from_parts"),
    (_part(3, 1), {"gap": True}, "gap part with bytes"),  # a gap has no bytes
    (_part(3, 1), {"gap": "yes"}, "gap"),
    (dataclasses.replace(_part(3, 1), payload=b""), {}, "size: expected an integer between 1"),  # only a gap is empty
    (_seg(3), {"gaps": [4]}, "gaps"),  # indices within the parts
    (_seg(3), {"gaps": [-1]}, "gaps"),
    (_seg(3), {"gaps": [2, 1]}, "gaps"),  # sorted
    (_seg(3), {"gaps": [1, 1]}, "gaps"),  # unique
    (_seg(3), {"gaps": [True]}, "gaps"),
    (_seg(3), {"gaps": ["1"]}, "gaps"),
    (_seg(3), {"gaps": {"1": 1}}, "gaps"),
    (_seg(3), {"fmt": "ts", "init": "", "parts": [], "gaps": [0]}, "TS segment with"),
    (ChannelRecord(), {"format": "webm"}, "format"),
    (ChannelRecord(), {"part_target": 0.05}, "part_target"),
    (ChannelRecord(), {"part_target": 2.5}, "part_target"),
    (ChannelRecord(), {"part_target": True}, "part_target"),
    (ChannelRecord(), {"segment_seconds": -1}, "segment_seconds"),
    (ChannelRecord(), {"segment_seconds": "2"}, "segment_seconds"),
])
def test_malformed_llhls_headers_are_refused(rec: records.Record, changes: dict[str, object], match: str) -> None:
    kind, header, payload = _header(rec, **changes)
    with pytest.raises(RecordError, match=match):
        records.decode(kind, header, payload, max_bytes=CAP)


def test_init_records_are_checked_against_their_id_and_payload_rules() -> None:
    good = InitRecord("source", INIT, b"ftypmoov")
    kind, header, payload = records.encode(good)
    assert records.decode(kind, header, payload, max_bytes=CAP) == good
    with pytest.raises(RecordError, match="another id"):  # the id names the bytes: a parent cannot swap them
        records.decode(kind, header.replace(INIT.encode(), b"0123456789abcdef"), payload, max_bytes=CAP)
    with pytest.raises(RecordError, match="size"):
        records.decode(*_header(InitRecord("source", _id(b""), b""), size=0), max_bytes=CAP)  # empty: no init
    with pytest.raises(RecordError, match="over the cap"):
        records.decode(kind, header, payload, max_bytes=len(header) + 2)
    with pytest.raises(RecordError, match="with a payload"):
        records.decode(int(records.Kind.RESYNC), b"{}", b"x", max_bytes=CAP)


def test_an_older_parents_records_decode_with_the_defaults() -> None:
    """A parent from before LL-HLS sends no fmt/init/parts in a SEGMENT and no format/part_target in a
    CHANNEL: they decode as TS; a TS segment's header is still the one an older child knows."""
    old_seg = {"rendition": "source", "seq": 4, "duration": 2.0, "discontinuity": False, "disc_seq": 0,
               "start_pts": 8.0, "program_date_time": 1.7e9, "ingest_ns": 5, "size": 3}
    rec = records.decode(int(records.Kind.SEGMENT), json.dumps(old_seg).encode(), b"abc", max_bytes=CAP)
    assert isinstance(rec, SegmentRecord) and (rec.fmt, rec.init, rec.parts) == ("ts", "", ())
    assert json.loads(records.encode(rec)[1]) == old_seg
    chan = records.decode(int(records.Kind.CHANNEL), json.dumps({"renditions": [{"name": "source"}]}).encode(), b"",
                          max_bytes=CAP)
    assert isinstance(chan, ChannelRecord) and (chan.format, chan.part_target) == ("ts", 0.0)
    cmaf = ChannelRecord(renditions=(Rendition("source"),), format="cmaf", part_target=0.5)
    assert cmaf.fields()["format"] == "cmaf" and cmaf.fields()["part_target"] == 0.5
    assert ChannelRecord.from_info(cmaf.fields()) == cmaf


def _checked(check: OrderCheck, *recs: records.Record) -> None:
    for rec in recs:
        check.check(rec)


def test_parts_come_after_the_last_complete_segment_in_index_order() -> None:
    check = OrderCheck({"source": Position("source", 10, 0)})
    with pytest.raises(RecordError, match="before the CHANNEL"):
        check.check(_part(10, 0))
    with pytest.raises(RecordError, match="INIT before the CHANNEL"):
        check.check(InitRecord("source", INIT, b"ftypmoov"))
    check.check(ChannelRecord())
    with pytest.raises(RecordError, match="before its INIT"):
        check.check(_part(10, 0))
    _checked(check, InitRecord("source", INIT, b"ftypmoov"), _part(10, 0), _part(10, 1), _part(10, 2))
    with pytest.raises(RecordError, match="after part 10.2"):
        check.check(_part(10, 4))  # a hole
    with pytest.raises(RecordError, match="after part 10.2"):
        check.check(_part(10, 2))  # again
    _checked(check, _seg(10), _part(11, 0))  # the segment completes; the next one's parts start at 0
    with pytest.raises(RecordError, match="after segment 10"):
        check.check(_part(10, 3))  # a part of a complete segment
    with pytest.raises(RecordError, match="next part of segment 12 here is 0"):
        check.check(_part(12, 1))  # a new segment's parts start at its first
    with pytest.raises(RecordError, match="segment 9"):
        check.check(_seg(9))
    # the pending segment 11 may be abandoned (a stream that ends mid-segment): 12's parts follow
    _checked(check, _part(12, 0))
    with pytest.raises(RecordError, match="after part 12.0"):
        check.check(_part(11, 1))
    with pytest.raises(RecordError, match="segment 11 after a part of segment 12"):
        check.check(_seg(11))


def test_a_joined_segment_follows_all_its_parts() -> None:
    joined = _joined(10)
    assert joined.size == 32 and _seg(10).size == 32
    check = OrderCheck()
    _checked(check, ChannelRecord(), InitRecord("source", INIT, b"ftypmoov"), _part(10, 0), _part(10, 1))
    with pytest.raises(RecordError, match="joined from 4 parts, but the last part here is \\(10, 1\\)"):
        check.check(joined)
    _checked(check, _part(10, 2), _part(10, 3), joined)


def test_part_discontinuity_renditions_and_inits_apart() -> None:
    check = OrderCheck()
    other = _id(b"another init")
    _checked(check, ChannelRecord(), InitRecord("source", INIT, b"ftypmoov"), _seg(5, disc_seq=2))
    with pytest.raises(RecordError, match="discontinuity 1"):
        check.check(_part(6, 0, disc_seq=1))
    with pytest.raises(RecordError, match="before its INIT"):
        check.check(_part(6, 0, disc_seq=2, init=other))  # a new init segment (a track change) comes first
    with pytest.raises(RecordError, match="before its INIT"):
        check.check(_part(0, 0, rendition="360p"))  # inits are per rendition
    _checked(check, InitRecord("360p", INIT, b"ftypmoov"), _part(0, 0, rendition="360p"),
             InitRecord("source", other, b"another init"), InitRecord("source", other, b"another init"),
             _part(6, 0, disc_seq=2, init=other), _seg(6, init=other, disc_seq=2))


def test_parts_resume_from_what_the_child_holds() -> None:
    """A parent replays a pending segment's parts from its first; a child that holds some of them
    already takes them again (they are stored once), but never a hole past what it holds."""
    held = OrderCheck({"source": Position("source", 10, 0)}, {"source": (10, 3)})
    _checked(held, ChannelRecord(), InitRecord("source", INIT, b"ftypmoov"))
    with pytest.raises(RecordError, match="next part of segment 10 here is 3"):
        held.check(_part(10, 4))
    for start in (0, 2, 3):
        check = OrderCheck({"source": Position("source", 10, 0)}, {"source": (10, 3)})
        _checked(check, ChannelRecord(), InitRecord("source", INIT, b"ftypmoov"),
                 *(_part(10, i) for i in range(start, 6)), _seg(10))
    after_resync = OrderCheck({"source": Position("source", 10, 0)}, {"source": (10, 3)})
    _checked(after_resync, Resync("gone"), ChannelRecord(), InitRecord("source", INIT, b"ftypmoov"),
             _part(40, 0), _part(40, 1))


def test_gap_parts_and_segments_with_gaps_round_trip() -> None:
    """A gap part has no bytes and says so (`gap`); a segment lists its gap parts' indices. Neither field
    is in the header when it is the default, so an older child reads the rest as it did."""
    gap = PartRecord(**{**{k: getattr(_part(3, 1), k) for k in PartRecord.__slots__}, "payload": b"", "gap": True})
    kind, header, payload = records.encode(gap)
    assert json.loads(header)["gap"] is True and json.loads(header)["size"] == 0 and payload == b""
    assert records.decode(kind, header, payload, max_bytes=CAP) == gap
    assert "gap" not in json.loads(records.encode(_part(3, 1))[1])
    seg = SegmentRecord(**{**{k: getattr(_seg(3), k) for k in SegmentRecord.__slots__}, "gaps": (1, 2)})
    kind, header, payload = records.encode(seg)
    assert json.loads(header)["gaps"] == [1, 2]
    assert records.decode(kind, header, payload, max_bytes=CAP) == seg
    joined = SegmentRecord(**{**{k: getattr(_joined(3), k) for k in SegmentRecord.__slots__}, "gaps": (3,)})
    assert records.decode(*records.encode(joined), max_bytes=CAP) == joined
    assert "gaps" not in json.loads(records.encode(_seg(3))[1])
    old_part = json.loads(records.encode(_part(3, 1))[1])  # an older parent's PART: no gap field
    rec = records.decode(int(records.Kind.PART), json.dumps(old_part).encode(), b"moofmdat", max_bytes=CAP)
    assert isinstance(rec, PartRecord) and rec.gap is False
    # a gap part is checked for order like any other part
    check = OrderCheck()
    _checked(check, ChannelRecord(renditions=(Rendition("source"),)), InitRecord("source", INIT, b"ftypmoov"),
             _part(3, 0), gap, _part(3, 2))
