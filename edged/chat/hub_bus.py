"""HubBus: the ChatBus of an enrolled edge, with the controller as the hub (chat.proto, ChatService.Chat).

    bus = HubBus(agent, cfg.chat.limits)   # or HubBus(agent.chat_channel, ...), or any channel source
    await bus.start(sink)          # connects in the background; rooms work locally until it does
    ...
    await bus.close()

Constructor:
- `link`: where the chat stream's channel comes from: an object with `async chat_channel()` (the edge's
  `edged.agent.link.Agent`), or such a coroutine function itself. It returns an open mutual-TLS
  `grpc.aio.Channel` to the controller's edge port, waiting while there is none. On an enrolled edge the
  chat stream is thus its own gRPC stream on the agent's link, authenticated by the node certificate, so
  chat never queues behind control messages. HubBus never closes the channel; after a failure it asks
  again (the agent hands out the next session's).
- `limits`: the rules the local replicas apply while the hub is away (the hub applies its own).
- `max_buffered`: submissions kept for the hub (sent and unanswered, or ordered locally while it was away);
  past it the oldest is dropped with a log line. Nothing is written to disk: an edge restart loses them.

While the stream is up: `watch` sends ChatWatch (resuming from the room's last seq after a reconnect; the hub
answers with the missed events or a GAP, then a snapshot), `submit` sends the submission, and what the hub
sends is delivered to the sink in each room's order: events (each applied to the room's local replica too),
snapshots (which replace the replica), the history once per watch, and the verdicts for this edge's own
submissions. A MESSAGE whose id was delivered already (a hub that restarted and ordered a replay again) is
not delivered twice.

While it is down (degraded; `sink.on_bus_state(False)`): each room is ordered here by its replica, a `Room`
built from the last snapshot and kept in step with the events since, and its events are delivered with
`local=True` and seq 0. Submissions ordered here that produced events are kept and replayed once, in order,
when the stream is back; the hub's copies of them (events and verdicts, known by `cause_id` and the message
id) are not delivered here again. A submission the replica refused (its verdict told the chatter) or
dropped is not replayed. Submissions sent but not answered when the stream broke are ordered locally then.

Loop-only; the sink is called on the loop, never from inside `watch`/`submit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import grpc

from edged.chat import hub_wire
from edged.chat.bus import ChatSink
from edged.chat.local_bus import room_id_for
from edged.chat.model import ChatLimits, EventKind, RoomEvent, RoomSnapshot, Submission, Verdict
from edged.chat.room import Room
from edged.log import QuietLog
from edgenet.v1 import chat_pb2, chat_pb2_grpc

log = logging.getLogger("edged.chat.hub")

ChannelSource = Callable[[], Awaitable[grpc.aio.Channel]]


@runtime_checkable
class _HasChatChannel(Protocol):
    async def chat_channel(self) -> grpc.aio.Channel: ...


ChatLink = _HasChatChannel  # what HubBus needs of the agent: the session's mutual-TLS channel (edged/agent/link.py)


MAX_BUFFERED = 1000  # submissions kept for the hub
MAX_REMEMBERED = 20_000  # ids of messages delivered, and of submissions ordered locally
WELCOME_TIMEOUT = 10.0  # s from opening the stream to the hub's ChatWelcome
WRITE_TIMEOUT = 10.0  # s one write may take (a hub that stopped reading)
BACKOFF_BASE, BACKOFF_CAP = 0.2, 5.0  # s between attempts to open the stream


@dataclass(slots=True, eq=False)
class _Watched:
    replica: Room
    last_seq: int = 0
    synced: bool = False  # a snapshot came from the hub since the watch: later watches resume from last_seq
    history_sent: bool = False


def _remember(d: OrderedDict[str, None], key: str) -> None:
    d[key] = None
    d.move_to_end(key)
    while len(d) > MAX_REMEMBERED:
        d.popitem(last=False)


class HubBus:
    """ChatBus over the controller's chat hub, ordering locally while the hub is away."""

    def __init__(self, link: ChatLink | ChannelSource, limits: ChatLimits | None = None, *,
                 max_buffered: int = MAX_BUFFERED, wall: Callable[[], float] = time.time) -> None:
        self._source: ChannelSource = link.chat_channel if isinstance(link, _HasChatChannel) else link
        self.limits = limits or ChatLimits()
        self.max_buffered = max_buffered
        self._wall = wall
        self._sink: ChatSink | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        self._rooms: dict[str, _Watched] = {}
        self._pending: OrderedDict[str, Submission] = OrderedDict()  # id → unanswered by the hub
        self._local: OrderedDict[str, None] = OrderedDict()  # ids ordered here while the hub was away
        self._delivered: OrderedDict[str, None] = OrderedDict()  # MESSAGE ids delivered to the sink
        self._out: asyncio.Queue[chat_pb2.ChatUp] | None = None  # the open stream's outbox
        self._quiet = QuietLog(log)
        self.node_id = ""  # as the hub's welcome names this edge

    # --- the port ---------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(self, sink: ChatSink) -> None:
        self._sink = sink
        self._task = asyncio.create_task(self._run(), name="edged-chat-hub")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._sink = None
        self._connected = False
        if self._pending:
            log.info("chat: %d submissions the hub had not answered are dropped with the bus", len(self._pending))

    def watch(self, room: str) -> None:
        if room in self._rooms:
            return
        rs = _Watched(Room(RoomSnapshot(room=room, room_id=room_id_for(room)), self.limits))
        self._rooms[room] = rs
        if self._connected and self._out is not None:
            self._out.put_nowait(chat_pb2.ChatUp(watch=chat_pb2.ChatWatch(room=room)))
        else:  # degraded: the rules start from nothing known; the hub's snapshot replaces them when it is back
            snap = rs.replica.snapshot(self._now_ms())
            self._later(lambda: self._snapshot_if_watched(rs, snap))

    def unwatch(self, room: str) -> None:
        if self._rooms.pop(room, None) is not None and self._connected and self._out is not None:
            self._out.put_nowait(chat_pb2.ChatUp(unwatch=chat_pb2.ChatUnwatch(room=room)))

    def submit(self, submission: Submission) -> None:
        if self._sink is None:
            return
        while len(self._pending) >= self.max_buffered:
            _, dropped = self._pending.popitem(last=False)
            self._quiet.warning("buffer-full", "chat: %d submissions wait for the hub: the oldest (room %s) is "
                                "dropped and will not reach other edges", self.max_buffered, dropped.room)
        self._pending[submission.id] = submission
        if self._connected and self._out is not None:
            self._out.put_nowait(chat_pb2.ChatUp(submit=hub_wire.submission_to_pb(submission)))
        else:
            self._order_locally(submission)

    # --- degraded: ordering here ------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)

    def _later(self, fn: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_soon(fn)

    def _snapshot_if_watched(self, rs: _Watched, snap: RoomSnapshot) -> None:
        sink = self._sink
        if sink is not None and self._rooms.get(snap.room) is rs:
            sink.on_snapshot(snap)

    def _order_locally(self, sub: Submission) -> None:
        rs = self._rooms.get(sub.room)
        if rs is None:  # not watched here: nobody to deliver to; the hub orders it when it is back
            return
        outcome = rs.replica.submit(sub, self._now_ms())
        if not outcome.events:  # refused (the verdict tells the chatter) or a retry: not for the hub either
            self._pending.pop(sub.id, None)
        else:
            _remember(self._local, sub.id)
        events = [replace(e, local=True) for e in outcome.events]
        verdict = outcome.verdict

        def deliver() -> None:
            sink = self._sink
            if sink is None:
                return
            watched = self._rooms.get(sub.room) is rs
            for e in events:
                if watched:
                    if e.kind is EventKind.MESSAGE and e.line is not None:
                        _remember(self._delivered, e.line.id)
                    sink.on_event(e)
            if verdict is not None:
                sink.on_verdict(verdict)

        self._later(deliver)

    # --- the stream -------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = BACKOFF_BASE
        while True:
            opened = False
            try:
                channel = await self._source()
                opened = await self._session(channel)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # close()
                # grpc.aio raises CancelledError from a call whose channel was closed (the agent's session ended)
                log.debug("chat: the link's channel closed under the chat stream")
            except grpc.aio.AioRpcError as exc:
                self._quiet.warning("stream", "chat: the hub's stream ended: %s: %s; chat is local until it is back",
                                    exc.code().name, (exc.details() or "").splitlines()[0] if exc.details() else "")
            except grpc.aio.UsageError as exc:  # the agent closed that channel (its session ended) meanwhile
                log.debug("chat: the link's channel closed under the chat stream: %s", exc)
            except (TimeoutError, OSError, ConnectionError) as exc:
                self._quiet.warning("stream", "chat: the hub's stream failed: %s; chat is local until it is back",
                                    exc or "timed out")
            except Exception:  # a bug or an unforeseen library error: chat stays up locally, retry
                log.exception("chat: the hub's stream failed")
            finally:
                self._down()
            delay = BACKOFF_BASE if opened else min(BACKOFF_CAP, delay * 2)
            await asyncio.sleep(random.uniform(delay / 2, delay))

    async def _session(self, channel: grpc.aio.Channel) -> bool:
        """One chat stream, until it ends; True when the hub welcomed it."""
        call: Any = chat_pb2_grpc.ChatServiceStub(channel).Chat()
        try:
            first = await asyncio.wait_for(call.read(), WELCOME_TIMEOUT)
            if first is grpc.aio.EOF or not first.HasField("welcome"):
                raise ConnectionError("the hub closed the chat stream before its welcome")
            self.node_id = first.welcome.node_id
            out: asyncio.Queue[chat_pb2.ChatUp] = asyncio.Queue()
            for room, rs in self._rooms.items():
                w = chat_pb2.ChatWatch(room=room, last_seq=rs.last_seq, resume=rs.synced)
                out.put_nowait(chat_pb2.ChatUp(watch=w))
            for sub in self._pending.values():  # replayed once, in order; the hub drops ids it has seen
                out.put_nowait(chat_pb2.ChatUp(submit=hub_wire.submission_to_pb(sub)))
            replayed = len(self._pending)
            self._out = out
            self._connected = True
            log.info("chat: connected to the hub as %s (%d rooms, %d submissions replayed)", self.node_id,
                     len(self._rooms), replayed)
            if self._sink is not None:
                self._sink.on_bus_state(True)
            writer = asyncio.create_task(self._write(call, out), name="edged-chat-hub-write")
            reader = asyncio.create_task(self._read(call), name="edged-chat-hub-read")
            try:
                done, _ = await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            finally:
                for task in (writer, reader):
                    task.cancel()
                for task in (writer, reader):
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            self._quiet.warning("stream", "chat: the hub closed the chat stream; chat is local until it is back")
            return True
        finally:
            call.cancel()

    def _down(self) -> None:
        self._out = None
        if not self._connected:
            return
        self._connected = False
        if self._sink is not None:
            self._sink.on_bus_state(False)
        unanswered = [s for s in self._pending.values() if s.id not in self._local]
        for sub in unanswered:  # sent, never answered: local members see them now, the rest on replay
            self._order_locally(sub)

    async def _write(self, call: Any, out: asyncio.Queue[chat_pb2.ChatUp]) -> None:
        while True:
            msg = await out.get()
            try:
                async with asyncio.timeout(WRITE_TIMEOUT):
                    await call.write(msg)
            except TimeoutError:
                raise TimeoutError(f"a write to the hub did not finish within {WRITE_TIMEOUT:g} s") from None

    async def _read(self, call: Any) -> None:
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF:
                return
            body = msg.WhichOneof("body")
            if body == "event":
                decoded = hub_wire.event_from_pb(msg.event)
                if decoded is not None:
                    self._event(*decoded)
            elif body == "snapshot":
                snap, head = hub_wire.snapshot_from_pb(msg.snapshot)
                self._snapshot(snap, head)
            elif body == "history":
                rs = self._rooms.get(msg.history.room)
                if rs is not None and not rs.history_sent and self._sink is not None:
                    rs.history_sent = True
                    self._sink.on_history(msg.history.room, [hub_wire.line_from_pb(ln) for ln in msg.history.lines])
            elif body == "verdict":
                self._verdict(hub_wire.verdict_from_pb(msg.verdict))
            elif body == "dropped":
                self._pending.pop(msg.dropped.submission_id, None)

    def _snapshot(self, snap: RoomSnapshot, head: int) -> None:
        rs = self._rooms.get(snap.room)
        if rs is None:
            return
        rs.replica = Room(snap, self.limits)
        rs.last_seq = head
        rs.synced = True
        if self._sink is not None:
            self._sink.on_snapshot(snap)

    def _event(self, event: RoomEvent, cause_id: str) -> None:
        rs = self._rooms.get(event.room)
        sink = self._sink
        if rs is None or sink is None:
            return
        if event.kind is EventKind.GAP:
            rs.last_seq = event.seq
            sink.on_event(event)
            return
        if event.seq <= rs.last_seq:
            return  # already delivered (a resume that overlapped)
        rs.last_seq = event.seq
        msg_id = event.line.id if event.kind is EventKind.MESSAGE and event.line is not None else ""
        for key in (cause_id, msg_id):
            if key:
                self._pending.pop(key, None)
        if (cause_id and cause_id in self._local) or (msg_id and msg_id in self._local):
            return  # ordered and delivered here while the hub was away (the replica has it)
        if msg_id:
            if msg_id in self._delivered:
                return
            _remember(self._delivered, msg_id)
        rs.replica.apply(event)
        sink.on_event(event)

    def _verdict(self, verdict: Verdict) -> None:
        self._pending.pop(verdict.submission_id, None)
        if verdict.submission_id in self._local or self._sink is None:
            return
        self._sink.on_verdict(verdict)
