"""HLS output correctness in the worker's pure parts: TS continuity across segments, forced cuts
that lose nothing and keep the ladder aligned, program dates from media time, the fixed target
duration, how a stream's end is recorded, and the restart backoff."""

from __future__ import annotations

import io
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import av
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.config import Rung
from edged.media.packet import MediaPacket
from edged.media.segmenter import Segment, Segmenter
from edged.media.transcode import encoders
from edged.media.transcode.renditions import Renditions
from edged.media.transcode.supervisor import RestartBackoff
from edged.media.transcode.worker import Pipeline, WorkerSpec
from edged.media.ts_continuity import ContinuityError, ContinuityStamper, continuity_errors
from edged.store.segments import SegmentStore
from tests.conftest import need
from tests.unit.media.test_transcoder import caught_up, packets

FRAME = 1 / 30


@pytest.fixture(scope="module")
def long_gop_flv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 s of 320x180 30 fps H.264 with one keyframe every 4 s (+ AAC): longer than the cuts allow."""
    out = tmp_path_factory.mktemp("longgop") / "long.flv"
    subprocess.run(
        [need("ffmpeg"), "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x180:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "5", "-c:v", "libx264",
         "-preset", "ultrafast", "-g", "120", "-keyint_min", "120", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-f", "flv", str(out)],
        check=True, timeout=60,
    )
    return out


def _ts_packet(pid: int, afc: int, cc: int = 0) -> bytes:
    return bytes([0x47, (pid >> 8) & 0x1F, pid & 0xFF, (afc << 4) | cc]) + b"\xff" * 184


# -- TS continuity ---------------------------------------------------------------------------------

def test_stamper_carries_each_pid_across_segments() -> None:
    seg = _ts_packet(0, 1) + _ts_packet(0x100, 1) + _ts_packet(0x100, 3) + _ts_packet(0x100, 2) + _ts_packet(0x1FFF, 1, 7)
    stamper = ContinuityStamper()
    first = stamper.stamp(seg)
    assert [first[i + 3] & 0x0F for i in range(0, len(first), 188)] == [0, 0, 1, 1, 7]  # afc 10: not incremented
    assert stamper.state() == {0: 0, 0x100: 1}
    second = ContinuityStamper(stamper.state()).stamp(seg)  # what a restarted worker does
    assert [second[i + 3] & 0x0F for i in range(0, len(second), 188)] == [1, 2, 3, 3, 7]
    state: dict[int, int] = {}
    assert continuity_errors(first, state) == [] and continuity_errors(second, state) == []
    assert continuity_errors(seg + seg) != []  # as muxed, each segment restarts its counters
    for bad in (seg[:-1], b"\x00" + seg[1:]):
        with pytest.raises(ContinuityError):
            stamper.stamp(bad)
    assert stamper.state() == {0: 0, 0x100: 1}  # unchanged by a refused payload


@given(st.lists(st.tuples(st.sampled_from([0, 0x11, 0x1000, 0x100, 0x101, 0x1FFF]), st.sampled_from([1, 2, 3])),
                min_size=1, max_size=60),
       st.lists(st.integers(min_value=1, max_value=60), max_size=5))
def test_stamping_segments_is_stamping_one_stream(pkts: list[tuple[int, int]], cuts: list[int]) -> None:
    data = b"".join(_ts_packet(pid, afc, cc=(i * 7) % 16) for i, (pid, afc) in enumerate(pkts))
    whole = ContinuityStamper().stamp(data)
    stamper = ContinuityStamper()
    bounds = sorted({0, len(pkts), *(c for c in cuts if c < len(pkts))})
    parts = [stamper.stamp(data[a * 188 : b * 188]) for a, b in zip(bounds, bounds[1:], strict=False)]
    assert b"".join(parts) == whole
    assert continuity_errors(whole) == []


def test_real_segments_continue_their_counters(sample_flv: Path) -> None:
    seg = Segmenter("source", segment_seconds=2.0, max_segment_seconds=6, next_seq=0, disc_seq=0, discontinuity=False)
    out = [s for p in packets(sample_flv) for s in seg.push(p)] + seg.flush()
    assert len(out) == 3
    raw_state: dict[int, int] = {}
    raw_errors = [continuity_errors(s.payload, raw_state) for s in out]
    assert raw_errors[0] == [] and raw_errors[1] and raw_errors[2]  # what PyAV's muxer alone gives
    stamper = ContinuityStamper()
    state: dict[int, int] = {}
    for s in out:
        stamped = stamper.stamp(s.payload)
        assert continuity_errors(stamped, state) == []
        with av.open(io.BytesIO(stamped), format="mpegts") as c:  # still a valid transport stream
            assert len(list(c.decode(video=0))) == s.video_frames
    assert {0, 0x11, 0x1000, 0x100, 0x101} <= set(state)  # PAT, SDT, PMT, video, audio


# -- forced cuts, dates ------------------------------------------------------------------------------

def test_forced_cuts_lose_nothing_and_dates_follow_media_time(long_gop_flv: Path) -> None:
    pkts = packets(long_gop_flv)
    # The first packet reached the ingest socket 0.25 s before the segmenter saw it.
    pkts = [MediaPacket(p.kind, p.pts, p.dts, p.time_base, p.keyframe, p.data, p.config, arrival=100.0 + p.pts_seconds)
            for p in pkts]
    seg = Segmenter("source", segment_seconds=1.0, max_segment_seconds=1.5, next_seq=0, disc_seq=0,
                    discontinuity=False, wall=lambda: 1_700_000_000.0, monotonic=lambda: 100.25)
    out = [s for p in pkts for s in seg.push(p)] + seg.flush()
    video = [p for p in pkts if p.kind == "video"]
    assert sum(s.video_frames for s in out) == len(video)  # nothing dropped at the cuts
    assert [s.forced for s in out[:-1]] == [True, True, False] and not out[-1].forced  # keyframe at 4 s
    assert all(s.duration <= 1.5 + FRAME for s in out)
    for a, b in zip(out, out[1:], strict=False):
        assert b.start_pts == pytest.approx(a.start_pts + a.duration)
        assert b.program_date_time - a.program_date_time == pytest.approx(a.duration)  # date step = duration
    assert out[0].program_date_time == pytest.approx(1_700_000_000.0 - 0.25)  # anchored at the ingest arrival
    decoded = 0
    for s in out:
        with av.open(io.BytesIO(s.payload), format="mpegts") as c:
            assert len([p for p in c.demux(video=0) if p.size]) == s.video_frames
        decoded += s.video_frames
    assert decoded == len(video)


def test_dates_never_go_back_before_the_previous_session(sample_flv: Path) -> None:
    seg = Segmenter("source", segment_seconds=2.0, max_segment_seconds=6, next_seq=3, disc_seq=0, discontinuity=True,
                    date_not_before=2_000_000_000.0, wall=lambda: 1_700_000_000.0)
    out = [s for p in packets(sample_flv) for s in seg.push(p)]
    assert out[0].program_date_time == 2_000_000_000.0


def test_ladder_forces_its_idr_at_a_forced_cut(long_gop_flv: Path) -> None:
    segs: dict[str, list[Segment]] = defaultdict(list)
    r = Renditions(channel="t", segment_seconds=1.0, max_segment_seconds=1.5, next_seq=0, disc_seq=0,
                   discontinuity=False, ladder=(Rung("90p30", 160, 90, 30, 100),), codec=encoders.X264,
                   on_segment=lambda s: segs[s.rendition].append(s))
    for pkt in packets(long_gop_flv):
        r.push(pkt)
        caught_up(r)
    r.finish()
    src, rung = segs["source"], segs["90p30"]
    assert [s.forced for s in src[:2]] == [True, True]
    assert [s.seq for s in rung] == [s.seq for s in src]
    assert [s.program_date_time for s in rung] == [s.program_date_time for s in src]  # one date per seq
    for a, b in zip(rung, src, strict=True):
        assert a.start_pts == b.start_pts and a.forced == b.forced
        with av.open(io.BytesIO(a.payload), format="mpegts") as c:
            first = next(p for p in c.demux(video=0) if p.size)
            assert first.is_keyframe and float(first.pts * first.time_base) == pytest.approx(b.start_pts, abs=1e-3)


# -- the worker's pipeline: records and persisted state ------------------------------------------------

def _spec(tmp_path: Path, max_segment_seconds: float, session: int) -> WorkerSpec:
    return WorkerSpec(channel="c", store_path=str(tmp_path / "store"), store_max_bytes=64 << 20, segment_seconds=2,
                      max_segment_seconds=max_segment_seconds, keep_segments=20, session=session)


def test_pipeline_restart_continues_counters_and_keeps_the_target(sample_flv: Path, tmp_path: Path) -> None:
    store = SegmentStore(tmp_path / "store", 64 << 20)
    pkts = packets(sample_flv)
    reports: list[dict[str, Any]] = []
    p = Pipeline(_spec(tmp_path, 12, 1), store, reports.append)
    for pkt in pkts[: len(pkts) // 2]:
        p.push(pkt)
    p.finish(deliberate=False)  # a worker that stops mid-session (restarted later)
    info = store.channel("c")
    assert info is not None and info["target_duration"] == 12 and info["ended_deliberately"] is False
    # The restarted worker runs with a lower configured maximum: the playlist's target stays.
    p2 = Pipeline(_spec(tmp_path, 6, 1), store, reports.append)
    assert p2.target_duration == 12 and store.channel("c")["live"] is True  # type: ignore[index]
    for pkt in packets(sample_flv, offset_ms=10_000):
        p2.push(pkt)
    p2.finish(deliberate=True)
    info = store.channel("c")
    assert info is not None and info["live"] is False and info["ended_deliberately"] is True
    metas = store.recent("c", "source", 20)
    assert [m.seq for m in metas] == list(range(len(metas))) and len(metas) >= 4
    state: dict[int, int] = {}
    for m in metas:  # one stream of counters through the restart
        payload = store.read("c", "source", m.seq)
        assert payload is not None and continuity_errors(payload, state) == [], m.seq
    assert store.rendition_state("c", "source").continuity == state
    assert all(not r["forced"] and not r["over_target"] for r in reports if r["event"] == "segment")
    assert info["independent"] is True  # every segment started with a keyframe


def test_restart_backoff_resets_after_a_healthy_run() -> None:
    b = RestartBackoff(initial=0.5, maximum=10.0, healthy=30.0)
    assert [b.after_failure(1.0) for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]  # a crash loop
    assert b.after_failure(45.0) == 0.5  # ran long enough: the next crash costs little again
    assert b.after_failure(2.0) == 1.0


def test_hls_config_keys(tmp_path: Path) -> None:
    from edged import config
    from edged.errors import ConfigError

    cfg = config.load(None)
    assert cfg.hls.max_segment_seconds == 0 and cfg.hls.effective_max_segment_seconds == 6.0
    assert cfg.hls.reconnect_grace_seconds == 10.0
    f = tmp_path / "c.toml"
    f.write_text("[hls]\nsegment_seconds = 1.0\nmax_segment_seconds = 4.5\nreconnect_grace_seconds = 0\n")
    cfg = config.load(f)
    assert cfg.hls.effective_max_segment_seconds == 4.5 and cfg.hls.reconnect_grace_seconds == 0
    for body, key in (("max_segment_seconds = 1.0\n", "hls.max_segment_seconds"),  # below segment_seconds
                      ("max_segment_seconds = 500\n", "hls.max_segment_seconds"),
                      ("reconnect_grace_seconds = -1\n", "hls.reconnect_grace_seconds"),
                      ("reconnect_grace_seconds = nan\n", "hls.reconnect_grace_seconds")):
        f.write_text("[hls]\n" + body)
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            config.load(f)
