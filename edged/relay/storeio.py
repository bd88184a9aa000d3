"""Between relay records and the segment store: what a parent reads, what a child writes.

Reads are cheap LMDB reads (on the loop, as the HTTP handlers do). Writes go through `StoreWriter`:
one thread for the whole edge, so a child's records commit in the order they came, off the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any

from edged.relay import records
from edged.relay.records import ChannelRecord, Position, RecordError, SegmentRecord
from edged.store.segments import SegmentMeta, SegmentStore


def channel_record(store: SegmentStore, channel: str) -> ChannelRecord | None:
    """The channel record a parent sends; None when the store has none (or one it cannot send)."""
    info = store.channel(channel)
    if info is None:
        return None
    try:
        return ChannelRecord.from_info(info)
    except RecordError:
        return None


def segment_record(meta: SegmentMeta, payload: bytes) -> SegmentRecord:
    return SegmentRecord(
        rendition=meta.rendition, seq=meta.seq, duration=meta.duration, discontinuity=meta.discontinuity,
        disc_seq=meta.disc_seq, start_pts=meta.start_pts, program_date_time=meta.program_date_time,
        ingest_ns=meta.ingest_ns, payload=payload,
    )


def segment_meta(channel: str, rec: SegmentRecord, written_ns: int) -> SegmentMeta:
    """The metadata a child stores: the ingest edge's, with this node's write time and the ingest commit time."""
    return SegmentMeta(
        channel=channel, rendition=rec.rendition, seq=rec.seq, duration=rec.duration,
        discontinuity=rec.discontinuity, disc_seq=rec.disc_seq, start_pts=rec.start_pts,
        program_date_time=rec.program_date_time, size=len(rec.payload), written_ns=written_ns,
        origin_ns=rec.ingest_ns,
    )


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


class StoreWriter:
    """The edge's one relay writer thread: records applied in the order they were handed in."""

    def __init__(self, store: SegmentStore, keep_segments: int) -> None:
        self.store = store
        self.keep = keep_segments
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-writer")

    async def segment(self, channel: str, rec: SegmentRecord) -> tuple[bool, int]:
        """(stored, evicted); a sequence number already held is kept as it is."""
        meta = segment_meta(channel, rec, time.time_ns())
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.store.apply_segment, meta, rec.payload, self.keep)

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
