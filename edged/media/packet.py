"""The media units every ingest produces and everything downstream consumes.

Normal form (whatever the source protocol):
- H.264/HEVC video is Annex B (start codes), with the parameter sets (SPS/PPS, VPS) repeated
  in-band before every keyframe, so any packet from a keyframe on decodes alone.
- AAC audio is raw access units (no ADTS header); the AudioSpecificConfig is in CodecConfig.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

Kind = Literal["video", "audio"]

RTMP_TIME_BASE = Fraction(1, 1000)  # RTMP timestamps are milliseconds
MPEGTS_TIME_BASE = Fraction(1, 90000)  # MPEG-TS clock


@dataclass(frozen=True, slots=True)
class CodecConfig:
    """What a decoder or muxer needs to know about one track."""

    kind: Kind
    codec: str  # "h264", "hevc", "aac"
    codec_string: str  # RFC 6381 value for HLS CODECS, e.g. "avc1.64001f", "mp4a.40.2"
    extradata: bytes = b""  # H.264: Annex B SPS+PPS; HEVC: VPS+SPS+PPS; AAC: AudioSpecificConfig
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0


@dataclass(frozen=True, slots=True)
class MediaPacket:
    """One access unit with its timing in an explicit time base."""

    kind: Kind
    pts: int
    dts: int
    time_base: Fraction
    keyframe: bool
    data: bytes
    config: CodecConfig
    # Monotonic arrival time (seconds) at the ingest socket, for latency accounting only.
    arrival: float = field(default=0.0, compare=False)

    @property
    def pts_seconds(self) -> float:
        return float(self.pts * self.time_base)

    @property
    def dts_seconds(self) -> float:
        return float(self.dts * self.time_base)
