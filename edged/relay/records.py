"""Relay records: what one edge sends another about a channel, sans-IO (bytes in, records out).

The unit relayed is what the store holds. A subscription is a stream of records for one channel, in
commit order:

    CHANNEL       the channel record as the ingest edge wrote it: renditions (names, sizes, codecs,
                  bandwidths, frame rates), the playlist's target duration, window and reconnect grace,
                  the independent-segments flag, the live/ended state, the format (ts | cmaf) and the
                  LL-HLS part target
    SEGMENT       one segment: its metadata as the ingest edge committed it (for CMAF also its init
                  segment's id, its parts' durations and which of them are ingest gaps), and its payload; or, for a CMAF segment
                  whose parts all came just before it, no payload and its size (`from_parts`): the
                  child joins the parts it holds, so a segment's bytes cross the fleet once
    INIT          a CMAF init segment (rendition, id, bytes; the id is checked against the bytes' SHA-256):
                  sent once per subscription, before the first PART or SEGMENT that names it
    PART          one LL-HLS part of a segment (the one being written, or a recent one whose parts
                  playlists still list): the segment's metadata as known at its start (start, date,
                  discontinuity, init), the part's index, duration and independence, and its bytes;
                  a gap part (`gap`: an ingest gap, listed GAP=YES) has none
    STREAM_START  a publisher session began (session number, start time)
    STREAM_END    it ended (when, and whether deliberately)
    KEEPALIVE     nothing new; sent when idle so that a child tells a stalled parent within its stall
                  timeout. The first one after the replay says the child has caught up
    RESYNC        the position the child asked for is gone from the parent: what follows starts at the
                  parent's live window (the child never lists across the hole)

On the wire a record is (kind, header, payload): the header is a small JSON object, the payload the
segment, part or init bytes (empty for the other kinds). Fields added later (a segment's format, init,
parts and gaps; a part's gap flag; a channel's format and part target) are optional in the header, so a record from an older
parent still decodes. `decode` validates everything a peer sends (types, ranges, names, ids, the size
cap) and raises RecordError; `OrderCheck` refuses records out of order. Either ends that one
subscription.

A position is, per rendition, the next sequence number the child lacks and the epoch (discontinuity
sequence) of the last segment it holds. Sequence numbers are fleet-wide, so any parent can serve one.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

MAX_HEADER_BYTES = 64 * 1024
MAX_SEQ = (1 << 63) - 1
MAX_RENDITIONS = 32
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class RecordError(Exception):
    """A record a peer sent is malformed, too large or out of order: that subscription ends."""


class Kind(enum.IntEnum):
    CHANNEL = 1
    SEGMENT = 2
    STREAM_START = 3
    STREAM_END = 4
    KEEPALIVE = 5
    RESYNC = 6
    PART = 7
    INIT = 8


FORMATS = ("ts", "cmaf")
MAX_SEGMENT_BYTES = 1 << 36  # a segment joined from parts (each part is under the record cap)
MAX_PARTS = 64  # parts of one segment (a 0.1 s part target and a 6 s segment need 60)
_INIT_ID_RE = re.compile(r"^[0-9a-f]{16}$")


@dataclass(frozen=True, slots=True)
class Rendition:
    name: str
    width: int = 0
    height: int = 0
    codecs: str = ""
    bandwidth: int = 0
    average_bandwidth: int = 0
    frame_rate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "width": self.width, "height": self.height, "codecs": self.codecs,
                "bandwidth": self.bandwidth, "average_bandwidth": self.average_bandwidth,
                "frame_rate": self.frame_rate}


@dataclass(frozen=True, slots=True)
class ChannelRecord:
    """The fields of a channel record that every edge serving the channel must share."""

    renditions: tuple[Rendition, ...] = ()
    target_duration: int = 0
    window: int = 0  # segments listed in a live media playlist (0: the receiving edge's own hls.window)
    reconnect_grace: float = -1.0  # s before a lost publisher's playlist ends (-1: the receiver's own)
    independent: bool = True
    live: bool = False
    session: int = 0
    started: float = 0.0
    ended: float | None = None
    ended_deliberately: bool = False
    format: str = "ts"  # "ts" | "cmaf"
    part_target: float = 0.0  # s (cmaf: the LL-HLS part target; 0: no parts)
    segment_seconds: float = 0.0  # s the ingest edge cuts segments at (0: unknown, the receiver's own)

    kind = Kind.CHANNEL

    def fields(self) -> dict[str, Any]:
        """As the store's channel record holds them."""
        out: dict[str, Any] = {
            "renditions": [r.to_dict() for r in self.renditions], "target_duration": self.target_duration,
            "independent": self.independent, "live": self.live, "session": self.session, "started": self.started,
            "ended": self.ended, "ended_deliberately": self.ended_deliberately, "format": self.format,
        }
        if self.part_target:
            out["part_target"] = self.part_target
        if self.segment_seconds:
            out["segment_seconds"] = self.segment_seconds
        if self.window:
            out["window"] = self.window
        if self.reconnect_grace >= 0:
            out["reconnect_grace"] = self.reconnect_grace
        return out

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> ChannelRecord:
        """From the store's channel record (the parent's side; raises RecordError if it cannot be sent)."""
        return _channel_from_header(info)


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    rendition: str
    seq: int
    duration: float
    discontinuity: bool
    disc_seq: int
    start_pts: float
    program_date_time: float
    ingest_ns: int  # commit time at the ingest edge (epoch ns)
    payload: bytes = field(repr=False)
    fmt: str = "ts"  # "ts" | "cmaf"
    init: str = ""  # cmaf: the id of its init segment
    parts: tuple[tuple[float, bool], ...] = ()  # cmaf: (duration s, independent) per part, in order
    from_parts: int = 0  # > 0: the payload is empty; the segment (this many bytes) is its parts joined
    gaps: tuple[int, ...] = ()  # cmaf: indices of the parts that are ingest gaps (sorted, no bytes)

    kind = Kind.SEGMENT

    @property
    def size(self) -> int:
        return self.from_parts or len(self.payload)


