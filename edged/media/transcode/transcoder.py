"""Decode the source once, scale in a cascade, encode every rung on its own thread.

Threads (all inside the per-channel worker process):
- the decoder takes submitted packets from an unbounded queue (the caller never waits), decodes
  with FFmpeg's own threads (thread_type AUTO; NVDEC on nodes with an NVIDIA GPU, Hopper included,
  where the build allows, frames copied back for CPU scaling), numbers each frame within its segment and flags the segment boundaries;
- one thread per rung, chained highest first: each scales its parent's output (1080→720→480→…,
  never every rung from the source: MEDIA-FACTS measured that as costly as the encodes), encodes
  it, and only then hands the frame to the next rung, so no two threads ever touch one frame
  (swscale writes the source frame's colour fields while it reads it).
PyAV releases the GIL inside decode, scale and encode, so the stages run on separate cores.

Alignment: the caller flags a packet as a boundary when the source passthrough starts a segment
with it. The frame with that pts is encoded with pict_type I (forced IDR) on every rung, and no
rung makes keyframes of its own (huge GOP, no scene cut). pict_type is set on every frame, or
libx264 would copy the source's keyframe placement. Rungs at a lower rate than the source encode
every n-th frame counted from the boundary, so the boundary frame is always in.

Shedding: `set_wanted(name, False)` stops a rung at its next frame (its encoder is dropped, frames
pass through it untouched to the rungs below); `set_wanted(name, True)` restarts it with a fresh
encoder at the next boundary. Every request bumps the rung's generation; what a rung emits carries
the generation it was running under, so the caller can ignore output of a superseded run.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
from av.video.frame import PictureType
from av.video.reformatter import Interpolation, VideoReformatter

from edged.media.packet import CodecConfig, MediaPacket
from edged.media.transcode.encoders import NVENC, X264, open_video_encoder
from edged.media.transcode.ladder import Rendition
from edged.protocols import h264

log = logging.getLogger(__name__)

QUEUE_FRAMES = 4  # decoded frames waiting between two stages: enough to keep both busy
INTERPOLATION = Interpolation.BICUBIC  # swscale's (and the ffmpeg CLI's) default
MAX_INPUT_BACKLOG = 10.0  # s of media queued for the decoder before it skips to the next boundary
MAX_QUEUED = 30.0  # s of media held for a decoder that stopped consuming (a hung driver): memory bound
_ERROR_LOG_INTERVAL = 10.0  # s between repeated decode-error warnings

# Output events, as tuples: (kind, rendition name, generation, payload)
PACKET = "packet"  # payload: MediaPacket
STARTED = "started"  # payload: pts (s) of the boundary the rung (re)started at
STOPPED = "stopped"  # payload: reason ("gap": the decoder skipped input)
ERROR = "error"  # payload: message; the rung stays off


@dataclass(slots=True)
class _Job:
    frame: Any  # av.VideoFrame
    pts: int  # in the source time base
    pts_s: float
    idx: int  # frame number since the last boundary
    boundary: bool


_EOF = object()
_GAP = object()


class Throttle:
    """Caps the encode work of all rungs at `mpx_per_s` megapixels per second.

    For rehearsing overload on a fast machine (EDGED_TRANSCODE_THROTTLE_MPX); never on by default.
    """

    def __init__(self, mpx_per_s: float) -> None:
        self.rate = mpx_per_s * 1e6
        self._lock = threading.Lock()
        self._next = 0.0

    def take(self, pixels: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._next = max(now, self._next) + pixels / self.rate
            wait = self._next - now
        if wait > 0:
            time.sleep(wait)


def _config_from_keyframe(data: bytes, width: int, height: int) -> CodecConfig:
    """The rung's CodecConfig from the SPS/PPS the encoder puts before its first IDR."""
    nals = h264.split_annexb(data)
    sps = next((n for n in nals if h264.avc_nal_type(n) == h264.AVC_NAL_SPS), None)
    pps = next((n for n in nals if h264.avc_nal_type(n) == h264.AVC_NAL_PPS), None)
    codec_string = "avc1.640028"
    if sps is not None:
        codec_string = h264.avc_codec_string(h264.parse_avc_sps(sps))
    extradata = h264.join_annexb([n for n in (sps, pps) if n is not None])
    return CodecConfig(kind="video", codec="h264", codec_string=codec_string, extradata=extradata,
                       width=width, height=height)


