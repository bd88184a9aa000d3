"""The decode-once transcoder through the renditions path: alignment, shedding, audio, failures."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections import defaultdict
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from edged.config import Rung
from edged.media.packet import CodecConfig, MediaPacket
from edged.media.segmenter import Segment
from edged.media.transcode import encoders
from edged.media.transcode import transcoder as tx
from edged.media.transcode.ladder import format_ladder
from edged.media.transcode.overload import OverloadController, OverloadPolicy, Restore, Shed
from edged.media.transcode.renditions import Renditions
from edged.media.transcode.worker import Pipeline, WorkerSpec
from edged.protocols.flv import FlvNormalizer
from edged.store.segments import SegmentStore
from tests.conftest import need
from tests.unit.media.flvsource import flv_tags

LADDER = (Rung("180p30", 320, 180, 30, 300), Rung("90p15", 160, 90, 15, 100))
FRAME = 1 / 30


def packets(path: Path, offset_ms: int = 0) -> list[MediaPacket]:
    norm = FlvNormalizer()
    out = []
    for kind, ts, body in flv_tags(path):
        pkt = norm.video(ts + offset_ms, body) if kind == "video" else norm.audio(ts + offset_ms, body)
        if isinstance(pkt, MediaPacket):
            out.append(pkt)
    return out


def caught_up(r: Renditions, timeout: float = 10.0) -> None:
    """Wait until the transcoder has encoded what it was given, less the frames the decoder holds
    for its threads (keeps these tests close to real time, whatever the machine's speed)."""
    deadline = time.monotonic() + timeout
    while r.backlog() > 0.25:
        assert time.monotonic() < deadline, "transcoder stuck"
        time.sleep(0.002)
        r.tick()


def run(pkts: list[MediaPacket], ladder: tuple[Rung, ...] = LADDER, segment_seconds: float = 2.0,
        actions: dict[int, Any] | None = None, **kw: Any) -> tuple[dict[str, list[Segment]], list[dict[str, Any]]]:
    segs: dict[str, list[Segment]] = defaultdict(list)
    events: list[dict[str, Any]] = []
    r = Renditions(channel="t", segment_seconds=segment_seconds, max_segment_seconds=12, next_seq=5, disc_seq=0,
                   discontinuity=True, ladder=ladder, codec=encoders.X264,
                   on_segment=lambda s: segs[s.rendition].append(s), on_event=events.append, **kw)
    for i, pkt in enumerate(pkts):
        r.push(pkt)
        caught_up(r)
        if actions and i in actions:
            actions[i](r)
    r.finish()
    return segs, events


def demux(payload: bytes) -> tuple[dict[str, Any], list[tuple[float, bool]], set[str]]:
    """(video stream facts, [(pts, keyframe)] of video packets, codec names) of one TS segment."""
    with av.open(io.BytesIO(payload), format="mpegts") as c:
        vs = c.streams.video[0]
        facts = {"width": vs.codec_context.width, "height": vs.codec_context.height}
        codecs = {s.codec_context.name for s in c.streams}
        video = [(float(p.pts * p.time_base), p.is_keyframe) for p in c.demux(vs) if p.pts is not None]
    return facts, video, codecs


def test_rungs_cut_where_the_source_cuts(sample_flv: Path) -> None:
    segs, events = run(packets(sample_flv))
    assert [e["renditions"] for e in events if e["event"] == "ladder"] == [["180p30", "90p15"]]
    src = segs["source"]
    assert [s.seq for s in src] == [5, 6, 7]
    for name, size, frames in (("180p30", (320, 180), 60), ("90p15", (160, 90), 30)):
        rung = segs[name]
        assert [s.seq for s in rung] == [s.seq for s in src], name
        assert [s.start_pts for s in rung] == [s.start_pts for s in src], name
        assert [(s.discontinuity, s.disc_seq) for s in rung] == [(s.discontinuity, s.disc_seq) for s in src]
        for a, b in zip(rung, src, strict=True):
            assert abs(a.duration - b.duration) <= FRAME + 1e-9
            assert (a.width, a.height) == size and a.codecs[0].startswith("avc1.64") and a.codecs[1] == "mp4a.40.2"
            facts, video, codecs = demux(a.payload)
            assert (facts["width"], facts["height"]) == size and codecs == {"h264", "aac"}
            assert video[0] == (pytest.approx(b.start_pts, abs=1e-3), True)  # an IDR at the source's cut
            assert not any(key for _, key in video[1:]), "keyframes only at segment boundaries"
            assert abs(len(video) - frames) <= 1, (name, len(video))


def test_shed_and_restore_keep_the_source_numbers(sample_flv: Path) -> None:
    pkts = packets(sample_flv)
    first_at = {t: next(i for i, p in enumerate(pkts) if p.kind == "video" and p.pts_seconds >= t) for t in (1.5, 3.5)}
    listed: list[list[str]] = []
    actions = {
        first_at[1.5]: lambda r: (r.set_wanted(0, False), listed.append([x.name for x in r.listed()])),
        first_at[3.5]: lambda r: r.set_wanted(0, True),
    }
    segs, events = run(pkts, segment_seconds=1.0, actions=actions)
    src = {s.seq: s for s in segs["source"]}
    assert sorted(src) == list(range(5, 11))
    assert [s.seq for s in segs["90p15"]] == sorted(src)  # the lower rung never stopped
    top = [s.seq for s in segs["180p30"]]
    assert top[0] == 5 and top[-1] == 10 and 1 <= len(sorted(src)) - len(top) <= 3, top  # a gap, no shift
    for s in segs["180p30"]:
        assert s.start_pts == src[s.seq].start_pts and abs(s.duration - src[s.seq].duration) <= FRAME + 1e-9
        _, video, _ = demux(s.payload)
        assert video[0][1] and video[0][0] == pytest.approx(s.start_pts, abs=1e-3)
    assert listed == [["90p15"]]  # a shed rung leaves the master playlist at once
    kinds = [(e["event"], e.get("rendition"), e.get("listed")) for e in events if e["event"] != "backlog"]
    assert ("shed", "180p30", None) in kinds and ("restore", "180p30", None) in kinds
    assert ("rendition", "180p30", False) in kinds
    assert kinds.count(("rendition", "180p30", True)) == 2  # listed again after its first new segment


def test_non_aac_audio_becomes_aac_once_for_every_rung(sample_flv: Path) -> None:
    video = [p for p in packets(sample_flv) if p.kind == "video"]
    enc = av.CodecContext.create("mp2", "w")
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate = 48000, "stereo", "s16", 128000
    enc.time_base = Fraction(1, 48000)
    enc.open()
    cfg = CodecConfig(kind="audio", codec="mp2", codec_string="mp4a.40.34", sample_rate=48000, channels=2)
    audio = []
    for i in range(6 * 48000 // 1152):
        frame = av.AudioFrame(format="s16", layout="stereo", samples=1152)
        frame.planes[0].update(bytes(frame.planes[0].buffer_size))
        frame.sample_rate, frame.pts, frame.time_base = 48000, i * 1152, Fraction(1, 48000)
        for p in enc.encode(frame):
            audio.append(MediaPacket("audio", p.pts, p.pts, Fraction(1, 48000), True, bytes(p), cfg))
    pkts = sorted(video + audio, key=lambda p: p.dts_seconds)
    segs, _ = run(pkts)
    assert demux(segs["source"][1].payload)[2] == {"h264", "mp2"}  # the source is passed through untouched
    for name in ("180p30", "90p15"):
        assert [s.seq for s in segs[name]] == [s.seq for s in segs["source"]]
        for s in segs[name]:
            assert s.codecs[1] == "mp4a.40.2" and demux(s.payload)[2] == {"h264", "aac"}


def test_source_size_change_restarts_the_ladder(sample_flv: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.flv"
    subprocess.run([need("ffmpeg"), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=320x180:rate=30",
                    "-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "3", "-c:v", "libx264", "-preset",
                    "ultrafast", "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", str(small)],
                   check=True, timeout=60)
    segs, events = run(packets(sample_flv) + packets(small, offset_ms=6100))
    assert [e["renditions"] for e in events if e["event"] == "ladder"] == [["180p30", "90p15"], ["90p15"]]
    src = segs["source"]
    assert [s.seq for s in segs["90p15"]] == [s.seq for s in src]
    assert [s.seq for s in segs["180p30"]] == [s.seq for s in src if s.width == 640]
    changed = next(s for s in src if s.width == 320)
    after = next(s for s in segs["90p15"] if s.seq == changed.seq)
    assert changed.discontinuity and after.discontinuity and after.disc_seq == changed.disc_seq


def test_a_failing_rung_leaves_the_source_and_other_rungs_running(sample_flv: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real = tx.open_video_encoder

    def broken(codec: str, width: int, *args: Any) -> Any:
        if width == 320:
            raise av.error.ExternalError(-1, "encoder exploded")
        return real(codec, width, *args)

    monkeypatch.setattr(tx, "open_video_encoder", broken)
    segs, events = run(packets(sample_flv))
    assert "180p30" not in segs and len(segs["90p15"]) == len(segs["source"]) == 3
    assert any(e["event"] == "rendition_error" and e["rendition"] == "180p30" for e in events)


def test_pipeline_keeps_the_channel_record_complete(sample_flv: Path, tmp_path: Path) -> None:
    store = SegmentStore(tmp_path / "store", 64 << 20)
    old = {k: v for k, v in json.loads(WorkerSpec("c", "", 0, 2, 12, 10, 1).to_arg()).items()
           if k not in ("ladder", "encoder")}
    assert WorkerSpec(**old).encoder == ""  # a spec written before the ladder existed still loads
    spec = WorkerSpec(channel="c", store_path=str(tmp_path / "store"), store_max_bytes=64 << 20, segment_seconds=2,
                      max_segment_seconds=12, keep_segments=10, session=1,
                      ladder=tuple({"name": r.name, "width": r.width, "height": r.height, "fps": r.fps,
                                    "bitrate_kbps": r.bitrate_kbps} for r in LADDER), encoder=encoders.X264)
    reports: list[dict[str, Any]] = []
    p = Pipeline(spec, store, reports.append)
    for pkt in packets(sample_flv):
        p.push(pkt)
    p.finish()
    info = store.channel("c")
    assert info is not None and info["live"] is False
    entries = info["renditions"]
    assert [e["name"] for e in entries] == ["source", "180p30", "90p15"]
    assert [(e["width"], e["height"]) for e in entries] == [(640, 360), (320, 180), (160, 90)]
    assert entries[1]["bandwidth"] >= 300_000 and entries[2]["frame_rate"] == 15
    assert all(e["average_bandwidth"] > 0 and e["codecs"].endswith("mp4a.40.2") for e in entries)
    for name in ("source", "180p30", "90p15"):
        assert [m.seq for m in store.recent("c", name, 10)] == [0, 1, 2]
    assert sum(r["event"] == "segment" for r in reports) == 9
    store.close()


def test_overload_controller_sheds_from_the_top_and_restores_with_backoff() -> None:
    pol = OverloadPolicy(shed_backlog=2, restore_backlog=0.5, shed_cooldown=1, restore_hold=3, max_restore_hold=10,
                         flap_window=6)
    c = OverloadController(3, pol)
    assert c.observe(0, 0.3) is None and c.observe(1, 1.9) is None
    assert c.observe(2, 2.5) == Shed(0, 2.5)
    assert c.observe(2.5, 3.0) is None  # cooldown
    assert c.observe(3.5, 2.2) is None  # draining since the shed: give it time
    assert c.observe(4, 3.1) == Shed(1, 3.1)  # still growing: the next one
    assert list(c.active) == [2]
    assert c.observe(5, 0.4) is None and c.observe(7.9, 0.4) is None
    assert c.observe(8, 0.4) == Restore(1, 0.4)  # the lowest shed comes back first, after the hold
    assert c.observe(9, 2.5) == Shed(1, 2.5)  # it did not fit: the next hold is twice as long
    assert c.hold == 6
    assert c.observe(10, 0.1) is None and c.observe(15.9, 0.1) is None
    assert c.observe(16, 0.1) == Restore(1, 0.1)
    assert c.observe(23, 0.1) is None and c.hold == 3  # it stuck: back to the base hold
    assert c.observe(26, 0.1) == Restore(0, 0.1)
    assert c.observe(30, 0.0) is None and c.shed_count == 0
    full = OverloadController(1, pol)
    assert full.observe(0, 5) == Shed(0, 5) and full.observe(5, 9) is None  # never more than the ladder
    assert OverloadPolicy.for_segments(2.0).shed_backlog == 2.0 and OverloadPolicy.for_segments(1.0).shed_backlog == 1.5


@pytest.mark.gpu
def test_nvenc_ladder(sample_flv: Path) -> None:
    choice = encoders.detect("auto")
    if choice.codec != encoders.NVENC:
        pytest.skip(choice.reason)
    segs: dict[str, list[Segment]] = defaultdict(list)
    r = Renditions(channel="g", segment_seconds=2, max_segment_seconds=12, next_seq=0, disc_seq=0,
                   discontinuity=False, ladder=LADDER, codec=encoders.NVENC,
                   on_segment=lambda s: segs[s.rendition].append(s))
    for pkt in packets(sample_flv):
        r.push(pkt)
    r.finish()
    for name in ("180p30", "90p15"):
        assert [s.start_pts for s in segs[name]] == [s.start_pts for s in segs["source"]]
        _, video, _ = demux(segs[name][0].payload)
        assert video[0][1] and not any(k for _, k in video[1:])


def test_cli_flags_and_bench_transcode(sample_flv: Path) -> None:
    from edged.cli import _overrides, build_parser
    from edged.config import load

    args = build_parser().parse_args(["run", "--transcode", "--encoder", "x264", "--ladder", "lo=320x180@30:300"])
    cfg = load(None, _overrides(args))
    assert cfg.transcode.enabled is True and cfg.transcode.encoder == "x264"
    assert cfg.transcode.ladder == (Rung("lo", 320, 180, 30.0, 300),)
    assert load(None, _overrides(build_parser().parse_args(["run", "--no-transcode"]))).transcode.enabled is False
    out = subprocess.run([sys.executable, "-m", "edged", "bench", "transcode", str(sample_flv), "--encoder", "x264",
                          "--ladder", format_ladder(LADDER), "--json"], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[3], check=True)
    report = json.loads(out.stdout)
    assert report["encoder"] == "libx264" and report["fps"] > 0 and report["x_realtime"] > 0
    assert report["segments"] == {"source": 3, "180p30": 3, "90p15": 3}
