"""LL-HLS spec checker (RFC 8216bis) over 60 s of live playlists captured from a real edge.

Debian's ffmpeg publishes a 640x360 30 fps test pattern (a keyframe every 2 s, no B-frames) with AAC audio
to an edge with the default [hls] settings (format cmaf, 0.5 s parts) and a one-rung libx264 ladder, so the
channel has two media playlists. Each is followed for 60 s the way hls.js follows it in low-latency mode:
a blocking reload for the next part each time (`_HLS_msn`/`_HLS_part`), so every part is seen as it is
published. The module captures once; each test below checks one rule on every captured playlist, and every
capture is also read with the `m3u8` library as a cross-check of our own reading. ffprobe and ffmpeg read
the same live playlists as plain HLS (they ignore the LL-HLS tags) without an error.

Timing rules (a new part within one part target, a new segment within 1.5 x target duration) are checked on
the gaps between the arrival times of the blocking answers, with CAPTURE_SLACK for the capture's own round
trips and scheduling on a shared machine; the gaps are printed (FIGURES) for the log.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import m3u8
import pytest

from tests.conftest import need
from tests.integration.llhls_tools import (
    PART_URI_RE,
    BlockingCapture,
    Media,
    Snapshot,
    parse_media,
    publish,
    resolve,
    stop,
)
from tests.integration.procs import EdgeProcess, http_get, wait_for

KEY = "llhls-spec-key"
CHANNEL = "spec"
RUNG = "180p30"
LADDER = f"{RUNG}=320x180@30:300"
RENDITIONS = ("source", RUNG)
CAPTURE_SECONDS = 60.0  # the 60 s of live playlists
CAPTURE_SLACK = 0.25  # s: allowance for the capture's round trips and scheduling in the timing rules
EPS = 0.0015  # durations are written with 3 decimals


@dataclass
class Capture:
    edge: EdgeProcess
    base: str  # .../live/spec/
    master: str
    captures: dict[str, BlockingCapture]
    end: float  # monotonic time the captures were stopped

    def url(self, rendition: str) -> str:
        return f"{self.base}{rendition}/index.m3u8"

    def playlists(self, rendition: str) -> list[tuple[Snapshot, Media]]:
        return self.captures[rendition].playlists()

    def every(self) -> Iterator[tuple[str, Snapshot, Media]]:
        for r in RENDITIONS:
            for snap, media in self.playlists(r):
                yield r, snap, media


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capture]:
    need("ffmpeg")
    tmp = tmp_path_factory.mktemp("llhls-spec")
    edge = EdgeProcess(tmp / "edge", {CHANNEL: KEY}, ["--no-srt", "--transcode", "--ladder", LADDER]).start()
    pub = publish(edge.rtmp_url(KEY), CAPTURE_SECONDS + 90)
    try:
        base = f"{edge.http}/live/{CHANNEL}/"
        for r in RENDITIONS:
            wait_for(lambda r=r: http_get(f"{base}{r}/index.m3u8")[2].count(b"#EXTINF") >= 2, 40,
                     f"two segments in {r}")
        master = http_get(base + "master.m3u8")[2].decode()
        caps = {r: BlockingCapture(f"{base}{r}/index.m3u8", CAPTURE_SECONDS) for r in RENDITIONS}
        for c in caps.values():
            c.start()
        for c in caps.values():
            c.join(CAPTURE_SECONDS + 40)
        cap = Capture(edge, base, master, caps, time.monotonic())
        _figures(cap)
        yield cap
    finally:
        stop(pub)
        edge.stop()


def _figures(cap: Capture) -> None:
    for r in RENDITIONS:
        part_gaps, seg_gaps = _gaps(cap, r)
        c = cap.captures[r]
        print(f"\nFIGURES llhls-spec {r}: {len(c.snapshots)} answers, "
              f"{sum(1 for s in c.snapshots if s.status == 503)} x 503, errors {c.errors[:3]}; "
              f"new-part gaps p50 {_q(part_gaps, 50):.3f} p95 {_q(part_gaps, 95):.3f} max {max(part_gaps, default=0):.3f} s"
              f" (n={len(part_gaps)}); new-segment gaps p50 {_q(seg_gaps, 50):.3f} max {max(seg_gaps, default=0):.3f} s")


def _q(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _first_seen(cap: Capture, rendition: str) -> tuple[dict[tuple[int, int], float], dict[int, float]]:
    """When each part (seq, index) and each complete segment first appeared in an answer (monotonic
    receive time); what the first answer already held is left out (it was published before we looked)."""
    parts: dict[tuple[int, int], float] = {}
    segs: dict[int, float] = {}
    pls = cap.playlists(rendition)
    if not pls:
        return parts, segs
    first = pls[0][1]
    old_parts = {(s, i) for s, i, _ in first.all_parts()}
    old_segs = {s.seq for s in first.segments}
    for snap, media in pls[1:]:
        for s, i, _ in media.all_parts():
            if (s, i) not in old_parts:
                parts.setdefault((s, i), snap.received)
        for seg in media.segments:
            if seg.seq not in old_segs:
                segs.setdefault(seg.seq, snap.received)
    return parts, segs


def _gaps(cap: Capture, rendition: str) -> tuple[list[float], list[float]]:
    parts, segs = _first_seen(cap, rendition)
    pt = [parts[k] for k in sorted(parts)]
    st = [segs[k] for k in sorted(segs)]
    return [b - a for a, b in zip(pt, pt[1:], strict=False)], [b - a for a, b in zip(st, st[1:], strict=False)]


def _final_parts(cap: Capture, rendition: str) -> dict[int, list[tuple[float, bool]]]:
    """seq → its parts (duration, independent) as listed once the segment was complete."""
    out: dict[int, list[tuple[float, bool]]] = {}
    for _, media in cap.playlists(rendition):
        for seg in media.segments:
            if seg.parts:
                out[seg.seq] = [(p.duration, p.independent) for p in seg.parts]
    return out


# -- the capture itself ------------------------------------------------------------------------------------


def test_the_capture_followed_both_renditions_with_blocking_reloads(capture: Capture) -> None:
    for r in RENDITIONS:
        c = capture.captures[r]
        assert not c.errors, (r, c.errors[:5])
        pls = capture.playlists(r)
        blocking = [s for s, _ in pls if "_HLS_msn=" in s.query]
        # 60 s of 0.5 s parts: about 120 answers, each for one new part
        assert len(blocking) >= 0.75 * CAPTURE_SECONDS / 0.5, (r, len(blocking))
        assert all(not m.ended for _, m in pls), r
    variants = [line for line in capture.master.splitlines() if line and not line.startswith("#")]
    assert variants == [f"{r}/index.m3u8" for r in RENDITIONS], capture.master


# -- one test per rule -------------------------------------------------------------------------------------


def test_part_durations_are_within_085_and_1_part_target_except_the_allowed_ones(capture: Capture) -> None:
    """4.4.4.9: at most PART-TARGET; at least 85 % of it except INDEPENDENT parts and a segment's last."""
    checked = 0
    for r in RENDITIONS:
        final = _final_parts(capture, r)
        for _, media in capture.playlists(r):
            pt = media.part_target
            assert pt == 0.5, (r, media.text)  # the default hls.part_seconds
            for seq, i, part in media.all_parts():
                assert part.duration <= pt + EPS, (r, seq, i, part, media.text)
                last_of_segment = seq in final and i == len(final[seq]) - 1
                if not (part.independent or last_of_segment):
                    assert part.duration >= 0.85 * pt - EPS, (r, seq, i, part, final.get(seq))
                checked += 1
    assert checked > 1000