@dataclass(frozen=True, slots=True)
class PartRecord:
    """Part `index` of segment `seq` (the rendition's segment being written), with that segment's
    metadata as far as it is known at its start."""

    rendition: str
    seq: int
    index: int
    duration: float
    independent: bool
    start_pts: float  # of the segment
    program_date_time: float  # of the segment
    discontinuity: bool
    disc_seq: int
    init: str
    ingest_ns: int  # commit time of this part at the ingest edge (epoch ns)
    payload: bytes = field(repr=False)
    gap: bool = False  # an ingest gap: listed GAP=YES, no bytes (the payload is empty)

    kind = Kind.PART


@dataclass(frozen=True, slots=True)
class InitRecord:
    rendition: str
    init_id: str  # first 16 hex digits of the sha256 of the bytes (edged.store.segments.cmaf_init_id)
    payload: bytes = field(repr=False)

    kind = Kind.INIT


@dataclass(frozen=True, slots=True)
class StreamStart:
    session: int
    started: float

    kind = Kind.STREAM_START


@dataclass(frozen=True, slots=True)
class StreamEnd:
    ended: float
    deliberate: bool

    kind = Kind.STREAM_END


@dataclass(frozen=True, slots=True)
class Keepalive:
    kind = Kind.KEEPALIVE


@dataclass(frozen=True, slots=True)
class Resync:
    reason: str

    kind = Kind.RESYNC


