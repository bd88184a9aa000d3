"""Servicer shells for the edges: enrollment (main port, server TLS) and the edge stream (mutual TLS)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from typing import Any

import grpc

from edgenet.v1 import edge_pb2, edge_pb2_grpc
from originctl import __version__, trust
from originctl.errors import EnrollmentRefused, NotFound, OriginctlError, TokenInvalid
from originctl.metrics import ControllerMetrics
from originctl.model import ChannelRecord, NodeRecord, NodeState
from originctl.server import convert
from originctl.server.channels import ChannelBook
from originctl.server.enrollment import CertificateAuthority, peer_serial_hex
from originctl.server.inputs import placement_node
from originctl.server.numbering import NumberingBook
from originctl.server.placement import Placement, place
from originctl.server.registry import Registry, Session
from originctl.server.relays import RelayBook
from originctl.server.store import Store
from originctl.server.streams import StreamBook, new_stream_id

log = logging.getLogger("originctl.edge")

HELLO_TIMEOUT = 10.0  # s from stream open to the edge's Hello
WRITE_TIMEOUT = 10.0  # s one write down an edge stream may take (an edge that stopped reading is dropped)
PULSE_MIN, PULSE_MAX = 0.1, 30.0  # s: bounds of the pulse interval (the edge's heartbeat)
KEY_TABLE_CHUNK = 5000  # entries per KeyTable message (~0.5 MB): far below gRPC's 4 MB message cap


def new_node_id(taken: dict[str, Any]) -> str:
    while True:
        node_id = "nd-" + secrets.token_hex(4)
        if node_id not in taken:
            return node_id


class EnrollmentServicer(edge_pb2_grpc.EnrollmentServiceServicer):
    def __init__(self, store: Store, registry: Registry, ca: CertificateAuthority, edge_port: int,
                 metrics: ControllerMetrics) -> None:
        self.store = store
        self.registry = registry
        self.ca = ca
        self.edge_port = edge_port
        self.metrics = metrics

    async def Enroll(self, request: edge_pb2.EnrollRequest, context: grpc.aio.ServicerContext[Any, Any]) -> edge_pb2.EnrollResponse:
        try:
            response = await self._enroll(request, context.peer())
        except OriginctlError as exc:
            self.metrics.enrollments.labels(type(exc).__name__).inc()
            log.warning("enrollment from %s refused: %s", context.peer(), exc)
            await convert.abort(context, exc)
        self.metrics.enrollments.labels("ok").inc()
        return response

    async def _enroll(self, request: edge_pb2.EnrollRequest, peer: str) -> edge_pb2.EnrollResponse:
        try:
            secret, fp = trust.split_token(request.token)
        except OriginctlError:
            raise TokenInvalid("malformed enrollment token: copy it whole from `originctl token create`") from None
        if fp != self.ca.fingerprint:
            raise TokenInvalid("this enrollment token was made by another controller (its CA fingerprint "
                               "differs): create one here with `originctl token create`")
        digest = trust.secret_sha256(secret)
        now_ms = int(time.time() * 1000)
        token = await self.store.check_token(digest, now_ms)
        if not request.csr_pem:
            raise EnrollmentRefused("the enrollment request carries no CSR")
        node_id = new_node_id(self.registry.nodes)
        issued = await asyncio.to_thread(self.ca.sign_node_csr, request.csr_pem, node_id)
        info = convert.node_info_from_pb(request.info)
        if token.site and not info.site:
            info = dataclasses.replace(info, site=token.site)
        record = NodeRecord(id=node_id, info=info, cert_serial=issued.serial_hex,
                            cert_not_after_unix_ms=issued.not_after_unix_ms, enrolled_unix_ms=now_ms,
                            state=NodeState.LOST, state_reason="enrolled; not connected yet",
                            state_since_unix_ms=now_ms)
        await self.store.enroll(digest, record, now_ms)
        self.registry.async_add(record)
        log.info("enrolled %s (%s) from %s", node_id, info.name or info.hostname, peer)
        return edge_pb2.EnrollResponse(node_id=node_id, certificate_pem=issued.cert_pem,
                                       ca_certificate_pem=self.ca.cert_pem, edge_port=self.edge_port,
                                       site=info.site)

    async def GetEndpoints(self, request: edge_pb2.GetEndpointsRequest,
                           context: grpc.aio.ServicerContext[Any, Any]) -> edge_pb2.Endpoints:
        return edge_pb2.Endpoints(edge_port=self.edge_port, version=__version__)


def _auth_value(context: grpc.aio.ServicerContext[Any, Any], key: str) -> bytes | None:
    values = list(context.auth_context().get(key) or ())
    return values[0] if values else None


async def identify_node(registry: Registry, context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The enrolled node the peer's client certificate names (the mutual-TLS port already refused peers
    without a CA-signed one); aborts the RPC for a removed node or a superseded certificate."""
    cn = _auth_value(context, "x509_common_name")
    pem = _auth_value(context, "x509_pem_cert")
    if cn is None or pem is None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                            "a client certificate is required: enroll with --enroll-token first")
        raise AssertionError("unreachable")
    node_id = cn.decode()
    entry = registry.get(node_id)
    if entry is None or entry.record.revoked:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                            f"node {node_id} is not enrolled here (removed?): enroll again with a new token")
        raise AssertionError("unreachable")
    if peer_serial_hex(pem) != entry.record.cert_serial:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                            f"this certificate of node {node_id} was superseded: use the newest one")
    return node_id


