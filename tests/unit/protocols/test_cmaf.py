"""CMAF writer: real H.264/HEVC + AAC packets in, init + parts out, checked by PyAV, ffprobe and pymp4."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymp4.parser import Box  # type: ignore[import-untyped]

from edged.media.packet import CodecConfig, MediaPacket
from edged.protocols import h264
from edged.protocols.cmaf import (
    FLAGS_NON_SYNC,
    FLAGS_SYNC,
    Fragmenter,
    Part,
    init_segment,
    make_track,
)
from edged.protocols.flv import FlvNormalizer
from tests.conftest import need
from tests.unit.media.flvsource import flv_tags

SECONDS, RATE = 3, 30


def _clip(out: Path, preset: str, vcodec: str = "libx264", fmt: str = "flv") -> Path:
    """3 s of 320x180@30 (keyframe every 1 s) + 48 kHz AAC by Debian's ffmpeg."""
    extra = ["-x265-params", "log-level=error"] if vcodec == "libx265" else []
    subprocess.run(
        [need("ffmpeg"), "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size=320x180:rate={RATE}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(SECONDS), "-c:v", vcodec,
         "-preset", preset, "-g", str(RATE), "-keyint_min", str(RATE), "-sc_threshold", "0", *extra,
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", fmt, str(out)],
        check=True, timeout=60,
    )
    return out


def _flv_packets(path: Path) -> list[MediaPacket]:
    norm = FlvNormalizer()
    out = []
    for kind, ts, body in flv_tags(path):
        pkt = norm.video(ts, body) if kind == "video" else norm.audio(ts, body)
        if isinstance(pkt, MediaPacket):
            out.append(pkt)
    return out


@pytest.fixture(scope="module", params=["ultrafast", "veryfast"], ids=["no-bframes", "bframes"])
def packets(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[MediaPacket]:
    path = _clip(tmp_path_factory.mktemp("cmaf") / "clip.flv", request.param)
    return _flv_packets(path)


@pytest.fixture(scope="module")
def hevc_packets(tmp_path_factory: pytest.TempPathFactory) -> list[MediaPacket]:
    """HEVC video in normal form (Annex B, parameter sets before keyframes) from an MP4 by libx265."""
    path = _clip(tmp_path_factory.mktemp("cmaf") / "clip.mp4", "ultrafast", "libx265", "mp4")
    out = []
    with av.open(str(path)) as inp:
        vs = inp.streams.video[0]
        shift = None  # the MP4 starts at a negative dts (B-frames); the writer wants decode times ≥ 0
        dc = h264.parse_hvcc(bytes(vs.codec_context.extradata or b""))
        sps = h264.parse_hevc_sps(next(n for n in dc.parameter_sets if h264.hevc_nal_type(n) == h264.HEVC_NAL_SPS))
        cfg = CodecConfig("video", "hevc", h264.hevc_codec_string(sps), h264.join_annexb(list(dc.parameter_sets)),
                          width=sps.width, height=sps.height)
        for p in inp.demux(vs):
            if p.dts is None or p.size == 0:
                continue
            nals = h264.split_length_prefixed(bytes(p), dc.length_size)
            if p.is_keyframe:
                nals = list(dc.parameter_sets) + nals
            assert p.time_base is not None and p.pts is not None
            shift = p.dts if shift is None else shift
            out.append(MediaPacket("video", p.pts - shift, p.dts - shift, Fraction(p.time_base), p.is_keyframe,
                                   h264.join_annexb(nals), cfg))
    return out


def _tracks_of(packets: Sequence[MediaPacket]) -> list[Any]:
    tracks = []
    for tid, kind in enumerate(("video", "audio"), start=1):
        first = next((p for p in packets if p.kind == kind), None)
        if first is not None:
            tracks.append(make_track(tid, first.config, first.time_base))
    return tracks


def write(packets: Sequence[MediaPacket], cut: Any = None, part_seconds: float = 0.5) -> tuple[bytes, list[Part]]:
    """init + parts. Default cuts: before a video keyframe or once ``part_seconds`` of video is buffered;
    ``cut(i, packet, fragmenter)`` overrides. Returns the file and the parts."""
    tracks = _tracks_of(packets)
    frag = Fragmenter(tracks)
    by_kind = {t.config.kind: t.track_id for t in tracks}
    parts: list[Part] = []

    def default(_: int, p: MediaPacket, f: Fragmenter) -> bool:
        v = by_kind["video"]
        return p.kind == "video" and f.buffered(v) > 0 and (p.keyframe or f.buffered_seconds(v) >= part_seconds - 0.01)

    decide = cut or default
    for i, p in enumerate(packets):
        if decide(i, p, frag):
            nxt = {by_kind[p.kind]: p.dts}
            part = frag.flush(len(parts) + 1, nxt)
            if part.data:
                parts.append(part)
        frag.add(p)
    last = frag.flush(len(parts) + 1)
    if last.data:
        parts.append(last)
    return init_segment(tracks) + b"".join(p.data for p in parts), parts


def decode_counts(blob: bytes) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kind in ("video", "audio"):
        with av.open(io.BytesIO(blob), mode="r", format="mp4") as c:
            streams = [s for s in c.streams if s.type == kind]
            if streams:
                counts[kind] = sum(1 for _ in c.decode(streams[0]))
    return counts


def ffmpeg_errors(path: Path) -> str:
    r = subprocess.run([need("ffmpeg"), "-v", "error", "-i", str(path), "-f", "null", "-"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stderr


def test_pyav_decodes_every_frame(packets: list[MediaPacket], tmp_path: Path) -> None:
    blob, parts = write(packets)
    counts = decode_counts(blob)
    assert counts == {"video": sum(p.kind == "video" for p in packets), "audio": sum(p.kind == "audio" for p in packets)}
    assert counts["video"] == SECONDS * RATE
    (tmp_path / "out.mp4").write_bytes(blob)
    assert ffmpeg_errors(tmp_path / "out.mp4") == ""
    # parts of ~0.5 s, each segment (1 s GOP) starting with an independent part
    assert len(parts) == 2 * SECONDS
    assert [p.independent for p in parts] == [True, False] * SECONDS
    assert all(0.45 <= p.runs[0].duration_seconds <= 0.55 for p in parts)


def test_ffprobe_reports_codecs_size_and_duration(packets: list[MediaPacket], tmp_path: Path) -> None:
    blob, _ = write(packets)
    path = tmp_path / "out.mp4"
    path.write_bytes(blob)
    r = subprocess.run(
        [need("ffprobe"), "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert r.stderr == ""
    info = json.loads(r.stdout)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    audio = next(s for s in info["streams"] if s["codec_type"] == "audio")
    assert (video["codec_name"], video["codec_tag_string"], video["width"], video["height"]) == ("h264", "avc1", 320, 180)
    assert (audio["codec_name"], audio["codec_tag_string"], audio["sample_rate"]) == ("aac", "mp4a", "48000")
    assert audio["channels"] == 1
    assert abs(float(info["format"]["duration"]) - SECONDS) < 0.1
    assert abs(float(video["duration"]) - SECONDS) < 0.05
    assert info["format"]["format_name"].startswith("mov,mp4")


def _boxes(blob: bytes) -> list[Any]:
    stream = io.BytesIO(blob)
    out = []
    while stream.tell() < len(blob):
        out.append(Box.parse_stream(stream))
    return out


def _child(b: Any, kind: bytes) -> Any:
    return next(c for c in b.children if c.type == kind)


def test_boxes_walked_by_pymp4(packets: list[MediaPacket]) -> None:
    blob, parts = write(packets)
    boxes = _boxes(blob)
    assert [b.type for b in boxes[:2]] == [b"ftyp", b"moov"]
    assert boxes[0].major_brand == b"iso6" and b"cmfc" in boxes[0].compatible_brands
    moov = boxes[1]
    traks = [c for c in moov.children if c.type == b"trak"]
    assert [_child(t, b"tkhd").track_ID for t in traks] == [1, 2]
    trex = [c for c in _child(moov, b"mvex").children if c.type == b"trex"]
    assert [t.track_ID for t in trex] == [1, 2]
    timescales = [_child(_child(t, b"mdia"), b"mdhd").timescale for t in traks]
    assert timescales == [90000, 48000]
    rest = boxes[2:]
    assert [b.type for b in rest] == [b"moof", b"mdat"] * len(parts)
    next_time: dict[int, int] = {}
    keyframe_dts = {p.dts * 90 for p in packets if p.kind == "video" and p.keyframe}  # ms → 90 kHz
    samples = {1: 0, 2: 0}
    for n, (moof, mdat) in enumerate(zip(rest[::2], rest[1::2], strict=True), start=1):
        assert _child(moof, b"mfhd").sequence_number == n
        mdat_payload = mdat.end - mdat.offset - 8
        assert mdat.offset == moof.end  # mdat directly after its moof
        total = 0
        for traf in (c for c in moof.children if c.type == b"traf"):
            tfhd, tfdt, trun = _child(traf, b"tfhd"), _child(traf, b"tfdt"), _child(traf, b"trun")
            assert tfhd.flags.default_base_is_moof and tfdt.version == 1
            tid = tfhd.track_ID
            sizes = [s.sample_size for s in trun.sample_info]
            assert trun.sample_count == len(sizes) > 0
            assert trun.data_offset == moof.end - moof.offset + 8 + total  # this run's bytes follow earlier runs
            total += sum(sizes)
            samples[tid] += len(sizes)
            base = tfdt.baseMediaDecodeTime
            if tid in next_time:
                assert base == next_time[tid], f"gap or overlap in track {tid} at part {n}"
            next_time[tid] = base + sum(s.sample_duration for s in trun.sample_info)
            if tid == 1:
                first = trun.sample_info[0].sample_flags
                if base in keyframe_dts:
                    assert first.sample_depends_on == "NOTDEPENDS" and not first.sample_is_non_sync_sample
                syncs = [not s.sample_flags.sample_is_non_sync_sample for s in trun.sample_info]
                assert sum(syncs) == (1 if base in keyframe_dts else 0)
            else:
                assert all(s.sample_duration == 1024 for s in trun.sample_info)
        assert total == mdat_payload
    assert samples == {1: sum(p.kind == "video" for p in packets), 2: sum(p.kind == "audio" for p in packets)}


def test_composition_offsets_with_bframes(packets: list[MediaPacket]) -> None:
    video = [p for p in packets if p.kind == "video"]
    has_b = any(p.pts != p.dts for p in video)
    _, parts = write(packets)
    rest = _boxes(b"".join(p.data for p in parts))
    trafs = [c for m in rest if m.type == b"moof" for c in m.children if c.type == b"traf"]
    runs = [_child(t, b"trun") for t in trafs if _child(t, b"tfhd").track_ID == 1]
    if not has_b:
        assert all(r.version == 0 and not r.flags.sample_composition_time_offsets_present for r in runs)
        return
    assert all(r.version == 1 for r in runs)
    offsets = [s.sample_composition_time_offsets for r in runs for s in r.sample_info]
    assert offsets == [(p.pts - p.dts) * 90 for p in video]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_cut_points_always_decode(packets: list[MediaPacket], data: st.DataObject) -> None:
    cuts = data.draw(st.sets(st.integers(1, len(packets) - 1), max_size=40))
    blob, parts = write(packets, cut=lambda i, _p, _f: i in cuts)
    assert decode_counts(blob) == {"video": SECONDS * RATE, "audio": sum(p.kind == "audio" for p in packets)}
    assert sum(r.samples for part in parts for r in part.runs) == len(packets)


def test_hevc_init_and_parts_decode(hevc_packets: list[MediaPacket], tmp_path: Path) -> None:
    blob, parts = write(hevc_packets)
    assert decode_counts(blob) == {"video": SECONDS * RATE}
    path = tmp_path / "hevc.mp4"
    path.write_bytes(blob)
    assert ffmpeg_errors(path) == ""
    r = subprocess.run([need("ffprobe"), "-v", "error", "-print_format", "json", "-show_streams", str(path)],
                       capture_output=True, text=True, timeout=60, check=True)
    assert r.stderr == ""
    s = json.loads(r.stdout)["streams"][0]
    assert (s["codec_name"], s["codec_tag_string"], s["width"], s["height"]) == ("hevc", "hvc1", 320, 180)
    assert parts[0].independent


# -- unit edge cases -------------------------------------------------------------------------

AAC = CodecConfig("audio", "aac", "mp4a.40.2", bytes([0x11, 0x90]), sample_rate=48000, channels=2)


def _aac(ms: int) -> MediaPacket:
    return MediaPacket("audio", ms, ms, Fraction(1, 1000), True, b"\x21\x00", AAC)


def _runs(part: Part) -> list[Any]:
    moof = _boxes(part.data)[0]
    return [_child(t, b"trun") for t in moof.children if t.type == b"traf"]


def test_aac_durations_ignore_millisecond_jitter_but_follow_gaps() -> None:
    frag = Fragmenter([make_track(1, AAC)])
    for ms in (0, 21, 43, 64, 85):  # 1024/48000 s = 21.33 ms, rounded by RTMP
        frag.add(_aac(ms))
    frag.add(_aac(1000))  # a gap of ~0.9 s
    part = frag.flush(1)
    durations = [s.sample_duration for s in _runs(part)[0].sample_info]
    assert durations == [1024, 1024, 1024, 1024, 48000 - 4 * 1024, 1024]
    assert part.runs[0].base_decode_time == 0 and part.independent


def test_last_duration_from_next_dts_else_previous() -> None:
    cfg = CodecConfig("video", "h264", "avc1.42c00d", b"\x00\x00\x00\x01\x67\x42\xc0\x0d\x00\x00\x00\x01\x68\xce",
                      width=16, height=16)
    pkt = [MediaPacket("video", t, t, Fraction(1, 1000), t == 0, b"\x00\x00\x00\x01\x09\xf0\x00\x00\x01\x65\x88",
                       cfg) for t in (0, 40, 80)]
    frag = Fragmenter([make_track(1, cfg, Fraction(1, 1000))])
    frag.add(pkt[0])
    frag.add(pkt[1])
    p1 = frag.flush(1, {1: 100})
    assert [s.sample_duration for s in _runs(p1)[0].sample_info] == [3600, 5400]
    assert [s.sample_size for s in _runs(p1)[0].sample_info] == [4 + 2, 4 + 2]  # AUD dropped, length prefix
    assert _runs(p1)[0].sample_info[1].sample_flags.sample_is_non_sync_sample
    frag.add(pkt[2])
    p2 = frag.flush(2)
    assert [s.sample_duration for s in _runs(p2)[0].sample_info] == [3600]  # previous duration
    assert p2.runs[0].base_decode_time == 7200 and not p2.independent
    assert frag.flush(3).data == b""
    assert FLAGS_SYNC != FLAGS_NON_SYNC


def test_rejections() -> None:
    with pytest.raises(ValueError, match="not supported"):
        init_segment([make_track(1, CodecConfig("video", "vp9", "vp09", b"", width=16, height=16))])
    with pytest.raises(ValueError):
        init_segment([])
    with pytest.raises(ValueError, match="duplicate"):
        init_segment([make_track(1, AAC), make_track(1, AAC)])
    frag = Fragmenter([make_track(1, AAC)])
    with pytest.raises(ValueError, match="negative"):
        frag.add(MediaPacket("audio", -5, -5, Fraction(1, 1000), True, b"\x21", AAC))
    with pytest.raises(ValueError, match="no video track"):
        frag.add(MediaPacket("video", 0, 0, Fraction(1, 1000), True, b"", AAC))
    frag.add(_aac(0))
    with pytest.raises(ValueError, match="sequence"):
        frag.flush(0)
    assert make_track(1, CodecConfig("video", "h264", "avc1"), Fraction(1, 15360)).timescale == 15360
    assert make_track(1, CodecConfig("video", "h264", "avc1"), Fraction(1, 90000)).timescale == 90000
