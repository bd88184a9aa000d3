"""Cut a rendition's packets into HLS segments at keyframes and mux each one in memory.

A segment ends at the first video keyframe whose pts is at least `segment_seconds` past the
segment's first pts (so every segment starts with an IDR, as gohlslib puts it "at least one IDR"),
or at the first video packet `max_segment_seconds` past it without one (a forced cut: it bounds
memory and keeps every segment within the playlist's fixed EXT-X-TARGETDURATION when a source's
keyframe interval is too long). Nothing is dropped at a forced cut: the next segment starts with
that packet (not a keyframe then, for the passthrough; encoded renditions force their IDR there).
Audio-only renditions cut on time. The rule depends only on packet timestamps, so renditions whose
encoders place keyframes at the same pts cut on the same boundaries.

EXT-X-PROGRAM-DATE-TIME comes from media time against one anchor: the wall clock at which the
first packet reached the ingest socket. Each segment's date is the anchor plus its pts offset, so
consecutive dates step by exactly the segment durations. Where the media time does not run on
from the previous segment (a jump in the source's timestamps) the date continues from where the
previous segment's ended. A segment's number, date and discontinuity are decided when it begins
(`current`), so its parts can be listed before it ends.

Two containers (`fmt`):
- "ts": MPEG-TS, muxed by PyAV when the segment is cut (every track of the segment is known then).
- "cmaf": fragmented MP4 for LL-HLS (edged.protocols.cmaf), written as parts while the segment
  grows. Each segment's track set (video config, audio config if any audio was seen) gives an init
  segment; a new init (changed configs, audio appearing) starts with a discontinuity. The first
  segment of a segmenter decides its track set at its first part, so audio that starts just after
  the first keyframe is in it; later audio that the open segment has no track for waits for the
  next segment. Parts are cut in decode order before a video packet that would make the part
  longer than `part_seconds` (by the frame count at the measured frame interval, taken for a
  common rate while that is within the timestamps' precision, so millisecond times do not move
  the cuts; and by the packets' own times to within one tick), audio-only renditions on audio
  time; the first part of a segment starts with its keyframe. Every part is handed to `on_part`
  when it is complete; the last one at the cut, with the Segment, whose payload is the parts
  concatenated. Part durations come from the decode times at the cuts, the last part absorbing
  the rest, so they add up to the segment's duration. Renditions with the same frame times (the
  ladder's rungs at the source's rate) cut their parts at the same times.
- Ingest gaps (cmaf). When a packet of the cutting kind starts a hole after the open part, that
  is, it comes more than two steps (frame intervals; AAC frames for audio-only) after the open
  part's end (its last packet plus one step), and the hole is at least half of `part_seconds` or
  bridging it would make the part longer than `part_seconds`, the open part ends with its last
  sample lasting one step (not the hole), and the hole becomes GAP parts (EXT-X-PART GAP=YES: no
  bytes, `SegmentPart.gap`, their indices in `Segment.gaps`) of equal length, at most
  `part_seconds` each, up to that packet; the same when the hole falls right before a cut (the
  segment's last parts are then gaps). The segment's duration still spans the hole and the part
  durations still add up to it. A shorter hole (a dropped frame or two) is bridged by the previous
  sample's duration, as before. Audio of a video rendition that comes after the hole but before
  that video packet stays in the part before the gap (its samples keep their own times). A segment
  has at most `MAX_PARTS` parts: a hole too long for that (it is over the playlist's target duration
  anyway) gets fewer, longer gap parts.
"""

from __future__ import annotations

import io
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import cast

import av
from av.video.codeccontext import VideoCodecContext

from edged.media.packet import CodecConfig, MediaPacket
from edged.media.transcode.ladder import snap_fps
from edged.protocols import cmaf
from edged.protocols.aac import SAMPLES_PER_FRAME
from edged.store.segments import cmaf_init_id