Record = ChannelRecord | SegmentRecord | PartRecord | InitRecord | StreamStart | StreamEnd | Keepalive | Resync
_WITH_PAYLOAD = (Kind.SEGMENT, Kind.PART, Kind.INIT)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a child resumes one rendition: the next sequence number it lacks, and the discontinuity
    sequence of the last segment it holds."""

    rendition: str
    next_seq: int
    epoch: int = 0


# --- encoding ------------------------------------------------------------------------------------------

def _header(rec: Record) -> dict[str, Any]:
    if isinstance(rec, ChannelRecord):
        return rec.fields()
    if isinstance(rec, SegmentRecord):
        out: dict[str, Any] = {
            "rendition": rec.rendition, "seq": rec.seq, "duration": rec.duration, "discontinuity": rec.discontinuity,
            "disc_seq": rec.disc_seq, "start_pts": rec.start_pts, "program_date_time": rec.program_date_time,
            "ingest_ns": rec.ingest_ns, "size": len(rec.payload),
        }
        if rec.fmt != "ts":  # (a TS segment's header stays as an older child knows it)
            out.update(fmt=rec.fmt, init=rec.init, parts=[[d, i] for d, i in rec.parts])
            if rec.gaps:
                out["gaps"] = list(rec.gaps)
        if rec.from_parts:
            out["from_parts"] = rec.from_parts
        return out
    if isinstance(rec, PartRecord):
        part = {"rendition": rec.rendition, "seq": rec.seq, "index": rec.index, "duration": rec.duration,
                "independent": rec.independent, "start_pts": rec.start_pts,
                "program_date_time": rec.program_date_time, "discontinuity": rec.discontinuity,
                "disc_seq": rec.disc_seq, "init": rec.init, "ingest_ns": rec.ingest_ns, "size": len(rec.payload)}
        if rec.gap:
            part["gap"] = True
        return part
    if isinstance(rec, InitRecord):
        return {"rendition": rec.rendition, "init": rec.init_id, "size": len(rec.payload)}
    if isinstance(rec, StreamStart):
        return {"session": rec.session, "started": rec.started}
    if isinstance(rec, StreamEnd):
        return {"ended": rec.ended, "deliberate": rec.deliberate}
    if isinstance(rec, Resync):
        return {"reason": rec.reason}
    return {}


def encode(rec: Record) -> tuple[int, bytes, bytes]:
    """(kind, header, payload) of a record."""
    header = json.dumps(_header(rec), separators=(",", ":"), allow_nan=False).encode()
    payload = rec.payload if isinstance(rec, SegmentRecord | PartRecord | InitRecord) else b""
    return int(rec.kind), header, payload


def encoded_size(rec: Record) -> int:
    kind, header, payload = encode(rec)
    return len(header) + len(payload)


# --- decoding ------------------------------------------------------------------------------------------

def _int(d: dict[str, Any], key: str, lo: int = 0, hi: int = MAX_SEQ, default: int | None = None) -> int:
    v = d.get(key, default)
    if type(v) is not int or not lo <= v <= hi:
        raise RecordError(f"{key}: expected an integer between {lo} and {hi}, got {v!r}")
    return v


def _float(d: dict[str, Any], key: str, lo: float, hi: float, default: float | None = None) -> float:
    v = d.get(key, default)
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or not lo <= v <= hi:
        raise RecordError(f"{key}: expected a number between {lo:g} and {hi:g}, got {v!r}")
    return float(v)


def _bool(d: dict[str, Any], key: str, default: bool | None = None) -> bool:
    v = d.get(key, default)
    if type(v) is not bool:
        raise RecordError(f"{key}: expected true or false, got {v!r}")
    return v


def _name(v: Any, key: str) -> str:
    if type(v) is not str or not _NAME_RE.match(v):
        raise RecordError(f"{key}: not a valid name: {v!r}")
    return v


_MAX_TIME = 1e11  # epoch seconds (year 5138): anything beyond is not a time
_CODECS_RE = re.compile(r'^[A-Za-z0-9.,_ -]{0,256}$')


def _rendition(d: Any) -> Rendition:
    if not isinstance(d, dict):
        raise RecordError("renditions: expected objects")
    codecs = d.get("codecs", "")
    if type(codecs) is not str or not _CODECS_RE.match(codecs):
        raise RecordError(f"renditions.codecs: not a CODECS value: {codecs!r}")
    fr = d.get("frame_rate")
    return Rendition(
        name=_name(d.get("name"), "renditions.name"), width=_int(d, "width", 0, 16384, 0),
        height=_int(d, "height", 0, 16384, 0), codecs=codecs, bandwidth=_int(d, "bandwidth", 0, 1 << 40, 0),
        average_bandwidth=_int(d, "average_bandwidth", 0, 1 << 40, 0) if d.get("average_bandwidth") is not None else 0,
        frame_rate=None if fr is None else _float(d, "frame_rate", 0, 1000),
    )


def _str_choice(d: dict[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    v = d.get(key, default)
    if type(v) is not str or v not in choices:
        raise RecordError(f"{key}: expected one of {', '.join(choices)}, got {v!r}")
    return v


def _init_id(v: Any, key: str = "init") -> str:
    if type(v) is not str or not _INIT_ID_RE.match(v):
        raise RecordError(f"{key}: expected 16 lowercase hex digits, got {v!r}")
    return v


def _part_list(v: Any) -> tuple[tuple[float, bool], ...]:
    if not isinstance(v, list) or len(v) > MAX_PARTS:
        raise RecordError(f"parts: expected a list of at most {MAX_PARTS}")
    out: list[tuple[float, bool]] = []
    for p in v:
        if not isinstance(p, list) or len(p) != 2:
            raise RecordError("parts: expected [duration, independent] pairs")
        pd = {"parts.duration": p[0], "parts.independent": p[1]}
        out.append((_float(pd, "parts.duration", 0, 60), _bool(pd, "parts.independent")))
    return tuple(out)


def _gap_list(v: Any, parts: int) -> tuple[int, ...]:
    """Indices of a segment's gap parts: integers within its `parts` parts, strictly increasing."""
    if not isinstance(v, list) or len(v) > parts:
        raise RecordError(f"gaps: expected a list of at most {parts} part indices")
    out: list[int] = []
    for i in v:
        if type(i) is not int or not 0 <= i < parts or (out and i <= out[-1]):
            raise RecordError(f"gaps: expected increasing part indices below {parts}, got {v!r}")
        out.append(i)
    return tuple(out)


