"""A CMAF channel written into a real store by hand (what the pipeline worker commits), with the commit
bus told as `edged.app` tells it, for the LL-HLS HTTP tests."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from edged.protocols.mp4box import box
from edged.relay.commits import CommitBus
from edged.store.segments import PendingMeta, SegmentMeta, SegmentStore, cmaf_init_id

CHANNEL = "chan"
PART = 0.25  # s: 4 parts per 1 s segment
PARTS_PER_SEGMENT = 4


def fragment(rendition: str, seq: int, index: int) -> bytes:
    """A moof+mdat whose bytes name their part (real box framing: the HTTP side splits segments on it)."""
    tag = f"{rendition}:{seq}:{index}".encode()
    return box(b"moof", box(b"mfhd", (seq * 100 + index).to_bytes(8, "big"))) + box(b"mdat", tag * 16)


@dataclass
class Writer:
    """One channel's commits: parts of the segment in progress, then the segment, per rendition."""

    store: SegmentStore
    bus: CommitBus
    renditions: tuple[str, ...] = ("source", "low")
    window: int = 6
    target: int = 1
    t0: float = field(default_factory=lambda: time.time() - 100)
    inits: dict[str, str] = field(default_factory=dict)
    _pending: dict[str, PendingMeta] = field(default_factory=dict)

    def start(self, **record: object) -> None:
        for r in self.renditions:
            init = b"ftyp-and-moov-of-" + r.encode()
            self.inits[r] = cmaf_init_id(init)
            self.store.put_init(CHANNEL, r, self.inits[r], init)
        fields: dict[str, object] = dict(live=True, session="s1", format="cmaf", part_target=PART,
                                         target_duration=self.target, window=self.window, segment_seconds=PART * PARTS_PER_SEGMENT,
                                         renditions=[{"name": r, "bandwidth": 1000} for r in self.renditions])
        fields.update(record)
        self.store.update_channel(CHANNEL, **fields)
        self.bus.channel_changed(CHANNEL)

    def part(self, rendition: str, seq: int, independent: bool | None = None, gap: bool = False) -> bytes:
        """Commit the next part of segment `seq`; returns its bytes (`gap`: an ingest gap, stored empty)."""
        old = self._pending.get(rendition)
        parts = old.parts if old is not None and old.seq == seq else ()
        index = len(parts)
        held = old.gaps if old is not None and old.seq == seq else ()
        pending = PendingMeta(seq=seq, start_pts=float(seq), program_date_time=self.t0 + seq, discontinuity=False,
                              disc_seq=0, init=self.inits[rendition],
                              parts=(*parts, (PART, index == 0 if independent is None else independent)),
                              gaps=(*held, index) if gap else held)
        payload = b"" if gap else fragment(rendition, seq, index)
        self.store.put_part(CHANNEL, rendition, pending, payload)
        self._pending[rendition] = pending
        self.bus.part(CHANNEL, rendition, seq, index)
        return payload

    def segment(self, rendition: str, seq: int) -> SegmentMeta:
        """Complete segment `seq` (committing its missing parts first)."""
        while (p := self._pending.get(rendition)) is None or p.seq != seq or len(p.parts) < PARTS_PER_SEGMENT:
            self.part(rendition, seq)
        pending = self._pending.pop(rendition)
        payload = b"".join(self.store.read_part(CHANNEL, rendition, seq, i) or b"" for i in range(len(pending.parts)))
        meta = SegmentMeta(channel=CHANNEL, rendition=rendition, seq=seq, duration=PART * len(pending.parts),
                           discontinuity=False, disc_seq=0, start_pts=float(seq), program_date_time=self.t0 + seq,
                           size=len(payload), written_ns=time.time_ns(), fmt="cmaf", init=self.inits[rendition],
                           parts=pending.parts, gaps=pending.gaps)
        self.store.put_segment(meta, payload, keep=self.window + 4, part_keep=self.window + 2)
        self.bus.segment(CHANNEL, rendition, seq)
        return meta

    def segments(self, upto: int, start: int = 0) -> None:
        for seq in range(start, upto):
            for r in self.renditions:
                self.segment(r, seq)

    def end(self) -> None:
        self.store.update_channel(CHANNEL, live=False, ended=time.time(), ended_deliberately=True)
        self.bus.channel_changed(CHANNEL)