class _Rung:
    """One rung's thread: scale, encode, pass the frame down."""

    def __init__(self, owner: Transcoder, r: Rendition, codec: str) -> None:
        self.owner = owner
        self.r = r
        self.codec = codec
        self.q: queue.Queue[Any] = queue.Queue(QUEUE_FRAMES)
        self.child: _Rung | None = None
        self.child_steps: tuple[int, ...] = ()  # decimations below this rung
        # Written by the caller's thread, read here (single attribute writes are atomic).
        self.want = True
        self.gen = 0
        # Written here, read by the caller's thread.
        self.done_pts = -math.inf
        self.failed = False
        self.thread = threading.Thread(target=self._run, name=f"rung-{r.name}", daemon=True)
        self._enc: Any = None
        self._config: CodecConfig | None = None
        self._seen_gen = 0
        self._last_pts: int | None = None

    def _emit(self, kind: str, payload: Any) -> None:
        self.owner.out.put((kind, self.r.name, self._seen_gen, payload))

    def _run(self) -> None:
        reformatter = VideoReformatter()
        while True:
            job = self.q.get()
            if job is _EOF:
                if self._enc is not None and not self.owner.aborting:
                    self._guard(self._flush)
                if self.child is not None:
                    self.child.q.put(_EOF)
                return
            if job is _GAP:
                if self._enc is not None:
                    self._stop()
                    self._emit(STOPPED, "gap")
                if self.child is not None:
                    self.child.q.put(_GAP)
                continue
            try:
                self._handle(job, reformatter)
            except Exception as exc:  # a bad frame or a scaler failure ends this rung, never the chain
                self._stop()
                self.failed = True
                self._emit(ERROR, f"{type(exc).__name__}: {exc}")
                self.done_pts = job.pts_s
                if self.child is not None:
                    self.child.q.put(job)

    def _stop(self) -> None:
        self._enc = None
        self._config = None
        self._last_pts = None

    def _guard(self, fn: Any, *args: Any) -> bool:
        try:
            fn(*args)
            return True
        except Exception as exc:  # an encoder failure ends this rung, never the worker
            self._stop()
            self.failed = True
            self._emit(ERROR, f"{type(exc).__name__}: {exc}")
            return False

    def _handle(self, job: _Job, reformatter: VideoReformatter) -> None:
        if self._seen_gen != self.gen:  # shed or restored since the last frame
            self._seen_gen = self.gen
            self._stop()
        if self._enc is None and self.want and not self.failed and job.boundary and job.frame is not None \
                and not self.owner.aborting:
            if self._guard(self._open):
                self._emit(STARTED, job.pts_s)
        encoding = self._enc is not None
        need_self = encoding and job.idx % self.r.decimation == 0 and job.frame is not None
        need_child = self.child is not None and any(job.idx % k == 0 for k in self.child_steps)
        out = job.frame
        if job.frame is not None and encoding and (need_self or need_child):
            out = reformatter.reformat(job.frame, self.r.width, self.r.height, "yuv420p",
                                       interpolation=INTERPOLATION)
        if need_self and not self.owner.aborting:
            self._guard(self._encode, out, job)
        if need_child:
            assert self.child is not None
            self.child.q.put(job if out is job.frame else _Job(out, job.pts, job.pts_s, job.idx, job.boundary))
        self.done_pts = job.pts_s

    def _open(self) -> None:
        try:
            self._enc = open_video_encoder(self.codec, self.r.width, self.r.height, self.r.fps,
                                           self.r.bitrate_kbps, self.owner.time_base)
        except Exception as exc:
            if self.codec != NVENC:
                raise
            # An NVENC session limit or a driver hiccup: this rung carries on in software.
            log.warning("rendition %s: h264_nvenc failed to open (%s); using libx264", self.r.name, exc)
            self.codec = X264
            self._enc = open_video_encoder(X264, self.r.width, self.r.height, self.r.fps,
                                           self.r.bitrate_kbps, self.owner.time_base)
        self._config = None
        self._last_pts = None

    def _encode(self, frame: Any, job: _Job) -> None:
        if self._last_pts is not None and job.pts <= self._last_pts:
            return  # an encoder needs strictly increasing pts; a repeated timestamp is dropped
        self._last_pts = job.pts
        frame.pts = job.pts
        frame.time_base = self.owner.time_base
        # Set on every frame: a stale I from the decoder would make libx264 copy the source's GOP.
        frame.pict_type = PictureType.I if job.boundary else PictureType.NONE
        if self.owner.throttle is not None:
            self.owner.throttle.take(self.r.pixels)
        for p in self._enc.encode(frame):
            self._packet(p)

    def _flush(self) -> None:
        for p in self._enc.encode(None):
            self._packet(p)
        self._stop()

    def _packet(self, p: Any) -> None:
        data = bytes(p)
        if self._config is None:
            self._config = _config_from_keyframe(data, self.r.width, self.r.height)
        pts = p.pts
        dts = p.dts if p.dts is not None else pts
        self._emit(PACKET, MediaPacket(kind="video", pts=pts, dts=dts, time_base=self.owner.time_base,
                                       keyframe=bool(p.is_keyframe), data=data, config=self._config))


