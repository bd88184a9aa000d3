"""The edge's link to the origin controller: enrollment, then one long-lived mutual-TLS stream.

    Agent.start()  load DATA_DIR/agent/ identity, or enroll with the token (bounded wait); a permanent
                   refusal raises EnrollmentError; an unreachable controller is retried in the background
    background     GetEndpoints (main port, pinned CA) → Connect (edge port, client certificate) →
                   Hello → Welcome → a Report every heartbeat, commands read concurrently; on any
                   failure: reconnect after an exponential backoff with jitter, with a fresh channel
                   (at most a heartbeat apart for a while after a working link ended: a restarted
                   controller expects its nodes back within three heartbeats)
    liveness       the controller sends something at least every Welcome.pulse_seconds; after
                   SILENCE_PULSES of them without a message it counts as down (a hung process keeps
                   its TCP connection open); keepalive pings and a deadline on every write back this up
    Agent.stop()   Goodbye (so the controller marks the node at once), close, release NVML

Chat: the controller pushes the public keys that verify chatters' tokens (ChatKeys, after the key table and
on change); they are cached in DATA_DIR/agent/chat-keys.pem, read back at start, so tokens verify through a
controller outage and a restart (`on_chat_keys`). The chat stream of edged.chat.hub_bus.HubBus rides on
the session's mutual-TLS channel (`chat_channel`), as its own gRPC stream beside Connect.

Over the same link: the controller's key table and revocations feed `agent.authorizer` (a
ControllerAuthorizer, the edge's StreamKeyAuthorizer when --origin is set), whose AuthorizePublish
calls go out on the session's channel; stream starts and ends go up as StreamEvents, queued (bounded,
kept across reconnects) and always written before the next report, so the controller never sees a
report that contradicts an event it has not received yet.

gRPC errors are mapped here to edged.agent.errors; nothing outside this module and convert.py sees
edgenet or grpc types.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import Counter, Gauge

import edged
from edged.agent import convert, enroll
from edged.agent.authorizer import ControllerAuthorizer, Grant
from edged.agent.errors import ControllerSilent, ControllerUnavailable, EnrollmentError
from edged.agent.relaymap import ControllerDirectory, NotServed, RelayRoute
from edged.agent.status import NodeStatus
from edged.agent.telemetry import GpuState, Telemetry, read_host
from edged.common.files import write_atomic
from edged.common.fingerprint import fingerprint_pem
from edged.common.hostport import join_hostport
from edged.config import Config, parse_hostport
from edged.log import QuietLog
from edgenet.v1 import common_pb2, edge_pb2, edge_pb2_grpc

log = logging.getLogger("edged.agent")

START_ENROLL_TIMEOUT = 10.0  # s Agent.start() waits for a first enrollment before going on in the background
RPC_TIMEOUT = 10.0  # s for unary calls
BACKOFF_BASE = 0.5  # s before the first retry
BACKOFF_CAP = 30.0  # s: at most this between retries (10,000 edges must not reconnect in lock-step)
STABLE_AFTER = 30.0  # s connected before the backoff starts again from BACKOFF_BASE
# After a link that worked (at least GOOD_LINK_HEARTBEATS reports) ends, retries come at least once per heartbeat
# for REATTACH_WINDOW seconds: a restarted controller counts a node lost after 3 silent heartbeats from its start,
# so the edge must be back within them (the jitter keeps a fleet from reconnecting in lock-step)
GOOD_LINK_HEARTBEATS = 3
REATTACH_WINDOW = 60.0
DISCOVERY_WAIT = 3.0  # s listening for a controller when --origin auto
GOODBYE_TIMEOUT = 1.0  # s
AUTHORIZE_TIMEOUT = 3.0  # s a publisher waits for the controller before the cached key table answers
EVENT_QUEUE = 256  # stream events kept for the controller while the link is down (oldest dropped)
WRITE_TIMEOUT = 10.0  # s one write on the controller stream may take (a controller that stopped reading)
SILENCE_PULSES = 3  # pulse intervals without a message before the controller counts as down (its lost rule)
MIN_SILENCE = 1.0  # s: the shortest silence that counts the controller down
KEEPALIVE_MIN, KEEPALIVE_MAX = 1.0, 10.0  # s: gRPC keepalive pings every 2 heartbeats, within these bounds
CHAT_KEYS_FILE = "chat-keys.pem"  # in DATA_DIR/agent/: the last chat token keys the controller pushed
MAX_CHAT_KEYS = 64  # keys taken from one push (a controller names a handful)

LINK_UP = Gauge("edged_controller_link_up", "1 while the stream to the origin controller is open and the "
                "controller is heard from")
LINK_LOST = Counter("edged_controller_link_lost_total", "Streams to the origin controller that ended, by why: "
                    "closed (by the controller), silent (nothing heard within the silence limit), failed "
                    "(transport error, keepalive or write timeout)", ["reason"])
SILENCE = Gauge("edged_controller_silence_seconds", "Seconds since the origin controller was last heard from "
                "(-1 before the first time)")

_PERMANENT = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
              grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)


def _channel_options(keepalive: float | None = None) -> list[tuple[str, Any]]:
    """Options of a channel to the controller; `keepalive` (s) for the long-lived edge stream's channel: a
    ping every `keepalive` seconds that must be answered within as long, or the transport is closed (a
    controller whose process hangs still has its kernel ACK TCP; only the process answers pings). Unary-only
    channels go without: every call on them has a deadline."""
    options: list[tuple[str, Any]] = [("grpc.ssl_target_name_override", enroll.CONTROLLER_TLS_NAME)]
    if keepalive is not None:
        ms = int(keepalive * 1000)
        options += [
            ("grpc.keepalive_time_ms", ms),  # also keeps NAT bindings open
            ("grpc.keepalive_timeout_ms", ms),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),  # a stalled write must not stop the pings
        ]
    return options


def keepalive_seconds(heartbeat: float) -> float:
    """The stream's keepalive ping interval (and answer timeout) for a node reporting every `heartbeat` s;
    the controller accepts pings down to every 0.5 s (originctl/server/app.py)."""
    return max(KEEPALIVE_MIN, min(KEEPALIVE_MAX, 2 * heartbeat))


def silence_limit(pulse_seconds: float) -> float:
    """How long the stream may stay silent before the controller counts as down (inf: it sends no pulses)."""
    return max(MIN_SILENCE, SILENCE_PULSES * pulse_seconds) if pulse_seconds > 0 else math.inf


def _map_rpc_error(exc: grpc.aio.AioRpcError, what: str) -> Exception:
    details = (exc.details() or "").splitlines()[0] if exc.details() else exc.code().name
    if exc.code() in _PERMANENT:
        return EnrollmentError(f"{what}: the controller refused: {details}")
    return ControllerUnavailable(f"{what}: {exc.code().name}: {details}")


class Backoff:
    """Exponential backoff with jitter: delays grow from `base` to `cap`."""

    def __init__(self, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next(self, limit: float = math.inf) -> float:
        """The next delay: at most `limit` (the growth goes on underneath, for when the limit is lifted)."""
        ceiling = min(self.cap, self.base * 2 ** self.attempt, limit)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class Agent:
    """Keeps this edge enrolled with and reporting to the origin controller (cfg.origin)."""

    def __init__(self, cfg: Config, status: Callable[[], NodeStatus], *, telemetry: Telemetry | None = None) -> None:
        self.cfg = cfg
        self._status = status
        self.heartbeat = cfg.origin.heartbeat_seconds
        self.telemetry = telemetry or Telemetry(timeout=max(0.2, min(5.0, self.heartbeat)))
        self.identity: enroll.Identity | None = None
        self.connected = False
        self.draining = False  # set by the controller (operator's drain)
        self.error: Exception | None = None  # a permanent failure met in the background
        self.boot_id = uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None
        self._call: Any = None
        self._stopping = False
        self._linked = False  # the current attempt got as far as a Welcome
        self._linked_at = math.inf  # monotonic: when it did
        self._reattach_until = 0.0  # monotonic: until then, retry at least once per heartbeat, at the last address
        self._last_address: tuple[str, int] | None = None  # of the controller that last sent a Welcome
        self._write_lock = asyncio.Lock()
        self._first_enroll: asyncio.Task[enroll.Identity] | None = None  # outlived Agent.start()
        self._stub: Any = None  # EdgeServiceStub of the open session
        self._events: deque[Any] = deque(maxlen=EVENT_QUEUE)
        self._live: dict[str, Any] = {}  # channel → its latest StreamEvent(started), told again after each Welcome
        self._flushing: asyncio.Task[None] | None = None
        self._stream_heard = 0.0  # monotonic: the last message on the open stream (the silence watchdog's clock)
        self._quiet = QuietLog(log)  # link losses are the controller's (or the network's) doing: bounded lines
        self.authorizer = ControllerAuthorizer(cfg.origin.auth_cache_seconds, self.authorize_publish)
        # fleet distribution: this edge's parents per channel (GetRelayParent, and the map pushed down the stream)
        self.relay_directory = ControllerDirectory(self._ask_relay_parent)
        self._numbering: dict[str, Any] = {}  # channel → its latest Numbering message not written yet
        # called with the identity once enrolled and again when its certificate is renewed (the relay listener
        # serves with it)
        self.identity_listeners: list[Callable[[enroll.Identity], None]] = []
        self._renewing: asyncio.Task[None] | None = None
        self._renewed = asyncio.Event()  # set when the certificate was renewed: the session reconnects with it
        self._channel: grpc.aio.Channel | None = None  # the open session's channel (after its Welcome)
        self._channel_ready = asyncio.Event()
        self.chat_keys: tuple[bytes, ...] | None = None  # None: none pushed yet (nor cached)
        self._chat_key_listeners: list[Callable[[tuple[bytes, ...]], None]] = []
        self._chat_key_writes: asyncio.Task[None] | None = None
        SILENCE.set_function(lambda: -1.0 if math.isinf(s := self.authorizer.silence()) else s)

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.origin.address)

    @property
    def node_id(self) -> str:
        return self.identity.node_id if self.identity else ""

    @property
    def gpu_models(self) -> tuple[str, ...]:
        last = self.telemetry.last
        return tuple(sorted({g.name for g in last.gpus})) if last else ()

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.enabled:
            return
        data = self.cfg.data_path
        self.identity = await asyncio.to_thread(enroll.load_identity, data)
        cached = await asyncio.to_thread(load_chat_keys, data)
        if cached is not None and self.chat_keys is None:
            self._set_chat_keys(cached)
        token = self.cfg.origin.enroll_token
        if self.identity is not None:
            if token:
                log.info("already enrolled as %s; ignoring the enrollment token", self.identity.node_id)
        else:
            if not token:
                raise EnrollmentError("this node is not enrolled with the controller yet: pass --enroll-token TOKEN "
                                      "(create one there with `originctl token create`)")
            enroll.split_token(token)  # a malformed token is a permanent error: say so now
            first = asyncio.create_task(self._enroll(), name="edged-enroll")
            await asyncio.wait({first}, timeout=START_ENROLL_TIMEOUT)
            if not first.done():
                # slow, not refused: never abandon an Enroll in flight (the token may be spent by it)
                log.warning("the controller is slow to answer; edged keeps serving and finishes enrolling "
                            "in the background")
                self._first_enroll = first
            else:
                try:
                    self.identity = first.result()
                    self._notify_identity(self.identity)
                except ControllerUnavailable as exc:
                    log.warning("controller not reachable (%s); edged keeps serving and enrolls when it is", exc)
        self._task = asyncio.create_task(self._run(), name="edged-agent")

    async def stop(self) -> None:
        self._stopping = True
        call = self._call
        if call is not None and self.connected:
            # say goodbye and let the controller end the stream, so it marks this node at once
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._write(call, convert.goodbye("edged stopping")), GOODBYE_TIMEOUT)
                await asyncio.wait_for(call.done_writing(), GOODBYE_TIMEOUT)
            if self._task is not None:
                await asyncio.wait({self._task}, timeout=GOODBYE_TIMEOUT)
        if self._first_enroll is not None:
            self._first_enroll.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._renewing
        if self._flushing is not None:
            self._flushing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flushing
            self._flushing = None
        if self._chat_key_writes is not None:
            with contextlib.suppress(Exception):
                await self._chat_key_writes
        await self.telemetry.close()

    # --- enrollment -------------------------------------------------------------------------------

    async def _resolve(self, fingerprint: str = "") -> tuple[str, int]:
        address = self.cfg.origin.address
        if address == "auto":
            from edged.agent.discovery import find_controller  # zeroconf only when asked to

            address = await find_controller(DISCOVERY_WAIT, fingerprint)
        return parse_hostport(address, "origin.address")

    def _node_info(self, gpu: GpuState | None) -> Any:
        status = self._safe_status()
        node = self.cfg.node
        public_url = node.public_url or status.http_url
        return convert.node_info_to_pb(
            name=node.name or socket.gethostname(), hostname=socket.gethostname(),
            site=node.site or (self.identity.site if self.identity else ""), version=edged.__version__,
            latitude=node.latitude, longitude=node.longitude, prefixes=node.prefixes, public_url=public_url,
            status=status, heartbeat_seconds=self.heartbeat, gpu=gpu, viewer_limit=node.viewer_limit,
            egress_limit_bps=node.egress_limit_bps, relay=node.relay, reachable=node.reachable,
            relay_host=node.relay_host,
        )

    def _safe_status(self) -> NodeStatus:
        try:
            return self._status()
        except Exception:
            log.exception("status callback failed")
            return NodeStatus()

    async def _enroll(self) -> enroll.Identity:
        token = self.cfg.origin.enroll_token
        _, fingerprint = enroll.split_token(token)
        host, port = await self._resolve(fingerprint)
        ca_pem = await asyncio.to_thread(enroll.fetch_ca, host, port, fingerprint)
        name = self.cfg.node.name or socket.gethostname()
        key_pem, csr_pem = await asyncio.to_thread(enroll.new_key_and_csr, name)
        gpu = await self.telemetry.sample()
        async with grpc.aio.secure_channel(join_hostport(host, port), grpc.ssl_channel_credentials(ca_pem),
                                           options=_channel_options()) as channel:
            stub = edge_pb2_grpc.EnrollmentServiceStub(channel)
            try:
                resp = await stub.Enroll(edge_pb2.EnrollRequest(token=token, csr_pem=csr_pem,
                                                                info=self._node_info(gpu)), timeout=RPC_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                raise _map_rpc_error(exc, f"enrolling with {host}:{port}") from None
        if fingerprint_pem(resp.ca_certificate_pem) != fingerprint:
            raise EnrollmentError(f"the controller at {host}:{port} answered with another CA than the token names")
        ident = enroll.Identity(node_id=resp.node_id, key_pem=key_pem, cert_pem=resp.certificate_pem,
                                ca_pem=resp.ca_certificate_pem, origin=f"{host}:{port}", edge_port=resp.edge_port,
                                site=resp.site, enrolled_unix=time.time())
        await asyncio.to_thread(enroll.save_identity, self.cfg.data_path, ident)
        log.info("enrolled with the controller at %s:%d as node %s", host, port, ident.node_id)
        return ident

    # --- the link ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(BACKOFF_BASE, BACKOFF_CAP)
        quiet = False  # after a failure is logged, repeats go to debug until a connection works again
        while not self._stopping:
            started = time.monotonic()
            self._linked = False
            self._linked_at = math.inf
            try:
                if self.identity is None:
                    first, self._first_enroll = self._first_enroll, None
                    self.identity = await (first if first is not None else self._enroll())
                    self._notify_identity(self.identity)
                await self._session(self.identity)
            except EnrollmentError as exc:
                self.error = exc
                log.error("the controller link stopped for good: %s", exc)
                return
            except grpc.aio.AioRpcError as exc:
                err = _map_rpc_error(exc, "controller stream")
                if isinstance(err, EnrollmentError):
                    self.error = err
                    log.error("the controller link stopped for good: %s", err)
                    return
                if not self._stopping:
                    (log.debug if quiet and not self._linked else log.warning)("%s; reconnecting", err)
            except (ControllerUnavailable, OSError, TimeoutError) as exc:
                if not self._stopping:
                    (log.debug if quiet and not self._linked else log.warning)(
                        "controller unreachable: %s; retrying", exc or "timed out")
            except Exception:  # a bug or an unexpected library error: keep the edge up, keep trying
                log.exception("controller link failed; retrying")
            finally:
                self.connected = False
                self._call = None
            quiet = True
            now = time.monotonic()
            if self._linked and now - started > STABLE_AFTER:
                backoff.reset()
            if now - self._linked_at >= GOOD_LINK_HEARTBEATS * self.heartbeat:
                self._reattach_until = now + REATTACH_WINDOW
            if self._stopped():  # stop() may have run while the attempt was failing
                return
            await asyncio.sleep(backoff.next(self.heartbeat if now < self._reattach_until else math.inf))

    def _stopped(self) -> bool:
        return self._stopping

    async def _edge_port(self, ident: enroll.Identity, host: str, port: int) -> int:
        creds = grpc.ssl_channel_credentials(ident.ca_pem)
        async with grpc.aio.secure_channel(join_hostport(host, port), creds, options=_channel_options()) as channel:
            try:
                resp = await edge_pb2_grpc.EnrollmentServiceStub(channel).GetEndpoints(
                    edge_pb2.GetEndpointsRequest(), timeout=RPC_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _PERMANENT:
                    raise
                return ident.edge_port  # the main port is unwell; the edge port may still answer
        return resp.edge_port or ident.edge_port

    async def _session(self, ident: enroll.Identity) -> None:
        if self._last_address is not None and time.monotonic() < self._reattach_until:
            host, port = self._last_address  # re-attaching: no mDNS browse (the controller announces itself last)
        else:
            host, port = await self._resolve(fingerprint_pem(ident.ca_pem))
        edge_port = await self._edge_port(ident, host, port)
        creds = grpc.ssl_channel_credentials(ident.ca_pem, ident.key_pem, ident.cert_pem)
        async with grpc.aio.secure_channel(join_hostport(host, edge_port), creds,
                                           options=_channel_options(keepalive_seconds(self.heartbeat))) as channel:
            call = edge_pb2_grpc.EdgeServiceStub(channel).Connect()
            self._call = call
            gpu = self.telemetry.last or await self.telemetry.sample()
            await self._write(call, convert.hello(self._node_info(gpu), self.boot_id))
            first = await asyncio.wait_for(call.read(), RPC_TIMEOUT)
            if first is grpc.aio.EOF or not first.HasField("welcome"):
                raise ControllerUnavailable("the controller closed the stream before its Welcome")
            welcome = first.welcome
            limit = silence_limit(welcome.pulse_seconds)
            self._heard()
            self.authorizer.async_link_up(limit)
            self.draining = welcome.draining
            self._stub = edge_pb2_grpc.EdgeServiceStub(channel)
            self._channel = channel
            self._channel_ready.set()
            self.connected = True
            self._linked = True
            self._linked_at = time.monotonic()
            self._last_address = (host, port)
            self._announce_live()
            self._renewed.clear()
            if not enroll.serves_tls(ident.cert_pem) and (self._renewing is None or self._renewing.done()):
                self._renewing = asyncio.create_task(self._renew(ident), name="edged-agent-renew")
            LINK_UP.set(1)
            log.info("connected to the controller at %s:%d as node %s (state %s; it counts as down after %s "
                     "without a message)", host, edge_port, ident.node_id, common_pb2.NodeState.Name(welcome.state),
                     f"{limit:.1f} s" if limit != math.inf else "the stream's end")
            tasks = {asyncio.create_task(self._read_commands(call), name="edged-agent-read"),
                     asyncio.create_task(self._heartbeats(call), name="edged-agent-report"),
                     asyncio.create_task(self._watch(limit, welcome.pulse_seconds), name="edged-agent-watch"),
                     asyncio.create_task(self._until_renewed(), name="edged-agent-renewed")}
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # the first failure surfaces here; else the reader saw the stream's end
            except ControllerSilent:
                LINK_LOST.labels("silent").inc()
                raise
            except BaseException:
                LINK_LOST.labels("failed").inc()
                raise
            else:
                LINK_LOST.labels("closed").inc()
            finally:
                LINK_UP.set(0)
                self._stub = None
                self._channel = None
                self._channel_ready.clear()
                self.connected = False
                self.authorizer.async_link_down()
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                call.cancel()
        if not self._stopping:
            self._quiet.warning("closed", "the controller closed the stream; reconnecting")

    async def _heartbeats(self, call: Any) -> None:
        loop = asyncio.get_running_loop()
        seq = 0
        next_at = loop.time()
        while True:
            gpu = await self.telemetry.sample()
            seq += 1
            msg = convert.report(convert.report_to_pb(seq, int(time.time() * 1e6), gpu, read_host(),
                                                      self._safe_status(), self.relay_directory.relaying()))
            await self._write(call, msg, events_first=True)
            next_at += self.heartbeat
            now = loop.time()
            if next_at < now:  # fell behind (suspended, or a slow NVML): skip, never burst
                next_at = now + self.heartbeat
            await asyncio.sleep(next_at - now)

    def _heard(self) -> None:
        self._stream_heard = time.monotonic()
        self.authorizer.async_heard()

    async def _watch(self, limit: float, pulse_seconds: float) -> None:
        """Raise ControllerSilent once nothing came down the stream for `limit` seconds: a controller whose
        process hangs keeps its TCP connection open, so only its silence tells (keepalive is the backstop)."""
        if math.isinf(limit):
            await asyncio.Future()  # an older controller without pulses: only the stream's end tells
        while True:
            quiet = time.monotonic() - self._stream_heard
            if quiet > limit:
                raise ControllerSilent(f"nothing heard from the controller for {quiet:.1f} s ({SILENCE_PULSES} "
                                       f"pulses of {pulse_seconds:g} s): it counts as down")
            await asyncio.sleep(limit - quiet + 0.01)

    async def _read_commands(self, call: Any) -> None:
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF:
                return
            self._heard()
            body = msg.WhichOneof("body")
            if body == "key_table":
                self.authorizer.async_table(convert.key_entries(msg.key_table), full=msg.key_table.full,
                                            more=msg.key_table.more)
            elif body == "key_invalidation":
                self.authorizer.async_invalidate(msg.key_invalidation.channel)
            elif body == "chat_keys":
                self._chat_keys_pushed(tuple(msg.chat_keys.public_key_pem[:MAX_CHAT_KEYS]))
            elif body == "relay_map":
                m = msg.relay_map
                self.relay_directory.async_map([convert.relay_route_from_pb(r) for r in m.routes], m.removed,
                                               full=m.full, more=m.more)
            elif msg.HasField("command"):
                cmd = msg.command
                if cmd.HasField("set_draining"):
                    self.draining = cmd.set_draining.draining
                    log.info("controller: draining %s", "on" if self.draining else "off")
                    await self._write(call, convert.command_result(cmd.id, True))
                else:
                    await self._write(call, convert.command_result(cmd.id, False, "unknown command"))

    async def _write(self, call: Any, msg: Any, *, events_first: bool = False) -> None:
        """One message (after the queued stream events), within WRITE_TIMEOUT: a controller that stopped
        reading must not hold the link (or the edge's reports) forever."""
        async with self._write_lock:  # grpc.aio allows one write in flight per call
            try:
                async with asyncio.timeout(WRITE_TIMEOUT):
                    if events_first:
                        await self._write_events(call)
                    await call.write(msg)
            except TimeoutError:
                raise ControllerUnavailable(f"a write to the controller did not finish within {WRITE_TIMEOUT:g} s "
                                            "(it stopped reading)") from None

    async def _write_events(self, call: Any) -> None:
        """Under the write lock: queued stream events, oldest first (one leaves the queue once written), then the
        latest segment numbering of each channel ingested here."""
        while self._events:
            await call.write(self._events[0])
            self._events.popleft()
        while self._numbering:
            channel = next(iter(self._numbering))
            await call.write(self._numbering[channel])
            if self._numbering.get(channel) is not None:
                del self._numbering[channel]

    # --- publish authorization and stream events (loop-only) ----------------------------------------

    async def authorize_publish(self, stream_key: str, protocol: str, remote: str) -> Grant:
        """The controller's answer; ControllerUnavailable when it cannot be asked now."""
        stub = self._stub
        if stub is None:
            raise ControllerUnavailable("not connected to the controller")
        try:
            resp = await stub.AuthorizePublish(convert.authorize_request(stream_key, protocol, remote),
                                               timeout=AUTHORIZE_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise ControllerUnavailable(f"AuthorizePublish: {exc.code().name}: {exc.details() or ''}") from None
        return convert.grant_from_pb(resp)

    def async_stream_started(self, channel: str, protocol: str, *, time_unix_ms: int, transcode: bool, encoder: str,
                             renditions: tuple[str, ...], reason: str, by_controller: bool) -> None:
        """A stream started (or, with the same time, an update of it: its renditions once the source is probed)."""
        msg = convert.stream_started(channel, protocol, time_unix_ms, transcode=transcode, encoder=encoder,
                                     renditions=renditions, reason=reason, by_controller=by_controller)
        if self.enabled:
            self._live[channel] = msg
        self._queue_event(msg)

    def async_stream_ended(self, channel: str, protocol: str) -> None:
        self._live.pop(channel, None)
        self._queue_event(convert.stream_ended(channel, protocol, int(time.time() * 1000)))

    def _announce_live(self) -> None:
        """After a Welcome: tell again of every live stream (its real start time, protocol and placement), before
        the first report, so a controller that restarted, or ended the streams of this node while the link was
        down, keeps (or gets back) its true record instead of one made up from a report."""
        for msg in self._live.values():
            if msg not in self._events:
                self._events.append(msg)

    def _queue_event(self, msg: Any) -> None:
        if not self.enabled:
            return
        self._events.append(msg)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush_events(), name="edged-agent-events")

    async def _flush_events(self) -> None:
        call = self._call
        if call is None or not self.connected:
            return  # sent after the next Welcome, before the first report
        try:
            async with self._write_lock, asyncio.timeout(WRITE_TIMEOUT):
                await self._write_events(call)
        except Exception as exc:  # the stream broke (or stalled): the link reconnects and sends them then
            log.debug("stream events not sent yet: %s", exc)

    def async_numbering(self, channel: str, next_seq: int, disc_seq: int) -> None:
        """A segment of `channel` (ingested here) was committed: its next sequence number and discontinuity count
        go up (the latest per channel, written after the queued stream events), so the controller can continue
        the numbering on another ingest edge."""
        if not self.enabled:
            return
        self._numbering.pop(channel, None)  # re-inserted last: channels take turns
        self._numbering[channel] = convert.numbering(channel, next_seq, disc_seq)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush_events(), name="edged-agent-events")

    # --- fleet distribution ------------------------------------------------------------------------------

    async def _ask_relay_parent(self, channel: str, exclude: tuple[str, ...]) -> RelayRoute:
        """The controller's route for `channel` to this edge; NotServed when nobody can serve it here,
        ControllerUnavailable when the controller cannot be asked now."""
        stub = self._stub
        if stub is None:
            raise ControllerUnavailable("not connected to the controller")
        try:
            resp = await stub.GetRelayParent(convert.relay_parent_request(channel, exclude),
                                             timeout=self.relay_directory.deadline)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                raise NotServed(exc.details() or exc.code().name) from None
            raise ControllerUnavailable(f"GetRelayParent: {exc.code().name}: {exc.details() or ''}") from None
        self._heard()
        return convert.relay_route_from_pb(resp)

    async def _until_renewed(self) -> None:
        await self._renewed.wait()
        raise ControllerUnavailable("reconnecting with the renewed node certificate")

    async def _renew(self, ident: enroll.Identity) -> None:
        """A certificate from before the relay (clientAuth only) cannot serve the relay listener: trade a new key's
        CSR for one that can, save it, and reconnect with it (the controller accepts only the newest)."""
        stub = self._stub
        if stub is None:
            return
        try:
            key_pem, csr_pem = await asyncio.to_thread(enroll.new_key_and_csr, self.cfg.node.name or ident.node_id)
            resp = await stub.RenewCertificate(convert.renew_request(csr_pem), timeout=RPC_TIMEOUT)
            renewed = dataclasses.replace(ident, key_pem=key_pem, cert_pem=resp.certificate_pem)
            await asyncio.to_thread(enroll.save_identity, self.cfg.data_path, renewed)
        except grpc.aio.AioRpcError as exc:
            self._quiet.warning("renew", "renewing the node certificate for the relay listener failed (%s: %s); "
                                "retrying at the next connection", exc.code().name, exc.details() or "")
            return
        except Exception:
            log.exception("renewing the node certificate failed")
            return
        self.identity = renewed
        log.info("node certificate renewed (it now also serves the relay listener); reconnecting with it")
        self._notify_identity(renewed)
        self._renewed.set()  # the session ends; the link reconnects with the new certificate

    # --- chat ------------------------------------------------------------------------------------------

    async def chat_channel(self) -> grpc.aio.Channel:
        """The mutual-TLS channel of the current controller session, waiting while there is none (the chat
        stream of edged.chat.hub_bus.HubBus rides on it). The agent owns and closes it when the session ends:
        a chat call on it then fails, and the next `chat_channel()` waits for the next session's."""
        while True:
            await self._channel_ready.wait()
            channel = self._channel
            if channel is not None:
                return channel

    def on_chat_keys(self, listener: Callable[[tuple[bytes, ...]], None]) -> None:
        """Call `listener` with the chat token keys (PEMs) now, when known (pushed, or cached from an earlier
        run), and whenever the controller pushes a new set."""
        self._chat_key_listeners.append(listener)
        if self.chat_keys is not None:
            listener(self.chat_keys)

    def _chat_keys_pushed(self, pems: tuple[bytes, ...]) -> None:
        if pems == self.chat_keys:
            return
        self._set_chat_keys(pems)
        log.info("controller: %d chat token key(s) to verify chatters with", len(pems))
        previous = self._chat_key_writes

        async def save() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            try:
                await asyncio.to_thread(save_chat_keys, self.cfg.data_path, pems)
            except OSError as exc:
                self._quiet.warning("chat-keys", "cannot cache the chat token keys in %s: %s",
                                    enroll.identity_dir(self.cfg.data_path), exc)

        self._chat_key_writes = asyncio.get_running_loop().create_task(save(), name="edged-agent-chat-keys")

    def _set_chat_keys(self, pems: tuple[bytes, ...]) -> None:
        self.chat_keys = pems
        for cb in list(self._chat_key_listeners):
            try:
                cb(pems)
            except Exception:
                log.exception("chat key listener failed")

    def _notify_identity(self, ident: enroll.Identity) -> None:
        for cb in list(self.identity_listeners):
            try:
                cb(ident)
            except Exception:
                log.exception("identity listener failed")


def load_chat_keys(data_path: Path) -> tuple[bytes, ...] | None:
    """The chat token keys cached by an earlier run (None: never pushed). Blocking."""
    path = enroll.identity_dir(data_path) / CHAT_KEYS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read the cached chat token keys %s: %s", path, exc)
        return None
    from edged.chat.identity import split_pem_bundle

    return tuple(split_pem_bundle(data))


def save_chat_keys(data_path: Path, pems: tuple[bytes, ...]) -> None:
    """Cache the pushed chat token keys (a PEM bundle; public keys, so no secret). Blocking."""
    d = enroll.identity_dir(data_path)
    d.mkdir(parents=True, exist_ok=True)
    write_atomic(d / CHAT_KEYS_FILE, b"".join(p if p.endswith(b"\n") else p + b"\n" for p in pems))
