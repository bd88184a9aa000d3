"""ChatService on the edge port (mutual TLS): each edge's chat stream, between gRPC and the hub.

The node certificate says who the edge is (the same check as EdgeService); the stream's first message is a
ChatWelcome. A reader takes the edge's watches, unwatches and submissions to the hub (the submission's
origin node is the certificate's, whatever the edge wrote); a writer sends what the hub queued for the
session, each write within WRITE_TIMEOUT. The stream ends when the edge hangs up, a write stalls, the
session's queue overflows, a newer stream of the same node supersedes it, or the controller stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import grpc

from edged.chat import hub_wire
from edgenet.v1 import chat_pb2, chat_pb2_grpc
from originctl.server.chat_hub import (
    ChatHub,
    DroppedItem,
    HistoryItem,
    HubSession,
    OutItem,
    SnapshotItem,
    Stamped,
)
from originctl.server.edge_service import identify_node
from originctl.server.registry import Registry

log = logging.getLogger("originctl.chat")

WRITE_TIMEOUT = 10.0  # s one write may take before the edge counts as not reading


def encode(item: OutItem) -> chat_pb2.ChatDown:
    if isinstance(item, Stamped):
        if item.wire is None:
            item.wire = chat_pb2.ChatDown(event=hub_wire.event_to_pb(item.event, item.cause_id))
        return item.wire  # type: ignore[no-any-return]
    if isinstance(item, SnapshotItem):
        return chat_pb2.ChatDown(snapshot=hub_wire.snapshot_to_pb(item.snapshot, item.head_seq))
    if isinstance(item, HistoryItem):
        return chat_pb2.ChatDown(history=hub_wire.history_to_pb(item.room, list(item.lines)))
    if isinstance(item, DroppedItem):
        return chat_pb2.ChatDown(dropped=chat_pb2.ChatDropped(submission_id=item.submission_id, room=item.room))
    return chat_pb2.ChatDown(verdict=hub_wire.verdict_to_pb(item))


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    def __init__(self, hub: ChatHub, registry: Registry) -> None:
        self.hub = hub
        self.registry = registry

    async def Chat(self, request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        node_id = await identify_node(self.registry, context)
        session = self.hub.attach(node_id)
        if session.closed.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"chat: {session.close_reason}")
        log.info("chat: node %s opened its chat stream from %s", node_id, context.peer())
        try:
            async with asyncio.timeout(WRITE_TIMEOUT):
                await context.write(chat_pb2.ChatDown(welcome=chat_pb2.ChatWelcome(
                    node_id=node_id, server_time_unix_ms=int(time.time() * 1000))))
            tasks = {asyncio.create_task(self._read(session, context)),
                     asyncio.create_task(self._write(session, context)),
                     asyncio.create_task(session.closed.wait())}
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        finally:
            self.hub.detach(session)
            log.info("chat: node %s: chat stream ended%s", node_id,
                     f" ({session.close_reason})" if session.close_reason else "")

    async def _read(self, session: HubSession, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        while True:
            msg = await context.read()
            if msg is grpc.aio.EOF:
                return
            kind = msg.WhichOneof("body")
            if kind == "submit":
                self.hub.submit(session, hub_wire.submission_from_pb(msg.submit, session.node_id))
            elif kind == "watch":
                self.hub.watch(session, msg.watch.room, msg.watch.last_seq if msg.watch.resume else None)
            elif kind == "unwatch":
                self.hub.unwatch(session, msg.unwatch.room)

    async def _write(self, session: HubSession, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        while True:
            for item in await session.take():
                try:
                    async with asyncio.timeout(WRITE_TIMEOUT):
                        await context.write(encode(item))
                except TimeoutError:
                    session.close(f"a write did not finish within {WRITE_TIMEOUT:g} s (the edge stopped reading)")
                    return
