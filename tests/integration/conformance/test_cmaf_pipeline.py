"""The pipeline worker writing CMAF (LL-HLS) to a real store: Debian's ffmpeg makes a test pattern,
the project's FLV normalizer turns it into the RTMP normal form, a real worker process reads it on
stdin (wire framing, paced at media time) and commits init segments, parts and segments to LMDB.
Then what the store holds is read back as an HTTP handler would and checked with PyAV, ffprobe
(``-v error``: nothing printed) and pymp4:

- every rendition's init + segments decode, every frame; each segment is its parts concatenated;
- every INDEPENDENT part starts with an IDR, and every segment with an INDEPENDENT part;
- part durations are at most the part target, and at least 0.85x of it except a segment's last;
- the boxes add up (trun sample sizes = mdat payload), decode times run on across parts;
- with the ladder (a libx264 rung), the rung's parts carry the source's numbers and start at the
  same presentation times as the source's (a source without B-frames);
- the worker reports each part (in order) before the segment it belongs to, and leaves no segment
  in progress behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from edged.config import Rung
from edged.media.packet import MediaPacket
from edged.media.transcode import encoders
from edged.media.transcode.wire import WireEncoder
from edged.media.transcode.worker import WorkerSpec
from edged.store.segments import SegmentMeta, SegmentStore
from tests.conftest import need
from tests.unit.media.test_cmaf_segmenter import boxes, child, decode, first_sample_is_idr
from tests.unit.media.test_segmenter import _packets

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[3]
SECONDS = 6


def _clip(out: Path, preset: str) -> Path:
    """320x180@30 test pattern, keyframe every 2 s (as a live encoder is told), + 48 kHz AAC, in FLV."""
    subprocess.run(
        [need("ffmpeg"), "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x180:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(SECONDS), "-c:v", "libx264",
         "-preset", preset, "-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-f", "flv", str(out)],
        check=True, timeout=60,
    )
    return out


def run_worker(tmp_path: Path, pkts: list[MediaPacket], *, part_seconds: float, ladder: tuple[Rung, ...] = (),
               paced: bool = False) -> tuple[SegmentStore, list[dict[str, Any]]]:
    spec = WorkerSpec(
        channel="c", store_path=str(tmp_path / "store"), store_max_bytes=64 << 20, segment_seconds=2.0,
        max_segment_seconds=6.0, keep_segments=30, session=1, ladder=tuple(asdict(r) for r in ladder),
        encoder=encoders.X264 if ladder else "", window=6, fmt="cmaf", part_seconds=part_seconds,
    )
    proc = subprocess.Popen([sys.executable, "-m", "edged.media.transcode.worker", spec.to_arg()], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    enc = WireEncoder()
    start = time.monotonic()
    try:
        for p in pkts:
            if paced:  # the ladder sheds rungs that fall behind real time: feed at media time
                delay = start + p.pts_seconds - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            proc.stdin.write(enc.packet(p))
            proc.stdin.flush()
        out, err = proc.communicate(enc.end(deliberate=True), timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    reports = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    return SegmentStore(tmp_path / "store", 64 << 20), reports


def video_traf(part: bytes) -> Any:
    moof = boxes(part)[0]
    return next(t for t in moof.children if t.type == b"traf" and child(t, b"tfhd").track_ID == 1)


def first_pts(part: bytes) -> int:
    """Presentation time (90 kHz) of a part's first video sample: tfdt + its composition offset."""
    traf = video_traf(part)
    trun = child(traf, b"trun")
    cto = trun.sample_info[0].sample_composition_time_offsets if trun.flags.sample_composition_time_offsets_present \
        else 0
    return int(child(traf, b"tfdt").baseMediaDecodeTime) + int(cto or 0)


