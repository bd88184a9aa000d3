"""Commit notifications: one in-process bus that wakes the relay server's subscriptions and the HTTP
front's blocked LL-HLS requests (no polling).

Who commits tells the bus, on the loop: on an ingest edge the pipeline supervisor relays each worker's
report line (a segment or a CMAF part committed, the channel record changed, the worker exited: the
stream's end is in the record then); on a relaying edge the relay client does after each record it
applied. A subscription `watch`es its channel before it reads the store, so nothing committed after that
read is missed; what a `Waiter` holds is bounded by the channel's renditions (the lowest new sequence
number per rendition, the lowest new (sequence number, part index) per rendition and a "channel record
changed" flag), however far behind its reader is: the store is the queue.

LL-HLS: a committed part is told with `part()`; a relay `Waiter` exposes the parts since it last looked
through `take_parts()` (next to `take()`, which stays as it was). Rendition listeners
(`add_rendition_listener`) are called with (channel, rendition) after every segment or part commit, and
with (channel, "") when the channel record changed (a stream start or end: everything waiting on the
channel looks again); the HTTP front's waiter sets (edged.http.blocking) listen there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Waiter:
    """What changed on one channel since its subscription last looked."""

    __slots__ = ("channel", "_segments", "_parts", "_channel_dirty", "_event")

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self._segments: dict[str, int] = {}  # rendition → the lowest sequence number committed since take()
        self._parts: dict[str, tuple[int, int]] = {}  # rendition → the lowest (seq, index) since take_parts()
        self._channel_dirty = True
        self._event = asyncio.Event()
        self._event.set()

    def _segment(self, rendition: str, seq: int) -> None:
        old = self._segments.get(rendition)
        if old is None or seq < old:
            self._segments[rendition] = seq
        self._event.set()

    def _part(self, rendition: str, seq: int, index: int) -> None:
        old = self._parts.get(rendition)
        if old is None or (seq, index) < old:
            self._parts[rendition] = (seq, index)
        self._event.set()

    def _changed(self) -> None:
        self._channel_dirty = True
        self._event.set()

    def take(self) -> tuple[dict[str, int], bool]:
        """(rendition → lowest new sequence number, whether the channel record changed), then clear (and
        clear the wake-up event)."""
        segments, dirty = self._segments, self._channel_dirty
        self._segments, self._channel_dirty = {}, False
        self._event.clear()
        return segments, dirty

    def take_parts(self) -> dict[str, tuple[int, int]]:
        """rendition → the lowest (sequence number, part index) of the parts committed since the last
        call, then clear. The wake-up event is take()'s to clear: a reader of parts calls both (a part
        wakes `wait()` as a segment does)."""
        parts, self._parts = self._parts, {}
        return parts

    async def wait(self, seconds: float) -> bool:
        """Until something changes (True) or `seconds` pass (False)."""
        if self._event.is_set():
            return True
        try:
            await asyncio.wait_for(self._event.wait(), seconds)
        except TimeoutError:
            return False
        return True


class CommitBus:
    """Channel → the waiters of its subscriptions, plus plain listeners (called with the channel on
    every commit) and rendition listeners (called with (channel, rendition))."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[Waiter]] = {}
        self._listeners: list[Callable[[str], None]] = []
        self._rendition_listeners: list[Callable[[str, str], None]] = []

    def watch(self, channel: str) -> Waiter:
        w = Waiter(channel)
        self._waiters.setdefault(channel, set()).add(w)
        return w

    def unwatch(self, w: Waiter) -> None:
        ws = self._waiters.get(w.channel)
        if ws is not None:
            ws.discard(w)
            if not ws:
                del self._waiters[w.channel]

    def watchers(self, channel: str) -> int:
        return len(self._waiters.get(channel, ()))

    def add_listener(self, callback: Callable[[str], None]) -> None:
        self._listeners.append(callback)

    def add_rendition_listener(self, callback: Callable[[str, str], None]) -> None:
        """`callback(channel, rendition)` after each segment or part commit; rendition "" when the
        channel record changed."""
        self._rendition_listeners.append(callback)

    def segment(self, channel: str, rendition: str, seq: int) -> None:
        """A segment of `channel` was committed to the store."""
        for w in self._waiters.get(channel, ()):
            w._segment(rendition, seq)
        self._notify(channel, rendition)

    def part(self, channel: str, rendition: str, seq: int, index: int) -> None:
        """Part `index` of segment `seq` (the one being written) of `channel` was committed to the store."""
        for w in self._waiters.get(channel, ()):
            w._part(rendition, seq, index)
        self._notify(channel, rendition)

    def channel_changed(self, channel: str) -> None:
        """`channel`'s record changed (renditions, bandwidths, a stream start or end)."""
        for w in self._waiters.get(channel, ()):
            w._changed()
        self._notify(channel, "")

    def _notify(self, channel: str, rendition: str) -> None:
        for cb in self._listeners:
            cb(channel)
        for rcb in self._rendition_listeners:
            rcb(channel, rendition)
