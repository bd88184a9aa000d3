"""Live streams across the fleet: which channel is live on which node, its placement, and why.

Three inputs, all on the loop:
  * the edge's StreamEvents (started, with the placement it applied; ended);
  * the edge's reports (their `live_channels`), which reconcile what an event could not say: a stream
    that started while the controller was away is added (placement unknown), one the controller
    missed the end of is ended;
  * node health: a lost node's streams are ended (its broadcasters reconnect elsewhere and are placed
    there).
Changes are persisted in the background, in order (as the registry does); `drain()` waits for them.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import replace

from originctl.model import NodeState, Report, StreamRecord
from originctl.server.registry import NodeEntry
from originctl.server.store import Store
from originctl.server.writes import PendingWrites

log = logging.getLogger("originctl.streams")

# A report built this long after a stream's start that does not list it means the stream ended (the
# edge sends events and reports in order, so only a report built before the start can lack it).
REPORT_SLACK_MS = 1000

ChangeListener = Callable[[], None]


def new_stream_id() -> str:
    return "st-" + secrets.token_hex(6)


class StreamBook:
    def __init__(self, store: Store, *, wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self._wall = wall
        self._by_node: dict[str, dict[str, StreamRecord]] = {}
        self._carriers: dict[str, set[str]] = {}  # channel -> node ids
        self._writes = PendingWrites()
        self.listeners: list[ChangeListener] = []

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)

    async def load(self) -> None:
        """Streams left live by the previous run; the edges' next reports confirm or end them."""
        for rec in await self.store.list_streams(live_only=True, limit=1_000_000):
            self._index(rec)

    async def drain(self) -> None:
        await self._writes.drain()

    def _changed(self) -> None:
        for cb in self.listeners:
            cb()

    # --- lookups ----------------------------------------------------------------------------------

    def live(self) -> list[StreamRecord]:
        out = [r for recs in self._by_node.values() for r in recs.values()]
        out.sort(key=lambda r: (-r.started_unix_ms, r.channel, r.node_id))
        return out

    def on_node(self, node_id: str) -> dict[str, StreamRecord]:
        return self._by_node.get(node_id, {})

    def carriers(self, channel: str) -> set[str]:
        return self._carriers.get(channel, set())

    def channels_by_node(self) -> dict[str, frozenset[str]]:
        return {n: frozenset(recs) for n, recs in self._by_node.items() if recs}

    def transcodes_on(self, node_id: str) -> int:
        return sum(r.mode == "transcode" for r in self.on_node(node_id).values())

    # --- changes ----------------------------------------------------------------------------------

    def _index(self, rec: StreamRecord) -> None:
        self._by_node.setdefault(rec.node_id, {})[rec.channel] = rec
        self._carriers.setdefault(rec.channel, set()).add(rec.node_id)

    def _unindex(self, rec: StreamRecord) -> None:
        recs = self._by_node.get(rec.node_id, {})
        if recs.get(rec.channel) is rec:
            del recs[rec.channel]
            if not recs:
                self._by_node.pop(rec.node_id, None)
            nodes = self._carriers.get(rec.channel)
            if nodes is not None:
                nodes.discard(rec.node_id)
                if not nodes:
                    del self._carriers[rec.channel]

    def _end(self, rec: StreamRecord, at_ms: int, reason: str) -> StreamRecord:
        self._unindex(rec)
        ended = replace(rec, ended_unix_ms=max(at_ms, rec.started_unix_ms, 1), end_reason=reason)
        log.info("node %s: channel=%s ended: %s", rec.node_id, rec.channel, reason)
        return ended

    def async_started(self, rec: StreamRecord) -> StreamRecord:
        """The edge started a stream (rec.id is ignored when the stream is already known from a report)."""
        saves = []
        old = self.on_node(rec.node_id).get(rec.channel)
        update = old is not None and bool(old.protocol) and old.started_unix_ms == rec.started_unix_ms
        if old is not None and (update or not old.protocol):
            # the same session again (its renditions, once the edge probed the source), or one known
            # only from a report so far: this event completes the record
            self._unindex(old)
            rec = replace(rec, id=old.id)
        elif old is not None:  # the end of the previous session was never heard of
            saves.append(self._end(old, rec.started_unix_ms, "replaced by a new publish on the same node"))
        self._index(rec)
        saves.append(rec)
        self._writes.spawn(self.store.save_streams(saves))
        if update:
            self._changed()
            return rec
        what = f"{rec.mode} ({rec.encoder})" if rec.encoder else rec.mode
        self._writes.spawn(self.store.add_event(rec.node_id, "stream", f"channel {rec.channel} started over "
                                           f"{rec.protocol or '?'}: {what}: {rec.reason}", self._now_ms()))
        log.info("node %s: channel=%s started over %s: %s: %s", rec.node_id, rec.channel, rec.protocol, what,
                 rec.reason)
        self._changed()
        return rec

    def async_ended(self, node_id: str, channel: str, at_ms: int, reason: str) -> None:
        old = self.on_node(node_id).get(channel)
        if old is None:
            return
        self._writes.spawn(self.store.save_streams([self._end(old, at_ms, reason)]))
        self._writes.spawn(self.store.add_event(node_id, "stream", f"channel {channel} ended: {reason}", self._now_ms()))
        self._changed()

    def async_node_changed(self, entry: NodeEntry, previous: NodeState | None) -> None:
        """A registry listener: a node that turns lost has its streams ended."""
        if entry.health.state is NodeState.LOST and previous not in (None, NodeState.LOST):
            self.async_node_lost(entry.id, entry.health.state_reason)

    def async_node_lost(self, node_id: str, reason: str) -> None:
        recs = list(self.on_node(node_id).values())
        if not recs:
            return
        now = self._now_ms()
        self._writes.spawn(self.store.save_streams([self._end(r, now, f"node lost: {reason}") for r in recs]))
        self._changed()

    def async_report(self, node_id: str, report: Report) -> None:
        """Reconcile with the channels the edge says are live (cheap when nothing differs)."""
        live = report.node.live_channels
        recorded = self._by_node.get(node_id)
        if not live and not recorded:
            return
        live_set = set(live)
        if recorded is not None and live_set == recorded.keys():
            return
        built_ms = report.sent_unix_us // 1000 if report.sent_unix_us else self._now_ms()
        saves: list[StreamRecord] = []
        for ch, rec in list((recorded or {}).items()):
            if ch not in live_set and built_ms > rec.started_unix_ms + REPORT_SLACK_MS:
                saves.append(self._end(rec, built_ms, "no longer live in the edge's report"))
        for ch in sorted(live_set - (recorded or {}).keys()):
            rec = StreamRecord(
                id=new_stream_id(), channel=ch, node_id=node_id, started_unix_ms=built_ms, mode="unknown",
                reason="reported live by the edge without a start event (started while the controller was "
                       "unreachable?): placement decided by the edge")
            self._index(rec)
            saves.append(rec)
        if saves:
            self._writes.spawn(self.store.save_streams(saves))
            self._changed()