class EdgeServicer(edge_pb2_grpc.EdgeServiceServicer):
    """Runs on the mutual-TLS port: the TLS layer already refused peers without a CA-signed certificate."""

    def __init__(self, registry: Registry, channels: ChannelBook | None = None, streams: StreamBook | None = None,
                 metrics: ControllerMetrics | None = None, *, relays: RelayBook | None = None,
                 numbering: NumberingBook | None = None, ca: CertificateAuthority | None = None,
                 chat_keys: tuple[bytes, ...] = ()) -> None:
        self.registry = registry
        self.chat_keys = chat_keys  # PEM public keys that verify chatters' tokens, pushed after the key table
        self.channels = channels if channels is not None else ChannelBook(registry.store)
        self.streams = streams if streams is not None else StreamBook(registry.store)
        self.metrics = metrics if metrics is not None else registry.metrics
        self.relays = relays if relays is not None else RelayBook(registry, self.streams, self.metrics)
        self.numbering = numbering if numbering is not None else NumberingBook(registry.store)
        self.ca = ca
        self.channels.listeners.append(self._channel_changed)

    async def _identify(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        return await identify_node(self.registry, context)

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        node_id = await self._identify(context)
        try:
            first = await asyncio.wait_for(context.read(), HELLO_TIMEOUT)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "send Hello first")
        if first is grpc.aio.EOF or not first.HasField("hello"):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the first message must be Hello")
        info = convert.node_info_from_pb(first.hello.info)
        # the edge hears from us at least once per its own heartbeat: it counts us down after a few silent ones
        pulse = min(PULSE_MAX, max(PULSE_MIN, info.heartbeat_seconds))
        session = Session(node_id=node_id, peer=context.peer(), pulse_seconds=pulse)
        entry = self.registry.async_attach(node_id, info, session)
        try:
            async with asyncio.timeout(WRITE_TIMEOUT):
                await context.write(edge_pb2.ControllerMessage(welcome=edge_pb2.Welcome(
                    node_id=node_id, state=convert.STATE_TO_PB[entry.health.state],
                    server_time_unix_us=int(time.time() * 1e6), draining=entry.health.draining,
                    pulse_seconds=pulse)))
                # The key table follows the Welcome; changes made from here on are queued in the session's
                # outbox (attached above) and reach the edge after it, so the edge never misses one.
                table = [(c.name, c.key_sha256) for c in self.channels.all()]
                for i in range(0, max(1, len(table)), KEY_TABLE_CHUNK):
                    chunk = table[i:i + KEY_TABLE_CHUNK]
                    await context.write(convert.key_table_to_pb(chunk, full=i == 0,
                                                                more=i + KEY_TABLE_CHUNK < len(table)))
                if self.chat_keys:
                    await context.write(chat_keys_message(self.chat_keys))
            # then the relay map, through the outbox: changes planned from here on follow it there
            self.relays.async_session_opened(node_id, session)
        except BaseException:
            self.registry.async_detach(node_id, session)
            self.relays.async_session_closed(node_id)
            raise
        writer = asyncio.create_task(self._pump(session, context))
        reader = asyncio.create_task(self._read(node_id, session, context))
        closed = asyncio.create_task(session.closed.wait())
        try:
            await asyncio.wait({writer, reader, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (writer, reader, closed):
                t.cancel()
            for t in (writer, reader, closed):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self.registry.async_detach(node_id, session)
            after = self.registry.get(node_id)
            if after is None or after.session is None:
                self.relays.async_session_closed(node_id)

    async def _read(self, node_id: str, session: Session, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        report = self.registry.async_report
        while True:
            msg = await context.read()
            if msg is grpc.aio.EOF:
                return
            kind = msg.WhichOneof("body")
            if kind == "report":
                r = convert.report_from_pb(msg.report)
                report(node_id, r)
                self.streams.async_report(node_id, r)
                self.relays.async_report(node_id, r)
            elif kind == "stream_event":
                self._stream_event(node_id, msg.stream_event)
            elif kind == "numbering":
                n = msg.numbering
                if self.channels.get(n.channel) is not None:  # only channels that exist: the map stays bounded
                    self.numbering.async_commit(node_id, n.channel, n.next_seq, n.disc_seq)
            elif kind == "goodbye":
                self.registry.async_goodbye(node_id, msg.goodbye.reason)
                return
            elif kind == "command_result":
                log.info("node %s: command %d: ok=%s %s", node_id, msg.command_result.command_id,
                         msg.command_result.ok, msg.command_result.detail)
            elif kind == "hello":
                self.registry.async_attach(node_id, convert.node_info_from_pb(msg.hello.info), session)

    async def _pump(self, session: Session, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """The session's outbox down the stream; a Pulse whenever nothing else went for `pulse_seconds`. A
        write that takes over WRITE_TIMEOUT ends the stream (the edge stopped reading)."""
        while True:
            try:
                async with asyncio.timeout(session.pulse_seconds):
                    msg = await session.outbox.get()
            except TimeoutError:
                msg = edge_pb2.ControllerMessage(pulse=edge_pb2.Pulse(server_time_unix_us=int(time.time() * 1e6)))
            try:
                async with asyncio.timeout(WRITE_TIMEOUT):
                    await context.write(msg)
            except TimeoutError:
                # once per stream (which takes an enrolled node's certificate to open): no rate limit needed
                log.info("node %s: a write did not finish within %g s (the edge stopped reading); ending its stream",
                         session.node_id, WRITE_TIMEOUT)
                return

    def _stream_event(self, node_id: str, ev: edge_pb2.StreamEvent) -> None:
        now_ms = int(time.time() * 1000)
        if ev.kind == edge_pb2.StreamEvent.KIND_STARTED:
            self.streams.async_started(convert.stream_started_from_pb(new_stream_id(), node_id, ev, now_ms))
        elif ev.kind == edge_pb2.StreamEvent.KIND_ENDED:
            self.streams.async_ended(node_id, ev.channel, ev.time_unix_ms or now_ms, "the publisher stopped")

    def _channel_changed(self, kind: str, rec: ChannelRecord) -> None:
        """Push a channel's new key digest (or its removal) down every open edge stream."""
        if kind == "delete":
            msg = convert.key_invalidation_to_pb(rec.name)
        else:
            msg = convert.key_table_to_pb([(rec.name, rec.key_sha256)], full=False)
        for entry in self.registry.nodes.values():
            if entry.session is not None:
                entry.session.async_send(msg)

    def async_set_chat_keys(self, pems: tuple[bytes, ...]) -> None:
        """New token verification keys: down every open edge stream (edges replace their cached set)."""
        if pems == self.chat_keys:
            return
        self.chat_keys = pems
        msg = chat_keys_message(pems)
        for entry in self.registry.nodes.values():
            if entry.session is not None:
                entry.session.async_send(msg)

    def place(self, channel: str, node_id: str) -> Placement:
        """Where a new stream of `channel` on `node_id` is transcoded (deterministic for the same fleet)."""
        entry = self.registry.get(node_id)
        own = placement_node(entry, self.streams.transcodes_on(node_id)) if entry is not None else None
        if own is not None:
            p = place(channel, node_id, [own])
            if p.mode == "transcode":
                return p
        # not here: rank the fleet too, so the reason names the node that could have taken it
        fleet = [placement_node(e, self.streams.transcodes_on(e.id)) for e in self.registry.nodes.values()]
        return place(channel, node_id, fleet)

    async def AuthorizePublish(self, request: edge_pb2.AuthorizePublishRequest,
                               context: grpc.aio.ServicerContext[Any, Any]) -> edge_pb2.AuthorizePublishResponse:
        node_id = await self._identify(context)
        rec = self.channels.by_key(request.stream_key)
        if rec is None:
            self.metrics.authorizations.labels("unknown_key").inc()
            log.info("node %s: %s publish from %s refused: unknown stream key", node_id, request.protocol,
                     request.remote_address)
            return edge_pb2.AuthorizePublishResponse(
                allowed=False, reason="unknown stream key (rotated or deleted?): use the channel's current key")
        p = self.place(rec.name, node_id)
        self.metrics.authorizations.labels("allowed").inc()
        self.metrics.placements.labels(p.mode).inc()
        next_seq, disc_seq = self.numbering.get(rec.name)
        log.info("node %s: channel=%s %s publish from %s allowed; placement %s: %s; fleet numbering from %d "
                 "(discontinuities %d)", node_id, rec.name, request.protocol, request.remote_address, p.mode, p.reason,
                 next_seq, disc_seq)
        return edge_pb2.AuthorizePublishResponse(
            allowed=True, channel=rec.name,
            placement=convert.placement_to_pb(p.mode, p.encoder, p.reason, p.node_id, p.gpu_index),
            next_seq=next_seq, disc_seq=disc_seq)

    async def GetRelayParent(self, request: edge_pb2.GetRelayParentRequest,
                             context: grpc.aio.ServicerContext[Any, Any]) -> edge_pb2.RelayRoute:
        node_id = await self._identify(context)
        try:
            route = self.relays.parent_for(node_id, request.channel, tuple(request.exclude))
        except OriginctlError as exc:
            await convert.abort(context, exc)
        parent = route.chain[-1]
        log.info("node %s: channel=%s relay parent %s (%s)%s", node_id, request.channel, parent.node_id,
                 " → ".join(h.node_id for h in route.chain),
                 f"; excluding {', '.join(request.exclude)}" if request.exclude else "")
        return route

    async def RenewCertificate(self, request: edge_pb2.RenewCertificateRequest,
                               context: grpc.aio.ServicerContext[Any, Any]) -> edge_pb2.RenewCertificateResponse:
        """A new certificate for the calling node (its current one proves who it is); the old one stops working."""
        node_id = await self._identify(context)
        if self.ca is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this controller does not renew certificates")
        assert self.ca is not None
        try:
            issued = await asyncio.to_thread(self.ca.sign_node_csr, request.csr_pem, node_id)
            await self.registry.store.update_node_cert(node_id, issued.serial_hex, issued.not_after_unix_ms)
        except (EnrollmentRefused, NotFound) as exc:
            await convert.abort(context, exc)
        entry = self.registry.get(node_id)
        if entry is not None:
            entry.record = dataclasses.replace(entry.record, cert_serial=issued.serial_hex,
                                               cert_not_after_unix_ms=issued.not_after_unix_ms)
        self.registry.async_event(node_id, "certificate", "renewed (now also for its relay listener)")
        log.info("node %s: certificate renewed (serial %s)", node_id, issued.serial_hex)
        return edge_pb2.RenewCertificateResponse(certificate_pem=issued.cert_pem)


def chat_keys_message(pems: tuple[bytes, ...]) -> edge_pb2.ControllerMessage:
    return edge_pb2.ControllerMessage(chat_keys=edge_pb2.ChatKeys(public_key_pem=list(pems)))


def set_draining_command(command_id: int, draining: bool) -> edge_pb2.ControllerMessage:
    return edge_pb2.ControllerMessage(command=edge_pb2.Command(
        id=command_id, set_draining=edge_pb2.SetDraining(draining=draining)))

