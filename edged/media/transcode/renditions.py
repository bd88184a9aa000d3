"""All renditions of one channel, in memory: the source passthrough plus the encoded ladder.

`push(packet)` feeds the source segmenter, learns the segment boundaries from it, and hands video
to the Transcoder (never waiting for it); encoded packets come back on later calls (`push`, `tick`,
`finish`) and go through one Segmenter per rung, with the source's audio interleaved by time.

Alignment across renditions (RFC 8216 6.2.4: matching content, same timestamps):
- a rung's keyframes are exactly the source segments' first frames, so its segmenter (same rule,
  same timestamps) cuts where the source's did;
- a rung segment takes the sequence number of the source segment that starts at the same pts, its
  discontinuity flags and its EXT-X-PROGRAM-DATE-TIME, so numbers and dates match across
  renditions even for a rung that was shed and restored or that a previous session did not have;
  CMAF parts of a rung segment get the same (the source decides them when its segment begins, so
  they are known before either segment ends); a rung segment, or part, whose start matches no
  source boundary is dropped;
- a forced cut of the source (no keyframe within hls.max_segment_seconds) is a boundary like any
  other: the rungs force their IDR at that packet's pts, so their segments still start with a
  keyframe where the source's does.
A rung that is shed (or restarted after a skip) resumes at a boundary with the source's number for
that segment: its sequence has a gap then, never a shift.

The source's frame rate is measured from its first frames (0.4 s) before the ladder is chosen, and
a change of source resolution restarts the ladder at that boundary.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edged.config import Rung
from edged.media.packet import MediaPacket
from edged.media.segmenter import Segment, Segmenter, SegmentPart
from edged.media.transcode import transcoder as tx
from edged.media.transcode.audio import AacReencoder
from edged.media.transcode.ladder import SOURCE, Rendition, select, snap_fps
from edged.media.transcode.overload import OverloadController, OverloadPolicy, Restore, Shed

log = logging.getLogger(__name__)

FPS_PROBE_FRAMES = 12  # video packets looked at to measure the source frame rate
FPS_PROBE_SECONDS = 1.0  # ... or this much media, whichever comes first
OVERLOAD_INTERVAL = 0.5  # s between overload checks
BACKLOG_REPORT_INTERVAL = 2.0  # s between backlog reports
_SEQ_MEMORY = 256  # boundaries / source segments remembered for numbering rung segments
CLOSE_TIMEOUT = 3.0  # s the transcoder gets to drain at the end of a stream


@dataclass
class _RungOut:
    """Caller-side state of one rung: its segmenter and pending audio."""

    rendition: Rendition
    gen: int = 0
    segmenter: Segmenter | None = None  # None while shed or waiting for its restart boundary
    audio: deque[MediaPacket] = field(default_factory=deque)
    parts: list[SegmentPart] = field(default_factory=list)  # CMAF parts out of the last segmenter call
    listed: bool = False  # has a segment since it (re)started: belongs in the master playlist
    wanted: bool = True
    failed: bool = False


class Renditions:
    """Source passthrough + ladder for one channel. Not thread-safe: one caller thread."""

    def __init__(self, *, channel: str, segment_seconds: float, max_segment_seconds: float, next_seq: int,
                 disc_seq: int, discontinuity: bool, ladder: Sequence[Rung] = (), codec: str = "",
                 on_segment: Callable[[Segment], None], on_event: Callable[[dict[str, Any]], None] | None = None,
                 overload: OverloadPolicy | None = None, throttle_mpx: float = 0.0,
                 clock: Callable[[], float] = time.monotonic, close_timeout: float = CLOSE_TIMEOUT,
                 hw_decode: bool = False, date_not_before: float = 0.0, fmt: str = "ts", part_seconds: float = 0.5,
                 on_part: Callable[[SegmentPart], None] | None = None) -> None:
        self.channel = channel
        self.segment_seconds = segment_seconds
        self.max_segment_seconds = max_segment_seconds
        self.ladder = tuple(ladder) if codec else ()
        self.codec = codec
        self.on_segment = on_segment
        self.on_part = on_part or (lambda p: None)
        self.fmt = fmt
        self.part_seconds = part_seconds
        self.on_event = on_event or (lambda e: None)
        self.policy = overload
        self.throttle_mpx = throttle_mpx
        self.clock = clock
        self.close_timeout = close_timeout
        self.hw_decode = hw_decode
        self.source = Segmenter(SOURCE, segment_seconds=segment_seconds, max_segment_seconds=max_segment_seconds,
                                next_seq=next_seq, disc_seq=disc_seq, discontinuity=discontinuity,
                                date_not_before=date_not_before, fmt=fmt, part_seconds=part_seconds,
                                on_part=self.on_part)
        self.transcoder: tx.Transcoder | None = None
        self.rungs: list[_RungOut] = []
        self.controller: OverloadController | None = None
        self._boundary_seq: dict[float, int] = {}  # boundary pts (s) → source seq of the segment starting there
        # seq → what rung segments and parts copy from the source's, known when it begins:
        # (discontinuity, disc_seq, date); and when it ends: (duration, forced)
        self._source_open: dict[int, tuple[bool, int, float]] = {}
        self._source_end: dict[int, tuple[float, bool]] = {}
        self._probe: list[tuple[MediaPacket, bool]] | None = None  # packets held while measuring fps
        self._probe_audio: list[MediaPacket] = []
        self._src_size: tuple[int, int] | None = None
        self._aac: AacReencoder | None = None
        self._next_check = 0.0
        self._next_report = 0.0
        self._misaligned = 0

    # -- input ---------------------------------------------------------------------------------
    def push(self, pkt: MediaPacket) -> None:
        segs = self.source.push(pkt)
        for seg in segs:
            self._source_segment(seg)
        cur = self.source.current
        if self.source.opened and cur is not None:
            self._remember(self._source_open, cur.seq, (cur.discontinuity, cur.disc_seq, cur.program_date_time))
        if pkt.kind == "video":
            boundary = self.source.opened  # the source starts a segment with this packet (keyframe or forced cut)
            if boundary:
                self._remember(self._boundary_seq, pkt.pts_seconds, self.source.next_seq)
            if self.ladder:
                self._video(pkt, boundary)
        elif self.ladder:
            self._audio(pkt)
        self.tick()

    def tick(self) -> None:
        """Collect encoder output; check for overload. Call it now and then even without input."""
        if self.transcoder is None:
            return
        self._drain(self.transcoder.poll())
        now = self.clock()
        if self.controller is not None and now >= self._next_check:
            self._next_check = now + OVERLOAD_INTERVAL
            self._check_overload(now)

    def finish(self) -> None:
        """End of stream: flush everything."""
        for seg in self.source.flush():
            self._source_segment(seg)
        self._stop_transcoder()

    def backlog(self) -> float:
        return self.transcoder.backlog() if self.transcoder is not None else 0.0

    def listed(self) -> list[Rendition]:
        """Encoded renditions that belong in the master playlist now, highest first."""
        return [r.rendition for r in self.rungs if r.listed and r.wanted and not r.failed]

    # -- source side -----------------------------------------------------------------------------
    @staticmethod
    def _remember(d: dict[Any, Any], k: Any, v: Any) -> None:
        d[k] = v
        if len(d) > _SEQ_MEMORY:
            del d[next(iter(d))]

    def _source_segment(self, seg: Segment) -> None:
        self._remember(self._source_end, seg.seq, (seg.duration, seg.forced))
        self.on_segment(seg)

    def _video(self, pkt: MediaPacket, boundary: bool) -> None:
        size = (pkt.config.width, pkt.config.height)
        if boundary and self._src_size is not None and size != self._src_size:
            log.info("source is now %dx%d: restarting the ladder", *size)
            self._stop_transcoder()
        if self.transcoder is not None:
            self.transcoder.submit(pkt, boundary)
            return
        if self._src_size is not None:
            return  # no rung fits below this source: passthrough only until its size changes
        if self._probe is None:
            if not (boundary and pkt.keyframe):
                return  # the ladder starts with a source segment that a decoder can start with
            self._probe = []
            self._probe_audio = []
        self._probe.append((pkt, boundary))
        span = pkt.pts_seconds - self._probe[0][0].pts_seconds
        if len(self._probe) >= FPS_PROBE_FRAMES or span >= FPS_PROBE_SECONDS:
            self._start_transcoder()

    def _audio(self, pkt: MediaPacket) -> None:
        if pkt.config.codec == "aac":
            packets = [pkt]
        else:
            if self._aac is None or self._aac.source != pkt.config:
                self._aac = AacReencoder(pkt.config)
            packets = self._aac.push(pkt)
        if self._probe is not None and self.transcoder is None:
            self._probe_audio += packets
        for r in self.rungs:
            if r.segmenter is not None or (r.wanted and not r.failed):
                r.audio.extend(packets)

    def _measure_fps(self) -> float:
        assert self._probe is not None
        dts = sorted(p.dts_seconds for p, _ in self._probe)
        steps = [b - a for a, b in zip(dts, dts[1:], strict=False) if b > a]
        return snap_fps(1 / statistics.median(steps)) if steps else 0.0

    def _start_transcoder(self) -> None:
        assert self._probe is not None
        first = self._probe[0][0]
        w, h = first.config.width, first.config.height
        fps = self._measure_fps()
        renditions = select(self.ladder, w, h, fps)
        probe, self._probe = self._probe, None
        self._src_size = (w, h)
        if not renditions:
            log.info("source %dx%d@%g: no rung of the ladder fits below it; passthrough only", w, h, fps)
            self.on_event({"event": "ladder", "source": [w, h, fps], "renditions": []})
            return
        self.transcoder = tx.Transcoder(renditions, codec=self.codec, source=first.config, time_base=first.time_base,
                                        throttle_mpx=self.throttle_mpx, hw_decode=self.hw_decode)
        self.rungs = [_RungOut(r) for r in renditions]
        for r in self.rungs:
            r.audio.extend(self._probe_audio)
        self._probe_audio = []
        self.controller = OverloadController(len(renditions), self.policy) if self.policy else None
        self.transcoder.start()
        names = ", ".join(f"{r.name} {r.width}x{r.height}@{r.fps:g} {r.bitrate_kbps}k" for r in renditions)
        log.info("source %dx%d@%g: encoding %s with %s", w, h, fps, names, self.codec)
        self.on_event({"event": "ladder", "source": [w, h, fps], "encoder": self.codec,
                       "renditions": [r.name for r in renditions]})
        for pkt, boundary in probe:
            self.transcoder.submit(pkt, boundary)

    def _stop_transcoder(self) -> None:
        self._probe = None
        self._probe_audio = []
        self._src_size = None
        if self.transcoder is None:
            return
        t, self.transcoder = self.transcoder, None
        self._drain(t.close(self.close_timeout))
        for r in self.rungs:
            if r.segmenter is not None:
                self._release_audio(r, None)
            segmenter, r.segmenter = r.segmenter, None  # (None too if muxing that audio failed)
            if segmenter is not None:
                end = self._source_end_pts(segmenter.open_start_pts)
                self._rung_output(r, segmenter.flush(end_pts=end), last=True)
        self.rungs = []
        self.controller = None

    # -- rung side -------------------------------------------------------------------------------
    def _drain(self, items: list[tuple[str, str, int, Any]]) -> None:
        by_name = {r.rendition.name: r for r in self.rungs}
        for kind, name, gen, payload in items:
            r = by_name.get(name)
            if r is None or gen != r.gen:
                continue  # output of a run that was shed (or of a ladder since replaced)
            if kind == tx.PACKET:
                if r.segmenter is None:
                    continue
                self._release_audio(r, payload.pts_seconds)
                if r.segmenter is not None:
                    self._rung_output(r, self._guarded(r, r.segmenter.push, payload))
            elif kind == tx.STARTED:
                while r.audio and r.audio[0].pts_seconds < payload:
                    r.audio.popleft()  # audio before the restart belongs to earlier segments
                r.parts.clear()
                fps = r.rendition.fps
                r.segmenter = Segmenter(name, segment_seconds=self.segment_seconds,
                                        max_segment_seconds=self.max_segment_seconds, next_seq=0, disc_seq=0,
                                        discontinuity=False, fmt=self.fmt, part_seconds=self.part_seconds,
                                        on_part=r.parts.append, frame_interval=1 / fps if fps > 0 else 0.0)
            elif kind == tx.STOPPED:
                log.warning("rendition %s restarts at the next boundary (%s)", name, payload)
                self._unlist(r, reason=str(payload))
            elif kind == tx.ERROR:
                log.error("rendition %s failed: %s", name, payload)
                r.failed = True
                self._unlist(r, reason="error")
                self.on_event({"event": "rendition_error", "rendition": name, "message": str(payload)})

    def _guarded(self, r: _RungOut, fn: Callable[..., list[Segment]], *args: Any) -> list[Segment]:
        try:
            return fn(*args)
        except Exception as exc:  # a rung's muxing problem must not stop the source
            log.exception("rendition %s: segmenter failed", r.rendition.name)
            r.parts.clear()
            r.failed = True
            if self.transcoder is not None:
                r.gen = self.transcoder.set_wanted(r.rendition.name, False)
            self._unlist(r, reason="error")
            self.on_event({"event": "rendition_error", "rendition": r.rendition.name, "message": str(exc)})
            return []

    def _unlist(self, r: _RungOut, reason: str) -> None:
        r.segmenter = None
        r.audio.clear()
        if r.listed:
            r.listed = False
            self.on_event({"event": "rendition", "rendition": r.rendition.name, "listed": False, "reason": reason})

    def _release_audio(self, r: _RungOut, upto: float | None) -> None:
        """Audio up to a video packet's time goes in first, as the source's arrival order has it."""
        while r.audio and (upto is None or r.audio[0].pts_seconds <= upto):
            segmenter = r.segmenter
            if segmenter is None:  # a failure while muxing unlisted the rung
                return
            self._rung_output(r, self._guarded(r, segmenter.push, r.audio.popleft()))

    def _source_end_pts(self, start_pts: float | None) -> float | None:
        """Where the source segment that starts at `start_pts` ended (None: not known)."""
        seq = self._boundary_seq.get(start_pts) if start_pts is not None else None
        end = self._source_end.get(seq) if seq is not None else None
        return start_pts + end[0] if end is not None and start_pts is not None else None

    def _rung_output(self, r: _RungOut, segs: list[Segment], last: bool = False) -> None:
        """What one segmenter call produced: its parts first (in order), then the segments they end."""
        parts = r.parts[:]  # (the segmenter appends to r.parts itself)
        r.parts.clear()
        for part in parts:
            self._rung_part(part)
        for seg in segs:
            self._rung_segment(r, seg, last=last)

    def _rung_part(self, part: SegmentPart) -> None:
        seq = self._boundary_seq.get(part.start_pts)
        if seq is None:
            return  # its segment matches no source boundary: dropped with it (logged there)
        part.seq = seq
        if seq in self._source_open:
            part.discontinuity, part.disc_seq, part.program_date_time = self._source_open[seq]
        self.on_part(part)

    def _rung_segment(self, r: _RungOut, seg: Segment, last: bool = False) -> None:
        seq = self._boundary_seq.get(seg.start_pts)
        if seq is None:
            self._misaligned += 1
            if self._misaligned in (1, 10, 100) or self._misaligned % 1000 == 0:
                log.warning("rendition %s: segment at %.3fs matches no source boundary; dropped (%d)",
                            r.rendition.name, seg.start_pts, self._misaligned)
            return
        seg.seq = seq
        if seq in self._source_open:
            seg.discontinuity, seg.disc_seq, seg.program_date_time = self._source_open[seq]
        if seq in self._source_end:
            duration, seg.forced = self._source_end[seq]
            if last:
                # A stream's last segment has no next boundary; its length is a guess (last pts plus
                # one frame), and a rung at a lower rate would guess a longer frame. Use the source's.
                if seg.parts and duration != seg.duration:  # its last part takes the difference
                    rest = seg.parts[:-1]
                    seg.parts = (*rest, (max(0.001, duration - sum(d for d, _ in rest)), seg.parts[-1][1]))
                seg.duration = duration
        self.on_segment(seg)
        if not r.listed and r.wanted and not r.failed:
            r.listed = True
            self.on_event({"event": "rendition", "rendition": r.rendition.name, "listed": True})

    # -- overload --------------------------------------------------------------------------------
    def _check_overload(self, now: float) -> None:
        assert self.transcoder is not None and self.controller is not None
        backlog = self.transcoder.backlog()
        if now >= self._next_report:
            self._next_report = now + BACKLOG_REPORT_INTERVAL
            self.on_event({"event": "backlog", "seconds": round(backlog, 3),
                           "shed": self.controller.shed_count})
        decision = self.controller.observe(now, backlog)
        if isinstance(decision, Shed):
            self.set_wanted(decision.index, False, decision.backlog)
        elif isinstance(decision, Restore):
            self.set_wanted(decision.index, True, decision.backlog)

    def set_wanted(self, index: int, want: bool, backlog: float = 0.0) -> None:
        """Shed (False) or restore (True) the rung at `index` of the current ladder (0 = highest)."""
        if self.transcoder is None or not 0 <= index < len(self.rungs):
            return
        r = self.rungs[index]
        if r.failed or r.wanted == want:
            return
        r.wanted = want
        r.gen = self.transcoder.set_wanted(r.rendition.name, want)
        shed = sum(not x.wanted for x in self.rungs)
        if not want:
            log.warning("transcoder %.1fs behind real time: shedding rendition %s (%d of %d shed)",
                        backlog, r.rendition.name, shed, len(self.rungs))
            self._unlist(r, reason="shed")
        else:
            r.audio.clear()
            log.info("transcoder caught up (%.1fs behind): restoring rendition %s at the next boundary",
                     backlog, r.rendition.name)
        self.on_event({"event": "shed" if not want else "restore", "rendition": r.rendition.name,
                       "backlog": round(backlog, 3), "shed": shed})
