"""Between relay records and the segment store: what a parent reads, what a child writes.

Reads are cheap LMDB reads (on the loop, as the HTTP handlers do). Writes go through `StoreWriter`:
one thread for the whole edge, so a child's records commit in the order they came, off the loop. A
relayed part extends the child's own pending segment (the part list it holds for that sequence number
plus this part), so the pending state a child holds is the parent's, part by part; a gap part is
stored empty with its index in the pending state's gaps, as on the ingest edge.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any

from edged.relay import records
from edged.relay.records import ChannelRecord, InitRecord, PartRecord, Position, RecordError, SegmentRecord
from edged.store.segments import PendingMeta, SegmentMeta, SegmentStore


def channel_record(store: SegmentStore, channel: str) -> ChannelRecord | None:
    """The channel record a parent sends; None when the store has none (or one it cannot send)."""
    info = store.channel(channel)
    if info is None:
        return None
    try:
        return ChannelRecord.from_info(info)
    except RecordError:
        return None


def segment_record(meta: SegmentMeta, payload: bytes, from_parts: bool = False) -> SegmentRecord:
    """`from_parts`: the child holds all its parts (sent just before): no payload, the child joins them."""
    cmaf = meta.fmt == "cmaf"
    return SegmentRecord(
        rendition=meta.rendition, seq=meta.seq, duration=meta.duration, discontinuity=meta.discontinuity,
        disc_seq=meta.disc_seq, start_pts=meta.start_pts, program_date_time=meta.program_date_time,
        ingest_ns=meta.ingest_ns, payload=payload, fmt="cmaf" if cmaf else "ts", init=meta.init if cmaf else "",
        parts=meta.parts if cmaf else (), from_parts=meta.size if from_parts and cmaf and meta.parts else 0,
        gaps=meta.gaps if cmaf else (),
    )


def part_record(rendition: str, segment: PendingMeta | SegmentMeta, index: int, payload: bytes,
                ingest_ns: int) -> PartRecord:
    """Part `index` of the pending (or a complete) segment `segment`, a parent's side. `ingest_ns`: when the
    ingest edge committed it, as far as this node knows (a relayed pending segment keeps the ingest edge's
    time of its last part; the ingest edge keeps no part times: the caller's best figure)."""
    duration, independent = segment.parts[index]
    return PartRecord(
        rendition=rendition, seq=segment.seq, index=index, duration=duration, independent=independent,
        start_pts=segment.start_pts, program_date_time=segment.program_date_time,
        discontinuity=segment.discontinuity, disc_seq=segment.disc_seq, init=segment.init,
        ingest_ns=segment.origin_ns or ingest_ns, payload=payload, gap=index in segment.gaps,
    )


def segment_meta(channel: str, rec: SegmentRecord, written_ns: int) -> SegmentMeta:
    """The metadata a child stores: the ingest edge's, with this node's write time and the ingest commit time."""
    return SegmentMeta(
        channel=channel, rendition=rec.rendition, seq=rec.seq, duration=rec.duration,
        discontinuity=rec.discontinuity, disc_seq=rec.disc_seq, start_pts=rec.start_pts,
        program_date_time=rec.program_date_time, size=rec.size, written_ns=written_ns,
        origin_ns=rec.ingest_ns, fmt=rec.fmt, init=rec.init, parts=rec.parts, gaps=rec.gaps,
    )


def held_parts(store: SegmentStore, channel: str) -> dict[str, tuple[int, int]]:
    """rendition → (sequence number, parts held) of each pending segment this node holds of `channel`."""
    info = store.channel(channel) or {}
    out: dict[str, tuple[int, int]] = {}
    for r in info.get("renditions") or ():
        name = r.get("name") if isinstance(r, dict) else None
        if isinstance(name, str) and (p := store.pending(channel, name)) is not None:
            out[name] = (p.seq, len(p.parts))
    return out


def apply_part(store: SegmentStore, channel: str, rec: PartRecord) -> bool:
    """Commit a relayed part as the next part of this node's pending segment `rec.seq` (the writer
    thread's side). False when it is held already, or its segment is complete here or superseded."""
    state = store.rendition_state(channel, rec.rendition)
    held = state.pending
    if rec.seq < state.next_seq or (held is not None and held.seq > rec.seq):
        return False  # complete here, or superseded by a later segment
    before: tuple[tuple[float, bool], ...] = ()
    gaps: tuple[int, ...] = ()
    if held is not None and held.seq == rec.seq:
        if rec.index < len(held.parts):
            return False  # held already
        before, gaps = held.parts, held.gaps
    if rec.index != len(before):
        raise RecordError(f"rendition {rec.rendition}: part {rec.seq}.{rec.index} but {len(before)} parts of "
                          f"segment {rec.seq} are held here")
    pending = PendingMeta(
        seq=rec.seq, start_pts=rec.start_pts, program_date_time=rec.program_date_time,
        discontinuity=rec.discontinuity, disc_seq=rec.disc_seq, init=rec.init,
        parts=(*before, (rec.duration, rec.independent)), origin_ns=rec.ingest_ns,
        gaps=(*gaps, rec.index) if rec.gap else gaps,
    )
    return store.apply_part(channel, rec.rendition, pending, rec.payload)


def positions(store: SegmentStore, channel: str) -> dict[str, Position]:
    """Where this node resumes `channel`: per rendition it holds, the next sequence number it lacks."""
    info = store.channel(channel) or {}
    out: dict[str, Position] = {}
    for r in info.get("renditions") or ():
        name = r.get("name") if isinstance(r, dict) else None
        if not isinstance(name, str):
            continue
        last = store.recent(channel, name, 1)
        if last:
            out[name] = Position(name, last[-1].seq + 1, last[-1].disc_seq)
    return out


def apply_segment(store: SegmentStore, meta: SegmentMeta, rec: SegmentRecord, keep: int,
                  part_keep: int) -> tuple[bool, int]:
    """Commit a relayed segment (the writer thread's side); one joined from its parts is their bytes, as
    this node holds them. (stored, evicted)."""
    payload = rec.payload
    if rec.from_parts:
        if store.meta(meta.channel, meta.rendition, meta.seq) is not None:
            return False, 0  # held already (as apply_segment would say)
        chunks = [store.read_part(meta.channel, meta.rendition, meta.seq, i) for i in range(len(rec.parts))]
        if any(c is None for c in chunks):
            raise RecordError(f"rendition {rec.rendition}: segment {rec.seq} is to be joined from parts not held here")
        payload = b"".join(c for c in chunks if c is not None)
        if len(payload) != rec.from_parts:
            raise RecordError(f"rendition {rec.rendition}: segment {rec.seq} of {rec.from_parts} bytes, but its "
                              f"parts here are {len(payload)}")
    return store.apply_segment(meta, payload, keep, part_keep)


class StoreWriter:
    """The edge's one relay writer thread: records applied in the order they were handed in."""

    def __init__(self, store: SegmentStore, keep_segments: int, window: int = 0) -> None:
        self.store = store
        self.keep = keep_segments
        self.window = window  # segments listed in a playlist, where a channel record does not say
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-writer")

    def part_keep(self, window: int) -> int:
        """Segments whose parts are kept (the channel's window + 2, as the ingest edge keeps them; 0: as
        long as their segments, when no window is known)."""
        w = window or self.window
        return w + 2 if w > 0 else 0

    async def segment(self, channel: str, rec: SegmentRecord, window: int = 0) -> tuple[bool, int]:
        """(stored, evicted); a sequence number already held is kept as it is. `window`: the channel
        record's (the parts of segments older than window + 2 go)."""
        meta = segment_meta(channel, rec, time.time_ns())
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, apply_segment, self.store, meta, rec, self.keep,
                                          self.part_keep(window))

    async def part(self, channel: str, rec: PartRecord) -> bool:
        """Whether the part was stored (False: held already, or its segment is complete here)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, apply_part, self.store, channel, rec)

    async def init(self, channel: str, rec: InitRecord) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self.store.put_init, channel, rec.rendition, rec.init_id, rec.payload)

    async def channel(self, channel: str, fields: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self.store.apply_channel, channel, fields)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def stream_fields(rec: records.Record) -> dict[str, Any] | None:
    """The channel-record fields a CHANNEL, STREAM_START or STREAM_END record sets (None for the others)."""
    if isinstance(rec, ChannelRecord):
        return rec.fields()
    if isinstance(rec, records.StreamStart):
        return {"live": True, "session": rec.session, "started": rec.started}
    if isinstance(rec, records.StreamEnd):
        return {"live": False, "ended": rec.ended, "ended_deliberately": rec.deliberate}
    return None
