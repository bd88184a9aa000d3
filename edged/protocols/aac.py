"""AAC framing: AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) and ADTS headers (13818-7 6.2)."""

from __future__ import annotations

from dataclasses import dataclass

from edged.errors import RemoteProtocolError

SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
SAMPLES_PER_FRAME = 1024


@dataclass(frozen=True, slots=True)
class AacConfig:
    object_type: int  # 2 = AAC-LC
    sample_rate: int
    channels: int

    @property
    def codec_string(self) -> str:
        return f"mp4a.40.{self.object_type}"


def parse_asc(asc: bytes) -> AacConfig:
    """Object type, sample rate and channel count from an AudioSpecificConfig."""
    if len(asc) < 2:
        raise RemoteProtocolError("AudioSpecificConfig too short")
    # the fields read here span at most 5 + 6 + 4 + 24 + 4 = 43 bits (escaped object type, explicit rate)
    bits = int.from_bytes(asc[:6].ljust(6, b"\x00"), "big")
    total = 48
    pos = 0

    def take(n: int) -> int:
        nonlocal pos
        v = (bits >> (total - pos - n)) & ((1 << n) - 1)
        pos += n
        return v

    aot = take(5)
    if aot == 31:
        aot = 32 + take(6)
    idx = take(4)
    if idx == 15:
        if len(asc) * 8 < pos + 24 + 4:
            raise RemoteProtocolError("AudioSpecificConfig truncated")
        rate = take(24)
    elif idx < len(SAMPLE_RATES):
        rate = SAMPLE_RATES[idx]
    else:
        raise RemoteProtocolError(f"reserved AAC sampling frequency index {idx}")
    channels = take(4)
    if aot == 0 or rate == 0:
        raise RemoteProtocolError("invalid AudioSpecificConfig")
    return AacConfig(aot, rate, channels)


def make_asc(object_type: int, sample_rate: int, channels: int) -> bytes:
    """A minimal two-byte AudioSpecificConfig."""
    try:
        idx = SAMPLE_RATES.index(sample_rate)
    except ValueError:
        raise RemoteProtocolError(f"unsupported AAC sample rate {sample_rate}") from None
    v = (object_type << 11) | (idx << 7) | (channels << 3)
    return v.to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class AdtsFrame:
    config: AacConfig
    payload: bytes  # raw AAC access unit without the ADTS header


def parse_adts(data: bytes) -> list[AdtsFrame]:
    """Split a buffer of ADTS frames into raw access units."""
    frames: list[AdtsFrame] = []
    pos = 0
    n = len(data)
    while pos < n:
        if n - pos < 7 or data[pos] != 0xFF or (data[pos + 1] & 0xF6) != 0xF0:
            raise RemoteProtocolError("bad ADTS sync word")
        protection_absent = data[pos + 1] & 1
        profile = (data[pos + 2] >> 6) & 3
        idx = (data[pos + 2] >> 2) & 0xF
        channels = ((data[pos + 2] & 1) << 2) | (data[pos + 3] >> 6)
        length = ((data[pos + 3] & 3) << 11) | (data[pos + 4] << 3) | (data[pos + 5] >> 5)
        header = 7 if protection_absent else 9
        if idx >= len(SAMPLE_RATES) or length < header or pos + length > n:
            raise RemoteProtocolError("bad ADTS header")
        cfg = AacConfig(profile + 1, SAMPLE_RATES[idx], channels)
        frames.append(AdtsFrame(cfg, data[pos + header : pos + length]))
        pos += length
    return frames