def test_hold_backs_are_three_part_targets_and_three_target_durations(capture: Capture) -> None:
    for r, _, media in capture.every():
        ctl = media.control
        assert ctl.get("CAN-BLOCK-RELOAD") == "YES", (r, media.server_control)
        assert media.part_target is not None and media.target_duration is not None
        assert abs(float(ctl["PART-HOLD-BACK"]) - 3 * media.part_target) < EPS, (r, media.server_control)
        assert abs(float(ctl["HOLD-BACK"]) - 3 * media.target_duration) < EPS, (r, media.server_control)
        assert media.target_duration == 6  # ceil(3 x 2 s), the auto max_segment_seconds


def test_one_preload_hint_per_type_and_each_hinted_part_is_published_later(capture: Capture) -> None:
    never: dict[str, list[str]] = {}
    for r in RENDITIONS:
        pls = capture.playlists(r)
        later: list[set[str]] = []
        seen: set[str] = set()
        for _, media in reversed(pls):  # part URIs listed after each answer
            later.append(set(seen))
            seen |= {p.uri for _, _, p in media.all_parts()}
        later.reverse()
        for k, (_, media) in enumerate(pls):
            types = [h.get("TYPE") for h in media.hints]
            assert len(types) == len(set(types)), (r, media.hints)
            part_hints = [h for h in media.hints if h.get("TYPE") == "PART"]
            assert len(part_hints) == 1, (r, media.hints, media.text)
            uri = part_hints[0]["URI"]
            m = PART_URI_RE.search(uri)
            assert m is not None, uri
            # the part after the last one listed (or, after a segment's last part, the next segment's first)
            msn, idx = media.next_part()
            hinted = (int(m.group(1)), int(m.group(2)))
            assert hinted == (msn, idx) or (idx > 0 and hinted == (msn + 1, 0)), (r, uri, (msn, idx))
            if k < len(pls) - 1 and uri not in later[k]:
                never.setdefault(r, []).append(uri)
    # every hinted part is published later (a hint past a segment's last part names a part that never is)
    assert not never, {r: (len(u), u[:8]) for r, u in never.items()}


