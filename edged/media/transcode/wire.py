"""Sans-IO framing of MediaPackets over the pipe from the main process to a pipeline worker.

Frame: type (1 byte) | body length (4 bytes, big-endian) | body.
  CONFIG  JSON CodecConfig (extradata hex); sent before the first packet of each new config
  PACKET  fixed header (kind, keyframe, pts, dts, time base, arrival) + access unit bytes
  END     the publisher is gone; flush and exit. Body: one flags byte (bit 0: it left deliberately,
          e.g. RTMP FCUnpublish/deleteStream or an SRT close, rather than losing its link); an
          empty body (an older main process) means not deliberately
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass
from fractions import Fraction

from edged.errors import RemoteProtocolError
from edged.media.packet import CodecConfig, Kind, MediaPacket

T_CONFIG = 1
T_PACKET = 2
T_END = 3

MAX_FRAME = 64 * 1024 * 1024  # bytes: larger than any access unit the ingest caps allow
_HDR = struct.Struct(">BI")
_PKT = struct.Struct(">BBqqIId")
_KINDS: tuple[Kind, Kind] = ("video", "audio")
_END_DELIBERATE = 0x01


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """The END frame: the stream is over; `deliberate` tells an unpublish from a lost publisher."""

    deliberate: bool = False


class WireEncoder:
    """Main-process side: remembers which configs the worker already knows."""

    def __init__(self) -> None:
        self._sent: dict[str, CodecConfig] = {}

    def packet(self, pkt: MediaPacket) -> bytes:
        out = b""
        if self._sent.get(pkt.kind) is not pkt.config:
            d = asdict(pkt.config)
            d["extradata"] = pkt.config.extradata.hex()
            body = json.dumps(d).encode()
            out += _HDR.pack(T_CONFIG, len(body)) + body
            self._sent[pkt.kind] = pkt.config
        head = _PKT.pack(_KINDS.index(pkt.kind), pkt.keyframe, pkt.pts, pkt.dts,
                         pkt.time_base.numerator, pkt.time_base.denominator, pkt.arrival)
        return out + _HDR.pack(T_PACKET, len(head) + len(pkt.data)) + head + pkt.data

    def reset(self) -> None:
        """A new worker knows nothing yet."""
        self._sent.clear()

    @staticmethod
    def end(deliberate: bool = False) -> bytes:
        return _HDR.pack(T_END, 1) + bytes([_END_DELIBERATE if deliberate else 0])


class WireDecoder:
    """Worker side: bytes in, MediaPackets (or END) out."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._configs: dict[str, CodecConfig] = {}

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    def next_item(self) -> MediaPacket | EndOfStream | None:
        """A MediaPacket, an EndOfStream, or None if more bytes are needed."""
        while True:
            if len(self._buf) < _HDR.size:
                return None
            ftype, length = _HDR.unpack_from(self._buf)
            if length > MAX_FRAME:
                raise RemoteProtocolError(f"pipe frame of {length} bytes exceeds the cap")
            if len(self._buf) < _HDR.size + length:
                return None
            body = bytes(self._buf[_HDR.size : _HDR.size + length])
            del self._buf[: _HDR.size + length]
            if ftype == T_END:
                return EndOfStream(deliberate=bool(body[:1]) and bool(body[0] & _END_DELIBERATE))
            if ftype == T_CONFIG:
                d = json.loads(body)
                d["extradata"] = bytes.fromhex(d["extradata"])
                new = CodecConfig(**d)
                self._configs[new.kind] = new
                continue
            if ftype == T_PACKET:
                kind_i, key, pts, dts, num, den, arrival = _PKT.unpack_from(body)
                kind = _KINDS[kind_i]
                cfg = self._configs.get(kind)
                if cfg is None:
                    raise RemoteProtocolError("packet before its codec config")
                return MediaPacket(kind=kind, pts=pts, dts=dts, time_base=Fraction(num, den), keyframe=bool(key),
                                   data=body[_PKT.size:], config=cfg, arrival=arrival)
            raise RemoteProtocolError(f"unknown pipe frame type {ftype}")
