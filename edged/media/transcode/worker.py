"""Pipeline worker: a child process per live channel.

Reads framed MediaPackets on stdin (wire.py), cuts and muxes segments per rendition, writes each
segment to the LMDB store in one transaction, and reports one JSON line per segment on stdout.
It exits when stdin reports END or closes (so it dies with its parent, even after kill -9).

Run as: python -m edged.media.transcode.worker '<json WorkerSpec>'
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from edged.media.packet import MediaPacket
from edged.media.segmenter import Segment, Segmenter
from edged.media.transcode.wire import WireDecoder
from edged.store.segments import SegmentMeta, SegmentStore

log = logging.getLogger("edged.worker")

_READ_SIZE = 256 * 1024
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerSpec:
    channel: str
    store_path: str
    store_max_bytes: int
    segment_seconds: float
    max_segment_seconds: float
    keep_segments: int  # per rendition: playlist window + retention
    session: int  # publisher session number, for the channel record
    restart: bool = False  # a restarted worker marks a discontinuity

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
        fps = sorted(self._fps)[len(self._fps) // 2]
        common = min((23.976, 24, 25, 29.97, 30, 48, 50, 59.94, 60), key=lambda c: abs(fps - c))
        return common if abs(fps - common) < 0.02 * common else round(fps, 3)


class Pipeline:
    """Renditions of one channel. This is passthrough only; the ABR ladder adds encoded renditions."""

    def __init__(self, spec: WorkerSpec, store: SegmentStore, report: Any = None) -> None:
        self.spec = spec
        self.store = store
        self.report = report or (lambda d: None)
        seq, disc = store.sequence_state(spec.channel, "source")
        # A new publisher session (or a restarted worker) after earlier segments: discontinuity.
        self.segmenters = {
            "source": Segmenter("source", segment_seconds=spec.segment_seconds,
                                max_segment_seconds=spec.max_segment_seconds,
                                next_seq=seq, disc_seq=disc, discontinuity=seq > 0),
        }
        self.bandwidth = {name: _Bandwidth() for name in self.segmenters}
        store.update_channel(spec.channel, live=True, session=spec.session, started=time.time())

    def push(self, pkt: MediaPacket) -> None:
        for seg in self.segmenters["source"].push(pkt):
            self._commit(seg)

    def finish(self) -> None:
        for seg in self.segmenters["source"].flush():
            self._commit(seg)
        self.store.update_channel(self.spec.channel, live=False, ended=time.time())

    def _commit(self, seg: Segment) -> None:
        meta = SegmentMeta(
            channel=self.spec.channel, rendition=seg.rendition, seq=seg.seq, duration=seg.duration,
            discontinuity=seg.discontinuity, disc_seq=seg.disc_seq, start_pts=seg.start_pts,
            program_date_time=seg.program_date_time, size=len(seg.payload), written_ns=time.time_ns(),
            first_arrival=seg.first_arrival,
        )
        evicted = self.store.put_segment(meta, seg.payload, keep=self.spec.keep_segments)
        listed = time.monotonic()
        bw = self.bandwidth[seg.rendition]
        bw.add(seg)
        self.store.update_channel(self.spec.channel, renditions=[{
            "name": seg.rendition, "width": seg.width, "height": seg.height, "codecs": ",".join(seg.codecs),
            "bandwidth": bw.peak, "average_bandwidth": bw.average, "frame_rate": bw.frame_rate,
        }])
        self.report({
            "event": "segment", "rendition": seg.rendition, "seq": seg.seq, "duration": round(seg.duration, 4),
            "bytes": len(seg.payload), "latency": round(listed - seg.first_arrival, 4) if seg.first_arrival else None,
            "evicted": evicted, "discontinuity": seg.discontinuity,
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
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(0)))
    out = sys.stdout

    def report(d: dict[str, Any]) -> None:
        out.write(json.dumps(d) + "\n")
        out.flush()

    store = SegmentStore(spec.store_path, spec.store_max_bytes)
    pipeline = Pipeline(spec, store, report)
    decoder = WireDecoder()
    stdin = sys.stdin.buffer
    try:
        while True:
            data = os.read(stdin.fileno(), _READ_SIZE)
            if not data:
                break
            decoder.receive_data(data)
            while (item := decoder.next_item()) is not None:
                if item is WireDecoder.END:
                    raise SystemExit(0)
                assert isinstance(item, MediaPacket)
                pipeline.push(item)
    except SystemExit:
        pass
    finally:
        pipeline.finish()
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