def test_server_control_and_part_inf_are_identical_across_renditions(capture: Capture) -> None:
    controls = {m.server_control for _, _, m in capture.every()}
    part_infs = {m.part_target for _, _, m in capture.every()}
    tds = {m.target_duration for _, _, m in capture.every()}
    assert len(controls) == 1 and None not in controls, controls
    assert len(part_infs) == 1 and len(tds) == 1, (part_infs, tds)


def test_media_sequence_and_discontinuity_sequence_never_go_back(capture: Capture) -> None:
    for r in RENDITIONS:
        pls = capture.playlists(r)
        msns = [m.media_sequence for _, m in pls]
        discs = [m.disc_sequence for _, m in pls]
        positions = [m.position() for _, m in pls]
        assert msns == sorted(msns) and msns[-1] > msns[0], (r, msns)
        assert discs == sorted(discs), (r, discs)
        assert positions == sorted(positions), r
        # what a URI names never changes: a part or a segment keeps its duration (and flags) once listed
        parts: dict[str, tuple[float, bool]] = {}
        segs: dict[int, tuple[float | None, str | None, float | None]] = {}
        for _, media in pls:
            for seq, _, p in media.all_parts():
                assert parts.setdefault(p.uri, (p.duration, p.independent)) == (p.duration, p.independent), (r, seq, p)
            for seg in media.segments:
                assert segs.setdefault(seg.seq, (seg.duration, seg.uri, seg.pdt)) == (seg.duration, seg.uri, seg.pdt)
                assert seg.uri == f"{seg.seq}.m4s", seg
                assert not seg.discontinuity, (r, seg)
                # a complete segment's listed parts add up to it
                if seg.parts:
                    assert seg.duration is not None
                    assert abs(sum(p.duration for p in seg.parts) - seg.duration) <= EPS * len(seg.parts), seg
                    assert seg.parts[0].independent, (r, seg)
                    assert [p.uri for p in seg.parts] == [f"{seg.seq}.{i}.m4s" for i in range(len(seg.parts))]


def test_a_new_part_within_one_part_target_and_a_new_segment_within_one_and_a_half_td(capture: Capture) -> None:
    for r in RENDITIONS:
        part_gaps, seg_gaps = _gaps(capture, r)
        media = capture.playlists(r)[-1][1]
        assert media.part_target is not None and media.target_duration is not None
        assert len(part_gaps) >= 0.75 * CAPTURE_SECONDS / media.part_target, (r, len(part_gaps))
        assert len(seg_gaps) >= 0.75 * CAPTURE_SECONDS / 2 - 1, (r, len(seg_gaps))
        late = [g for g in part_gaps if g > media.part_target + CAPTURE_SLACK]
        assert not late, (r, sorted(part_gaps)[-10:])
        assert max(seg_gaps) <= 1.5 * media.target_duration + CAPTURE_SLACK, (r, seg_gaps)


def test_program_date_time_on_every_segment(capture: Capture) -> None:
    dates: dict[str, dict[int, float]] = {r: {} for r in RENDITIONS}
    for r, _, media in capture.every():
        segs = media.segments + ([media.pending] if media.pending is not None else [])
        for seg in segs:
            assert seg.pdt is not None, (r, seg.seq, media.text)
            dates[r].setdefault(seg.seq, seg.pdt)
        # consecutive dates step by the segment durations (no discontinuity in this stream)
        for a, b in zip(media.segments, segs[1:], strict=False):
            assert a.pdt is not None and b.pdt is not None and a.duration is not None
            assert abs(b.pdt - a.pdt - a.duration) < 0.0025, (r, a, b)
    # a rung segment carries the source's date
    common = set(dates["source"]) & set(dates[RUNG])
    assert len(common) >= 20
    assert all(abs(dates["source"][s] - dates[RUNG][s]) < 0.0015 for s in common)


