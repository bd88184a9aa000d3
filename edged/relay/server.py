"""The parent side of the relay: RelayService on `[relay] listen`, mutual TLS with the fleet identity.

`Subscribe(channel, positions, path)` streams a Feed (replay from the store, then live) to one child.
Each write has `relay.send_timeout`: a child that stopped reading is dropped with a logged reason, and
so is one that falls more than `relay.max_backlog_segments` behind; either resubscribes by position.
Refusals: INVALID_ARGUMENT (a channel name that cannot exist), FAILED_PRECONDITION (the path says the
subscription would loop through this node or go deeper than MAX_DEPTH hops), RESOURCE_EXHAUSTED (over
`relay.max_streams`), NOT_FOUND (the channel is not here and this node cannot get it: `ensure` says no).

`Push` is the dial reversed: an ingest edge that children cannot dial streams its records up to this
(relay) node, which applies them as a child would and serves them on.

Everything a peer can trigger repeatedly is logged through QuietLog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from edged.config import RelayConfig, parse_hostport, valid_channel_name
from edged.log import QuietLog
from edged.relay import metrics, records
from edged.relay.apply import Applier
from edged.relay.commits import CommitBus
from edged.relay.feed import Feed, SlowChild
from edged.relay.records import Position, RecordError
from edged.relay.storeio import StoreWriter, positions
from edged.relay.tls import FleetIdentity, message_options, peer_node_id, server_credentials
from edged.store.segments import SegmentStore
from edgenet.v1 import relay_pb2, relay_pb2_grpc

log = logging.getLogger("edged.relay")

MAX_DEPTH = 3  # hops from the ingest edge to the farthest child
MAX_POSITIONS = records.MAX_RENDITIONS
OPEN_TIMEOUT = 5.0  # s a pushing edge has to send its open message

# (channel, path) → whether this node has the channel now or got it (a relay node subscribes upstream)
Ensure = Callable[[str, tuple[str, ...]], Awaitable[bool]]


def to_pb(rec: records.Record) -> relay_pb2.RelayRecord:
    kind, header, payload = records.encode(rec)
    return relay_pb2.RelayRecord(kind=kind, header=header, payload=payload)


def positions_from_pb(items: Any) -> dict[str, Position]:
    out: dict[str, Position] = {}
    for p in list(items)[:MAX_POSITIONS]:
        if valid_channel_name(p.rendition) and p.next_seq <= records.MAX_SEQ and p.epoch <= records.MAX_SEQ:
            out[p.rendition] = Position(p.rendition, int(p.next_seq), int(p.epoch))
    return out


def positions_to_pb(pos: dict[str, Position]) -> list[relay_pb2.RenditionPosition]:
    return [relay_pb2.RenditionPosition(rendition=p.rendition, next_seq=p.next_seq, epoch=p.epoch)
            for p in pos.values()]


class RelayServer(relay_pb2_grpc.RelayServiceServicer):
    def __init__(self, cfg: RelayConfig, store: SegmentStore, bus: CommitBus, identity: FleetIdentity, *,
                 window: int, has_channel: Callable[[str], bool], ensure: Ensure | None = None,
                 writer: StoreWriter | None = None,
                 on_children: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.bus = bus
        self.identity = identity
        self.window = window
        self.has_channel = has_channel
        self.ensure = ensure
        self.writer = writer
        self.on_children = on_children  # called when a channel's number of children changes
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._children: dict[str, int] = {}  # channel → child subscriptions open now
        self._pushes: dict[str, str] = {}  # channel → node ID pushing it here
        self._quiet = QuietLog(log)

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        host, port = parse_hostport(self.cfg.listen, "relay.listen")
        server = grpc.aio.server(options=[
            *message_options(self.cfg.max_record_bytes),
            ("grpc.so_reuseport", 0),  # a second daemon on the same port must fail, not share it
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 500),
        ])
        relay_pb2_grpc.add_RelayServiceServicer_to_server(self, server)
        try:
            bound = server.add_secure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                                           server_credentials(self.identity))
        except RuntimeError as exc:  # grpc says "Failed to bind" this way
            bound = 0
            why = str(exc).split(";", 1)[0]
        else:
            why = "the address is in use or not local"
        if not bound:
            await server.stop(None)
            raise OSError(f"cannot listen for the relay on {self.cfg.listen}: {why}")
        await server.start()
        self._server = server
        self.port = bound
        log.info("relay listening on %s:%d (mutual TLS, node=%s)", host, bound, self.identity.node_id)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(1.0)
            self._server = None

    def children(self, channel: str) -> int:
        return self._children.get(channel, 0)

    def channels(self) -> dict[str, int]:
        return dict(self._children)

    def pushed(self, channel: str) -> bool:
        return channel in self._pushes

    def _count(self, channel: str, delta: int) -> None:
        n = self._children.get(channel, 0) + delta
        if n > 0:
            self._children[channel] = n
        else:
            self._children.pop(channel, None)
        metrics.SUBSCRIPTIONS.labels(role="parent").inc(delta)
        if self.on_children is not None:
            self.on_children(channel)

    # --- Subscribe ------------------------------------------------------------------------------------

    async def _refuse(self, context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, kind: str,
                      msg: str, child: str, channel: str) -> None:
        self._quiet.info(f"refused:{kind}", "relay: refused node=%s channel=%s: %s", child or "?", channel, msg)
        await context.abort(code, msg)

    async def _admit(self, channel: str, path: tuple[str, ...], child: str,
                     context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if not valid_channel_name(channel):
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "name", "not a channel name", child,
                               channel[:64])
        if self.identity.node_id in path or len(path) > MAX_DEPTH:
            await self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION, "path",
                               f"the subscription path {' <- '.join(path)} would loop through {self.identity.node_id} "
                               f"or exceed {MAX_DEPTH} hops", child, channel)
        if sum(self._children.values()) >= self.cfg.max_streams:
            metrics.DROPPED.labels(reason="limit").inc()
            await self._refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "limit",
                               f"this node serves {self.cfg.max_streams} relay subscriptions already "
                               "(relay.max_streams)", child, channel)
        if not self.has_channel(channel):
            got = False
            if self.ensure is not None:
                got = await self.ensure(channel, path)
            if not got or self.store.channel(channel) is None:
                await self._refuse(context, grpc.StatusCode.NOT_FOUND, "not_found",
                                   f"channel {channel} is not live here", child, channel)

    async def Subscribe(self, request: relay_pb2.SubscribeRequest,
                        context: grpc.aio.ServicerContext[Any, Any]) -> None:
        channel = request.channel
        child = peer_node_id(context)
        path = tuple(str(p)[:64] for p in list(request.path)[: MAX_DEPTH + 1]) or (child,)
        await self._admit(channel, path, child, context)
        feed = Feed(self.store, self.bus, channel, positions_from_pb(request.positions), window=self.window,
                    keepalive=self.cfg.keepalive_seconds, max_backlog=self.cfg.max_backlog_segments)
        self._count(channel, 1)
        log.info("relay: node=%s subscribed to channel=%s", child, channel)
        why = "it hung up"
        try:
            async for rec in feed.records():
                msg = to_pb(rec)
                try:
                    await asyncio.wait_for(context.write(msg), self.cfg.send_timeout)
                except TimeoutError:
                    metrics.DROPPED.labels(reason="send_timeout").inc()
                    why = f"it stopped reading (a record took over relay.send_timeout = {self.cfg.send_timeout:g}s)"
                    self._quiet.warning("drop:send_timeout", "relay: dropped node=%s channel=%s: %s", child,
                                        channel, why)
                    # not abort(): its status would queue behind the write the child does not take
                    context.set_code(grpc.StatusCode.UNAVAILABLE)
                    context.set_details(f"dropped: {why}")
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the child went away in the middle of a write
                    why = f"it hung up ({type(exc).__name__})"
                    return
                metrics.RECORDS.labels(direction="out").inc()
                metrics.BYTES.labels(direction="out").inc(len(msg.header) + len(msg.payload))
            why = "the channel record is gone"
        except SlowChild as exc:
            metrics.DROPPED.labels(reason="slow").inc()
            why = f"it cannot keep up: {exc}"
            self._quiet.warning("drop:slow", "relay: dropped node=%s channel=%s: %s", child, channel, why)
            context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
            context.set_details(f"dropped: {why}")
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a store failure we did not foresee ends this one subscription, bounded in the log
            why = f"failed: {exc!r}"
            self._quiet.log("feed:error", logging.ERROR, "relay: subscription of node=%s to channel=%s %s", child,
                            channel, why)
            context.set_code(grpc.StatusCode.INTERNAL)
            context.set_details(why[:200])
        finally:
            self._count(channel, -1)
            log.info("relay: node=%s left channel=%s (%s; position %s)", child, channel, why, feed.resume)

    # --- Push (the dial reversed) ---------------------------------------------------------------------

    async def Push(self, request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        pusher = peer_node_id(context)
        try:
            first = await asyncio.wait_for(context.read(), OPEN_TIMEOUT)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "send the open message first")
        if first is grpc.aio.EOF or not first.HasField("open"):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the first message must be open")
        channel = first.open.channel
        path = tuple(str(p)[:64] for p in list(first.open.path)[: MAX_DEPTH + 1]) or (pusher,)
        if not valid_channel_name(channel) or self.writer is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not a channel name, or this node takes no pushes")
        if self.identity.node_id in path or len(path) > MAX_DEPTH:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the push path would loop")
        if channel in self._pushes and self._pushes[channel] != pusher:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"channel {channel} is pushed here by another node")
        assert self.writer is not None
        pos = positions(self.store, channel)
        await context.write(relay_pb2.PushReply(positions=positions_to_pb(pos)))
        applier = Applier(channel, self.writer, self.bus, pos)
        self._pushes[channel] = pusher
        metrics.SUBSCRIPTIONS.labels(role="push").inc()
        log.info("relay: node=%s pushes channel=%s here", pusher, channel)
        acks = asyncio.get_running_loop().create_task(self._push_keepalive(context))
        why = "it hung up"
        try:
            while True:
                try:
                    msg = await asyncio.wait_for(context.read(), self.cfg.stall_timeout)
                except TimeoutError:
                    why = f"nothing for {self.cfg.stall_timeout:g}s"
                    break
                if msg is grpc.aio.EOF:
                    break
                if not msg.HasField("record"):
                    why = "a second open message"
                    break
                r = msg.record
                await applier.apply(records.decode(r.kind, r.header, r.payload, max_bytes=self.cfg.max_record_bytes))
        except RecordError as exc:
            why = f"bad record: {exc}"
            self._quiet.warning("push:bad_record", "relay: push of channel=%s by node=%s ended: %s", channel,
                                pusher, why)
        finally:
            acks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acks
            if self._pushes.get(channel) == pusher:
                del self._pushes[channel]
            metrics.SUBSCRIPTIONS.labels(role="push").dec()
            log.info("relay: push of channel=%s by node=%s ended (%s)", channel, pusher, why)

    async def _push_keepalive(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        with contextlib.suppress(Exception):
            while True:
                await asyncio.sleep(self.cfg.keepalive_seconds)
                await asyncio.wait_for(context.write(relay_pb2.PushReply(keepalive=True)), self.cfg.send_timeout)
