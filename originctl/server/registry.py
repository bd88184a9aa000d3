"""The live fleet: every enrolled node, its latest report, its health, and its open stream.

Loop-only: methods named `async_*` are plain functions that must run on the event loop thread; they
never block. Durable changes (state transitions and their events, last-report times) go to the store
in the background, in order; `drain()` waits for them. `listeners` hear of every state change and of
changed node info (the stream book ends a lost node's streams; the router rebuilds its table).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from originctl.errors import Conflict, NotFound
from originctl.metrics import ControllerMetrics
from originctl.model import Node, NodeInfo, NodeRecord, NodeState, Report
from originctl.server import health
from originctl.server.store import Store
from originctl.server.writes import PendingWrites

log = logging.getLogger("originctl.registry")

TOUCH_INTERVAL = 5.0  # s between writes of last-report times to the store
MIN_SWEEP = 0.05  # s: the fastest the silence check runs (tests use 0.3 s heartbeats)
MAX_SWEEP = 1.0  # s
OUTBOX_SIZE = 64  # commands queued for one edge before we drop its connection

# (entry, previous state): previous is None when the node's info changed rather than its state
NodeListener = Callable[["NodeEntry", NodeState | None], None]


@dataclass(eq=False, slots=True)
class Session:
    """One open Connect stream; `outbox` holds messages for the edge (the servicer's writer drains it)."""

    node_id: str
    peer: str
    pulse_seconds: float = 2.0  # the edge hears from us at least this often (a Pulse when nothing else)
    outbox: asyncio.Queue[Any] = field(default_factory=lambda: asyncio.Queue(OUTBOX_SIZE))
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def async_send(self, message: Any) -> bool:
        """Queue a message for the edge; False (and the session is closed) when the edge is not reading."""
        try:
            self.outbox.put_nowait(message)
            return True
        except asyncio.QueueFull:
            self.closed.set()
            return False


@dataclass(slots=True)
class NodeEntry:
    record: NodeRecord
    health: health.Health
    state_since_ms: int
    last_report: Report | None = None
    last_report_ms: int = 0  # wall clock, for people
    last_report_mono: float = 0.0  # monotonic, for the silence rule
    session: Session | None = None
    touched: bool = False

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def info(self) -> NodeInfo:
        return self.record.info

    @property
    def interval(self) -> float:
        return max(0.05, self.record.info.heartbeat_seconds or 2.0)


class Registry:
    def __init__(self, store: Store, metrics: ControllerMetrics, policy: health.HealthPolicy | None = None,
                 *, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.metrics = metrics
        self.policy = policy or health.HealthPolicy()
        self._clock = clock
        self._wall = wall
        self.nodes: dict[str, NodeEntry] = {}
        self._writes = PendingWrites()
        self._sweeper: asyncio.Task[None] | None = None
        self._serving = True  # False from start(serving=False) until async_serving(): nobody is declared lost
        self.listeners: list[NodeListener] = []

    def _notify(self, entry: NodeEntry, previous: NodeState | None) -> None:
        for cb in self.listeners:
            try:
                cb(entry, previous)
            except Exception:  # a listener's bug must not break health tracking
                log.exception("node listener failed")

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self, *, serving: bool = True) -> None:
        """Load the nodes as the store has them. With serving=False, silence is not judged until
        async_serving(): the edges cannot re-attach before the edge port listens."""
        now = self._clock()
        for rec in await self.store.list_nodes():
            h = health.restored(rec.state, rec.state_reason, rec.draining, reported=rec.last_report_unix_ms > 0)
            # silence is counted from now: the controller was away, not the node
            self.nodes[rec.id] = NodeEntry(rec, h, rec.state_since_unix_ms, last_report_ms=rec.last_report_unix_ms,
                                           last_report_mono=now)
        self._serving = serving
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="originctl-sweep")

    def async_serving(self) -> None:
        """The edge port listens: the silence of nodes not attached yet counts from now, so each restored node
        has the whole lost rule (3 heartbeats) to re-attach before it is declared lost."""
        now = self._clock()
        for entry in self.nodes.values():
            if entry.session is None:
                entry.last_report_mono = now
        self._serving = True

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for entry in self.nodes.values():
            if entry.session is not None:
                entry.session.closed.set()
        self._touch()
        await self.drain()

    async def drain(self) -> None:
        """Wait until every background store write issued so far has finished."""
        await self._writes.drain()

    # --- lookups ----------------------------------------------------------------------------------

    def get(self, node_id: str) -> NodeEntry | None:
        return self.nodes.get(node_id)

    def find(self, ref: str) -> NodeEntry:
        """A node by ID, unique ID prefix, or unique name."""
        if ref in self.nodes:
            return self.nodes[ref]
        hits = [e for e in self.nodes.values() if e.id.startswith(ref)] or \
               [e for e in self.nodes.values() if e.info.name == ref]
        if not hits:
            raise NotFound(f"no node {ref!r}: list them with `originctl nodes`")
        if len(hits) > 1:
            raise Conflict(f"{ref!r} matches {len(hits)} nodes ({', '.join(sorted(e.id for e in hits)[:5])}): "
                           "give more of the ID")
        return hits[0]

    def view(self, entry: NodeEntry) -> Node:
        rec = entry.record
        return Node(
            id=rec.id, info=rec.info, state=entry.health.state, state_reason=entry.health.state_reason,
            state_since_unix_ms=entry.state_since_ms, last_report_unix_ms=entry.last_report_ms,
            connected=entry.session is not None, draining=entry.health.draining,
            peer=entry.session.peer if entry.session else "", enrolled_unix_ms=rec.enrolled_unix_ms,
            last_report=entry.last_report, certificate_not_after_unix_ms=rec.cert_not_after_unix_ms,
        )

    def views(self) -> list[Node]:
        return [self.view(e) for e in self.nodes.values()]

    # --- changes ----------------------------------------------------------------------------------

    def _apply(self, entry: NodeEntry, new: health.Health) -> None:
        old_state = entry.health.state
        entry.health = new
        if new.state is old_state:
            return
        at = self._now_ms()
        entry.state_since_ms = at
        reason = new.state_reason
        self.metrics.transitions.labels(new.state.value).inc()
        log.info("node %s (%s): %s -> %s: %s", entry.id, entry.info.name, old_state.value, new.state.value, reason)
        self._writes.spawn(self.store.record_transition(entry.id, old_state, new.state, reason, at))
        self._notify(entry, old_state)

    def async_add(self, record: NodeRecord) -> NodeEntry:
        """A node that just enrolled."""
        entry = NodeEntry(record, health.Health(), record.state_since_unix_ms, last_report_mono=self._clock())
        self.nodes[record.id] = entry
        return entry

    def async_attach(self, node_id: str, info: NodeInfo, session: Session) -> NodeEntry:
        """The node opened a stream (and said Hello); a previous stream of the same node is closed."""
        entry = self.nodes[node_id]
        if entry.session is not None and entry.session is not session:
            entry.session.closed.set()
        entry.session = session
        entry.last_report_mono = self._clock()  # the silence clock restarts with a connection
        if info != entry.record.info:
            entry.record = replace(entry.record, info=info)
            self._writes.spawn(self.store.update_node_info(node_id, info))
            self._notify(entry, None)
        self.metrics.connections.inc()
        self._writes.spawn(self.store.add_event(node_id, "connected", f"from {session.peer}", self._now_ms()))
        return entry

    def async_detach(self, node_id: str, session: Session) -> None:
        entry = self.nodes.get(node_id)
        if entry is None or entry.session is not session:
            return
        entry.session = None
        self._writes.spawn(self.store.add_event(node_id, "disconnected", f"stream from {session.peer} ended",
                                           self._now_ms()))

    def async_event(self, node_id: str, kind: str, reason: str) -> None:
        """Record an event about a node (in the background)."""
        self._writes.spawn(self.store.add_event(node_id, kind, reason, self._now_ms()))

    def async_report(self, node_id: str, report: Report) -> None:
        """The hot path: one report from one node."""
        started = time.perf_counter()
        entry = self.nodes[node_id]
        entry.last_report = report
        entry.last_report_mono = self._clock()
        now_wall = self._wall()
        entry.last_report_ms = int(now_wall * 1000)
        entry.touched = True
        self._apply(entry, health.observe(entry.health, report, self.policy))
        self.metrics.reports.inc()
        if report.sent_unix_us:
            self.metrics.report_delay.observe(max(0.0, now_wall - report.sent_unix_us / 1e6))
        self.metrics.report_processing.observe(time.perf_counter() - started)

    def async_goodbye(self, node_id: str, reason: str) -> None:
        entry = self.nodes.get(node_id)
        if entry is not None:
            self._apply(entry, health.goodbye(entry.health, reason))

    def async_set_draining(self, node_id: str, draining: bool) -> NodeEntry:
        entry = self.find(node_id)
        if entry.health.draining != draining:
            self._writes.spawn(self.store.set_draining(entry.id, draining))
            state = entry.health.state
            self._apply(entry, health.set_draining(entry.health, draining))
            if entry.health.state is state:  # e.g. a lost node: no transition, but routing must know
                self._notify(entry, state)
        return entry

    def async_sweep(self) -> None:
        """Mark nodes lost that stayed silent too long."""
        if not self._serving:
            return
        now = self._clock()
        intervals = self.policy.lost_after_intervals
        for entry in self.nodes.values():
            silent = now - entry.last_report_mono
            # cheap pre-check first: this visits every node several times per heartbeat
            if entry.health.lost or silent < intervals * entry.interval:
                continue
            self._apply(entry, health.silence(entry.health, silent, entry.interval, self.policy))

    def _touch(self) -> None:
        dirty = [(e.id, e.last_report_ms) for e in self.nodes.values() if e.touched]
        for e in self.nodes.values():
            e.touched = False
        if dirty:
            self._writes.spawn(self.store.touch_nodes(dirty))

    async def _sweep_loop(self) -> None:
        next_touch = self._clock() + TOUCH_INTERVAL
        while True:
            fastest = min((e.interval for e in self.nodes.values()), default=MAX_SWEEP * 4)
            period = min(MAX_SWEEP, max(MIN_SWEEP, fastest / 4))
            woke = self._clock() + period
            await asyncio.sleep(period)
            self.metrics.loop_lag.observe(max(0.0, self._clock() - woke))
            try:
                self.async_sweep()
                if self._clock() >= next_touch:
                    next_touch = self._clock() + TOUCH_INTERVAL
                    self._touch()
            except Exception:  # a bug here must not stop lost detection for good
                log.exception("sweep failed")