def check_rendition(store: SegmentStore, rendition: str, part_seconds: float, tmp_path: Path,
                    frames: int) -> tuple[list[SegmentMeta], dict[tuple[int, int], bytes]]:
    metas = store.recent("c", rendition, 100)
    assert len(metas) == SECONDS // 2 and {m.fmt for m in metas} == {"cmaf"}
    assert store.pending("c", rendition) is None
    parts: dict[tuple[int, int], bytes] = {}
    inits = {m.init for m in metas}
    assert len(inits) == 1
    init = store.read_init("c", rendition, metas[0].init)
    assert init is not None
    payloads = []
    next_time: dict[int, int] = {}
    for m in metas:
        payload = store.read("c", rendition, m.seq)
        assert payload is not None and m.parts
        got = []
        for i, (duration, independent) in enumerate(m.parts):
            data = store.read_part("c", rendition, m.seq, i)
            assert data is not None
            parts[(m.seq, i)] = data
            got.append(data)
            assert duration <= part_seconds + 1e-6, (rendition, m.seq, i, duration)
            if i < len(m.parts) - 1:
                assert duration >= 0.85 * part_seconds, (rendition, m.seq, i, duration)
            assert first_sample_is_idr(data) == independent, (rendition, m.seq, i)
            moof, mdat = boxes(data)
            assert (moof.type, mdat.type) == (b"moof", b"mdat") and mdat.offset == moof.end
            total = 0
            for traf in (t for t in moof.children if t.type == b"traf"):
                tid = child(traf, b"tfhd").track_ID
                trun = child(traf, b"trun")
                base = child(traf, b"tfdt").baseMediaDecodeTime
                if tid in next_time and tid == 1:  # video decode times run on exactly
                    assert base == next_time[tid], (rendition, m.seq, i)
                next_time[tid] = base + sum(s.sample_duration for s in trun.sample_info)
                total += sum(s.sample_size for s in trun.sample_info)
            assert total == mdat.end - mdat.offset - 8
        assert m.parts[0][1], "a segment starts with an independent part"
        assert b"".join(got) == payload and m.size == len(payload)
        assert sum(d for d, _ in m.parts) == pytest.approx(m.duration, abs=1e-5)
        payloads.append(payload)
    counts = decode(init, payloads)
    assert counts["video"] == frames and counts["audio"] > 0
    path = tmp_path / f"{rendition}.mp4"
    path.write_bytes(init + b"".join(payloads))
    for cmd in ([need("ffmpeg"), "-v", "error", "-i", str(path), "-f", "null", "-"],
                [need("ffprobe"), "-v", "error", "-show_streams", "-of", "json", str(path)]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stderr == "", (cmd[0], r.stderr)
    return metas, parts


def check_reports(reports: list[dict[str, Any]], rendition: str, metas: list[SegmentMeta]) -> None:
    mine = [r for r in reports if r.get("rendition") == rendition and r["event"] in ("part", "segment")]
    expected: list[tuple[Any, ...]] = []
    for m in metas:
        expected += [("part", m.seq, i) for i in range(len(m.parts))] + [("segment", m.seq, None)]
    assert [(r["event"], r["seq"], r.get("part")) for r in mine] == expected


def test_source_with_bframes_at_short_parts(tmp_path: Path) -> None:
    pkts = _packets(_clip(tmp_path / "b.flv", "veryfast"))
    assert any(p.pts != p.dts for p in pkts if p.kind == "video")
    store, reports = run_worker(tmp_path, pkts, part_seconds=0.2)
    info = store.channel("c")
    assert info is not None and (info["format"], info["part_target"]) == ("cmaf", 0.2)
    metas, _ = check_rendition(store, "source", 0.2, tmp_path, SECONDS * 30)
    assert [len(m.parts) for m in metas] == [10, 10, 10]
    check_reports(reports, "source", metas)
    store.close()


def test_ladder_parts_align_with_the_source(tmp_path: Path) -> None:
    pkts = _packets(_clip(tmp_path / "a.flv", "ultrafast"))
    assert all(p.pts == p.dts for p in pkts if p.kind == "video")
    rung = Rung("90p30", 160, 90, 30, 100)
    store, reports = run_worker(tmp_path, pkts, part_seconds=0.5, ladder=(rung,), paced=True)
    assert not [r for r in reports if r["event"] in ("shed", "rendition_error")], reports
    src_metas, src_parts = check_rendition(store, "source", 0.5, tmp_path, SECONDS * 30)
    rung_metas, rung_parts = check_rendition(store, "90p30", 0.5, tmp_path, SECONDS * 30)
    assert [m.seq for m in rung_metas] == [m.seq for m in src_metas]
    assert [m.program_date_time for m in rung_metas] == [m.program_date_time for m in src_metas]
    assert [[d for d, _ in m.parts] for m in rung_metas] == [[d for d, _ in m.parts] for m in src_metas]
    assert rung_parts.keys() == src_parts.keys()
    for key, data in src_parts.items():
        assert first_pts(rung_parts[key]) == first_pts(data), key  # part boundaries share PTS
    for name, metas in (("source", src_metas), ("90p30", rung_metas)):
        check_reports(reports, name, metas)
    store.close()
