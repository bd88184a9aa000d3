"""The segmenter in CMAF mode: parts cut on time from real encoder output, segments as the parts
concatenated, init segments per track set; checked by PyAV, ffprobe and pymp4."""

from __future__ import annotations

import dataclasses
import io
import subprocess
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from edged.config import Rung
from edged.media.packet import MediaPacket
from edged.media.segmenter import Segment, Segmenter, SegmentPart
from edged.media.transcode import encoders
from edged.media.transcode.renditions import Renditions
from edged.media.transcode.worker import Pipeline, WorkerSpec
from edged.protocols import h264
from edged.store.segments import SegmentStore, cmaf_init_id
from tests.conftest import need
from tests.unit.media.test_segmenter import _packets
from tests.unit.media.test_transcoder import caught_up
from tests.unit.protocols.test_cmaf import _boxes as boxes
from tests.unit.protocols.test_cmaf import _child as child


def cut(packets: Iterable[MediaPacket], *, part_seconds: float = 0.5, segment_seconds: float = 2.0,
        max_segment_seconds: float = 6.0, next_seq: int = 0, discontinuity: bool = False,
        **kw: Any) -> tuple[list[Segment], list[SegmentPart]]:
    parts: list[SegmentPart] = []
    seg = Segmenter("source", segment_seconds=segment_seconds, max_segment_seconds=max_segment_seconds,
                    next_seq=next_seq, disc_seq=0, discontinuity=discontinuity, fmt="cmaf",
                    part_seconds=part_seconds, on_part=parts.append, **kw)
    out = [s for p in packets for s in seg.push(p)]
    out += seg.flush()
    return out, parts


def video_runs(part: bytes) -> list[Any]:
    """(tfdt, trun) of track 1 in a moof+mdat part."""
    moof = boxes(part)[0]
    return [(child(t, b"tfdt").baseMediaDecodeTime, child(t, b"trun")) for t in moof.children
            if t.type == b"traf" and child(t, b"tfhd").track_ID == 1]


def first_sample_is_idr(part: bytes) -> bool:
    """The first video sample of a part is an IDR picture (NAL type 5 among its NAL units)."""
    moof, mdat = boxes(part)[:2]
    trafs = [t for t in moof.children if t.type == b"traf"]
    video = next(t for t in trafs if child(t, b"tfhd").track_ID == 1)
    offset = child(video, b"trun").data_offset - (moof.end - moof.offset) - 8
    data = part[mdat.offset + 8 + offset:]
    types = []
    pos = 0
    size = child(video, b"trun").sample_info[0].sample_size
    while pos < size:
        nal_len = int.from_bytes(data[pos:pos + 4], "big")
        types.append(h264.avc_nal_type(data[pos + 4:pos + 4 + nal_len]))
        pos += 4 + nal_len
    return 5 in types


def decode(init: bytes, payloads: Sequence[bytes]) -> dict[str, int]:
    counts: dict[str, int] = {}
    blob = init + b"".join(payloads)
    for kind in ("video", "audio"):
        with av.open(io.BytesIO(blob), mode="r", format="mp4") as c:
            streams = [s for s in c.streams if s.type == kind]
            if streams:
                counts[kind] = sum(1 for _ in c.decode(streams[0]))
    return counts


def restamp(packets: Sequence[MediaPacket], ms: Any) -> list[MediaPacket]:
    """Video at other frame times (``ms(n)``: the n-th frame's time), audio as it was."""
    out = []
    n = 0
    for p in packets:
        if p.kind == "video":
            t = ms(n)
            out.append(dataclasses.replace(p, pts=t + (p.pts - p.dts), dts=t))
            n += 1
        else:
            out.append(p)
    return sorted(out, key=lambda p: p.dts_seconds)


def kept(packets: Sequence[MediaPacket]) -> dict[str, int]:
    """Packets a segmenter keeps: from the first video keyframe on (audio before it is dropped)."""
    first = next(i for i, p in enumerate(packets) if p.kind == "video" and p.keyframe)
    rest = packets[first:]
    return {"video": sum(p.kind == "video" for p in rest), "audio": sum(p.kind == "audio" for p in rest)}