def test_rendition_reports_name_the_other_renditions_and_parts_they_published(capture: Capture) -> None:
    published: dict[str, set[tuple[int, int]]] = {
        r: {(s, i) for _, m in capture.playlists(r) for s, i, _ in m.all_parts()} for r in RENDITIONS}
    checked = 0
    for r, snap, media in capture.every():
        url = capture.url(r)
        reports = {resolve(url, rep["URI"]): rep for rep in media.reports}
        others = {capture.url(o) for o in RENDITIONS if o != r}
        assert set(reports) == others, (r, media.reports)
        if snap.received > capture.end - 1.5:
            continue  # the other capture may have stopped before seeing the part named here
        for o in RENDITIONS:
            if o == r:
                continue
            rep = reports[capture.url(o)]
            assert "LAST-PART" in rep, rep
            assert (int(rep["LAST-MSN"]), int(rep["LAST-PART"])) in published[o], (r, o, rep)
            checked += 1
    assert checked > 100


def test_parts_align_across_renditions(capture: Capture) -> None:
    src, rung = _final_parts(capture, "source"), _final_parts(capture, RUNG)
    common = sorted(set(src) & set(rung))
    assert len(common) >= 20
    for seq in common:
        a, b = src[seq], rung[seq]
        assert len(a) == len(b), (seq, a, b)
        assert all(abs(x[0] - y[0]) <= EPS and x[1] == y[1] for x, y in zip(a, b, strict=True)), (seq, a, b)


def test_every_capture_reads_the_same_with_the_m3u8_library(capture: Capture) -> None:
    n = 0
    for r, _, media in capture.every():
        lib = m3u8.loads(media.text)
        assert lib.media_sequence == media.media_sequence and lib.target_duration == media.target_duration
        assert lib.part_inf.part_target == media.part_target
        sc = lib.server_control
        ctl = media.control
        assert sc.can_block_reload == "YES" and sc.part_hold_back == float(ctl["PART-HOLD-BACK"])
        assert sc.hold_back == float(ctl["HOLD-BACK"])
        complete = [s for s in lib.segments if s.uri is not None]
        assert [(s.uri, s.duration) for s in complete] == [(s.uri, s.duration) for s in media.segments], r
        for ls, ms in zip(complete, media.segments, strict=True):
            assert [(p.uri, p.duration, p.independent == "YES") for p in ls.parts] == [
                (p.uri, p.duration, p.independent) for p in ms.parts]
            assert ls.program_date_time is not None and ms.pdt is not None
            assert abs(ls.program_date_time.timestamp() - ms.pdt) < 0.001
            assert ls.init_section is not None and ls.init_section.uri == ms.map_uri
        trailing = [s for s in lib.segments if s.uri is None]
        pending = media.pending.parts if media.pending is not None else []
        assert [p.uri for s in trailing for p in s.parts] == [p.uri for p in pending], r
        assert lib.preload_hint is not None and lib.preload_hint.hint_type == "PART"
        assert lib.preload_hint.uri == media.hints[0]["URI"]
        assert [(x.uri, x.last_msn, x.last_part) for x in lib.rendition_reports] == [
            (x["URI"], int(x["LAST-MSN"]), int(x["LAST-PART"]) if "LAST-PART" in x else None) for x in media.reports]
        n += 1
    assert n > 200


def test_init_segment_map_is_served_and_stable(capture: Capture) -> None:
    for r in RENDITIONS:
        maps = {m for _, media in capture.playlists(r) for m in media.maps}
        assert len(maps) == 1, (r, maps)  # one track set for the whole stream
        uri = maps.pop()
        assert uri.startswith("init-") and uri.endswith(".mp4"), uri
        status, headers, body = http_get(resolve(capture.url(r), uri))
        assert status == 200 and headers.get("Content-Type") == "video/mp4" and body[4:8] == b"ftyp", (r, status)


def test_ffprobe_and_ffmpeg_read_the_live_playlists_as_plain_hls(capture: Capture, tmp_path: Path) -> None:
    for r in RENDITIONS:
        url = capture.url(r)
        probe = subprocess.run([need("ffprobe"), "-v", "error", "-show_entries", "stream=codec_type,codec_name",
                                "-of", "json", url], capture_output=True, text=True, timeout=60)
        assert probe.returncode == 0 and not probe.stderr.strip(), (r, probe.stderr)
        streams = sorted((s["codec_type"], s["codec_name"]) for s in json.loads(probe.stdout)["streams"])
        assert streams == [("audio", "aac"), ("video", "h264")], (r, probe.stdout)
        # and decodes 4 s of it without an error message
        play = subprocess.run([need("ffmpeg"), "-v", "error", "-nostdin", "-i", url, "-t", "4", "-f", "null", "-"],
                              capture_output=True, text=True, timeout=60)
        assert play.returncode == 0 and not play.stderr.strip(), (r, play.stderr)
    # our own reading of the plain playlist (no directives) agrees it is an LL-HLS playlist
    assert parse_media(http_get(capture.url("source"))[2].decode()).part_target == 0.5