def _payload_size(d: dict[str, Any], payload: bytes, max_bytes: int, what: str, lo: int = 0) -> None:
    size = _int(d, "size", lo, max_bytes)
    if size != len(payload):
        raise RecordError(f"{what} size {size} but {len(payload)} payload bytes")


def _part_target(d: dict[str, Any]) -> float:
    v = _float(d, "part_target", 0, 2.0, 0.0)
    if v and v < 0.1:
        raise RecordError(f"part_target: expected 0 or a number between 0.1 and 2, got {v!r}")
    return v


def _segment(d: dict[str, Any], payload: bytes, max_bytes: int) -> SegmentRecord:
    _payload_size(d, payload, max_bytes, "segment")
    fmt = _str_choice(d, "fmt", FORMATS, "ts")
    if fmt == "cmaf":
        init, parts = _init_id(d.get("init")), _part_list(d.get("parts", []))
        gaps = _gap_list(d.get("gaps", []), len(parts))
    else:
        if d.get("init", "") != "" or d.get("parts", []) != [] or d.get("gaps", []) != []:
            raise RecordError("a TS segment with an init segment, parts or gaps")
        init, parts, gaps = "", (), ()
    from_parts = _int(d, "from_parts", 0, MAX_SEGMENT_BYTES, 0)
    if from_parts and (not parts or payload):
        raise RecordError("a segment joined from its parts has parts and no payload")
    return SegmentRecord(
        rendition=_name(d.get("rendition"), "rendition"), seq=_int(d, "seq"),
        duration=_float(d, "duration", 0, 3600), discontinuity=_bool(d, "discontinuity"),
        disc_seq=_int(d, "disc_seq"), start_pts=_float(d, "start_pts", -1e12, 1e12),
        program_date_time=_float(d, "program_date_time", 0, _MAX_TIME), ingest_ns=_int(d, "ingest_ns"),
        payload=payload, fmt=fmt, init=init, parts=parts, from_parts=from_parts, gaps=gaps,
    )


def _part(d: dict[str, Any], payload: bytes, max_bytes: int) -> PartRecord:
    gap = _bool(d, "gap", False)
    _payload_size(d, payload, max_bytes, "part", lo=0 if gap else 1)
    if gap and payload:
        raise RecordError("a gap part with bytes")
    return PartRecord(
        rendition=_name(d.get("rendition"), "rendition"), seq=_int(d, "seq"), index=_int(d, "index", 0, MAX_PARTS - 1),
        duration=_float(d, "duration", 0, 60), independent=_bool(d, "independent"),
        start_pts=_float(d, "start_pts", -1e12, 1e12), program_date_time=_float(d, "program_date_time", 0, _MAX_TIME),
        discontinuity=_bool(d, "discontinuity"), disc_seq=_int(d, "disc_seq"), init=_init_id(d.get("init")),
        ingest_ns=_int(d, "ingest_ns"), payload=payload, gap=gap,
    )


