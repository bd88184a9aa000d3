"""Fleet-wide numbering: each channel's next HLS sequence number and discontinuity count, fleet-wide.

The ingest edge tells the controller after every segment commit (a Numbering message on its stream);
the controller keeps the largest it heard (in memory and, in the background, in the store, where the
numbers only ever go up), and answers every allowed publish with them (AuthorizePublishResponse), so
the edge's worker starts at max(its own next sequence, the fleet's) after a discontinuity: a broadcaster
who moves to another ingest edge continues the numbering fleet-wide, and no sequence number is used
twice for different segments.

Loop-only; writes go to the store in the background (`drain()` waits for them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from originctl.server.store import Store
from originctl.server.writes import PendingWrites

log = logging.getLogger("originctl.numbering")

MAX_SEQ = (1 << 63) - 1  # SQLite integers are signed 64-bit


class NumberingBook:
    def __init__(self, store: Store, *, wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self._wall = wall
        self._numbers: dict[str, tuple[int, int]] = {}
        self._writes = PendingWrites()

    async def load(self) -> None:
        for channel, next_seq, disc_seq in await self.store.list_numbering():
            self._numbers[channel] = (next_seq, disc_seq)

    async def drain(self) -> None:
        await self._writes.drain()

    def get(self, channel: str) -> tuple[int, int]:
        """(next sequence number, discontinuity count); (0, 0) for a channel that never committed a segment."""
        return self._numbers.get(channel, (0, 0))

    def async_commit(self, node_id: str, channel: str, next_seq: int, disc_seq: int) -> None:
        """`node_id` committed a segment of `channel`: the numbers only go up."""
        next_seq, disc_seq = min(max(0, next_seq), MAX_SEQ), min(max(0, disc_seq), MAX_SEQ)
        old_next, old_disc = self.get(channel)
        new = (max(old_next, next_seq), max(old_disc, disc_seq))
        if new == (old_next, old_disc):
            return
        self._numbers[channel] = new
        self._writes.spawn(self.store.save_numbering([(channel, new[0], new[1], node_id, int(self._wall() * 1000))]))
