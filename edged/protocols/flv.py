"""FLV tag bodies (as carried by RTMP audio/video messages) → normalized MediaPackets.

Video: legacy AVC (codec id 7), and enhanced RTMP (E-RTMP v1: FourCC 'avc1'/'hvc1' with
PacketType SequenceStart/CodedFrames/CodedFramesX). Audio: AAC (sound format 10).
Output follows edged.media.packet: Annex B video with in-band parameter sets before each
keyframe, raw AAC access units with the AudioSpecificConfig in CodecConfig.
"""

from __future__ import annotations

from dataclasses import dataclass

from edged.errors import RemoteProtocolError
from edged.media.packet import RTMP_TIME_BASE, CodecConfig, MediaPacket
from edged.protocols import aac, h264

# FLV video frame types (FLV spec E.4.3.1)
_FRAME_KEY = 1
_FRAME_COMMAND = 5
_CODEC_AVC = 7
_CODEC_HEVC_LEGACY = 12  # de-facto extension used by some Chinese CDNs before E-RTMP
# Enhanced RTMP packet types
_EX_SEQUENCE_START = 0
_EX_CODED_FRAMES = 1
_EX_SEQUENCE_END = 2
_EX_CODED_FRAMES_X = 3
_SOUND_AAC = 10


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A tag we can not carry (codec named); the caller logs it once."""

    what: str


def _si24(b: bytes) -> int:
    v = int.from_bytes(b, "big")
    return v - (1 << 24) if v & 0x800000 else v


class FlvNormalizer:
    """Per-publisher state: the current codec configs; turns tag bodies into packets."""

    def __init__(self) -> None:
        self.video_config: CodecConfig | None = None
        self.audio_config: CodecConfig | None = None
        self._length_size = 4
        self._param_sets: tuple[bytes, ...] = ()
        self._hevc = False

    # -- video ------------------------------------------------------------------
    def video(self, timestamp: int, body: bytes, arrival: float = 0.0) -> MediaPacket | Unsupported | None:
        """One video tag body at `timestamp` ms; None for config-only or ignorable tags."""
        if not body:
            return None
        b0 = body[0]
        if b0 & 0x80:  # enhanced RTMP header
            frame_type = (b0 >> 4) & 0x07
            ptype = b0 & 0x0F
            if len(body) < 5:
                raise RemoteProtocolError("enhanced RTMP video tag too short")
            fourcc = body[1:5]
            if fourcc == b"avc1":
                hevc = False
            elif fourcc == b"hvc1":
                hevc = True
            else:
                return Unsupported(f"video FourCC {fourcc!r}")
            if frame_type == _FRAME_COMMAND:
                return None
            if ptype == _EX_SEQUENCE_START:
                self._configure(body[5:], hevc)
                return None
            if ptype == _EX_CODED_FRAMES:
                if len(body) < 8:
                    raise RemoteProtocolError("enhanced RTMP coded frame too short")
                return self._frame(timestamp, _si24(body[5:8]), body[8:], frame_type == _FRAME_KEY, arrival)
            if ptype == _EX_CODED_FRAMES_X:
                return self._frame(timestamp, 0, body[5:], frame_type == _FRAME_KEY, arrival)
            return None  # SequenceEnd, Metadata and other packet types carry no pictures
        frame_type = b0 >> 4
        codec = b0 & 0x0F
        if codec not in (_CODEC_AVC, _CODEC_HEVC_LEGACY):
            return Unsupported(f"FLV video codec id {codec}")
        if frame_type == _FRAME_COMMAND:
            return None
        if len(body) < 5:
            raise RemoteProtocolError("AVC video tag too short")
        ptype = body[1]
        if ptype == 0:
            self._configure(body[5:], codec == _CODEC_HEVC_LEGACY)
            return None
        if ptype == 1:
            return self._frame(timestamp, _si24(body[2:5]), body[5:], frame_type == _FRAME_KEY, arrival)
        return None  # end of sequence

    def _configure(self, record: bytes, hevc: bool) -> None:
        if hevc:
            dc = h264.parse_hvcc(record)
            sps_nal = next((n for n in dc.parameter_sets if h264.hevc_nal_type(n) == h264.HEVC_NAL_SPS), None)
            if sps_nal is None:
                raise RemoteProtocolError("hvcC without SPS")
            hinfo = h264.parse_hevc_sps(sps_nal)
            codec, codec_string, w, h = "hevc", h264.hevc_codec_string(hinfo), hinfo.width, hinfo.height
        else:
            dc = h264.parse_avcc(record)
            sps_nal = next((n for n in dc.parameter_sets if h264.avc_nal_type(n) == h264.AVC_NAL_SPS), None)
            if sps_nal is None:
                raise RemoteProtocolError("avcC without SPS")
            info = h264.parse_avc_sps(sps_nal)
            codec, codec_string, w, h = "h264", h264.avc_codec_string(info), info.width, info.height
        self._hevc = hevc
        self._length_size = dc.length_size
        self._param_sets = dc.parameter_sets
        self.video_config = CodecConfig(
            kind="video", codec=codec, codec_string=codec_string,
            extradata=h264.join_annexb(list(dc.parameter_sets)), width=w, height=h,
        )

    def _frame(self, dts: int, cts: int, payload: bytes, key: bool, arrival: float) -> MediaPacket | None:
        if self.video_config is None:
            return None  # pictures before the sequence header cannot be decoded
        nals = h264.split_length_prefixed(payload, self._length_size)
        if self._hevc:
            nals = [n for n in nals if h264.hevc_nal_type(n) != h264.HEVC_NAL_AUD]
            has_ps = any(h264.hevc_nal_type(n) == h264.HEVC_NAL_SPS for n in nals)
        else:
            nals = [n for n in nals if h264.avc_nal_type(n) != h264.AVC_NAL_AUD]
            has_ps = any(h264.avc_nal_type(n) == h264.AVC_NAL_SPS for n in nals)
        if key and not has_ps:
            nals = list(self._param_sets) + nals
        if not nals:
            return None
        return MediaPacket(
            kind="video", pts=dts + cts, dts=dts, time_base=RTMP_TIME_BASE, keyframe=key,
            data=h264.join_annexb(nals), config=self.video_config, arrival=arrival,
        )

    # -- audio ------------------------------------------------------------------
    def audio(self, timestamp: int, body: bytes, arrival: float = 0.0) -> MediaPacket | Unsupported | None:
        """One audio tag body at `timestamp` ms; None for config-only tags."""
        if len(body) < 2:
            return None
        fmt = body[0] >> 4
        if fmt != _SOUND_AAC:
            return Unsupported(f"FLV sound format {fmt}")
        if body[1] == 0:
            cfg = aac.parse_asc(body[2:])
            self.audio_config = CodecConfig(
                kind="audio", codec="aac", codec_string=cfg.codec_string, extradata=bytes(body[2:]),
                sample_rate=cfg.sample_rate, channels=cfg.channels,
            )
            return None
        if self.audio_config is None or len(body) <= 2:
            return None
        return MediaPacket(
            kind="audio", pts=timestamp, dts=timestamp, time_base=RTMP_TIME_BASE, keyframe=True,
            data=bytes(body[2:]), config=self.audio_config, arrival=arrival,
        )