TS_TIME_BASE = Fraction(1, 90000)
FORMATS = ("ts", "cmaf")
_PART_SLACK = 1e-4  # s a part may exceed part_seconds by (float noise)
_INTERVALS = 128  # recent video frame intervals the frame rate is measured over
_DEFAULT_INTERVAL = 1 / 30  # before two frames were seen (and no hint was given)
_GAP = 3.0  # a decode-time step this many frame intervals long restarts the measurement
_HOLE_STEPS = 2  # a hole longer than this many steps after a part's end may be an ingest gap
MAX_PARTS = 64  # parts of one segment at most (what a relay record allows: edged.relay.records.MAX_PARTS)
# Rates a measurement within its timestamp precision is taken for, integer rates first: over a few
# frames with millisecond times, 30 and 29.97 fps cannot be told apart (0.03 ms a frame).
_RATES = (30.0, 25.0, 60.0, 24.0, 50.0, 48.0, 29.97, 59.94, 23.976)


@dataclass(frozen=True, slots=True)
class Opened:
    """The segment in progress, as decided when it began."""

    seq: int
    start_pts: float
    program_date_time: float
    discontinuity: bool
    disc_seq: int


@dataclass(slots=True)
class Segment:
    """A finished segment: what the store needs, plus measurements for metrics."""

    rendition: str
    seq: int
    duration: float
    discontinuity: bool
    disc_seq: int
    start_pts: float
    program_date_time: float
    payload: bytes
    first_arrival: float
    video_frames: int
    width: int = 0
    height: int = 0
    codecs: tuple[str, ...] = field(default_factory=tuple)
    forced: bool = False  # cut at max_segment_seconds, without a keyframe
    fmt: str = "ts"
    init_id: str = ""  # cmaf: the id of the init segment its parts need
    init: bytes = b""  # cmaf: that init segment
    parts: tuple[tuple[float, bool], ...] = ()  # cmaf: (duration s, independent) per part
    gaps: tuple[int, ...] = ()  # cmaf: indices of the parts that are ingest gaps (no bytes)


@dataclass(slots=True)
class SegmentPart:
    """One complete CMAF part (moof+mdat) of the segment in progress."""

    rendition: str
    seq: int  # the segment's number (a rung's is renumbered to the source's)
    index: int  # from 0 within the segment
    start_pts: float  # the segment's first pts
    duration: float
    independent: bool  # starts with a keyframe
    data: bytes
    init_id: str
    init: bytes  # the init segment (the same bytes object for every part that uses it)
    program_date_time: float  # the segment's
    discontinuity: bool  # the segment's
    disc_seq: int
    first_arrival: float = 0.0  # monotonic ingest arrival of the part's first packet
    last: bool = False  # the segment's last part (handed over at the cut, before the Segment)
    gap: bool = False  # an ingest gap: no bytes (`data` is empty), listed with GAP=YES


class _Muxer:
    """One in-memory MPEG-TS file."""

    def __init__(self, video: CodecConfig | None, audio: CodecConfig | None) -> None:
        self.buf = io.BytesIO()
        self.container = av.open(self.buf, "w", format="mpegts")
        self.video_stream = None
        self.audio_stream = None
        if video is not None:
            vs = self.container.add_stream(video.codec)
            vctx = cast(VideoCodecContext, vs.codec_context)
            vctx.width = video.width
            vctx.height = video.height
            if video.extradata:
                vs.codec_context.extradata = video.extradata
            self.video_stream = vs
        if audio is not None:
            ast = self.container.add_stream(audio.codec, rate=audio.sample_rate or 48000)
            if audio.extradata:
                ast.codec_context.extradata = audio.extradata  # the TS muxer writes ADTS from it
            self.audio_stream = ast

    def write(self, pkt: MediaPacket) -> None:
        stream = self.video_stream if pkt.kind == "video" else self.audio_stream
        if stream is None:
            return
        p = av.Packet(pkt.data)
        p.time_base = pkt.time_base
        p.pts = pkt.pts
        p.dts = pkt.dts
        p.is_keyframe = pkt.keyframe
        p.stream = stream
        self.container.mux(p)

    def close(self) -> bytes:
        self.container.close()
        return self.buf.getvalue()


