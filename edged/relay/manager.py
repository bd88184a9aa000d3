"""The child side of the relay: subscriptions made on demand, kept while used, moved when a parent fails.

`RelayManager.request(channel)` is what the HTTP front (and this edge's relay server, for a child of
its own) asks before serving a channel with no publisher here:

  * the first request for a channel subscribes to the parent the RelayDirectory names, and waits until
    the first playlist can be rendered (the parent's replay is in and a rendition is listed), at most
    `relay.start_timeout`; every later request finds the subscription (one per channel, however many
    viewers). Answers: READY (served at once), WAITED (served after waiting), ABSENT (not live anywhere:
    404, remembered for NEGATIVE_TTL), UNAVAILABLE (not ready in time, or over `relay.max_subscriptions`:
    503 with Retry-After);
  * `relay.linger_seconds` after its last request (and once no child of ours uses it) a subscription is
    dropped; its segments go later by normal eviction, and the channel record is marked ended here so a
    stale copy is never served as live;
  * a parent that fails (stall: no record or keepalive for `relay.stall_timeout`; an error; a bad record)
    is replaced at once: `parent_for(channel, exclude=(failed, ...))`, then resume by position from what
    the store holds. A controller that cannot be reached does not stop a running subscription, and new
    ones use the last map it pushed (the directory's fallback);
  * when the controller's map changes, running subscriptions whose parent changed move (reason "plan").

`Pusher` is the dial reversed: for the channels the directory says this (unreachable) ingest edge must
push up, it streams a Feed to that relay node while the channel is live here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from edged.config import RelayConfig
from edged.log import QuietLog
from edged.relay import metrics, storeio
from edged.relay.apply import Applier
from edged.relay.client import ChannelNotFound, RelayClient, RelayFailure
from edged.relay.commits import CommitBus
from edged.relay.feed import Feed
from edged.relay.gate import Availability
from edged.relay.records import ChannelRecord, Position, Record, RecordError, Resync, StreamEnd
from edged.relay.storeio import StoreWriter
from edged.store.segments import SegmentStore

log = logging.getLogger("edged.relay")

NEGATIVE_TTL = 2.0  # s a channel found live nowhere is answered 404 without asking again
NEGATIVE_MAX = 4096  # such channels remembered at most (the table is cleared past it)
EXCLUDE_RECENT = 3  # parents that just failed, passed to parent_for
RETRY_DELAYS = (0.0, 0.2, 0.5, 1.0, 2.0)  # s before the 1st, 2nd... retry after consecutive failures
# New subscriptions (each asks the controller for a parent): a viewer requesting made-up channel names must
# not turn into a controller call per request; past the burst, requests for channels not here get 503
NEW_PER_SECOND = 20.0
NEW_BURST = 40.0
SOON_AHEAD = 2  # a segment request at most this far past the newest held waits for it (a player switching edges)
SOON_WAIT = 1.0  # s it waits at most
PUSH_WAIT = 0.1  # s between looks for a channel an undialable parent is to push here
STABLE_AFTER = 10.0  # s a stream must have lasted for the retry delays to start over
PLAN_CHECK_DEADLINE = 2.0  # s for one re-plan check of a running subscription


class Peer(Protocol):
    @property
    def node_id(self) -> str: ...
    @property
    def address(self) -> str: ...


class Directory(Protocol):
    """edged.agent.relaymap.RelayDirectory, as the relay uses it (edged/relay does not import the agent)."""

    async def parent_for(self, channel: str, exclude: tuple[str, ...] = ()) -> Peer | None: ...
    def push_targets(self) -> dict[str, Any]: ...
    def add_listener(self, callback: Callable[[], None]) -> None: ...
    def report_relaying(self, channel: str, role: str, parent_node_id: str, children: int) -> None: ...


@dataclass(eq=False)
class _Sub:
    channel: str
    path: tuple[str, ...]
    last_used: float
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # ready, or found absent
    switch: asyncio.Event = field(default_factory=asyncio.Event)  # the plan names another parent
    absent: bool = False
    parent: Peer | None = None
    task: asyncio.Task[None] | None = None
    lingered: bool = False
    checking: bool = False


class RelayManager:
    def __init__(self, cfg: RelayConfig, store: SegmentStore, bus: CommitBus, writer: StoreWriter,
                 directory: Directory, client: Callable[[], RelayClient | None], *,
                 node_id: Callable[[], str], is_local: Callable[[str], bool],
                 children: Callable[[str], int] = lambda channel: 0) -> None:
        self.cfg = cfg
        self.store = store
        self.bus = bus
        self.writer = writer
        self.directory = directory
        self.client = client
        self.node_id = node_id
        self.is_local = is_local
        self.children = children  # this edge's own children on a channel (they keep it subscribed)
        self._subs: dict[str, _Sub] = {}
        self._absent: dict[str, float] = {}  # channel → monotonic time until which it is answered 404
        self._sweeper: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._quiet = QuietLog(log)
        self._tokens = NEW_BURST
        self._refilled = time.monotonic()
        self._commits: dict[str, asyncio.Event] = {}  # channel → set at its next commit (segment_soon waiters)
        bus.add_listener(self._committed)

    def _admit_new(self, now: float) -> bool:
        self._tokens = min(NEW_BURST, self._tokens + (now - self._refilled) * NEW_PER_SECOND)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.directory.add_listener(self._plan_changed)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="relay-linger")

    async def stop(self) -> None:
        self._stopping = True
        tasks = [t for t in (self._sweeper, *(s.task for s in self._subs.values()), *self._checks) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    # --- what the HTTP front and the relay server ask -------------------------------------------------

    def active(self, channel: str) -> bool:
        """A ready subscription carries `channel` here."""
        sub = self._subs.get(channel)
        return sub is not None and sub.ready.is_set()

    def subscriptions(self) -> dict[str, str]:
        """channel → the node ID of its parent now ("" while it has none)."""
        return {ch: (s.parent.node_id if s.parent else "") for ch, s in self._subs.items()}

    def touch(self, channel: str) -> None:
        sub = self._subs.get(channel)
        if sub is not None:
            sub.last_used = time.monotonic()
            self._report(sub)

    def _committed(self, channel: str) -> None:
        ev = self._commits.pop(channel, None)
        if ev is not None:
            ev.set()

    async def segment_soon(self, channel: str, rendition: str, seq: int) -> bool:
        """A player (or a CDN) that moved here from another edge may ask for a segment that edge listed a
        moment before this one has it: for a relayed channel, a number at most SOON_AHEAD past the newest
        held waits up to SOON_WAIT for it. Anything else is answered at once (False)."""
        if not self.active(channel):
            return False
        newest = self.store.recent(channel, rendition, 1)
        if not newest or not newest[-1].seq < seq <= newest[-1].seq + SOON_AHEAD:
            return False
        deadline = time.monotonic() + SOON_WAIT
        while (left := deadline - time.monotonic()) > 0:
            ev = self._commits.setdefault(channel, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ev.wait(), left)
            if self.store.meta(channel, rendition, seq) is not None:
                return True
        return False

    def children_changed(self, channel: str) -> None:
        """This edge's relay server gained or lost a child on `channel`: a subscription it uses stays alive
        (and reports role "child" with the number of children); else this edge is a parent only (the
        ingest edge, or a node a channel is pushed to)."""
        if channel in self._subs:
            self.touch(channel)
            return
        n = self.children(channel)
        try:
            self.directory.report_relaying(channel, "parent" if n else "", "", n)
        except Exception:
            log.exception("relay: report_relaying failed for channel=%s", channel)

    async def request(self, channel: str, path: tuple[str, ...] = ()) -> Availability:
        if self.is_local(channel):
            return Availability.LOCAL
        now = time.monotonic()
        sub = self._subs.get(channel)
        if sub is not None and sub.lingered:
            sub = None  # being dropped: a new subscription takes over (the old one leaves the store alone)
        if sub is not None:
            sub.last_used = now
            if sub.ready.is_set():
                return Availability.READY
        else:
            until = self._absent.get(channel)
            if until is not None and until > now:
                return Availability.ABSENT
            if self._stopping or len(self._subs) >= self.cfg.max_subscriptions:
                self._quiet.warning("max_subscriptions", "relay: channel=%s not subscribed: %d subscriptions open "
                                    "(relay.max_subscriptions)", channel, len(self._subs))
                return Availability.UNAVAILABLE
            if not self._admit_new(now):
                self._quiet.warning("new_rate", "relay: channel=%s not subscribed: over %g new subscriptions per "
                                    "second", channel, NEW_PER_SECOND)
                return Availability.UNAVAILABLE
            sub = self._subscribe(channel, path)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sub.settled.wait(), self.cfg.start_timeout)
        if sub.ready.is_set():
            return Availability.WAITED
        return Availability.ABSENT if sub.absent else Availability.UNAVAILABLE

    # --- subscriptions --------------------------------------------------------------------------------

    def _subscribe(self, channel: str, path: tuple[str, ...]) -> _Sub:
        node = self.node_id()
        sub = _Sub(channel, (node, *path) if node else path, time.monotonic())
        self._subs[channel] = sub
        metrics.SUBSCRIPTIONS.labels(role="child").inc()
        sub.task = asyncio.get_running_loop().create_task(self._run(sub), name=f"relay:{channel}")
        return sub

    def _report(self, sub: _Sub) -> None:
        try:
            self.directory.report_relaying(sub.channel, "child", sub.parent.node_id if sub.parent else "",
                                           self.children(sub.channel))
        except Exception:  # reporting must not break a subscription
            log.exception("relay: report_relaying failed for channel=%s", sub.channel)

    def _ready_check(self, sub: _Sub, applier: Applier) -> None:
        if sub.ready.is_set() or not applier.caught_up:
            return
        info = self.store.channel(sub.channel) or {}
        if info.get("renditions"):
            sub.ready.set()
            sub.settled.set()
            log.info("relay: channel=%s ready from node=%s", sub.channel, sub.parent.node_id if sub.parent else "?")

    async def _run(self, sub: _Sub) -> None:
        channel = sub.channel
        exclude: list[str] = []
        failures = 0
        nowhere = 0  # parent_for said "none" this many times in a row
        try:
            while not self._stopping and not sub.lingered:
                client = self.client()
                if client is None:  # no fleet identity yet
                    if not sub.ready.is_set():
                        sub.settled.set()
                        return
                    await asyncio.sleep(1.0)
                    continue
                peer = await self.directory.parent_for(channel, tuple(exclude[-EXCLUDE_RECENT:]))
                if peer is not None and peer.node_id == self.node_id():
                    peer = None  # the plan names this node: it is not live here, so nowhere
                if peer is None:
                    if not sub.ready.is_set():
                        self._mark_absent(sub)
                        return
                    nowhere += 1
                    if nowhere >= 2:  # twice, a second apart: not a moment when the tree is being re-planned
                        await self._parentless(sub)
                    await asyncio.sleep(1.0)
                    exclude.clear()
                    continue
                nowhere = 0
                if not peer.address:  # a parent nobody can dial: it pushes the channel here (this is its relay)
                    if self.is_local(channel):
                        sub.ready.set()
                        sub.settled.set()
                        return  # pushed here: requests find it without a subscription from now on
                    await asyncio.sleep(PUSH_WAIT)
                    continue
                if sub.parent is not None and sub.parent.node_id != peer.node_id:
                    self._quiet.info("parent", "relay: channel=%s now from node=%s at %s (was node=%s)", channel,
                                     peer.node_id, peer.address, sub.parent.node_id)
                sub.parent = peer
                sub.switch.clear()
                self._report(sub)
                began = time.monotonic()
                reason = await self._consume(sub, client, peer)
                if reason == "not_found" and not sub.ready.is_set() and failures >= 1:
                    self._mark_absent(sub)
                    return
                metrics.REPARENT.labels(reason=reason).inc()
                if time.monotonic() - began >= STABLE_AFTER:
                    failures = 0
                if reason != "plan":
                    if reason != "not_found":  # (a parent that answers is alive: it may get the channel any moment)
                        exclude.append(peer.node_id)
                        del exclude[:-EXCLUDE_RECENT]
                    await asyncio.sleep(RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)])
                    failures += 1
        finally:
            if self._subs.get(channel) is sub:
                del self._subs[channel]
            metrics.SUBSCRIPTIONS.labels(role="child").dec()
            if channel not in self._subs:  # (a newer subscription of the channel reports for itself)
                with contextlib.suppress(Exception):
                    self.directory.report_relaying(channel, "", "", 0)
            sub.settled.set()
            if sub.lingered and not self._stopping and not self.is_local(channel) and channel not in self._subs:
                with contextlib.suppress(Exception):
                    await self.writer.channel(channel, {"live": False, "ended": time.time(), "ended_deliberately": True})
                    self.bus.channel_changed(channel)

    async def _consume(self, sub: _Sub, client: RelayClient, peer: Peer) -> str:
        """One stream from `peer`, until it ends; the reason (a metric label)."""
        channel = sub.channel
        pos: dict[str, Position] = storeio.positions(self.store, channel)
        applier = Applier(channel, self.writer, self.bus, pos)
        first = True
        try:
            async for rec in client.subscribe(peer.address, peer.node_id, channel, pos, sub.path):
                if first:
                    first = False
                    self._count_resume(rec, pos)
                await applier.apply(rec)
                self._ready_check(sub, applier)
                if sub.switch.is_set() or sub.lingered:
                    return "plan"
        except ChannelNotFound as exc:
            self._quiet.info("not_found", "relay: channel=%s not found at node=%s: %s", channel, peer.node_id, exc)
            return "not_found"
        except RelayFailure as exc:
            self._quiet.warning(f"fail:{exc.reason}", "relay: channel=%s parent node=%s failed (%s): %s; re-parenting",
                                channel, peer.node_id, exc.reason, exc)
            return exc.reason
        except RecordError as exc:
            self._quiet.warning("bad_record", "relay: channel=%s: bad record from node=%s: %s; re-parenting", channel,
                                peer.node_id, exc)
            return "bad_record"
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a store or transport failure we did not foresee: this subscription retries
            self._quiet.log("fail:unexpected", logging.ERROR, "relay: channel=%s from node=%s failed: %r; re-parenting",
                            channel, peer.node_id, exc)
            return "error"
        return "closed"

    def _count_resume(self, rec: Record, pos: dict[str, Position]) -> None:
        if isinstance(rec, Resync):
            metrics.RESUME.labels(result="gone").inc()
        else:
            metrics.RESUME.labels(result="resumed" if pos else "new").inc()

    def _mark_absent(self, sub: _Sub) -> None:
        sub.absent = True
        sub.settled.set()
        if len(self._absent) >= NEGATIVE_MAX:
            self._absent.clear()
        self._absent[sub.channel] = time.monotonic() + NEGATIVE_TTL

    async def _parentless(self, sub: _Sub) -> None:
        """The controller says the channel is live nowhere (its ingest edge died): end it here as a lost
        publisher ends a stream (EXT-X-ENDLIST after the channel's reconnect grace)."""
        info = self.store.channel(sub.channel) or {}
        if info.get("live"):
            await self.writer.channel(sub.channel, {"live": False, "ended": time.time(), "ended_deliberately": False})
            self.bus.channel_changed(sub.channel)
            log.info("relay: channel=%s is live nowhere now: ended here", sub.channel)

    # --- linger and re-plan ---------------------------------------------------------------------------

    async def _sweep(self) -> None:
        interval = max(0.05, min(1.0, self.cfg.linger_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for sub in list(self._subs.values()):
                if self.children(sub.channel) > 0:
                    sub.last_used = now
                elif now - sub.last_used >= self.cfg.linger_seconds and not sub.lingered:
                    sub.lingered = True
                    log.info("relay: channel=%s unused for %gs: subscription dropped", sub.channel,
                             self.cfg.linger_seconds)
                    if sub.task is not None:
                        sub.task.cancel()

    def _plan_changed(self) -> None:
        for sub in list(self._subs.values()):
            if sub.parent is not None and not sub.checking:
                sub.checking = True
                task = asyncio.get_running_loop().create_task(self._check_plan(sub))
                self._checks.add(task)
                task.add_done_callback(self._checks.discard)

    async def _check_plan(self, sub: _Sub) -> None:
        try:
            async with asyncio.timeout(PLAN_CHECK_DEADLINE):
                peer = await self.directory.parent_for(sub.channel)
            if peer is not None and sub.parent is not None and peer.node_id != sub.parent.node_id:
                log.info("relay: channel=%s: the plan moves it from node=%s to node=%s", sub.channel,
                         sub.parent.node_id, peer.node_id)
                sub.switch.set()
        except (TimeoutError, Exception) as exc:  # a failed check leaves the subscription as it is
            log.debug("relay: re-plan check of channel=%s failed: %r", sub.channel, exc)
        finally:
            sub.checking = False


class Pusher:
    """Pushes the channels ingested here up to the relay node the directory names (this edge is
    `[node] reachable = false`), while they are live here."""

    def __init__(self, cfg: RelayConfig, store: SegmentStore, bus: CommitBus, directory: Directory,
                 client: Callable[[], RelayClient | None], *, window: int, is_local: Callable[[str], bool],
                 node_id: Callable[[], str]) -> None:
        self.cfg = cfg
        self.store = store
        self.bus = bus
        self.directory = directory
        self.client = client
        self.window = window
        self.is_local = is_local
        self.node_id = node_id
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._quiet = QuietLog(log)

    async def start(self) -> None:
        self.directory.add_listener(self.reconcile)
        self.reconcile()

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def reconcile(self, *_: object) -> None:
        """Start a push for each target whose channel is live here (call on map changes and stream starts)."""
        targets = self.directory.push_targets()
        for channel in targets:
            if channel not in self._tasks and self.is_local(channel):
                self._tasks[channel] = asyncio.get_running_loop().create_task(self._run(channel),
                                                                             name=f"relay-push:{channel}")

    async def _run(self, channel: str) -> None:
        failures = 0
        try:
            while self.is_local(channel):
                peer = self.directory.push_targets().get(channel)
                client = self.client()
                if peer is None or client is None:
                    return
                metrics.SUBSCRIPTIONS.labels(role="push").inc()
                self.directory.report_relaying(channel, "push", peer.node_id, 0)
                try:
                    await client.push(peer.address, peer.node_id, channel, self._source(channel),
                                      (self.node_id(),))
                    reason = "closed"
                except RelayFailure as exc:
                    reason = exc.reason
                    self._quiet.warning(f"push:{reason}", "relay: push of channel=%s to node=%s ended (%s): %s",
                                        channel, peer.node_id, reason, exc)
                finally:
                    metrics.SUBSCRIPTIONS.labels(role="push").dec()
                metrics.REPARENT.labels(reason=reason).inc()
                failures += 1
                await asyncio.sleep(RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)])
        finally:
            self._tasks.pop(channel, None)
            with contextlib.suppress(Exception):
                self.directory.report_relaying(channel, "", "", 0)

    def _source(self, channel: str) -> Callable[[dict[str, Position]], AsyncIterator[Record]]:
        async def records(pos: dict[str, Position]) -> AsyncIterator[Record]:
            """The channel's feed from the relay node's positions, until the stream's end has gone up (a
            publisher that comes back starts the next push)."""
            feed = Feed(self.store, self.bus, channel, pos, window=self.window, keepalive=self.cfg.keepalive_seconds,
                        max_backlog=self.cfg.max_backlog_segments)
            ended = False
            async for rec in feed.records():
                yield rec
                if isinstance(rec, StreamEnd):
                    ended = True
                elif ended and isinstance(rec, ChannelRecord):
                    return  # the record after the end: the relay node has the ended state
        return records
