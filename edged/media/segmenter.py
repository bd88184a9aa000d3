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
previous segment's ended.

MPEG-TS now; the container is chosen in one place (`_open`) so CMAF can follow for LL-HLS.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import cast

import av
from av.video.codeccontext import VideoCodecContext

from edged.media.packet import CodecConfig, MediaPacket

TS_TIME_BASE = Fraction(1, 90000)


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


class Segmenter:
    """Per-rendition cutter; `push` returns the segments finished by that packet."""

    def __init__(self, rendition: str, *, segment_seconds: float, max_segment_seconds: float,
                 next_seq: int, disc_seq: int, discontinuity: bool, expect_video: bool = True,
                 date_not_before: float = 0.0, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.rendition = rendition
        self.segment_seconds = segment_seconds
        self.max_segment_seconds = max_segment_seconds
        self.next_seq = next_seq
        self.disc_seq = disc_seq
        self.opened = False  # the last push() started a segment with its packet
        self._pending_disc = discontinuity
        self._packets: list[MediaPacket] | None = None  # the open segment, muxed when it is cut
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

    def push(self, pkt: MediaPacket) -> list[Segment]:
        out: list[Segment] = []
        self.opened = False
        t = pkt.pts_seconds
        if pkt.kind == "video":
            self._has_video = True
            config_changed = self._video is not None and pkt.config != self._video
            forced = False
            if self._packets is not None and pkt.keyframe and (
                config_changed or t - self._start_pts >= self.segment_seconds - 1e-3
            ):
                out.append(self._finish(end_pts=t))
                if config_changed:
                    self._pending_disc = True
            elif self._packets is not None and t - self._start_pts >= self.max_segment_seconds:
                out.append(self._finish(end_pts=t, forced=True))
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
                out.append(self._finish(end_pts=t))
        if self._packets is None:
            self._begin(pkt)
        assert self._packets is not None
        self._packets.append(pkt)
        if pkt.kind == "video":
            self._frames += 1
        self._last_pts = max(self._last_pts, t)
        return out

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

    def _date(self, pts: float) -> float:
        assert self._anchor is not None
        return self._anchor[1] + (pts - self._anchor[0])

    def _finish(self, end_pts: float | None, forced: bool = False) -> Segment:
        assert self._packets is not None
        # Muxed at the cut, when every track of the segment is known (audio may start late).
        packets, self._packets = self._packets, None
        video = self._video if self._has_video else None
        audio = next((p.config for p in packets if p.kind == "audio"), None)
        mux = _Muxer(video, audio)
        for p in packets:
            mux.write(p)
        payload = mux.close()
        if end_pts is None:
            # Last segment of a stream: up to the last packet plus one frame interval.
            frame = (self._last_pts - self._start_pts) / max(1, self._frames - 1) if self._frames > 1 else 0.0
            end_pts = self._last_pts + frame
        duration = max(0.001, end_pts - self._start_pts)
        pdt = self._date(self._start_pts)
        self._prev_end = (self._start_pts + duration, pdt + duration)
        disc = self._pending_disc and self.next_seq > 0
        if disc:
            self.disc_seq += 1
        self._pending_disc = False
        seg = Segment(
            rendition=self.rendition, seq=self.next_seq, duration=duration, discontinuity=disc,
            disc_seq=self.disc_seq, start_pts=self._start_pts, program_date_time=pdt, payload=payload,
            first_arrival=self._first_arrival, video_frames=self._frames,
            width=self._video.width if self._video and self._has_video else 0,
            height=self._video.height if self._video and self._has_video else 0,
            codecs=tuple(c.codec_string for c in (self._video if self._has_video else None, self._audio) if c),
            forced=forced,
        )
        self.next_seq += 1
        return seg

    def flush(self) -> list[Segment]:
        """End of stream: finish the open segment, if any."""
        if self._packets is None:
            return []
        return [self._finish(end_pts=None)]