def check_durations(segs: Sequence[Segment], target: float) -> None:
    for s in segs:
        assert sum(d for d, _ in s.parts) == pytest.approx(s.duration, abs=1e-9)
        assert all(d <= target + 1e-9 for d, _ in s.parts), s.parts
        assert all(d >= 0.85 * target for d, _ in s.parts[:-1]), s.parts  # the last part may be shorter


# -- the normal case ---------------------------------------------------------------------------

def test_parts_make_the_segment_and_decode(sample_flv: Path, tmp_path: Path) -> None:
    pkts = _packets(sample_flv)
    segs, parts = cut(pkts, next_seq=7, discontinuity=True)
    assert [s.seq for s in segs] == [7, 8, 9]
    assert all(s.fmt == "cmaf" for s in segs)
    # 30 fps, GOP 1 s, 0.5 s parts: four parts per segment, an IDR opening every other one
    assert [s.parts for s in segs] == [((0.5, True), (0.5, False), (0.5, True), (0.5, False))] * 3
    for s in segs:
        mine = [p for p in parts if p.seq == s.seq]
        assert [p.index for p in mine] == list(range(len(s.parts)))
        assert b"".join(p.data for p in mine) == s.payload
        assert [(p.duration, p.independent) for p in mine] == list(s.parts)
        assert [p.last for p in mine] == [False] * (len(mine) - 1) + [True]
        assert {(p.start_pts, p.program_date_time, p.discontinuity, p.disc_seq, p.init_id) for p in mine} == {
            (s.start_pts, s.program_date_time, s.discontinuity, s.disc_seq, s.init_id)}
        assert all(p.init is s.init for p in mine)
    assert segs[0].discontinuity and segs[0].disc_seq == 1 and not segs[1].discontinuity
    init = segs[0].init
    assert segs[0].init_id == cmaf_init_id(init) and {s.init_id for s in segs} == {segs[0].init_id}
    assert decode(init, [s.payload for s in segs]) == kept(pkts)
    for s in segs:  # each segment decodes on its own after the init segment
        assert decode(init, [s.payload])["video"] == s.video_frames == 60
    path = tmp_path / "all.mp4"
    path.write_bytes(init + b"".join(s.payload for s in segs))
    r = subprocess.run([need("ffmpeg"), "-v", "error", "-i", str(path), "-f", "null", "-"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == ""
    # pymp4: every part a moof+mdat, tfdt at the part's first frame, mfhd numbers increasing
    video = [p for p in pkts if p.kind == "video"]
    starts = [video[i].dts * 90 for i in range(0, len(video), 15)]  # ms → 90 kHz, every 0.5 s
    seqs = []
    for p, start in zip(parts, starts, strict=True):
        moof, mdat = boxes(p.data)
        assert (moof.type, mdat.type) == (b"moof", b"mdat")
        seqs.append(child(moof, b"mfhd").sequence_number)
        (tfdt, trun), = video_runs(p.data)
        assert tfdt == start and trun.sample_count == 15
        assert first_sample_is_idr(p.data) == p.independent
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


@pytest.mark.parametrize("target", [0.2, 0.3, 0.5, 0.7, 1.0])
def test_part_durations_stay_within_the_target(sample_flv: Path, target: float) -> None:
    segs, parts = cut(_packets(sample_flv), part_seconds=target)
    check_durations(segs, target)
    frames = round(target * 30 + 1e-6)  # whole frames that fit
    assert all(d == pytest.approx(frames / 30, abs=1e-9) for s in segs for d, _ in s.parts[:-1])
    for p in parts:
        if p.independent:
            assert first_sample_is_idr(p.data)
    assert all(s.parts[0][1] for s in segs)  # every segment starts with an independent part


def test_millisecond_timestamps_of_2997_fps(sample_flv: Path) -> None:
    """RTMP rounds 1001/30 ms frames: parts still hold the same number of frames, within the target."""
    pkts = restamp(_packets(sample_flv), lambda n: round(n * 1001 / 30))
    segs, parts = cut(pkts, part_seconds=0.5)
    check_durations(segs, 0.5)
    counts = [video_runs(p.data)[0][1].sample_count for p in parts]
    assert sum(counts) == sum(p.kind == "video" for p in pkts)
    # Over the first second, millisecond times cannot tell 29.97 from 30 fps; once they can, parts
    # hold 14 frames (15 would be 0.5005 s)
    assert {c for c, p in zip(counts, parts, strict=True) if not p.last} <= {14, 15}
    assert {c for c, p in zip(counts, parts, strict=True) if not p.last and p.seq > 0} == {14}


def test_25_fps_and_tick_time_base(sample_flv: Path) -> None:
    """MPEG-TS times (90 kHz) at 25 fps: five frames to a 0.2 s part."""
    pkts = []
    n = 0
    for p in _packets(sample_flv):
        if p.kind == "video":
            t = n * 3600
            n += 1
            pkts.append(dataclasses.replace(p, pts=t + (p.pts - p.dts) * 90, dts=t, time_base=Fraction(1, 90000)))
        else:
            pkts.append(p)
    pkts.sort(key=lambda p: p.dts_seconds)
    segs, parts = cut(pkts, part_seconds=0.2, segment_seconds=1.0)
    check_durations(segs, 0.2)
    assert {video_runs(p.data)[0][1].sample_count for p in parts if not p.last} == {5}


# -- track sets, discontinuities -------------------------------------------------------------

def _tracks(init: bytes) -> list[str]:
    moov = boxes(init)[1]
    return [child(child(t, b"mdia"), b"hdlr").handler_type.decode() for t in moov.children if t.type == b"trak"]


def test_audio_just_after_the_first_keyframe_is_in_the_first_init(sample_flv: Path) -> None:
    pkts = [p for p in _packets(sample_flv) if p.kind == "video" or p.pts_seconds >= 0.1]
    segs, _ = cut(pkts)
    assert _tracks(segs[0].init) == ["vide", "soun"]
    assert not any(s.discontinuity for s in segs) and len({s.init_id for s in segs}) == 1


def test_audio_that_starts_later_waits_for_a_new_init(sample_flv: Path) -> None:
    pkts = [p for p in _packets(sample_flv) if p.kind == "video" or p.pts_seconds >= 0.7]
    segs, parts = cut(pkts)
    assert _tracks(segs[0].init) == ["vide"] and _tracks(segs[1].init) == ["vide", "soun"]
    assert segs[0].init_id != segs[1].init_id == segs[2].init_id
    assert [(s.discontinuity, s.disc_seq) for s in segs] == [(False, 0), (True, 1), (False, 1)]
    assert all(p.discontinuity for p in parts if p.seq == 1)
    assert decode(segs[0].init, [segs[0].payload]) == {"video": 60}
    audio = sum(p.kind == "audio" and p.pts_seconds >= 2.0 for p in pkts)
    counts = decode(segs[1].init, [s.payload for s in segs[1:]])
    assert counts["video"] == 120 and abs(counts["audio"] - audio) <= 2  # audio at the cut: either side


def test_a_new_video_config_is_a_new_init(sample_flv: Path) -> None:
    pkts = _packets(sample_flv)
    other = dataclasses.replace(pkts[0].config, codec_string="avc1.42c01f")
    pkts = [dataclasses.replace(p, config=other) if p.kind == "video" and p.pts_seconds >= 3.01 else p for p in pkts]
    segs, parts = cut(pkts)
    t0 = segs[0].start_pts  # the first keyframe's time
    assert [round(s.start_pts - t0, 3) for s in segs] == [0.0, 2.0, 3.0, 5.0]  # cut at the new config
    assert [s.discontinuity for s in segs] == [False, False, True, False]
    assert segs[1].init_id == segs[0].init_id != segs[2].init_id == segs[3].init_id
    assert {p.init_id for p in parts if p.seq >= 2} == {segs[2].init_id}


def test_forced_cut_starts_with_a_dependent_part(sample_flv: Path) -> None:
    pkts = _packets(sample_flv)
    segs, parts = cut(pkts, segment_seconds=2.0, max_segment_seconds=1.6)  # keyframes every 1 s
    assert segs[0].forced and segs[1].start_pts - segs[0].start_pts == pytest.approx(1.6)
    forced_next = [b for a, b in zip(segs, segs[1:], strict=False) if a.forced]
    assert forced_next and all(not s.parts[0][1] for s in forced_next)
    check_durations(segs, 0.5)
    assert decode(segs[0].init, [s.payload for s in segs])["video"] == sum(p.kind == "video" for p in pkts)


def test_audio_only_parts_cut_on_audio_time(sample_flv: Path) -> None:
    pkts = [p for p in _packets(sample_flv) if p.kind == "audio"]
    segs, parts = cut(pkts, expect_video=False, part_seconds=0.5)
    assert _tracks(segs[0].init) == ["soun"]
    check_durations(segs, 0.5)
    assert all(p.independent for p in parts)
    assert decode(segs[0].init, [s.payload for s in segs]) == {"audio": len(pkts)}
    moofs = [boxes(p.data)[0] for p in parts]
    assert {child(t, b"tfhd").track_ID for m in moofs for t in m.children if t.type == b"traf"} == {1}


def test_end_of_stream_and_given_end(sample_flv: Path) -> None:
    pkts = [p for p in _packets(sample_flv) if p.pts_seconds < 2.5]
    seg = Segmenter("r", segment_seconds=2.0, max_segment_seconds=6, next_seq=0, disc_seq=0, discontinuity=False,
                    fmt="cmaf")
    out = [s for p in pkts for s in seg.push(p)]
    start = seg.open_start_pts
    assert start is not None and round(start, 3) == 2.021 and seg.current is not None and seg.current.seq == 1
    out += seg.flush(end_pts=start + 0.45)
    assert seg.open_start_pts is None and seg.flush() == []
    assert out[-1].duration == pytest.approx(0.45) and sum(d for d, _ in out[-1].parts) == pytest.approx(0.45)


def test_negative_decode_times_are_dropped_and_formats_checked(sample_flv: Path) -> None:
    pkts = _packets(sample_flv)[:40]
    early = [dataclasses.replace(p, dts=-1) for p in pkts[:3]]
    seg = Segmenter("r", segment_seconds=2.0, max_segment_seconds=6, next_seq=0, disc_seq=0, discontinuity=False,
                    fmt="cmaf")
    for p in early:
        assert seg.push(p) == [] and seg.current is None
    with pytest.raises(ValueError, match="segment format"):
        Segmenter("r", segment_seconds=2.0, max_segment_seconds=6, next_seq=0, disc_seq=0, discontinuity=False,
                  fmt="mp4")


# -- the ladder: rung parts numbered and cut like the source's ----------------------------------

def test_ladder_parts_share_numbers_dates_and_times(sample_flv: Path) -> None:
    segs: dict[str, list[Segment]] = {}
    parts: dict[str, list[SegmentPart]] = {}
    r = Renditions(channel="t", segment_seconds=2.0, max_segment_seconds=6, next_seq=4, disc_seq=2,
                   discontinuity=True, ladder=(Rung("90p30", 160, 90, 30, 100),), codec=encoders.X264,
                   on_segment=lambda s: segs.setdefault(s.rendition, []).append(s), fmt="cmaf", part_seconds=0.5,
                   on_part=lambda p: parts.setdefault(p.rendition, []).append(p))
    for pkt in _packets(sample_flv):
        r.push(pkt)
        caught_up(r)
    r.finish()
    src, rung = segs["source"], segs["90p30"]
    assert [s.seq for s in src] == [4, 5, 6] and [s.seq for s in rung] == [4, 5, 6]
    assert all(s.fmt == "cmaf" for s in rung)

    def key(p: SegmentPart) -> tuple[Any, ...]:
        return p.seq, p.index, p.duration, p.program_date_time, p.discontinuity, p.disc_seq

    assert [key(p) for p in parts["90p30"]] == [key(p) for p in parts["source"]]
    assert [p.discontinuity for p in parts["90p30"]] == [True] * 4 + [False] * 8
    for a, b in zip(rung, src, strict=True):
        # the rung's only IDRs are at the boundaries (the source has one every second)
        assert [d for d, _ in a.parts] == [d for d, _ in b.parts] and a.duration == b.duration
        assert [i for _, i in a.parts] == [True, False, False, False]
        assert b"".join(p.data for p in parts["90p30"] if p.seq == a.seq) == a.payload
    # the same decode times open the parts of both (tfdt, 90 kHz): part boundaries align
    for pa, pb in zip(parts["90p30"], parts["source"], strict=True):
        assert video_runs(pa.data)[0][0] == video_runs(pb.data)[0][0]
        assert first_sample_is_idr(pa.data) == pa.independent
    counts = decode(rung[0].init, [s.payload for s in rung])
    assert counts["video"] == sum(s.video_frames for s in rung) == 180


# -- the worker's pipeline: parts, inits and segments in the store --------------------------------

def _spec(tmp_path: Path, fmt: str = "cmaf") -> WorkerSpec:
    return WorkerSpec(channel="c", store_path=str(tmp_path / "store"), store_max_bytes=64 << 20, segment_seconds=2,
                      max_segment_seconds=6, keep_segments=20, session=1, window=3, fmt=fmt, part_seconds=0.5)


def test_pipeline_commits_parts_then_segments(sample_flv: Path, tmp_path: Path) -> None:
    store = SegmentStore(tmp_path / "store", 64 << 20)
    reports: list[dict[str, Any]] = []
    seen: list[tuple[int, int, int]] = []  # (seq, parts in the pending state, segments stored) after each report

    def report(r: dict[str, Any]) -> None:
        reports.append(r)
        pending = store.pending("c", "source")
        seen.append((r.get("seq", -1), len(pending.parts) if pending else 0, len(store.recent("c", "source", 50))))

    p = Pipeline(_spec(tmp_path), store, report)
    info = store.channel("c")
    assert info is not None and (info["format"], info["part_target"]) == ("cmaf", 0.5)
    for pkt in _packets(sample_flv):
        p.push(pkt)
    p.finish(deliberate=True)
    events = [(r["event"], r["seq"], r.get("part")) for r in reports if r["event"] in ("part", "segment")]
    expected = []
    for seq in range(3):
        expected += [("part", seq, i) for i in range(4)] + [("segment", seq, None)]
    assert events == expected
    # a part is in the pending state when reported; the final part commits with its segment (one transaction)
    assert [x for x, r in zip(seen, reports, strict=True) if r["event"] == "part"][:4] == [
        (0, 1, 0), (0, 2, 0), (0, 3, 0), (0, 0, 1)]
    assert store.pending("c", "source") is None
    metas = store.recent("c", "source", 20)
    assert [m.seq for m in metas] == [0, 1, 2] and {m.fmt for m in metas} == {"cmaf"}
    init = store.read_init("c", "source", metas[0].init)
    assert init is not None and cmaf_init_id(init) == metas[0].init
    payloads = []
    for m in metas:
        payload = store.read("c", "source", m.seq)
        parts = [store.read_part("c", "source", m.seq, i) for i in range(len(m.parts))]
        assert payload is not None and None not in parts and b"".join(parts) == payload  # type: ignore[arg-type]
        assert m.parts == ((0.5, True), (0.5, False), (0.5, True), (0.5, False)) and m.size == len(payload)
        payloads.append(payload)
    assert decode(init, payloads)["video"] == 180
    part_reports = [r for r in reports if r["event"] == "part"]
    assert all(r["bytes"] > 0 and r["rendition"] == "source" for r in part_reports)
    assert [r["independent"] for r in part_reports] == [True, False] * 6


def test_restarted_pipeline_skips_a_segment_in_progress(sample_flv: Path, tmp_path: Path) -> None:
    store = SegmentStore(tmp_path / "store", 64 << 20)
    pkts = _packets(sample_flv)
    p = Pipeline(_spec(tmp_path), store)
    for pkt in pkts[: len(pkts) // 2]:  # 3 s: segment 1 in progress, one part committed
        p.push(pkt)
    pending = store.pending("c", "source")
    assert pending is not None and pending.seq == 1 and len(pending.parts) == 1
    held = store.read_part("c", "source", 1, 0)
    # killed here (no finish); the next worker numbers on after the segment in progress
    p2 = Pipeline(_spec(tmp_path), store)
    for pkt in pkts:
        p2.push(dataclasses.replace(pkt, pts=pkt.pts + 10_000, dts=pkt.dts + 10_000))
    p2.finish()
    metas = store.recent("c", "source", 20)
    assert [m.seq for m in metas] == [0, 2, 3, 4]
    assert metas[1].discontinuity and store.read_part("c", "source", 1, 0) == held


def test_ts_pipeline_records_its_format(sample_flv: Path, tmp_path: Path) -> None:
    store = SegmentStore(tmp_path / "store", 64 << 20)
    p = Pipeline(_spec(tmp_path, "ts"), store)
    for pkt in _packets(sample_flv)[:100]:
        p.push(pkt)
    p.finish()
    info = store.channel("c")
    assert info is not None and info["format"] == "ts" and not info["part_target"]
    metas = store.recent("c", "source", 20)
    assert metas and {m.fmt for m in metas} == {"ts"} and all(m.parts == () for m in metas)
    assert store.pending("c", "source") is None


# -- ingest gaps (GAP=YES parts) ---------------------------------------------------------------

def shifted(packets: Sequence[MediaPacket], after_ms: int, by_ms: int) -> list[MediaPacket]:
    """An encoder stall: every packet (video and audio) from `after_ms` on comes `by_ms` later."""
    out = [dataclasses.replace(p, pts=p.pts + by_ms, dts=p.dts + by_ms) if p.dts >= after_ms else p
           for p in packets]
    return sorted(out, key=lambda p: p.dts_seconds)


def check_gaps(segs: Sequence[Segment], parts: Sequence[SegmentPart], target: float, tmp_path: Path) -> None:
    """Part durations within the target and adding up; gap parts empty and listed in Segment.gaps; the
    other parts make the payload, which decodes with PyAV, ffmpeg and ffprobe without a word."""
    for s in segs:
        assert sum(d for d, _ in s.parts) == pytest.approx(s.duration, abs=1e-9)
        assert all(d <= target + 1e-9 for d, _ in s.parts), s.parts
        mine = [p for p in parts if p.seq == s.seq]
        assert [p.index for p in mine] == list(range(len(s.parts)))
        assert tuple(p.index for p in mine if p.gap) == s.gaps
        assert all(p.data == b"" and not p.independent for p in mine if p.gap)
        assert all(p.data for p in mine if not p.gap)
        assert b"".join(p.data for p in mine) == s.payload
        assert [p.last for p in mine] == [False] * (len(mine) - 1) + [True]
    init = segs[0].init
    path = tmp_path / "gap.mp4"
    path.write_bytes(init + b"".join(s.payload for s in segs))
    r = subprocess.run([need("ffmpeg"), "-v", "error", "-i", str(path), "-f", "null", "-"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == ""
    r = subprocess.run([need("ffprobe"), "-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames",
                        "-of", "csv=p=0", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == ""


def test_a_hole_inside_a_segment_becomes_gap_parts(sample_flv: Path, tmp_path: Path) -> None:
    """Media from 0.7 s on comes 1.2 s late: part 1 ends with its last frame (0.2 s), three GAP parts of
    0.4 s cover the hole, the segment (cut at the keyframe now at 2.2 s) still spans it."""
    pkts = shifted(_packets(sample_flv), 700, 1200)
    segs, parts = cut(pkts)
    check_gaps(segs, parts, 0.5, tmp_path)
    first = segs[0]
    assert first.duration == pytest.approx(2.2)
    assert [round(d, 6) for d, _ in first.parts] == [0.5, 0.2, 0.4, 0.4, 0.4, 0.3]
    assert first.gaps == (2, 3, 4) and [i for _, i in first.parts] == [True, False, False, False, False, False]
    assert all(not s.gaps for s in segs[1:])
    # part 1's last frame lasts one frame interval, not the hole: its samples end where the hole begins
    video = [p.dts for p in pkts if p.kind == "video"]
    before = max(t for t in video if t < 700)
    (tfdt, trun), = video_runs(parts[1].data)
    assert tfdt + sum(s.sample_duration for s in trun.sample_info) == (before + 33) * 90
    (tfdt, _), = video_runs(parts[5].data)
    assert tfdt == min(t for t in video if t >= 700) * 90 > (before + 1200) * 90  # the packet after the hole
    assert decode(first.init, [s.payload for s in segs]) == kept(pkts)


def test_a_hole_right_before_a_cut_ends_the_segment_with_gap_parts(sample_flv: Path, tmp_path: Path) -> None:
    """The keyframe at 2.0 s comes 1 s late: segment 0 gets its four parts and two GAP parts of 0.5 s."""
    pkts = shifted(_packets(sample_flv), 2000, 1000)
    segs, parts = cut(pkts)
    check_gaps(segs, parts, 0.5, tmp_path)
    first = segs[0]
    assert first.duration == pytest.approx(3.0)
    assert [round(d, 6) for d, _ in first.parts] == [0.5] * 6 and first.gaps == (4, 5)
    assert parts[5].gap and parts[5].last
    assert segs[1].start_pts == pytest.approx(first.start_pts + 3.0) and not segs[1].gaps
    assert decode(first.init, [s.payload for s in segs]) == kept(pkts)


def test_an_audio_only_hole_becomes_gap_parts(sample_flv: Path, tmp_path: Path) -> None:
    pkts = shifted([p for p in _packets(sample_flv) if p.kind == "audio"], 700, 1000)
    segs, parts = cut(pkts, expect_video=False, part_seconds=0.5)
    check_gaps(segs, parts, 0.5, tmp_path)
    assert segs[0].gaps and sum(segs[0].parts[i][0] for i in segs[0].gaps) == pytest.approx(1.0, abs=0.03)
    assert decode(segs[0].init, [s.payload for s in segs]) == {"audio": len(pkts)}


def test_a_dropped_frame_or_two_is_bridged(sample_flv: Path) -> None:
    """Two frames missing (a hole of two frame intervals) is no gap: the frame before lasts longer."""
    pkts = _packets(sample_flv)
    video = [p for p in pkts if p.kind == "video"]
    dropped = {id(video[20]), id(video[21])}
    segs, parts = cut([p for p in pkts if id(p) not in dropped])
    assert not any(s.gaps for s in segs) and not any(p.gap for p in parts)
    assert sum(d for d, _ in segs[0].parts) == pytest.approx(segs[0].duration, abs=1e-9)


def test_pipeline_commits_gap_parts(sample_flv: Path, tmp_path: Path) -> None:
    """The worker stores a gap part empty, lists it in the pending state and the segment's metadata, and
    reports it."""
    store = SegmentStore(tmp_path / "store", 64 << 20)
    reports: list[dict[str, Any]] = []
    pendings: list[tuple[int, ...]] = []

    def report(r: dict[str, Any]) -> None:
        reports.append(r)
        pending = store.pending("c", "source")
        if r["event"] == "part" and pending is not None:
            pendings.append(pending.gaps)

    p = Pipeline(_spec(tmp_path), store, report)
    for pkt in shifted(_packets(sample_flv), 700, 1200):
        p.push(pkt)
    p.finish(deliberate=True)
    # (the final part, 5, commits with its segment: the pending state then is segment 1's)
    assert pendings[:6] == [(), (), (2,), (2, 3), (2, 3, 4), ()]
    meta = store.meta("c", "source", 0)
    assert meta is not None and meta.gaps == (2, 3, 4) and len(meta.parts) == 6
    assert [store.read_part("c", "source", 0, i) == b"" for i in range(6)] == [False, False, True, True, True, False]
    payload = store.read("c", "source", 0)
    assert payload == b"".join(store.read_part("c", "source", 0, i) or b"" for i in range(6))
    gap_reports = [(r["seq"], r["part"]) for r in reports if r["event"] == "part" and r["gap"]]
    assert gap_reports == [(0, 2), (0, 3), (0, 4)]
    assert all(r["bytes"] == 0 for r in reports if r["event"] == "part" and r["gap"])
