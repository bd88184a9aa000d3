"""Pipeline worker: a child process per live channel.

Reads framed MediaPackets on stdin (wire.py), cuts and muxes segments for the source passthrough
and, when the spec carries a ladder and an encoder, for each encoded rung (renditions.py: decode
once, scale, encode on threads), writes each segment to the LMDB store in one transaction, and
reports one JSON line per segment, part or ladder event on stdout. It exits when stdin reports END
or closes (so it dies with its parent, even after kill -9).

Two formats (spec.fmt, from hls.format). MPEG-TS: before a segment is stored, its continuity
counters are rewritten to run on from the rendition's previous segment (ts_continuity.py); the
counters are stored with the segment, so a restarted worker continues them. CMAF: each part is
committed as it completes (`put_part`: its bytes and the segment's progress in one transaction,
its init segment first when the store does not have it yet; a gap part, with no bytes, is stored
empty and listed in the progress's `gaps`), then reported
(`{"event": "part", ...}`, which wakes blocked playlist requests in the main process); the finished
segment is stored with its part list, and parts older than the playlist window plus two segments
are deleted. A worker that finds a segment in progress in the store (its predecessor was killed
mid-segment) starts at the number after it: a number, or a part URI, never names other bytes. The channel record says when and how the stream ended (the END
frame tells a deliberate unpublish from a lost publisher; HTTP derives EXT-X-ENDLIST from that)
and holds the playlist's EXT-X-TARGETDURATION, which never goes down.

Run as: python -m edged.media.transcode.worker '<json WorkerSpec>'
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import select
import signal
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from edged.config import Rung
from edged.log import QuietLog
from edged.media.packet import MediaPacket
from edged.media.segmenter import Segment, SegmentPart
from edged.media.transcode.ladder import SOURCE, snap_fps
from edged.media.transcode.overload import OverloadPolicy
from edged.media.transcode.renditions import Renditions
from edged.media.transcode.wire import EndOfStream, WireDecoder
from edged.media.ts_continuity import ContinuityError, ContinuityStamper
from edged.protocols import hls
from edged.store.segments import PendingMeta, SegmentMeta, SegmentStore

log = logging.getLogger("edged.worker")

_READ_SIZE = 256 * 1024
_PR_SET_PDEATHSIG = 1
TICK = 0.1  # s: how often encoder output is collected when no input arrives
# Rehearse overload: cap each transcoder's encode work at this many megapixels per second.
THROTTLE_ENV = "EDGED_TRANSCODE_THROTTLE_MPX"
# A transcoding worker yields the CPU to the daemon (ingest, serving): when the box is short of CPU
# the ladder falls behind and sheds rungs, instead of ingest and serving stalling.
TRANSCODE_NICE = 5


@dataclass(frozen=True)
class WorkerSpec:
    channel: str
    store_path: str
    store_max_bytes: int
    segment_seconds: float
    max_segment_seconds: float  # the effective value (auto resolved)
    keep_segments: int  # per rendition: playlist window + retention
    session: int  # publisher session number, for the channel record
    # Transcoding (added with the ABR ladder; absent = passthrough only):
    ladder: tuple[dict[str, Any], ...] = ()  # config Rungs as dicts; the worker picks those that fit
    encoder: str = ""  # "h264_nvenc" or "libx264"; "" = passthrough only
    hw_decode: bool = False  # try NVDEC (the node has an NVIDIA GPU); software decode if it fails
    # Fleet-wide numbering (with a controller): the channel's next sequence number and discontinuity count
    # as the controller last heard them from any ingest edge; numbering starts at the larger of these and
    # the local store's, after a discontinuity, so an ingest that moved continues the fleet's sequence.
    fleet_next_seq: int = 0
    fleet_disc_seq: int = 0
    # The playlist shape every edge serving the channel renders (written into the channel record; 0 / -1 = unset)
    window: int = 0  # hls.window
    reconnect_grace: float = -1.0  # hls.reconnect_grace_seconds
    # Container (added with LL-HLS; absent = MPEG-TS): "ts" | "cmaf" (hls.format), and the part target
    fmt: str = "ts"
    part_seconds: float = 0.5  # hls.part_seconds

    def to_arg(self) -> str:
        return json.dumps(asdict(self))


class _Bandwidth:
    """Peak and average bit rate over the last few segments (RFC 8216 4.3.4.2)."""

    def __init__(self, window: int = 10) -> None:
        self._window = window
        self._rates: list[float] = []
        self._fps: list[float] = []

    def add(self, seg: Segment) -> None:
        self._rates.append(len(seg.payload) * 8 / seg.duration)
        self._rates = self._rates[-self._window :]
        if seg.video_frames > 1:
            self._fps.append(seg.video_frames / seg.duration)
            self._fps = self._fps[-self._window :]

    @property
    def peak(self) -> int:
        return int(max(self._rates, default=0))

    @property
    def average(self) -> int:
        return int(sum(self._rates) / len(self._rates)) if self._rates else 0

    @property
    def frame_rate(self) -> float | None:
        if not self._fps:
            return None
        return snap_fps(sorted(self._fps)[len(self._fps) // 2])


def _throttle_from_env() -> float:
    raw = os.environ.get(THROTTLE_ENV, "")
    try:
        return max(0.0, float(raw)) if raw else 0.0
    except ValueError:
        log.warning("ignoring %s=%r: not a number", THROTTLE_ENV, raw)
        return 0.0


class Pipeline:
    """All renditions of one channel, committed to the store."""

    def __init__(self, spec: WorkerSpec, store: SegmentStore, report: Any = None) -> None:
        self.spec = spec
        self.store = store
        self.report = report or (lambda d: None)
        self.quiet = QuietLog(log)
        source = store.rendition_state(spec.channel, SOURCE)
        ladder = tuple(Rung(**r) for r in spec.ladder) if spec.encoder else ()
        # A new publisher session (or a restarted worker) after earlier segments, here or (fleet numbering)
        # on another ingest edge: discontinuity.
        next_seq = max(source.next_seq, spec.fleet_next_seq)
        if source.pending is not None:  # parts of that number were committed (and maybe served): skip it
            next_seq = max(next_seq, source.pending.seq + 1)
        disc_seq = max(source.disc_seq, spec.fleet_disc_seq)
        if next_seq > source.next_seq:
            log.info("channel=%s continues the fleet-wide numbering at %d (this store had %d)", spec.channel,
                     next_seq, source.next_seq)
        self.renditions = Renditions(
            channel=spec.channel, segment_seconds=spec.segment_seconds,
            max_segment_seconds=spec.max_segment_seconds, next_seq=next_seq, disc_seq=disc_seq,
            discontinuity=next_seq > 0, ladder=ladder, codec=spec.encoder, on_segment=self._commit,
            on_event=self._event, overload=OverloadPolicy.for_segments(spec.segment_seconds),
            throttle_mpx=_throttle_from_env(), hw_decode=spec.hw_decode, date_not_before=source.date_end,
            fmt=spec.fmt, part_seconds=spec.part_seconds, on_part=self._commit_part,
        )
        self.bandwidth: dict[str, _Bandwidth] = {}
        self._entries: dict[str, dict[str, Any]] = {}  # rendition → its entry in the channel record
        self._continuity: dict[str, ContinuityStamper] = {}  # rendition → its TS continuity counters
        self._inits: dict[str, set[str]] = {}  # rendition → init segment ids stored by this worker
        # rendition → (seq, parts so far, indices of the gap parts among them)
        self._parts: dict[str, tuple[int, tuple[tuple[float, bool], ...], tuple[int, ...]]] = {}
        self._last_part: dict[str, SegmentPart] = {}  # rendition → its segment's final part, committed with it
        self.part_keep = (spec.window or 6) + 2  # segments back whose parts stay in the store
        # Fixed for the life of the playlist: from max_segment_seconds, never below what it advertised.
        before = store.channel(spec.channel) or {}
        self.target_duration = hls.target_duration(spec.max_segment_seconds, int(before.get("target_duration", 0)))
        # A passthrough segment that starts at a forced cut (no keyframe) is not independent: the master
        # playlist drops EXT-X-INDEPENDENT-SEGMENTS from then until a new publisher session.
        same_session = before.get("session") == spec.session  # a restarted worker keeps what it found
        self._independent = before.get("independent", True) is not False if same_session else True
        shape: dict[str, Any] = {}  # relayed with the record: every edge renders the ingest edge's playlists
        if spec.window > 0:
            shape["window"] = spec.window
        if spec.reconnect_grace >= 0:
            shape["reconnect_grace"] = spec.reconnect_grace
        shape["format"] = spec.fmt
        shape["segment_seconds"] = spec.segment_seconds  # CAN-SKIP-UNTIL and the hint on every edge
        shape["part_target"] = spec.part_seconds if spec.fmt == "cmaf" else 0.0
        store.update_channel(spec.channel, live=True, session=spec.session, started=time.time(),
                             target_duration=self.target_duration, independent=self._independent, **shape)

    def push(self, pkt: MediaPacket) -> None:
        self.renditions.push(pkt)

    def tick(self) -> None:
        self.renditions.tick()

    def finish(self, deliberate: bool = False) -> None:
        """The stream is over (or this worker stops): flush, and record when and how it ended."""
        self.renditions.finish()
        self.store.update_channel(self.spec.channel, live=False, ended=time.time(), ended_deliberately=deliberate)

    def listing(self) -> list[dict[str, Any]]:
        """The channel record's renditions: the source first, then the listed rungs, highest first."""
        names = [SOURCE, *(r.name for r in self.renditions.listed())]
        return [self._entries[n] for n in names if n in self._entries]

    def _event(self, event: dict[str, Any]) -> None:
        if event.get("event") in ("rendition", "shed"):
            self.store.update_channel(self.spec.channel, renditions=self.listing())
        self.report(event)

    def _stamper(self, rendition: str) -> ContinuityStamper:
        stamper = self._continuity.get(rendition)
        if stamper is None:
            state = self.store.rendition_state(self.spec.channel, rendition)
            stamper = self._continuity[rendition] = ContinuityStamper(state.continuity)
        return stamper

    def _put_ts(self, meta: SegmentMeta, seg: Segment) -> int:
        stamper = self._stamper(seg.rendition)
        try:
            payload = stamper.stamp(seg.payload)
        except ContinuityError as exc:  # never expected from PyAV's muxer: store it as it is
            self.quiet.warning("continuity", "rendition=%s segment %d: continuity counters left as muxed: %s",
                               seg.rendition, seg.seq, exc)
            payload = seg.payload
        return self.store.put_segment(meta, payload, keep=self.spec.keep_segments, continuity=stamper.state())

    def _check_duration(self, seg: Segment) -> bool:
        """Log a forced cut or a segment longer than the advertised target; True if over it."""
        if seg.forced:
            self.quiet.warning(
                "forced_cut", "rendition=%s segment %d: no keyframe within hls.max_segment_seconds (%gs): cut "
                "without one. Set the encoder's keyframe interval to 2 s, or raise hls.max_segment_seconds",
                seg.rendition, seg.seq, self.spec.max_segment_seconds)
        over = hls.rounded_duration(seg.duration) > self.target_duration
        if over:
            self.quiet.warning(
                "over_target", "rendition=%s segment %d lasts %.3fs: over the playlist's EXT-X-TARGETDURATION "
                "of %ds (a gap in the source's timestamps?)", seg.rendition, seg.seq, seg.duration,
                self.target_duration)
        return over

    def _ensure_init(self, rendition: str, init_id: str, init: bytes) -> None:
        held = self._inits.setdefault(rendition, set())
        if init_id and init_id not in held:
            self.store.put_init(self.spec.channel, rendition, init_id, init)
            held.add(init_id)

    def _commit_part(self, part: SegmentPart) -> None:
        """One CMAF part: its init segment if new, then the part and the segment's progress."""
        seq, done, gaps = self._parts.get(part.rendition, (-1, (), ()))
        if seq != part.seq:
            done, gaps = (), ()
        if part.index != len(done):  # never expected: the store indexes parts by their count
            self.quiet.warning("part_order", "rendition=%s segment %d: part %d after %d parts; not committed",
                               part.rendition, part.seq, part.index, len(done))
            return
        self._ensure_init(part.rendition, part.init_id, part.init)
        done = (*done, (part.duration, part.independent))
        if part.gap:
            gaps = (*gaps, part.index)
        self._parts[part.rendition] = (part.seq, done, gaps)
        if part.last:
            # The segment's final part commits with the segment (`_commit`, which comes next): a reader
            # never sees every part of a segment while the segment is still in progress, so the preload
            # hint it is given names the next segment's first part, and that part is what comes.
            self._last_part[part.rendition] = part
            return
        pending = PendingMeta(seq=part.seq, start_pts=part.start_pts, program_date_time=part.program_date_time,
                              discontinuity=part.discontinuity, disc_seq=part.disc_seq, init=part.init_id, parts=done,
                              gaps=gaps)
        self.store.put_part(self.spec.channel, part.rendition, pending, part.data)
        self._report_part(part)

    def _report_part(self, part: SegmentPart) -> None:
        self.report({
            "event": "part", "rendition": part.rendition, "seq": part.seq, "part": part.index,
            "bytes": len(part.data), "independent": part.independent, "duration": round(part.duration, 4),
            "disc_seq": part.disc_seq, "gap": part.gap,
            "latency": round(time.monotonic() - part.first_arrival, 4) if part.first_arrival else None,
        })

    def _commit(self, seg: Segment) -> None:
        meta = SegmentMeta(
            channel=self.spec.channel, rendition=seg.rendition, seq=seg.seq, duration=seg.duration,
            discontinuity=seg.discontinuity, disc_seq=seg.disc_seq, start_pts=seg.start_pts,
            program_date_time=seg.program_date_time, size=len(seg.payload), written_ns=time.time_ns(),
            first_arrival=seg.first_arrival, fmt=seg.fmt, init=seg.init_id, parts=seg.parts, gaps=seg.gaps,
        )
        over = self._check_duration(seg)
        if seg.forced and seg.rendition == SOURCE and self._independent:
            self._independent = False
            self.store.update_channel(self.spec.channel, independent=False)
        if seg.fmt == "cmaf":
            self._parts.pop(seg.rendition, None)
            self._ensure_init(seg.rendition, seg.init_id, seg.init)
            last = self._last_part.pop(seg.rendition, None)
            if last is not None and last.seq != seg.seq:
                last = None  # never expected: the final part comes right before its segment
            evicted = self.store.put_segment(meta, seg.payload, keep=self.spec.keep_segments,
                                             part_keep=self.part_keep,
                                             last_part=(last.index, last.data) if last is not None else None)
            if last is not None:
                self._report_part(last)
        else:
            evicted = self._put_ts(meta, seg)
        listed = time.monotonic()
        bw = self.bandwidth.setdefault(seg.rendition, _Bandwidth())
        bw.add(seg)
        entry = {
            "name": seg.rendition, "width": seg.width, "height": seg.height, "codecs": ",".join(seg.codecs),
            "bandwidth": bw.peak, "average_bandwidth": bw.average, "frame_rate": bw.frame_rate,
        }
        rung = next((r.rendition for r in self.renditions.rungs if r.rendition.name == seg.rendition), None)
        if rung is not None:
            # The configured rate is a ceiling the encoder keeps to over its 1 s buffer: a steadier
            # BANDWIDTH for players than the peak of the few segments seen so far.
            entry["bandwidth"] = max(bw.peak, rung.bitrate_kbps * 1000)
            entry["frame_rate"] = snap_fps(rung.fps)
        self._entries[seg.rendition] = entry
        self.store.update_channel(self.spec.channel, renditions=self.listing())
        self.report({
            "event": "segment", "rendition": seg.rendition, "seq": seg.seq, "disc_seq": seg.disc_seq,
            "duration": round(seg.duration, 4),
            "bytes": len(seg.payload), "latency": round(listed - seg.first_arrival, 4) if seg.first_arrival else None,
            "evicted": evicted, "discontinuity": seg.discontinuity, "forced": seg.forced, "over_target": over,
        })


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when the parent dies (stdin EOF covers the rest)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = WorkerSpec(**json.loads(argv[0]))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s worker channel={spec.channel} %(message)s")
    _die_with_parent()
    if spec.encoder and spec.ladder:
        try:
            os.nice(TRANSCODE_NICE)  # before any thread starts: they inherit it
        except OSError as exc:
            log.debug("could not lower the transcoder's priority: %s", exc)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(0)))
    out = sys.stdout

    def report(d: dict[str, Any]) -> None:
        out.write(json.dumps(d) + "\n")
        out.flush()

    store = SegmentStore(spec.store_path, spec.store_max_bytes)
    pipeline = Pipeline(spec, store, report)
    decoder = WireDecoder()
    stdin = sys.stdin.buffer
    fd = stdin.fileno()
    deliberate = False  # an END frame says; EOF or SIGTERM without one is a lost stream
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], TICK)
            if not ready:
                pipeline.tick()  # encoder output keeps flowing while the publisher pauses
                continue
            data = os.read(fd, _READ_SIZE)
            if not data:
                break
            decoder.receive_data(data)
            while (item := decoder.next_item()) is not None:
                if isinstance(item, EndOfStream):
                    deliberate = item.deliberate
                    raise SystemExit(0)
                assert isinstance(item, MediaPacket)
                pipeline.push(item)
    except SystemExit:
        pass
    finally:
        pipeline.finish(deliberate)
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