class Transcoder:
    """The encoded renditions of one source video track. Caller-thread methods are non-blocking,
    except `close`."""

    def __init__(self, renditions: Sequence[Rendition], *, codec: str, source: CodecConfig,
                 time_base: Fraction, throttle_mpx: float = 0.0, hw_decode: bool = False) -> None:
        if not renditions:
            raise ValueError("a transcoder needs at least one rendition")
        self.codec = codec
        self.source = source
        self.time_base = time_base
        self.throttle = Throttle(throttle_mpx) if throttle_mpx > 0 else None
        self.out: queue.SimpleQueue[tuple[str, str, int, Any]] = queue.SimpleQueue()
        self.aborting = False
        self.rungs = [_Rung(self, r, codec) for r in renditions]
        for i, rung in enumerate(self.rungs[:-1]):
            rung.child = self.rungs[i + 1]
            rung.child_steps = tuple(sorted({r.r.decimation for r in self.rungs[i + 1 :]}))
        self._by_name = {r.r.name: r for r in self.rungs}
        self._in: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._latest = -math.inf  # pts (s) of the newest submitted packet
        self._first = -math.inf  # pts (s) of the first one
        self.consumed = -math.inf  # pts (s) of the last packet the decoder took
        self.dropped = 0  # packets not queued because the decoder stopped taking them
        self.skipped_to = -math.inf  # pts (s) of the last packet the decoder consumed without frames
        self.decode_errors = 0
        self.want_hw_decode = hw_decode
        self.hw_decode = False  # NVDEC in use
        self._decoder = threading.Thread(target=self._decode_run, name="decode", daemon=True)
        self._started = False

    # -- caller's thread ----------------------------------------------------------------------
    def start(self) -> None:
        for r in self.rungs:
            r.thread.start()
        self._decoder.start()
        self._started = True

    def submit(self, pkt: MediaPacket, boundary: bool) -> None:
        """Queue one source video packet; `boundary`: the source passthrough cuts here."""
        if self._first == -math.inf:
            self._first = self.consumed = pkt.pts_seconds
        if pkt.pts_seconds - self.consumed > MAX_QUEUED:
            self.dropped += 1  # the decoder is stuck; it skips to a boundary when it comes back
            return
        self._latest = max(self._latest, pkt.pts_seconds)
        self._in.put((pkt, boundary))

    def set_wanted(self, name: str, want: bool) -> int:
        """Shed (False) or restore (True) a rung; returns its new generation."""
        rung = self._by_name[name]
        rung.want = want
        rung.gen += 1
        return rung.gen

    def failed(self, name: str) -> bool:
        return self._by_name[name].failed

    def poll(self) -> list[tuple[str, str, int, Any]]:
        items = []
        while True:
            try:
                items.append(self.out.get_nowait())
            except queue.Empty:
                return items

    def backlog(self) -> float:
        """Media seconds submitted but not yet through the slowest wanted rung."""
        if self._latest == -math.inf:
            return 0.0
        progress = [max(r.done_pts, self.skipped_to) for r in self.rungs if r.want and not r.failed]
        if not progress:
            return 0.0
        slowest = max(min(progress), self._first)  # nothing out yet: behind by all that went in
        return max(0.0, self._latest - slowest)

    def close(self, timeout: float = 5.0) -> list[tuple[str, str, int, Any]]:
        """Encode what is queued (within `timeout`, then give up on the rest), stop the threads and
        return the remaining output."""
        if not self._started:
            return self.poll()
        self._in.put(_EOF)
        deadline = time.monotonic() + timeout
        for t in [self._decoder, *(r.thread for r in self.rungs)]:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in [self._decoder, *(r.thread for r in self.rungs)]):
            log.warning("transcoder still busy after %.1fs; dropping what is left", timeout)
            self.aborting = True
            for t in [self._decoder, *(r.thread for r in self.rungs)]:
                t.join(5.0)
        self._started = False
        return self.poll()

    # -- decoder thread -----------------------------------------------------------------------
    def _open_decoder(self) -> Any:
        if self.want_hw_decode:
            try:
                from av.codec.hwaccel import HWAccel

                ctx = av.CodecContext.create(self.source.codec, "r",
                                             hwaccel=HWAccel("cuda", allow_software_fallback=True))
                self.hw_decode = ctx.is_hwaccel
                log.info("decoding the source with %s", "NVDEC" if self.hw_decode else "software (no NVDEC here)")
            except Exception as exc:  # PyAV/FFmpeg without CUDA, or no device
                log.info("NVDEC unavailable (%s); decoding in software", exc)
                ctx = av.CodecContext.create(self.source.codec, "r")
        else:
            ctx = av.CodecContext.create(self.source.codec, "r")
        if self.source.extradata:
            ctx.extradata = self.source.extradata
        ctx.thread_type = "AUTO"
        ctx.thread_count = 0
        return ctx

    def _decode_run(self) -> None:
        root = self.rungs[0]
        try:
            dec = self._open_decoder()
        except Exception as exc:
            for r in self.rungs:
                r.failed = True
                self.out.put((ERROR, r.r.name, r.gen, f"decoder: {exc}"))
            dec = None
        pending: deque[int] = deque()  # pts of boundary packets whose frames are not out yet
        state = {"idx": 0}
        decoding = dec is not None
        catching_up = False
        last_error_log = 0.0
        while True:
            item = self._in.get()
            if item is _EOF:
                if decoding and dec is not None and not self.aborting:
                    try:
                        for f in dec.decode(None):
                            self._feed(root, f, pending, state)
                    except av.error.FFmpegError:
                        pass
                root.q.put(_EOF)
                return
            pkt, boundary = item
            self.consumed = pkt.pts_seconds
            wanted = dec is not None and any(r.want and not r.failed for r in self.rungs)
            lag = self._latest - pkt.pts_seconds
            if decoding and wanted and lag > MAX_INPUT_BACKLOG and not self.aborting:
                log.warning("transcoder %.1fs behind its input; skipping ahead to a segment boundary", lag)
                root.q.put(_GAP)
                decoding = False
                catching_up = True
            if self.aborting or not wanted:
                decoding = False
            if not decoding:
                pending.clear()
                # resume only where decoding can start: a boundary that is a keyframe (a forced cut's
                # boundary is not one)
                if self.aborting or not wanted or not (boundary and pkt.keyframe) \
                        or (catching_up and lag > MAX_INPUT_BACKLOG / 2):
                    self.skipped_to = pkt.pts_seconds
                    continue
                assert dec is not None
                dec.flush_buffers()  # resume cleanly at this IDR
                decoding = True
                catching_up = False
            if boundary:
                pending.append(pkt.pts)
            p = av.Packet(pkt.data)
            p.pts = pkt.pts
            p.dts = pkt.dts
            p.time_base = pkt.time_base
            try:
                frames = dec.decode(p)
            except av.error.FFmpegError as exc:
                self.decode_errors += 1
                now = time.monotonic()
                if now - last_error_log > _ERROR_LOG_INTERVAL:
                    last_error_log = now
                    log.warning("source decode error (%d so far): %s", self.decode_errors, exc)
                continue
            for f in frames:
                self._feed(root, f, pending, state)

    def _feed(self, root: _Rung, frame: Any, pending: deque[int], state: dict[str, int]) -> None:
        pts = frame.pts
        if pts is None:
            return
        boundary = False
        while pending and pending[0] <= pts:  # a lost boundary frame moves to the next one
            pending.popleft()
            boundary = True
        state["idx"] = 0 if boundary else state["idx"] + 1
        root.q.put(_Job(frame, pts, float(pts * self.time_base), state["idx"], boundary))