class _Parts:
    """CMAF state of one segmenter: the open segment's track set, fragmenter and open part."""

    def __init__(self, part_seconds: float, frame_interval: float) -> None:
        self.part_seconds = part_seconds
        self.init: bytes | None = None  # the current init segment (None: none yet)
        self.init_id = ""
        self.ids: dict[str, int] | None = None  # kind → track ID; None = undecided (first segment)
        self.frag: cmaf.Fragmenter | None = None
        self.kind = "video"  # the kind whose times cut the parts (the segment's first packet's)
        self.video_tb = Fraction(1, 1000)
        self.packets: list[MediaPacket] = []  # the open part
        self.start = 0.0  # dts (s) of the open part's first packet of `kind`
        self.start_exact = Fraction(0)  # the same, exactly (part durations without float noise)
        self.last: MediaPacket | None = None  # the open part's last packet of `kind`
        self.frames = 0  # packets of `kind` in the open part
        self.done: list[tuple[float, bool]] = []  # the open segment's finished parts
        self.gaps: list[int] = []  # indices in `done` of its gap parts
        self.chunks: list[bytes] = []
        self.mfhd = 0
        self.dts: deque[float] = deque(maxlen=_INTERVALS + 1)  # recent video dts (s)
        self.frame = frame_interval or _DEFAULT_INTERVAL  # the estimated video frame interval

    def begin(self, pkt: MediaPacket) -> None:
        self.kind = pkt.kind
        if pkt.kind == "video":
            self.video_tb = pkt.time_base
        self.packets, self.frames, self.done, self.chunks, self.gaps = [], 0, [], [], []
        self.ids = None
        self.frag = None

    def decide(self, video: CodecConfig | None, audio: CodecConfig | None) -> bool:
        """Fix the open segment's track set; True when that makes a new init segment."""
        tracks = []
        ids: dict[str, int] = {}
        if self.kind == "video" and video is not None:
            ids["video"] = 1
            tracks.append(cmaf.make_track(1, video, self.video_tb))
        if audio is not None:
            ids["audio"] = len(tracks) + 1
            tracks.append(cmaf.make_track(ids["audio"], audio))
        init = cmaf.init_segment(tracks)
        self.ids = ids
        self.frag = cmaf.Fragmenter(tracks)
        if init == self.init:
            return False
        self.init, self.init_id = init, cmaf_init_id(init)
        return True

    def interval(self) -> float:
        return self.frame

    def _measure(self, pkt: MediaPacket) -> None:
        """Update the frame interval from the recent video decode times: a common rate when one is
        within the timestamps' precision (two ticks over the span), else the measured rate snapped."""
        d = self.dts
        t = pkt.dts_seconds
        if d and not 0 < t - d[-1] <= _GAP * self.frame:
            d.clear()  # a gap or a jump back: measure again from here
        d.append(t)
        if len(d) < 2:
            return
        span = d[-1] - d[0]
        fps = (len(d) - 1) / span
        err = fps * 2 * float(pkt.time_base) / span
        rate = next((r for r in _RATES if abs(r - fps) <= err), None) or snap_fps(fps)
        if rate > 0:
            self.frame = 1 / rate

    def step(self, pkt: MediaPacket) -> float:
        """How long a packet of the cutting kind lasts."""
        if pkt.kind == "video":
            return self.interval()
        return SAMPLES_PER_FRAME / (pkt.config.sample_rate or 48000)

    def open_seconds(self) -> float:
        """The open part's duration by decode times, its last packet lasting one step."""
        if not self.frames or self.last is None:
            return 0.0
        # (the cut rule kept it within part_seconds; the min drops timestamp rounding)
        return min(self.part_seconds, self.last.dts_seconds - self.start + self.step(self.last))

    def full(self, pkt: MediaPacket) -> bool:
        """Would adding `pkt` (of the cutting kind) make the open part longer than part_seconds?"""
        if self.frames == 0 or not self.packets:
            return False
        step = self.step(pkt)
        limit = self.part_seconds + _PART_SLACK
        span = pkt.dts_seconds - self.start
        # Frame count first (timestamps rounded to the millisecond do not move the cut), then the
        # packets' own times within one tick of their time base (gaps, variable frame rates).
        return (self.frames + 1) * step > limit or span + step > limit + float(pkt.time_base)

    def hole_end(self, pkt: MediaPacket) -> Fraction | None:
        """Where the open part's media ends (its last packet plus one step, exactly) when `pkt` (of the
        cutting kind) comes after an ingest gap (the rule in the module docstring); None otherwise."""
        last = self.last
        if not self.frames or last is None:
            return None
        step = self.step(last)
        end = (last.dts + max(1, round(step / float(last.time_base)))) * last.time_base
        hole = float(pkt.dts * pkt.time_base - end)
        if hole <= _HOLE_STEPS * step + float(pkt.time_base):
            return None
        span = pkt.dts_seconds - self.start  # the part's duration if the hole were bridged
        if hole >= self.part_seconds / 2 or span > self.part_seconds + _PART_SLACK + float(pkt.time_base):
            return end
        return None

    def add(self, pkt: MediaPacket) -> None:
        if pkt.kind == self.kind:
            if self.frames == 0:
                self.start = pkt.dts_seconds
                self.start_exact = pkt.dts * pkt.time_base
            self.last = pkt
            self.frames += 1
        if pkt.kind == "video":
            self._measure(pkt)
        self.packets.append(pkt)

    def flush(self, next_pkt: MediaPacket | None, end: Fraction | None = None) -> cmaf.Part | None:
        """The open part as one fragment (None if it holds no sample of the segment's tracks); `end`:
        where its last sample of the cutting kind ends (s; else at `next_pkt`)."""
        assert self.frag is not None and self.ids is not None
        for p in self.packets:
            tid = self.ids.get(p.kind)
            if tid is not None:
                self.frag.add(p, tid)
        nd = None
        if end is not None and self.last is not None and self.kind in self.ids:
            nd = {self.ids[self.kind]: int(end / self.last.time_base)}
        elif next_pkt is not None and next_pkt.kind in self.ids:
            nd = {self.ids[next_pkt.kind]: next_pkt.dts}
        self.mfhd = self.mfhd % 0xFFFFFFFF + 1
        part = self.frag.flush(self.mfhd, nd)
        self.packets, self.frames = [], 0
        return part if part.data else None


