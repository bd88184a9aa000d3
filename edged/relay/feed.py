"""A parent's side of one subscription: the records of a channel from a position, replay then live.

`Feed.records()` yields, in order: RESYNC (only when a position asked for is gone), the CHANNEL record,
the replay (per rendition, from the child's position, or from the live window for a rendition the child
does not have: its complete segments, then the committed parts of the segment being written), a
KEEPALIVE that says the child has caught up, then live records as the commit bus wakes the feed:
STREAM_START / STREAM_END / CHANNEL when the channel record changed, then per rendition that committed
something, new SEGMENTs, then new PARTs of the segment being written; a KEEPALIVE when idle for
`keepalive` seconds. The INIT record of an init segment comes once per subscription, just before the
first SEGMENT or PART that names it. A CMAF segment whose parts the parent still holds goes as its
parts (those not sent yet) and then a SEGMENT without payload that the child joins from them: the
child holds every part the parent does, and a segment's bytes cross the fleet once.

It reads the store (cheap LMDB reads, on the loop) and holds no records of its own: the store is the
queue (what the bus says is only which renditions to look at; which segments and parts exist beyond
what was sent is read from the store). A slow reader only falls behind in the store, and one further
behind than `max_backlog` segments of a rendition is dropped (SlowChild).

Order within a rendition: the pending segment is read before the complete ones, so every segment
before it is committed by then and goes first; a part is never sent after its own segment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator

from edged.log import QuietLog
from edged.relay import storeio
from edged.relay.commits import CommitBus, Waiter
from edged.relay.records import InitRecord, Keepalive, Position, Record, Resync, StreamEnd, StreamStart
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
        # rendition → (seq, parts sent, their bytes) of the segment whose parts went last
        self._parts: dict[str, tuple[int, int, int]] = {}
        self._inits: set[tuple[str, str]] = set()  # (rendition, init id) sent in this subscription
        self._quiet = QuietLog(log)

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

    def _init(self, rendition: str, init: str) -> list[Record] | None:
        """The INIT record to send before something naming `init` ([] when sent already or none is
        named); None when this store lacks it (what names it cannot be sent)."""
        if not init or (rendition, init) in self._inits:
            return []
        payload = self.store.read_init(self.channel, rendition, init)
        if payload is None:
            self._quiet.warning("init:missing", "relay: channel=%s rendition=%s: init segment %s is not held here",
                                self.channel, rendition, init)
            return None
        self._inits.add((rendition, init))
        return [InitRecord(rendition, init, payload)]

    def _segments(self, rendition: str) -> Iterator[Record]:
        """The complete segments from the next one to send on, in batches, each after the INIT it names
        and after its parts that were not sent yet (when they are all still held here: the SEGMENT then
        carries no payload, the child joins the parts; else it carries its bytes)."""
        while True:
            metas = self.store.metas_from(self.channel, rendition, self._next[rendition], REPLAY_BATCH)
            for meta in metas:
                self._next[rendition] = meta.seq + 1
                if meta.fmt != "cmaf" or not meta.parts:
                    payload = self.store.read(self.channel, rendition, meta.seq)
                    if payload is not None:  # (else evicted between the two reads: the next one goes on)
                        yield storeio.segment_record(meta, payload)
                    continue
                init = self._init(rendition, meta.init)
                if init is None:  # its init segment is not held here: a gap (as a shed rung leaves)
                    continue
                seq, sent, size = self._parts.get(rendition, (-1, 0, 0))
                if seq != meta.seq:
                    sent, size = 0, 0
                chunks: list[bytes] = []
                for index in range(sent, len(meta.parts)):
                    chunk = self.store.read_part(self.channel, rendition, meta.seq, index)
                    if chunk is None:  # its parts are gone (older than the parts kept): the segment's bytes
                        break
                    chunks.append(chunk)
                else:
                    if size + sum(map(len, chunks)) == meta.size:
                        yield from init
                        for index, chunk in enumerate(chunks, start=sent):
                            yield storeio.part_record(rendition, meta, index, chunk, meta.ingest_ns)
                        self._parts[rendition] = (meta.seq, len(meta.parts), meta.size)
                        yield storeio.segment_record(meta, b"", from_parts=True)
                        continue
                payload = self.store.read(self.channel, rendition, meta.seq)
                if payload is not None:
                    yield from init
                    yield storeio.segment_record(meta, payload)
            if len(metas) < REPLAY_BATCH:
                return

    def _pending_parts(self, rendition: str) -> Iterator[Record]:
        """Everything new of one rendition: complete segments, then the committed parts of the one being
        written that were not sent yet."""
        pending = self.store.pending(self.channel, rendition)  # first: all before it are committed now
        yield from self._segments(rendition)
        if pending is None or pending.seq < self._next[rendition]:
            return  # none, or it completed meanwhile (and went as a segment)
        seq, sent, size = self._parts.get(rendition, (-1, 0, 0))
        if seq != pending.seq:
            sent, size = 0, 0
        for index in range(sent, len(pending.parts)):
            payload = self.store.read_part(self.channel, rendition, pending.seq, index)
            if payload is None:
                return  # gone with its segment: the next look sends what came of it
            init = self._init(rendition, pending.init)
            if init is None:
                return
            yield from init
            size += len(payload)
            self._parts[rendition] = (pending.seq, index + 1, size)
            yield storeio.part_record(rendition, pending, index, payload, time.time_ns())

    async def records(self) -> AsyncIterator[Record]:
        waiter = self.bus.watch(self.channel)  # before the first read: nothing committed after it is missed
        try:
            async for rec in self._records(waiter):
                yield rec
        finally:
            self.bus.unwatch(waiter)

    async def _records(self, waiter: Waiter) -> AsyncIterator[Record]:
        waiter.take()
        waiter.take_parts()
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
            for rec in self._pending_parts(r.name):
                yield rec
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
            parts = waiter.take_parts()
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
            firsts = dict(segments)
            for rendition, (seq, _) in parts.items():
                firsts[rendition] = min(seq, firsts.get(rendition, seq))
            for rendition, first in sorted(firsts.items()):
                self._next.setdefault(rendition, first)
                newest = self.store.recent(self.channel, rendition, 1)
                if newest and newest[-1].seq - self._next[rendition] >= self.max_backlog:
                    raise SlowChild(f"rendition {rendition}: {newest[-1].seq - self._next[rendition] + 1} segments "
                                    f"behind (at most {self.max_backlog})")
                for rec in self._pending_parts(rendition):
                    yield rec
                    sent_at = time.monotonic()
