"""A parent's side of one subscription: the records of a channel from a position, replay then live.

`Feed.records()` yields, in order: RESYNC (only when a position asked for is gone), the CHANNEL record,
the replay (per rendition, from the child's position, or from the live window for a rendition the child
does not have), a KEEPALIVE that says the child has caught up, then live records as the commit bus wakes
the feed: STREAM_START / STREAM_END / CHANNEL when the channel record changed, SEGMENTs as they commit,
a KEEPALIVE when idle for `keepalive` seconds. It reads the store (cheap LMDB reads, on the loop) and
holds no records of its own: a slow reader only falls behind in the store, and one further behind than
`max_backlog` segments of a rendition is dropped (SlowChild).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from edged.relay import storeio
from edged.relay.commits import CommitBus, Waiter
from edged.relay.records import Keepalive, Position, Record, Resync, SegmentRecord, StreamEnd, StreamStart
from edged.store.segments import SegmentStore

log = logging.getLogger("edged.relay")

REPLAY_BATCH = 16  # segment metadata read per store transaction


class SlowChild(Exception):
    """The child is further behind than the backlog bound allows."""


class Feed:
    def __init__(self, store: SegmentStore, bus: CommitBus, channel: str, positions: dict[str, Position], *,
                 window: int, keepalive: float, max_backlog: int) -> None:
        self.store = store
        self.bus = bus
        self.channel = channel
        self.positions = positions
        self.window = window  # the receiving edge's default when the channel record has none
        self.keepalive = keepalive
        self.max_backlog = max_backlog
        self.resume = "new"  # what became of the child's position: new | resumed | gone
        self._next: dict[str, int] = {}  # rendition → the next sequence number to send

    def _start_of(self, rendition: str, window: int) -> tuple[int, str]:
        """(first sequence number to send, "new" | "resumed" | "gone") for one rendition."""
        live = self.store.recent(self.channel, rendition, window)
        live_start = live[0].seq if live else 0
        pos = self.positions.get(rendition)
        if pos is None:
            return live_start, "new"
        if not live or pos.next_seq > live[-1].seq:
            return pos.next_seq, "resumed"  # nothing newer held here yet: from there on, live
        oldest = self.store.metas_from(self.channel, rendition, 0, 1)
        if oldest and pos.next_seq >= oldest[0].seq:
            prev = self.store.meta(self.channel, rendition, pos.next_seq - 1) if pos.next_seq > 0 else None
            if prev is None or prev.disc_seq == pos.epoch:
                return pos.next_seq, "resumed"
        return live_start, "gone"

    def _segments(self, rendition: str, limit: int) -> list[Record]:
        out: list[Record] = []
        start = self._next[rendition]
        for meta in self.store.metas_from(self.channel, rendition, start, limit):
            payload = self.store.read(self.channel, rendition, meta.seq)
            if payload is None:  # evicted between the two reads: the next batch goes on from after it
                continue
            out.append(storeio.segment_record(meta, payload))
        return out

    def _advance(self, recs: list[Record]) -> None:
        for rec in recs:
            if isinstance(rec, SegmentRecord):
                self._next[rec.rendition] = rec.seq + 1

    async def records(self) -> AsyncIterator[Record]:
        waiter = self.bus.watch(self.channel)  # before the first read: nothing committed after it is missed
        try:
            async for rec in self._records(waiter):
                yield rec
        finally:
            self.bus.unwatch(waiter)

    async def _records(self, waiter: Waiter) -> AsyncIterator[Record]:
        waiter.take()
        chan = storeio.channel_record(self.store, self.channel)
        if chan is None:
            return
        window = chan.window or self.window
        results: set[str] = set()
        for r in chan.renditions:
            self._next[r.name], result = self._start_of(r.name, window)
            results.add(result)
        self.resume = "gone" if "gone" in results else "resumed" if "resumed" in results else "new"
        if self.resume == "gone":
            yield Resync("the position asked for is no longer held here")
        yield chan
        sent = chan
        for r in chan.renditions:
            while batch := self._segments(r.name, REPLAY_BATCH):
                for rec in batch:
                    yield rec
                self._advance(batch)
                if len(batch) < REPLAY_BATCH:
                    break
        yield Keepalive()  # caught up
        sent_at = time.monotonic()
        while True:
            woke = await waiter.wait(max(0.0, sent_at + self.keepalive - time.monotonic()))
            if not woke or time.monotonic() - sent_at >= self.keepalive:
                # idle, or woken often with nothing to send: the child must hear something at least this often
                yield Keepalive()
                sent_at = time.monotonic()
                if not woke:
                    continue
            segments, dirty = waiter.take()
            if dirty:
                now = storeio.channel_record(self.store, self.channel)
                if now is not None and now != sent:
                    if now.session != sent.session and now.live:
                        yield StreamStart(now.session, now.started)
                    elif sent.live and not now.live:
                        yield StreamEnd(now.ended or 0.0, now.ended_deliberately)
                    yield now
                    sent = now
                    sent_at = time.monotonic()
            for rendition, first in sorted(segments.items()):
                self._next.setdefault(rendition, first)
                newest = self.store.recent(self.channel, rendition, 1)
                if newest and newest[-1].seq - self._next[rendition] >= self.max_backlog:
                    raise SlowChild(f"rendition {rendition}: {newest[-1].seq - self._next[rendition] + 1} segments "
                                    f"behind (at most {self.max_backlog})")
                while batch := self._segments(rendition, REPLAY_BATCH):
                    for rec in batch:
                        yield rec
                    sent_at = time.monotonic()
                    self._advance(batch)
                    if len(batch) < REPLAY_BATCH:
                        break

