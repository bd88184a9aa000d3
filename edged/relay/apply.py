"""A receiving edge's side of one subscription (or push): check each record, commit it, tell the bus.

Records commit through the edge's one writer thread in the order they came; the next record is read
only once the last one is committed, so a slow disk pushes back on the parent through gRPC flow control
instead of piling up here. After each commit the commit bus wakes this edge's own children (a relay
node is a child and a parent at once) and, for a part, this edge's blocked LL-HLS requests: they are
answered from this store, so blocking never crosses the fleet. A part extends this edge's pending
segment; an init segment is stored under its id before anything that names it.
"""

from __future__ import annotations

import time

from edged.relay import metrics, records, storeio
from edged.relay.commits import CommitBus
from edged.relay.records import (
    ChannelRecord,
    InitRecord,
    Keepalive,
    OrderCheck,
    PartRecord,
    Position,
    Record,
    Resync,
    SegmentRecord,
)
from edged.relay.storeio import StoreWriter


class Applier:
    def __init__(self, channel: str, writer: StoreWriter, bus: CommitBus, positions: dict[str, Position]) -> None:
        self.channel = channel
        self.writer = writer
        self.bus = bus
        self.order = OrderCheck(positions, storeio.held_parts(writer.store, channel))
        self.window = 0  # the channel record's playlist window (0: the edge's own)
        self.caught_up = False  # the parent's first keepalive: its replay is done
        self.resynced = False  # the parent no longer held our position
        self.applied = 0  # records committed
        self.last_segment: tuple[str, int] | None = None

    async def apply(self, rec: Record) -> None:
        """Check and commit one record; RecordError when it is out of order."""
        self.order.check(rec)
        size = records.encoded_size(rec)
        metrics.RECORDS.labels(direction="in").inc()
        metrics.BYTES.labels(direction="in").inc(size)
        if isinstance(rec, PartRecord):
            if await self.writer.part(self.channel, rec):
                self.applied += 1
                self.bus.part(self.channel, rec.rendition, rec.seq, rec.index)
            return
        if isinstance(rec, InitRecord):
            await self.writer.init(self.channel, rec)
            return
        if isinstance(rec, SegmentRecord):
            stored, _ = await self.writer.segment(self.channel, rec, self.window)
            if stored:
                if rec.ingest_ns:
                    metrics.LAG.observe(max(0.0, (time.time_ns() - rec.ingest_ns) / 1e9))
                self.applied += 1
                self.last_segment = (rec.rendition, rec.seq)
                self.bus.segment(self.channel, rec.rendition, rec.seq)
            return
        if isinstance(rec, Keepalive):
            self.caught_up = True
            return
        if isinstance(rec, Resync):
            self.resynced = True
            return
        if isinstance(rec, ChannelRecord):
            self.window = rec.window
        fields = storeio.stream_fields(rec)
        if fields is not None:
            await self.writer.channel(self.channel, fields)
            self.applied += 1
            self.bus.channel_changed(self.channel)
