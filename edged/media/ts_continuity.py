"""MPEG-TS continuity counters carried from one segment to the next (pure: bytes in, bytes out).

Each segment is muxed by its own PyAV mpegts container, which numbers every PID's packets from 0
again. A reader of the concatenated segments (ffmpeg's hls demuxer, VLC, a player's transmuxer)
then sees a continuity error on every PID at every boundary. `ContinuityStamper` rewrites the
4-bit continuity_counter of each 188-byte packet so that every PID's counter runs on across the
segments of a rendition, as one long transport stream would have it (ISO/IEC 13818-1 2.4.3.3):
- the counter is incremented only on packets that carry a payload (adaptation_field_control 01
  or 11); a packet with an adaptation field only (10) repeats the PID's current value;
- the null PID (0x1FFF) is left alone (its counter is undefined).

The state (PID → last counter) is small, JSON-friendly and persisted with each segment by the
store, so a restarted worker continues it.
"""

from __future__ import annotations

from collections.abc import Mapping

TS_PACKET = 188
SYNC = 0x47
NULL_PID = 0x1FFF


class ContinuityError(ValueError):
    """The payload is not a whole number of aligned 188-byte TS packets."""


class ContinuityStamper:
    """Per-rendition counter state; `stamp` rewrites one segment's packets in order."""

    __slots__ = ("_cc",)

    def __init__(self, state: Mapping[int, int] | None = None) -> None:
        self._cc: dict[int, int] = {int(pid): int(cc) & 0x0F for pid, cc in (state or {}).items()}

    def state(self) -> dict[int, int]:
        """PID → the last continuity counter written (what `__init__` takes back)."""
        return dict(self._cc)

    def stamp(self, payload: bytes) -> bytes:
        """The segment with each PID's counters continuing from the previous segment.

        Raises ContinuityError (and keeps the state unchanged) if `payload` is not aligned TS."""
        n = len(payload)
        if n % TS_PACKET:
            raise ContinuityError(f"{n} bytes is not a whole number of {TS_PACKET}-byte TS packets")
        buf = bytearray(payload)
        cc = dict(self._cc)
        for off in range(0, n, TS_PACKET):
            if buf[off] != SYNC:
                raise ContinuityError(f"no sync byte at offset {off}")
            pid = ((buf[off + 1] & 0x1F) << 8) | buf[off + 2]
            if pid == NULL_PID:
                continue
            b3 = buf[off + 3]
            if b3 & 0x10:  # adaptation_field_control 01 or 11: a payload follows
                value = (cc.get(pid, 15) + 1) & 0x0F
            else:  # 10 (adaptation field only) or the reserved 00: not incremented
                value = cc.get(pid, 0)
            cc[pid] = value
            buf[off + 3] = (b3 & 0xF0) | value
        self._cc = cc
        return bytes(buf)


def continuity_errors(data: bytes, state: dict[int, int] | None = None) -> list[tuple[int, int, int, int]]:
    """(offset, pid, expected, found) for each packet whose counter does not follow its PID's last
    one, the way a demuxer checks it. `state` (PID → last counter) is updated in place, so
    consecutive segments can be checked as one stream. For tests and diagnostics."""
    seen = {} if state is None else state
    out: list[tuple[int, int, int, int]] = []
    for off in range(0, len(data) - TS_PACKET + 1, TS_PACKET):
        pid = ((data[off + 1] & 0x1F) << 8) | data[off + 2]
        if pid == NULL_PID:
            continue
        payload = bool(data[off + 3] & 0x10)
        found = data[off + 3] & 0x0F
        if pid in seen:
            expected = (seen[pid] + 1) & 0x0F if payload else seen[pid]
            if found != expected:
                out.append((off, pid, expected, found))
        seen[pid] = found
    return out
