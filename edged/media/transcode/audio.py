"""Audio for the encoded renditions: AAC passes through untouched; anything else becomes AAC once.

The one AAC track is shared by every rung (the caller hands the same packets to each rung's
segmenter). Cheap enough for the worker's main thread: one stereo AAC encode is a few percent of
a core.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any

import av

from edged.media.packet import CodecConfig, MediaPacket
from edged.protocols.aac import SAMPLE_RATES, parse_asc

log = logging.getLogger(__name__)

AAC_BITRATE = 128_000  # bit/s for a re-encoded track
_RESYNC = 0.1  # s: a gap in the source's timestamps larger than this restarts the sample clock


class AacReencoder:
    """Decode a non-AAC track and encode it to AAC-LC, keeping its timeline."""

    def __init__(self, source: CodecConfig) -> None:
        self.source = source
        self.dec: Any = av.CodecContext.create(source.codec, "r")  # an AudioCodecContext
        if source.extradata:
            self.dec.extradata = source.extradata
        rate = source.sample_rate or 48000
        self.rate = rate if rate in SAMPLE_RATES else 48000
        self.enc: Any = None
        self.resampler: Any = None
        self.config: CodecConfig | None = None
        self.time_base = Fraction(1, self.rate)
        self._next: int | None = None  # next output sample position (pts in 1/rate)

    def _open(self, frame: Any) -> None:
        layout = "stereo" if frame.layout.nb_channels >= 2 else "mono"
        self.resampler = av.AudioResampler(format="fltp", layout=layout, rate=self.rate)
        enc: Any = av.CodecContext.create("aac", "w")
        enc.sample_rate = self.rate
        enc.layout = layout
        enc.format = "fltp"
        enc.bit_rate = AAC_BITRATE
        enc.time_base = self.time_base
        enc.open()
        self.enc = enc
        asc = bytes(enc.extradata or b"")
        cfg = parse_asc(asc)
        self.config = CodecConfig(kind="audio", codec="aac", codec_string=cfg.codec_string, extradata=asc,
                                  sample_rate=self.rate, channels=cfg.channels)

    def push(self, pkt: MediaPacket) -> list[MediaPacket]:
        p = av.Packet(pkt.data)
        p.pts = pkt.pts
        p.dts = pkt.dts
        p.time_base = pkt.time_base
        try:
            frames = self.dec.decode(p)
        except av.error.FFmpegError as exc:
            log.debug("audio decode error: %s", exc)
            return []
        out: list[MediaPacket] = []
        for frame in frames:
            out += self._encode(frame)
        return out

    def flush(self) -> list[MediaPacket]:
        out: list[MediaPacket] = []
        try:
            for frame in self.dec.decode(None):
                out += self._encode(frame)
        except av.error.FFmpegError:
            pass
        if self.enc is not None:
            for f in self.resampler.resample(None):
                out += self._packets(f)
            out += self._wrap(self.enc.encode(None))
        return out

    def _encode(self, frame: Any) -> list[MediaPacket]:
        if self.enc is None:
            self._open(frame)
        if frame.pts is not None and frame.time_base is not None:
            at = round(float(frame.pts * frame.time_base) * self.rate)
            if self._next is None or abs(at - self._next) > _RESYNC * self.rate:
                self._next = at
        frame.pts = None  # the resampler numbers its output from our clock below
        out: list[MediaPacket] = []
        for f in self.resampler.resample(frame):
            out += self._packets(f)
        return out

    def _packets(self, f: Any) -> list[MediaPacket]:
        f.pts = self._next or 0
        f.time_base = self.time_base
        self._next = (self._next or 0) + f.samples
        return self._wrap(self.enc.encode(f))

    def _wrap(self, packets: Any) -> list[MediaPacket]:
        assert self.config is not None
        return [MediaPacket(kind="audio", pts=p.pts, dts=p.dts if p.dts is not None else p.pts,
                            time_base=self.time_base, keyframe=True, data=bytes(p), config=self.config)
                for p in packets]