def _channel_from_header(d: dict[str, Any]) -> ChannelRecord:
    rends = d.get("renditions", [])
    if not isinstance(rends, list) or len(rends) > MAX_RENDITIONS:
        raise RecordError(f"renditions: expected a list of at most {MAX_RENDITIONS}")
    renditions = tuple(_rendition(r) for r in rends)
    if len({r.name for r in renditions}) != len(renditions):
        raise RecordError("renditions: a name is listed twice")
    ended = d.get("ended")
    return ChannelRecord(
        renditions=renditions, target_duration=_int(d, "target_duration", 0, 3600, 0),
        window=_int(d, "window", 0, 1000, 0), reconnect_grace=_float(d, "reconnect_grace", -1, 86400, -1),
        independent=_bool(d, "independent", True),
        live=_bool(d, "live", False), session=_int(d, "session", 0, MAX_SEQ, 0),
        started=_float(d, "started", 0, _MAX_TIME, 0.0),
        ended=None if ended is None else _float(d, "ended", 0, _MAX_TIME),
        ended_deliberately=_bool(d, "ended_deliberately", False),
        format=_str_choice(d, "format", FORMATS, "ts"), part_target=_part_target(d),
        segment_seconds=_float(d, "segment_seconds", 0, 3600, 0.0),
    )


def decode(kind: int, header: bytes, payload: bytes, *, max_bytes: int) -> Record:
    """The record a peer sent; RecordError when it is malformed or over `max_bytes` in all."""
    if len(header) > MAX_HEADER_BYTES:
        raise RecordError(f"record header of {len(header)} bytes (at most {MAX_HEADER_BYTES})")
    if len(header) + len(payload) > max_bytes:
        raise RecordError(f"record of {len(header) + len(payload)} bytes is over the cap of {max_bytes}")
    try:
        k = Kind(kind)
    except ValueError:
        raise RecordError(f"unknown record kind {kind}") from None
    try:
        d = json.loads(header) if header else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError(f"record header is not JSON: {exc}") from None
    if not isinstance(d, dict):
        raise RecordError("record header is not a JSON object")
    if k not in _WITH_PAYLOAD and payload:
        raise RecordError(f"{k.name} record with a payload")
    if k is Kind.CHANNEL:
        return _channel_from_header(d)
    if k is Kind.SEGMENT:
        return _segment(d, payload, max_bytes)
    if k is Kind.PART:
        return _part(d, payload, max_bytes)
    if k is Kind.INIT:
        _payload_size(d, payload, max_bytes, "init segment", lo=1)
        init_id = _init_id(d.get("init"))
        if hashlib.sha256(payload).hexdigest()[:16] != init_id:  # the id names the bytes, everywhere
            raise RecordError(f"init segment {init_id}: the bytes have another id")
        return InitRecord(rendition=_name(d.get("rendition"), "rendition"), init_id=init_id, payload=payload)
    if k is Kind.STREAM_START:
        return StreamStart(session=_int(d, "session"), started=_float(d, "started", 0, _MAX_TIME))
    if k is Kind.STREAM_END:
        return StreamEnd(ended=_float(d, "ended", 0, _MAX_TIME), deliberate=_bool(d, "deliberate"))
    if k is Kind.RESYNC:
        reason = d.get("reason", "")
        if type(reason) is not str or len(reason) > 200:
            raise RecordError("resync reason: expected a short string")
        return Resync(reason)
    return Keepalive()