class Segmenter:
    """Per-rendition cutter; `push` returns the segments finished by that packet (and, in CMAF,
    hands each finished part to `on_part` first)."""

    def __init__(self, rendition: str, *, segment_seconds: float, max_segment_seconds: float,
                 next_seq: int, disc_seq: int, discontinuity: bool, expect_video: bool = True,
                 date_not_before: float = 0.0, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, fmt: str = "ts", part_seconds: float = 0.5,
                 on_part: Callable[[SegmentPart], None] | None = None, frame_interval: float = 0.0) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"segment format {fmt!r}: expected one of {', '.join(FORMATS)}")
        self.rendition = rendition
        self.segment_seconds = segment_seconds
        self.max_segment_seconds = max_segment_seconds
        self.next_seq = next_seq
        self.disc_seq = disc_seq
        self.fmt = fmt
        self.opened = False  # the last push() started a segment with its packet
        self.current: Opened | None = None  # the segment in progress
        self._pending_disc = discontinuity
        self._packets: list[MediaPacket] | None = None  # the open segment (TS: muxed when it is cut)
        self._start_pts = 0.0
        self._last_pts = 0.0
        self._first_arrival = 0.0
        self._frames = 0
        self._video: CodecConfig | None = None
        self._audio: CodecConfig | None = None
        self._has_video = False
        self._expect_video = expect_video  # audio before the first video keyframe is dropped
        # Dates: wall clock of the anchor's media time; never before the previous session's end.
        self._wall = wall
        self._monotonic = monotonic
        self._date_not_before = date_not_before
        self._anchor: tuple[float, float] | None = None  # (pts s, epoch s)
        self._prev_end: tuple[float, float] | None = None  # where the last segment ended: (pts s, epoch s)
        self._on_part = on_part or (lambda p: None)
        self._cmaf = _Parts(part_seconds, frame_interval) if fmt == "cmaf" else None

    @property
    def open_start_pts(self) -> float | None:
        """The first pts of the segment in progress (None when none is)."""
        return self.current.start_pts if self.current is not None else None

    def push(self, pkt: MediaPacket) -> list[Segment]:
        out: list[Segment] = []
        self.opened = False
        if self._cmaf is not None and pkt.dts < 0:
            return out  # CMAF decode times start at 0
        t = pkt.pts_seconds
        if pkt.kind == "video":
            self._has_video = True
            config_changed = self._video is not None and pkt.config != self._video
            forced = False
            if self._packets is not None and pkt.keyframe and (
                config_changed or t - self._start_pts >= self.segment_seconds - 1e-3
            ):
                out.append(self._finish(end_pts=t, next_pkt=pkt))
                if config_changed:
                    self._pending_disc = True
            elif self._packets is not None and t - self._start_pts >= self.max_segment_seconds:
                out.append(self._finish(end_pts=t, forced=True, next_pkt=pkt))
                forced = True  # the next segment starts right here: no media is lost
            self._video = pkt.config
            if self._packets is None and not pkt.keyframe and not forced:
                return out  # a segment must start with a keyframe
        else:
            if self._audio is not None and pkt.config != self._audio and self._packets is not None:
                out.append(self._finish(end_pts=t))
                self._pending_disc = True
            self._audio = pkt.config
            if self._packets is None and (self._has_video or self._expect_video):
                return out  # wait for the next video keyframe
            if self._packets is not None and not self._has_video and t - self._start_pts >= self.segment_seconds - 1e-3:
                out.append(self._finish(end_pts=t, next_pkt=pkt))
        if self._packets is None:
            self._begin(pkt)
        assert self._packets is not None
        if self._cmaf is not None:
            if not self._add_cmaf(pkt):
                return out
        else:
            self._packets.append(pkt)
        if pkt.kind == "video":
            self._frames += 1
        self._last_pts = max(self._last_pts, t)
        return out

    def _add_cmaf(self, pkt: MediaPacket) -> bool:
        """Into the open part (cutting the part before it when full); False if the segment has no
        track for it (it waits for the next segment, which gets one)."""
        c = self._cmaf
        assert c is not None
        if c.ids is not None and pkt.kind not in c.ids:
            return False
        if pkt.kind == c.kind:
            end = c.hole_end(pkt)
            if end is not None:  # an ingest gap: the part ends with its media, gap parts cover the hole
                self._emit_part(next_pkt=pkt, duration=float(end - c.start_exact), end=end)
                self._emit_gaps(float(pkt.dts * pkt.time_base - end))
            elif c.full(pkt):
                self._emit_part(next_pkt=pkt, duration=float(pkt.dts * pkt.time_base - c.start_exact))
        c.add(pkt)
        return True

    def _emit_gaps(self, total: float, last: bool = False) -> None:
        """GAP parts of equal length, at most part_seconds each (within MAX_PARTS), covering `total` s."""
        c = self._cmaf
        cur = self.current
        assert c is not None and cur is not None and c.init is not None
        n = max(1, math.ceil(total / c.part_seconds - 1e-9))
        n = max(1, min(n, MAX_PARTS - len(c.done) - (0 if last else 1)))
        for k in range(n):
            index = len(c.done)
            c.done.append((total / n, False))
            c.gaps.append(index)
            self._on_part(SegmentPart(
                rendition=self.rendition, seq=cur.seq, index=index, start_pts=cur.start_pts, duration=total / n,
                independent=False, data=b"", init_id=c.init_id, init=c.init,
                program_date_time=cur.program_date_time, discontinuity=cur.discontinuity, disc_seq=cur.disc_seq,
                last=last and k == n - 1, gap=True,
            ))

    def _emit_part(self, next_pkt: MediaPacket | None, duration: float, last: bool = False,
                   end: Fraction | None = None) -> None:
        c = self._cmaf
        cur = self.current
        assert c is not None and cur is not None
        if c.ids is None:  # the first segment's track set: what is known at its first part
            c.decide(self._video if self._has_video else None, self._audio)
        arrival = c.packets[0].arrival if c.packets else 0.0
        part = c.flush(next_pkt, end)
        if part is None:
            return
        assert c.init is not None
        duration = max(0.001, duration)
        index = len(c.done)
        c.done.append((duration, part.independent))
        c.chunks.append(part.data)
        self._on_part(SegmentPart(
            rendition=self.rendition, seq=cur.seq, index=index, start_pts=cur.start_pts, duration=duration,
            independent=part.independent, data=part.data, init_id=c.init_id, init=c.init,
            program_date_time=cur.program_date_time, discontinuity=cur.discontinuity, disc_seq=cur.disc_seq,
            first_arrival=arrival, last=last,
        ))

    def _begin(self, pkt: MediaPacket) -> None:
        self._packets = []
        self.opened = True
        self._start_pts = pkt.pts_seconds
        self._last_pts = self._start_pts
        self._first_arrival = pkt.arrival
        self._frames = 0
        if self._anchor is None:
            # The wall clock when this packet reached the ingest socket (the monotonic clock is
            # system-wide, so the main process's arrival time is comparable here).
            wall = self._wall()
            if pkt.arrival > 0:
                wall -= max(0.0, self._monotonic() - pkt.arrival)
            self._anchor = (self._start_pts, max(wall, self._date_not_before))
        elif self._prev_end is not None and abs(self._start_pts - self._prev_end[0]) > 1e-6:
            self._anchor = (self._start_pts, self._prev_end[1])  # media time jumped: dates run on
        c = self._cmaf
        if c is not None:
            first = c.init is None
            c.begin(pkt)
            # After the first segment, the track set is known now; a new one is a discontinuity.
            if not first and c.decide(self._video if pkt.kind == "video" else None, self._audio):
                self._pending_disc = True
        disc = self._pending_disc and self.next_seq > 0
        if disc:
            self.disc_seq += 1
        self._pending_disc = False
        self.current = Opened(self.next_seq, self._start_pts, self._date(self._start_pts), disc, self.disc_seq)

    def _date(self, pts: float) -> float:
        assert self._anchor is not None
        return self._anchor[1] + (pts - self._anchor[0])

    def _finish(self, end_pts: float | None, forced: bool = False, next_pkt: MediaPacket | None = None) -> Segment:
        assert self._packets is not None and self.current is not None
        cur = self.current
        packets, self._packets = self._packets, None
        c = self._cmaf
        if end_pts is None and c is not None and c.frames:
            # Last segment of a stream (CMAF): its parts so far plus the open one by decode times.
            end_pts = self._start_pts + sum(d for d, _ in c.done) + c.open_seconds()
        if end_pts is None:
            # Last segment of a stream: up to the last packet plus one frame interval.
            frame = (self._last_pts - self._start_pts) / max(1, self._frames - 1) if self._frames > 1 else 0.0
            end_pts = self._last_pts + frame
        duration = max(0.001, end_pts - self._start_pts)
        if c is None:
            # Muxed at the cut, when every track of the segment is known (audio may start late).
            video = self._video if self._has_video else None
            audio = next((p.config for p in packets if p.kind == "audio"), None)
            mux = _Muxer(video, audio)
            for p in packets:
                mux.write(p)
            payload = mux.close()
        else:
            end = c.hole_end(next_pkt) if next_pkt is not None and next_pkt.kind == c.kind else None
            if c.packets and end is not None:
                media = float(end - c.start_exact)
                hole = duration - sum(d for d, _ in c.done) - media
                if hole > 0.001:  # an ingest gap right before the cut: the segment ends with gap parts
                    self._emit_part(next_pkt, media, end=end)
                    self._emit_gaps(hole, last=True)
            if c.packets:  # the open part is the segment's last: it takes what the others leave
                self._emit_part(next_pkt, duration - sum(d for d, _ in c.done), last=True)
            payload = b"".join(c.chunks)
        pdt = cur.program_date_time
        self._prev_end = (self._start_pts + duration, pdt + duration)
        self.current = None
        seg = Segment(
            rendition=self.rendition, seq=self.next_seq, duration=duration, discontinuity=cur.discontinuity,
            disc_seq=cur.disc_seq, start_pts=self._start_pts, program_date_time=pdt, payload=payload,
            first_arrival=self._first_arrival, video_frames=self._frames,
            width=self._video.width if self._video and self._has_video else 0,
            height=self._video.height if self._video and self._has_video else 0,
            codecs=tuple(x.codec_string for x in (self._video if self._has_video else None, self._audio) if x),
            forced=forced,
        )
        if c is not None:
            seg.fmt, seg.init_id, seg.init, seg.parts = "cmaf", c.init_id, c.init or b"", tuple(c.done)
            seg.gaps = tuple(c.gaps)
        self.next_seq += 1
        return seg

    def flush(self, end_pts: float | None = None) -> list[Segment]:
        """End of stream: finish the open segment, if any (at `end_pts` if given, else one frame
        after its last packet)."""
        if self._packets is None:
            return []
        return [self._finish(end_pts=end_pts)]
