"""The child side of the relay transport: one Subscribe stream to a parent, records checked as they come.

`subscribe()` yields decoded records; it raises a RelayFailure saying why the stream ended: ParentStalled
(no record or keepalive for `stall_timeout`), ChannelNotFound (the parent has no such live channel),
ParentRefused (any other refusal, or the TLS handshake failed), ParentLost (the stream broke or ended),
or RecordError (a malformed record: that subscription ends, nothing else). gRPC types stay in here.
`push()` is the dial reversed (an ingest edge that children cannot dial, to its relay node).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from edged.relay import records
from edged.relay.records import Position, Record
from edged.relay.tls import FleetIdentity, channel_credentials, message_options
from edgenet.v1 import relay_pb2, relay_pb2_grpc


class RelayFailure(Exception):
    """A subscription to a parent ended; `reason` is a metric label (stall, not_found, refused, error, closed, slow)."""

    reason = "error"


class ParentStalled(RelayFailure):
    reason = "stall"


class ChannelNotFound(RelayFailure):
    reason = "not_found"


class ParentRefused(RelayFailure):
    reason = "refused"


class ParentLost(RelayFailure):
    reason = "error"


class ParentClosed(RelayFailure):
    reason = "closed"


class DroppedAsSlow(RelayFailure):
    """The parent dropped this child: it fell behind, or did not read what was sent."""

    reason = "slow"


def _positions_pb(pos: dict[str, Position]) -> list[relay_pb2.RenditionPosition]:
    return [relay_pb2.RenditionPosition(rendition=p.rendition, next_seq=p.next_seq, epoch=p.epoch)
            for p in pos.values()]


def _failure(exc: grpc.aio.AioRpcError, address: str) -> RelayFailure:
    code = exc.code()
    details = (exc.details() or code.name).splitlines()[0][:200]
    if code == grpc.StatusCode.NOT_FOUND:
        return ChannelNotFound(details)
    if details.startswith("dropped:"):
        return DroppedAsSlow(f"{address}: {details}")
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return ParentRefused(f"{address}: {code.name}: {details}")
    return ParentLost(f"{address}: {code.name}: {details}")


class RelayClient:
    def __init__(self, identity: FleetIdentity, *, max_record_bytes: int, stall_timeout: float) -> None:
        self.identity = identity
        self.max_record_bytes = max_record_bytes
        self.stall_timeout = stall_timeout

    def _channel(self, address: str, node_id: str) -> grpc.aio.Channel:
        options: list[tuple[str, Any]] = [
            ("grpc.ssl_target_name_override", node_id),  # the parent's certificate names its node ID
            *message_options(self.max_record_bytes),
            ("grpc.enable_retries", 0),
        ]
        return grpc.aio.secure_channel(address, channel_credentials(self.identity), options=options)

    async def subscribe(self, address: str, node_id: str, channel: str, positions: dict[str, Position],
                        path: tuple[str, ...] = ()) -> AsyncIterator[Record]:
        """The records of `channel` from the parent `node_id` at `address`, from `positions`."""
        request = relay_pb2.SubscribeRequest(channel=channel, positions=_positions_pb(positions),
                                             path=list(path) or [self.identity.node_id])
        async with self._channel(address, node_id) as ch:
            call = relay_pb2_grpc.RelayServiceStub(ch).Subscribe(request)
            try:
                while True:
                    try:
                        msg = await asyncio.wait_for(call.read(), self.stall_timeout)
                    except TimeoutError:
                        raise ParentStalled(f"{address}: nothing for {self.stall_timeout:g}s") from None
                    except grpc.aio.AioRpcError as exc:
                        raise _failure(exc, address) from None
                    if msg is grpc.aio.EOF:
                        raise ParentClosed(f"{address}: the parent ended the stream")
                    yield records.decode(msg.kind, msg.header, msg.payload, max_bytes=self.max_record_bytes)
            finally:
                call.cancel()

    async def push(self, address: str, node_id: str, channel: str, source: Any,
                   path: tuple[str, ...] = ()) -> None:
        """Push `channel` up to the relay node `node_id` at `address`: `source(positions)` is an async
        iterator of the records to send from the relay node's positions on (a Feed). Returns or raises a
        RelayFailure when the push ends."""
        async with self._channel(address, node_id) as ch:
            call = relay_pb2_grpc.RelayServiceStub(ch).Push()
            reader: asyncio.Task[None] | None = None
            try:
                await call.write(relay_pb2.PushMessage(open=relay_pb2.PushOpen(
                    channel=channel, path=list(path) or [self.identity.node_id])))
                try:
                    first = await asyncio.wait_for(call.read(), self.stall_timeout)
                except TimeoutError:
                    raise ParentStalled(f"{address}: no answer to the push for {self.stall_timeout:g}s") from None
                if first is grpc.aio.EOF:
                    raise ParentClosed(f"{address}: the relay node ended the push")
                pos = {p.rendition: Position(p.rendition, int(p.next_seq), int(p.epoch)) for p in first.positions}
                reader = asyncio.get_running_loop().create_task(self._read_acks(call, address))
                async for rec in source(pos):
                    kind, header, payload = records.encode(rec)
                    write = asyncio.ensure_future(call.write(relay_pb2.PushMessage(
                        record=relay_pb2.RelayRecord(kind=kind, header=header, payload=payload))))
                    done, _ = await asyncio.wait({write, reader}, timeout=self.stall_timeout,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if reader in done:
                        write.cancel()
                        reader.result()
                        raise ParentClosed(f"{address}: the relay node ended the push")
                    if write not in done:
                        write.cancel()
                        raise ParentStalled(f"{address}: a record took over {self.stall_timeout:g}s")
                    write.result()
                # the source ended (the stream's end went up): let the relay node read all of it, then hang up
                await call.done_writing()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(reader), self.stall_timeout)
            except grpc.aio.AioRpcError as exc:
                raise _failure(exc, address) from None
            finally:
                if reader is not None:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await reader
                call.cancel()

    async def _read_acks(self, call: Any, address: str) -> None:
        while True:
            try:
                msg = await asyncio.wait_for(call.read(), self.stall_timeout)
            except TimeoutError:
                raise ParentStalled(f"{address}: the relay node is silent") from None
            if msg is grpc.aio.EOF:
                return