class OrderCheck:
    """What a child checks of the order of one subscription's records: a CHANNEL record before any
    segment or part; per rendition, sequence numbers of segments strictly increasing and discontinuity
    sequences never going down (gaps are allowed: a rung shed under overload keeps the source's numbers
    when it comes back). A PART is of a segment after the rendition's last complete one and not before
    the last part's segment; the parts of one segment come in index order, the first of them at most at
    the index the child holds next (`pending`: rendition → (seq, parts held) of its segment being
    written; a parent replays a pending segment's parts from 0, and the child keeps those it holds).
    A SEGMENT joined from its parts follows all of them. Every init segment a PART or SEGMENT names came
    in an INIT record of this subscription first (one the child holds already may come again)."""

    def __init__(self, positions: dict[str, Position] | None = None,
                 pending: dict[str, tuple[int, int]] | None = None) -> None:
        self._last: dict[str, tuple[int, int]] = {}  # rendition → (seq, disc_seq) of the last segment
        for p in (positions or {}).values():
            if p.next_seq > 0:
                self._last[p.rendition] = (p.next_seq - 1, p.epoch)
        self._held = dict(pending or {})  # rendition → (seq, parts held) at the child when it subscribed
        self._part: dict[str, tuple[int, int]] = {}  # rendition → (seq, index) of the last part
        self._inits: set[tuple[str, str]] = set()  # (rendition, init id) sent in this subscription
        self.have_channel = False
        self.resynced = False

    def _uses(self, rendition: str, init: str, what: str) -> None:
        if init and (rendition, init) not in self._inits:
            raise RecordError(f"rendition {rendition}: {what} names init segment {init} before its INIT record")

    def check(self, rec: Record) -> None:
        if isinstance(rec, Resync):
            if self.have_channel:
                raise RecordError("RESYNC after the stream began")
            self.resynced = True
            self._last.clear()  # what follows starts at the parent's live window
        elif isinstance(rec, ChannelRecord):
            self.have_channel = True
        elif isinstance(rec, InitRecord):
            if not self.have_channel:
                raise RecordError("an INIT before the CHANNEL record")
            self._inits.add((rec.rendition, rec.init_id))
        elif isinstance(rec, SegmentRecord):
            if not self.have_channel:
                raise RecordError("a SEGMENT before the CHANNEL record")
            last = self._last.get(rec.rendition)
            if last is not None and (rec.seq <= last[0] or rec.disc_seq < last[1]):
                raise RecordError(f"rendition {rec.rendition}: segment {rec.seq} (discontinuity {rec.disc_seq}) "
                                  f"after {last[0]} (discontinuity {last[1]})")
            part = self._part.get(rec.rendition)
            if part is not None and rec.seq < part[0]:
                raise RecordError(f"rendition {rec.rendition}: segment {rec.seq} after a part of segment {part[0]}")
            if rec.from_parts and part != (rec.seq, len(rec.parts) - 1):
                raise RecordError(f"rendition {rec.rendition}: segment {rec.seq} joined from {len(rec.parts)} parts, "
                                  f"but the last part here is {part}")
            self._uses(rec.rendition, rec.init, f"segment {rec.seq}")
            self._last[rec.rendition] = (rec.seq, rec.disc_seq)
        elif isinstance(rec, PartRecord):
            if not self.have_channel:
                raise RecordError("a PART before the CHANNEL record")
            last = self._last.get(rec.rendition)
            if last is not None and (rec.seq <= last[0] or rec.disc_seq < last[1]):
                raise RecordError(f"rendition {rec.rendition}: part {rec.seq}.{rec.index} (discontinuity "
                                  f"{rec.disc_seq}) after segment {last[0]} (discontinuity {last[1]})")
            prev = self._part.get(rec.rendition)
            if prev is not None and rec.seq < prev[0]:
                raise RecordError(f"rendition {rec.rendition}: part {rec.seq}.{rec.index} after part {prev[0]}.{prev[1]}")
            if prev is not None and rec.seq == prev[0]:
                if rec.index != prev[1] + 1:
                    raise RecordError(f"rendition {rec.rendition}: part {rec.seq}.{rec.index} after part "
                                      f"{prev[0]}.{prev[1]}")
            else:
                held = self._held.get(rec.rendition)
                first = held[1] if held is not None and held[0] == rec.seq else 0
                if rec.index > first:
                    raise RecordError(f"rendition {rec.rendition}: part {rec.seq}.{rec.index} but the next part "
                                      f"of segment {rec.seq} here is {first}")
            self._uses(rec.rendition, rec.init, f"part {rec.seq}.{rec.index}")
            self._part[rec.rendition] = (rec.seq, rec.index)
