"""NatsBus: the ChatBus over NATS JetStream (`[chat] bus = "nats"`), for fleets that scale chat out of the
controller. There is no orderer process: the stream orders, every edge decides.

    bus = NatsBus("nats://10.0.0.5:4222", node_id="edge-a", limits=ChatLimits())
    await bus.start(sink); bus.watch("demo"); bus.submit(submission); ...; await bus.close()

Layout on JetStream (created by the first edge that connects, left as it is when it already exists):
- one stream (`stream`, default CHAT) with the subjects `<prefix>.*` (default `chat.room.*`), file storage,
  `retention_s` max age, and a duplicate window of `duplicate_window_s`;
- one subject per room, `<prefix>.<room>` (`nats_wire.room_token` for names that are not plain channel
  names), carrying every input of the room in order: chatters' submissions (published with the header
  `Nats-Msg-Id` = the submission id, so a retry or a replay inside the duplicate window is stored once)
  and operators' moderation records (`publish_moderation`);
- one KV bucket (`<stream>_ROOMS`, 64 revisions per key), one key per room: checkpoints of the room's
  durable state (modes, bans, live timeouts) at a stream sequence (`edged.chat.nats_checkpoints`).

Ordering and agreement. Each edge that watches a room consumes its subject in stream order (an ordered
push consumer) and feeds each record to its own `edged.chat.room.Room`, with `now_ms` taken from the
message's JetStream timestamp - the server's clock, the same on every edge - never from its own clock.
`Room` is a pure function of its inputs, so every edge emits the same events for the same records. An
event's `seq` is the JetStream stream sequence of the record that produced it (a `Room` input yields at
most one event): increasing within a room, the same on every edge however late it started watching, but
not contiguous (other rooms share the stream, refused inputs yield nothing). Resume is by stream
sequence: after a reconnect, or when the consumer was lost, the edge re-subscribes from the sequence after
the last record it processed. A record that does not decode (`nats_wire.WireError`) is skipped, with a
rate-limited log line, by every edge alike. A refusal (or a command's confirmation) is a `Verdict` on the
edge whose node id the submission carries (`origin_node`, stamped here) and nowhere else.

Watching a room: the edge replays the subject from a checkpoint of the room's durable state in the
KV bucket (`edged.chat.nats_checkpoints` says which, and why that bounds the replay and keeps the
decisions equal), delivering nothing, then sends `on_snapshot` and `on_history` and goes live.

What every reader of the stream shares with the controller's follower of every room (the layout, how a
record is decided, when a checkpoint is due) is in `edged.chat.nats_stream`.

Publishing: one connection, up to PUBLISH_WINDOW records in flight, so the records of one edge are
stored in the order it submitted them; a record that failed is published again with those after it
(the ones already stored are stored once), the only case where one edge's records can swap.

Degraded mode (NATS unreachable, or JetStream not answering a publish): `connected` is False and
`on_bus_state(False)` is called; each watched room is ordered by a local replica of its `Room` (a copy
of the replayed state, kept in step with whatever still arrives), events with `local=True` and seq 0.
Submissions the replica accepted are buffered (at most `max_buffered`; beyond that the sender gets a
msg_ratelimit verdict) and published once, in order, when JetStream answers again; the dedup header
makes a publish whose ack was lost count once. Their MESSAGE events are not delivered a second time
here; if the fleet refuses one (its rules saw more than the replica did), the sender gets the verdict.
Submissions the replica refused are not replayed. Once the feed has caught up, `on_snapshot` resyncs
the room with the fleet's state and the replica is dropped.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import itertools
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, PubAck
from nats.js.kv import KeyValue

from edged.chat.bus import ChatSink
from edged.chat.local_bus import room_id_for
from edged.chat.model import (
    ChatLimits,
    ChatLine,
    Moderation,
    NoticeId,
    RoomSnapshot,
    Submission,
    Verdict,
)
from edged.chat.nats_checkpoints import choose_checkpoint, read_checkpoints, write_checkpoint
from edged.chat.nats_stream import (
    DEFAULT_PREFIX,
    DEFAULT_STREAM,
    MSG_ID,
    StreamLayout,
    checkpoint_due,
    decide_record,
    ensure_layout,
    record_time_ms,
)
from edged.chat.nats_wire import Checkpoint, WireError, encode_moderation, encode_submission, room_token
from edged.chat.room import Outcome, Room
from edged.log import QuietLog

log = logging.getLogger(__name__)

MAX_LOCAL_IDS = 10_000  # locally delivered submissions remembered, not to deliver them twice
PUBLISH_WINDOW = 256  # records published before waiting for their acks
DEFAULT_LIMITS = ChatLimits()


@dataclass(frozen=True, slots=True)
class _Pending:
    subject: str
    payload: bytes
    msg_id: str


@dataclass(eq=False)
class _Feed:
    """One watched room: its canonical state, fed by its subject, and its replica while degraded."""

    room: str
    subject: str
    key: str
    canon: Room | None = None
    next_sseq: int = 0  # the first stream sequence not processed yet (0: start not chosen)
    last_time_ms: int | None = None  # JetStream time of the last record processed (checkpoint buckets)
    delivering: bool = False  # past the first replay: events go to the sink
    target: int = 0  # the subject's last sequence when the current subscription started
    synced: bool = False  # caught up with `target` since the current subscription started
    snapshot_sent: bool = False
    history_sent: bool = False
    local: Room | None = None  # the replica that orders while the bus is degraded
    task: asyncio.Task[None] | None = None
    checkpoint: Checkpoint | None = None  # waiting to be written
    checkpoint_task: asyncio.Task[None] | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class NatsBus:
    """ChatBus over NATS JetStream: one subject per room, each edge runs the room's rules on it.

    `nats_url`: one URL or several (a cluster) - "nats://host:4222"; `node_id`: this edge's node ID
    (stamped on its submissions as `origin_node`, so that verdicts reach it alone); `limits`: the room
    rules' limits, which must be the same on every edge of the fleet (they are part of the decision);
    `stream`/`prefix`: the JetStream stream and subject prefix (several fleets can share one NATS with
    different ones). The other keywords are tuning and test hooks."""

    def __init__(
        self,
        nats_url: str | Sequence[str],
        node_id: str,
        limits: ChatLimits = DEFAULT_LIMITS,
        *,
        stream: str = DEFAULT_STREAM,
        prefix: str = DEFAULT_PREFIX,
        retention_s: float = 86_400.0,
        duplicate_window_s: float = 600.0,
        checkpoint_s: float = 60.0,
        max_buffered: int = 10_000,
        heartbeat_s: float = 2.0,
        reconnect_wait_s: float = 1.0,
        publish_timeout_s: float = 5.0,
        connect_grace_s: float = 2.0,
        wall: Callable[[], float] = time.time,
        room_id: Callable[[str], str] = room_id_for,
    ) -> None:
        self.servers = [nats_url] if isinstance(nats_url, str) else list(nats_url)
        self.node_id = node_id
        self.limits = limits
        self.stream = stream
        self.prefix = prefix
        self.layout = StreamLayout(stream=stream, prefix=prefix, retention_s=retention_s,
                                   duplicate_window_s=duplicate_window_s)
        self.bucket = self.layout.bucket
        self.retention_s = retention_s
        self.duplicate_window_s = duplicate_window_s
        self.checkpoint_ms = max(1, int(checkpoint_s * 1000))
        self.max_buffered = max_buffered
        self.heartbeat_s = heartbeat_s
        self.reconnect_wait_s = reconnect_wait_s
        self.publish_timeout_s = publish_timeout_s
        self.connect_grace_s = connect_grace_s
        self._wall = wall
        self._room_id = room_id
        self._sink: ChatSink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._kv: KeyValue | None = None
        self._feeds: dict[str, _Feed] = {}
        self._buffer: deque[_Pending] = deque()
        self._local_ids: OrderedDict[str, None] = OrderedDict()  # delivered here by a replica, not yet back
        self._link = False  # the TCP connection to NATS is up
        self._ready = False  # ... and the stream and the bucket exist on it
        self._publish_failing = False
        self._healthy = False
        self._local_mode = False  # ordering locally: NATS was lost, or could not be reached at start
        self._ready_event = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._quiet = QuietLog(log)

    # --- the port ---------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._healthy

    async def start(self, sink: ChatSink) -> None:
        """Begin connecting (in the background: an edge starts whether NATS is up or not)."""
        self._sink = sink
        self._loop = asyncio.get_running_loop()
        sink.on_bus_state(False)
        self._spawn(self._connect_loop(), self._tasks)
        self._spawn(self._publish_loop(), self._tasks)

    async def close(self) -> None:
        self._closed = True
        self._sink = None
        tasks = set(self._tasks)
        for feed in list(self._feeds.values()):
            tasks |= feed.tasks
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        nc, self._nc = self._nc, None
        if nc is not None:
            with suppress(Exception):
                await nc.close()

    def watch(self, room: str) -> None:
        if room in self._feeds or self._closed:
            return
        feed = _Feed(room=room, subject=self.layout.subject(room), key=room_token(room))
        self._feeds[room] = feed
        feed.task = self._spawn(self._run_feed(feed), feed.tasks)
        if self._local_mode:
            self._start_local(feed)

    def unwatch(self, room: str) -> None:
        feed = self._feeds.pop(room, None)
        if feed is not None:
            self._stop_feed(feed)

    def submit(self, submission: Submission) -> None:
        if self._closed:
            return
        if not submission.origin_node:
            submission = dataclasses.replace(submission, origin_node=self.node_id)
        subject = self.layout.subject(submission.room)
        pending = _Pending(subject, encode_submission(submission), submission.id)
        if self._healthy:
            self._enqueue(pending, submission)
            return
        feed = self._feeds.get(submission.room)
        if feed is None or feed.local is None:  # no members here: nothing to show, keep it for the room
            self._enqueue(pending, submission)
            return
        outcome = feed.local.submit(submission, self._now_ms())
        if outcome.events and not self._enqueue(pending, submission):
            return
        if outcome.events:
            self._local_ids[submission.id] = None
            while len(self._local_ids) > MAX_LOCAL_IDS:
                self._local_ids.popitem(last=False)
        self._later(lambda: self._deliver_local(feed, outcome))

    def moderate(self, moderation: Moderation) -> None:
        """An operator's action, published from this edge (not part of the port; see `publish_moderation`)."""
        subject = self.layout.subject(moderation.room)
        self._buffer.append(_Pending(subject, encode_moderation(moderation), str(uuid.uuid4())))
        self._wake.set()

    # --- submissions ------------------------------------------------------------------------------

    def _enqueue(self, pending: _Pending, submission: Submission) -> bool:
        if len(self._buffer) >= self.max_buffered:
            verdict = Verdict(submission_id=submission.id, room=submission.room, login=submission.chatter.login,
                              ok=False, notice_id=NoticeId.RATELIMIT.value,
                              text="Your message was not sent because chat is reconnecting. Try again soon.")
            self._quiet.log("buffer-full", logging.WARNING, "chat bus: %d submissions waiting for NATS, "
                            "refusing more (node=%s)", len(self._buffer), self.node_id)
            self._later(lambda: self._verdict(verdict))
            return False
        self._buffer.append(pending)
        self._wake.set()
        return True

    async def _publish_loop(self) -> None:
        """Publishes the buffer in order, up to PUBLISH_WINDOW records in flight on the one connection (the
        server stores them in the order they were sent). The first record that fails and every one after
        it stay in the buffer and are published again: those that had been stored meanwhile are stored
        once (the dedup header), so only such a retry can put this edge's records out of their order."""
        backoff = 0.1
        while True:
            if not self._buffer:
                if self._publish_failing:  # the record that failed is gone (dropped): nothing says it still fails
                    self._publish_failing = False
                    self._update_health()
                self._wake.clear()
                await self._wake.wait()
                continue
            js = self._js
            if not self._ready or js is None:
                await self._ready_event.wait()
                continue
            window = list(itertools.islice(self._buffer, PUBLISH_WINDOW))
            futures: list[asyncio.Future[PubAck]] = []
            failure: BaseException | None = None
            for p in window:
                try:
                    futures.append(await js.publish_async(p.subject, p.payload, stream=self.stream,
                                                          headers={MSG_ID: p.msg_id}))
                except nats.errors.MaxPayloadError:
                    self._quiet.log("too-big", logging.WARNING, "chat bus: a record over NATS max_payload dropped")
                    self._buffer.remove(p)
                    break
                except Exception as exc:  # the connection is gone, too many pending
                    failure = exc
                    break
            results: list[PubAck | BaseException] = []
            if futures:
                try:
                    results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True),
                                                     self.publish_timeout_s)
                except TimeoutError as exc:  # the futures were cancelled with the gather
                    results = [f.result() if f.done() and not f.cancelled() and f.exception() is None else exc
                               for f in futures]
            for result in results:
                if isinstance(result, BaseException):
                    failure = result
                    break
                self._buffer.popleft()
            if failure is None:
                backoff = 0.1
                if self._publish_failing:
                    self._publish_failing = False
                    self._update_health()
                continue
            self._quiet.log("publish", logging.WARNING, "chat bus: publish to %s failed (%s); retrying",
                            self._buffer[0].subject if self._buffer else "?", type(failure).__name__)
            self._publish_failing = True
            self._update_health()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    # --- connection -------------------------------------------------------------------------------

    async def _connect_loop(self) -> None:
        """Connect once (nats-py then reconnects by itself, for ever); local ordering meanwhile, once the
        first attempt has taken `connect_grace_s` (nats-py's first connect keeps trying, it never fails)."""
        backoff = self.reconnect_wait_s
        while self._nc is None:
            attempt = asyncio.ensure_future(nats.connect(
                self.servers,
                name=f"edged-chat-{self.node_id}",
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=self.reconnect_wait_s,
                connect_timeout=2,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                error_cb=self._on_error,
            ))
            try:
                try:
                    self._nc = await asyncio.wait_for(asyncio.shield(attempt), self.connect_grace_s)
                except TimeoutError:
                    log.warning("chat bus: NATS at %s does not answer; chat is local until it does (node=%s)",
                                ",".join(self.servers), self.node_id)
                    self._enter_local_mode()
                    self._nc = await attempt
            except asyncio.CancelledError:
                attempt.cancel()
                raise
            except Exception as exc:  # a URL it cannot use, an authorization error
                self._quiet.log("connect", logging.WARNING, "chat bus: cannot connect to NATS at %s (%s: %s)",
                                ",".join(self.servers), type(exc).__name__, exc)
                self._enter_local_mode()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        self._js = self._nc.jetstream()
        await self._link_up()

    async def _on_disconnected(self) -> None:
        self._link = False
        self._ready = False
        self._ready_event.clear()
        self._update_health()

    async def _on_reconnected(self) -> None:
        await self._link_up()

    async def _on_error(self, exc: Exception) -> None:
        self._quiet.log(f"nats-{type(exc).__name__}", logging.INFO, "chat bus: NATS client: %s: %s",
                        type(exc).__name__, exc)

    async def _link_up(self) -> None:
        self._link = True
        self._spawn(self._prepare(), self._tasks)

    async def _prepare(self) -> None:
        """The stream and the bucket exist (created here the first time), then the bus is ready."""
        backoff = 0.2
        while self._link and not self._closed:
            try:
                await self._ensure()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._quiet.log("prepare", logging.WARNING, "chat bus: JetStream not ready (%s: %s)",
                                type(exc).__name__, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        else:
            return
        self._ready = True
        self._ready_event.set()
        self._update_health()

    async def _ensure(self) -> None:
        js = self._js
        assert js is not None
        self._kv = await ensure_layout(js, self.layout, self._quiet)

    def _update_health(self) -> None:
        healthy = self._link and self._ready and not self._publish_failing and not self._closed
        if healthy == self._healthy:
            return
        self._healthy = healthy
        if healthy:
            log.info("chat bus: NATS JetStream reachable (node=%s)", self.node_id)
            self._local_mode = False
            for feed in self._feeds.values():  # resume each room by stream sequence, then resync
                self._restart_feed(feed)
        else:
            log.warning("chat bus: NATS JetStream unreachable, ordering locally (node=%s)", self.node_id)
            self._enter_local_mode()
        sink = self._sink
        if sink is not None:
            sink.on_bus_state(healthy)

    def _enter_local_mode(self) -> None:
        if self._local_mode or self._closed:
            return
        self._local_mode = True
        for feed in self._feeds.values():
            self._start_local(feed)

    # --- feeds ------------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], into: set[asyncio.Task[None]]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        into.add(task)
        task.add_done_callback(into.discard)
        return task

    def _stop_feed(self, feed: _Feed) -> None:
        for task in list(feed.tasks):
            task.cancel()

    def _restart_feed(self, feed: _Feed) -> None:
        if feed.task is not None:
            feed.task.cancel()
        feed.task = self._spawn(self._run_feed(feed), feed.tasks)

    async def _run_feed(self, feed: _Feed) -> None:
        backoff = 0.2
        while True:
            await self._ready_event.wait()
            try:
                if feed.canon is None:
                    await self._choose_start(feed)
                await self._follow(feed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._quiet.log("feed", logging.WARNING, "chat bus: room %s: %s: %s; resuming at stream "
                                "sequence %d", feed.room, type(exc).__name__, exc, feed.next_sseq)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _choose_start(self, feed: _Feed) -> None:
        kv = self._kv
        assert kv is not None
        entries, complete, skipped = await read_checkpoints(kv, feed.key)
        for reason in skipped:
            self._quiet.log("checkpoint", logging.WARNING, "chat bus: room %s: checkpoint skipped (%s)",
                            feed.room, reason)
        chosen = choose_checkpoint(entries, self._now_ms(), self.limits, complete=complete)
        if chosen is None:
            feed.canon = Room(RoomSnapshot(room=feed.room, room_id=self._room_id(feed.room)), self.limits)
            feed.next_sseq = 1
        else:
            snap = chosen.snapshot
            if snap.room != feed.room:
                snap = dataclasses.replace(snap, room=feed.room)
            feed.canon = Room(snap, self.limits)
            feed.next_sseq = chosen.sseq + 1
            feed.last_time_ms = chosen.time_ms
        log.debug("chat bus: room %s: replaying from stream sequence %d", feed.room, feed.next_sseq)

    async def _follow(self, feed: _Feed) -> None:
        js = self._js
        assert js is not None
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=feed.next_sseq)
        sub = await js.subscribe(feed.subject, stream=self.stream, ordered_consumer=True, config=config,
                                 idle_heartbeat=self.heartbeat_s)
        try:
            feed.synced = False
            feed.target = await self._last_seq(js, feed.subject)
            if feed.next_sseq > feed.target:
                self._caught_up(feed)
            while True:
                msg = await sub.next_msg(timeout=None)
                self._on_message(feed, msg)
        finally:
            with suppress(Exception):
                await sub.unsubscribe()

    async def _last_seq(self, js: JetStreamContext, subject: str) -> int:
        try:
            last = await js.get_last_msg(self.stream, subject)
        except nats.js.errors.NotFoundError:
            return 0
        return int(last.seq or 0)

    def _on_message(self, feed: _Feed, msg: Msg) -> None:
        meta = msg.metadata
        sseq = meta.sequence.stream
        if sseq < feed.next_sseq:  # seen before the consumer was recreated
            return
        now_ms = record_time_ms(msg)
        previous = feed.last_time_ms
        feed.next_sseq = sseq + 1
        feed.last_time_ms = now_ms
        durable = False
        try:
            durable = self._decide(feed, msg.data, sseq, now_ms)
        except Exception:  # a bug in the rules must not stop the room; every edge skips the same record
            log.exception("chat bus: room %s: record at stream sequence %d failed", feed.room, sseq)
        if feed.delivering and checkpoint_due(previous, now_ms, self.checkpoint_ms, durable):
            self._checkpoint(feed)
        if not feed.synced and sseq >= feed.target:
            self._caught_up(feed)

    def _checkpoint(self, feed: _Feed) -> None:
        """Queue a checkpoint of the room's state after the last record processed."""
        if feed.canon is None or feed.last_time_ms is None:
            return
        t = feed.last_time_ms
        feed.checkpoint = Checkpoint(sseq=feed.next_sseq - 1, time_ms=t, snapshot=feed.canon.snapshot(t))
        if feed.checkpoint_task is None or feed.checkpoint_task.done():
            feed.checkpoint_task = self._spawn(self._write_checkpoints(feed), feed.tasks)

    def _decide(self, feed: _Feed, data: bytes, sseq: int, now_ms: int) -> bool:
        """Run one record through the room's rules, deliver what it decided; True when the durable state
        (bans, timeouts, modes) changed."""
        room = feed.canon
        assert room is not None
        try:
            decision = decide_record(room, data, now_ms)
        except WireError as exc:
            self._quiet.log("malformed", logging.WARNING, "chat bus: room %s: record at stream sequence %d "
                            "skipped: %s", feed.room, sseq, exc.reason)
            return False
        record, outcome, durable = decision.record, decision.outcome, decision.durable
        if not feed.delivering:
            return durable
        sink = self._sink
        mine = isinstance(record, Submission) and record.origin_node == self.node_id
        shown_here = isinstance(record, Submission) and mine and record.id in self._local_ids
        if shown_here:
            assert isinstance(record, Submission)
            del self._local_ids[record.id]
        for event in outcome.events:
            stamped = dataclasses.replace(event, seq=sseq)
            if shown_here:  # the replica decided it and the sink has it
                continue
            if feed.local is not None:
                feed.local.apply(stamped)
            if sink is not None:
                sink.on_event(stamped)
        if sink is not None and mine and outcome.verdict is not None and not (shown_here and outcome.events):
            sink.on_verdict(outcome.verdict)
        return durable

    def _caught_up(self, feed: _Feed) -> None:
        feed.synced = True
        sink, room = self._sink, feed.canon
        if room is None or sink is None:
            return
        resync = feed.local is not None or not feed.delivering
        if not feed.delivering:
            feed.delivering = True
            self._checkpoint(feed)  # what the replay applied (an operator's action nobody watched) is kept
        if not self._healthy:
            return  # caught up with what a link that is up again had; the replica orders until JetStream answers
        feed.local = None
        if resync or not feed.snapshot_sent:
            snapshot, history = self._views(feed, room)
            sink.on_snapshot(snapshot)
            feed.snapshot_sent = True
            if not feed.history_sent:
                sink.on_history(feed.room, history)
                feed.history_sent = True

    def _views(self, feed: _Feed, room: Room) -> tuple[RoomSnapshot, list[ChatLine]]:
        """The room's snapshot and history as of now, without changing the canonical state.

        `Room.snapshot(t)` and `Room.history(t)` expire and trim as of `t`; at this edge's clock, ahead of
        the records to come, that would change later decisions here and nowhere else. So: the snapshot as
        of the last record's time (expiring there is what that record already did), the history with no
        trimming by time (t = 0; its length bound already holds), then both filtered by this edge's clock."""
        now = self._now_ms()
        snap = room.snapshot(feed.last_time_ms or 0)
        live = tuple(r for r in snap.restrictions if r.permanent or r.until_ms > now)
        oldest = now - int(self.limits.history_seconds * 1000)
        lines = [ln for ln in room.history(0) if ln.sent_ms >= oldest]
        return dataclasses.replace(snap, restrictions=live), lines

    async def _write_checkpoints(self, feed: _Feed) -> None:
        """Write the newest waiting checkpoint (older waiting ones are superseded by it)."""
        kv = self._kv
        while feed.checkpoint is not None and kv is not None:
            c, feed.checkpoint = feed.checkpoint, None
            try:
                await write_checkpoint(kv, feed.key, c)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._quiet.log("checkpoint-write", logging.INFO, "chat bus: room %s: checkpoint not written "
                                "(%s)", feed.room, type(exc).__name__)

    # --- degraded ---------------------------------------------------------------------------------

    def _start_local(self, feed: _Feed) -> None:
        """A replica to order this room while JetStream is away: the replayed state as far as it goes."""
        if feed.local is not None:
            return
        if feed.canon is not None:
            feed.local = copy.deepcopy(feed.canon)
        else:
            feed.local = Room(RoomSnapshot(room=feed.room, room_id=self._room_id(feed.room)), self.limits)
        if not feed.snapshot_sent:
            local = feed.local
            self._later(lambda: self._send_local_state(feed, local))

    def _send_local_state(self, feed: _Feed, local: Room) -> None:
        sink = self._sink
        if sink is None or self._feeds.get(feed.room) is not feed or feed.snapshot_sent:
            return
        now = self._now_ms()
        sink.on_snapshot(local.snapshot(now))
        feed.snapshot_sent = True
        if not feed.history_sent:
            sink.on_history(feed.room, local.history(now))
            feed.history_sent = True

    def _deliver_local(self, feed: _Feed, outcome: Outcome) -> None:
        sink = self._sink
        if sink is None:
            return
        if self._feeds.get(feed.room) is feed:
            for event in outcome.events:
                sink.on_event(dataclasses.replace(event, local=True))
        if outcome.verdict is not None:
            sink.on_verdict(outcome.verdict)

    def _verdict(self, verdict: Verdict) -> None:
        if self._sink is not None:
            self._sink.on_verdict(verdict)

    # --- helpers ----------------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)

    def _later(self, fn: Callable[[], None]) -> None:
        loop = self._loop or asyncio.get_running_loop()
        loop.call_soon(fn)


async def publish_moderation(js: JetStreamContext, moderation: Moderation, *, prefix: str = DEFAULT_PREFIX,
                             stream: str = DEFAULT_STREAM, msg_id: str = "", timeout_s: float = 5.0) -> int:
    """Publish an operator's action (`originctl chat ban ...`) on the room's subject; every edge applies it
    at its place in the room's order. Returns the record's stream sequence.

    `msg_id` (default: a new UUID) is the dedup id: a caller that retries after a lost ack passes the same
    one. There is no answer from the room here (the edges decide, each alone): `already_banned` and the
    like are not reported back. The controller on NATS (`originctl.server.chat_nats`) answers by reading
    the stream up to the returned sequence with the same rules."""
    ack = await js.publish(f"{prefix}.{room_token(moderation.room)}", encode_moderation(moderation),
                           timeout=timeout_s, stream=stream, headers={MSG_ID: msg_id or str(uuid.uuid4())})
    return int(ack.seq)


async def publish_moderation_to(nats_url: str | Sequence[str], moderation: Moderation, *,
                                prefix: str = DEFAULT_PREFIX, stream: str = DEFAULT_STREAM,
                                msg_id: str = "", timeout_s: float = 5.0) -> int:
    """`publish_moderation` over a connection of its own (for a controller or CLI that holds none)."""
    servers = [nats_url] if isinstance(nats_url, str) else list(nats_url)
    nc = await nats.connect(servers, allow_reconnect=False, connect_timeout=int(max(1.0, timeout_s)))
    try:
        return await publish_moderation(nc.jetstream(), moderation, prefix=prefix, stream=stream,
                                        msg_id=msg_id, timeout_s=timeout_s)
    finally:
        await nc.close()
