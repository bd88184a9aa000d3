"""RTMP publish server (plain and RTMPS): owns sockets, timeouts and limits; the protocol is the sans-IO core.

Hostile load. A connection is *unauthenticated* from accept until its publish is accepted. The
core holds it to small budgets (see edged.protocols.rtmp.session); the server caps how many such
connections exist, per source address (IPv6: per /64) and in total, so that the rest of
`rtmp.max_connections` stays free for publishers that authenticated. At the total cap an
unauthenticated connection is closed to admit the newcomer: the oldest still in the RTMP handshake,
else the oldest past it, never one that asked to publish (so idle sockets cannot keep encoders out).
After a publish, non-media messages are rate-limited (`rtmp.control_messages_per_second`, bursts
of 2 s worth) by refilling the core's control credit. Every read is followed by a yield to the
loop, so a peer with a full socket buffer cannot hold it. Refusals and closes of unauthenticated
connections are logged through QuietLog (one line per reason per interval) and counted in
edged_rtmp_rejected_total{reason}.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import time
from typing import Protocol

from edged import metrics
from edged.config import RtmpConfig, parse_hostport, rtmps_context
from edged.errors import AuthError, ProtocolError, PublisherBusy
from edged.ingest.auth import StreamKeyAuthorizer
from edged.log import QuietLog
from edged.media.hub import StreamHub
from edged.media.stream import Stream
from edged.protocols.flv import FlvNormalizer, Unsupported
from edged.protocols.rtmp import events as ev
from edged.protocols.rtmp.chunk import BudgetExceeded
from edged.protocols.rtmp.session import RtmpServerSession, SessionState

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024  # bytes per socket read
WRITE_TIMEOUT = 10.0  # s: a peer that does not read our replies is dropped
CONTROL_BURST_SECONDS = 2.0  # the control-message bucket holds this many seconds of the rate


class _Closed(Exception):
    """End this connection; the message is the logged reason."""

    def __init__(self, reason: str, metric: str) -> None:
        super().__init__(reason)
        self.metric = metric


def address_key(host: str) -> str:
    """The per-address bucket of a peer: its IPv4 address, or its IPv6 /64."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host or "-"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class Admittee(Protocol):
    """What admission looks at on a connection."""

    address: str  # the per-address bucket (address_key)

    def eviction_rank(self) -> int:
        """0: never evicted; otherwise higher ranks go first (oldest first within a rank)."""
        ...

    def evict(self, reason: str) -> None: ...


class Admission:
    """Which connections may stay open: the caps of rtmp.max_connections and rtmp.max_unauthenticated*.

    Plain bookkeeping on the loop thread; a connection is admitted at accept, marked when its publish
    is accepted, and released when it ends.
    """

    def __init__(self, cfg: RtmpConfig) -> None:
        self.cfg = cfg
        self.open = 0
        self._pending: dict[Admittee, None] = {}  # unauthenticated, oldest first
        self._per_address: dict[str, int] = {}  # unauthenticated connections per address key

    @property
    def unauthenticated(self) -> int:
        return len(self._pending)

    def pending_from(self, key: str) -> int:
        return self._per_address.get(key, 0)

    def admit(self, conn: Admittee) -> str | None:
        """Register a new connection, or return why it is refused (a metric reason)."""
        cfg = self.cfg
        if self.open >= cfg.max_connections:
            return "too_many_connections"
        if self._per_address.get(conn.address, 0) >= cfg.max_unauthenticated_per_address:
            return "too_many_from_address"
        if len(self._pending) >= cfg.max_unauthenticated:
            victim, best = None, 0
            for c in self._pending:  # oldest first; at most max_unauthenticated of them
                rank = c.eviction_rank()
                if rank > best:
                    victim, best = c, rank
            if victim is None:
                return "too_many_unauthenticated"
            self._forget(victim)
            victim.evict("the unauthenticated connection limit was reached (rtmp.max_unauthenticated)")
        self.open += 1
        self._pending[conn] = None
        self._per_address[conn.address] = self._per_address.get(conn.address, 0) + 1
        return None

    def authenticated(self, conn: Admittee) -> None:
        """Its publish was accepted: it no longer counts against the unauthenticated caps."""
        self._forget(conn)

    def release(self, conn: Admittee) -> None:
        self._forget(conn)
        self.open -= 1

    def _forget(self, conn: Admittee) -> None:
        if conn in self._pending:
            del self._pending[conn]
            left = self._per_address[conn.address] - 1
            if left:
                self._per_address[conn.address] = left
            else:
                del self._per_address[conn.address]


class RtmpConnection:
    """One TCP connection from an encoder."""

    def __init__(self, server: RtmpServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 tls: ssl.SSLContext | None = None) -> None:
        self.server = server
        self.cfg = server.cfg
        self.reader = reader
        self.writer = writer
        self.tls = tls
        self.accepted_at = time.monotonic()
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.remote = f"{peer[0]}:{peer[1]}"
        self.address = address_key(str(peer[0]))
        self.session = RtmpServerSession(max_chunk_size=self.cfg.max_chunk_size,
                                         max_message_size=self.cfg.max_message_size,
                                         pre_publish_bytes=self.cfg.pre_publish_bytes,
                                         pre_publish_messages=self.cfg.pre_publish_messages)
        self._control_rate = self.cfg.control_messages_per_second
        self._control_cap = self._control_rate * CONTROL_BURST_SECONDS
        self._credit_at = 0.0  # when control credit was last added (monotonic s)
        self.stream: Stream | None = None
        self.stream_id = 0
        self.normalizer = FlvNormalizer()
        self._warned: set[str] = set()
        self.channel = "-"
        self.published = False  # after the first publish the idle timeout applies, not the handshake one
        self.kicked = ""  # why the app ended this publisher, if it did
        self.kicked_metric = "revoked"

    def eviction_rank(self) -> int:
        """Who goes first at the unauthenticated cap: a connection still in the handshake, then one
        past it; never one waiting for a publish decision (or a publisher)."""
        state = self.session.state
        if self.session.authenticated or state in (SessionState.PUBLISH_REQUESTED, SessionState.PUBLISHING):
            return 0
        return 2 if state is SessionState.HANDSHAKE else 1

    def evict(self, reason: str) -> None:
        """Close this connection to make room (loop thread): the read loop sees the socket close."""
        self.kicked_metric = "evicted"
        self._kick(reason)

    async def run(self) -> None:
        reason, metric = "peer closed the connection", ""
        try:
            if self.tls is not None:
                await self._start_tls(self.tls)
            await self._loop()
        except _Closed as exc:
            reason, metric = str(exc), exc.metric
        except BudgetExceeded as exc:
            reason, metric = f"over budget: {exc}", "budget_exceeded"
            with contextlib.suppress(Exception):
                await self._flush()
        except ProtocolError as exc:
            reason, metric = f"protocol error: {exc}", "protocol_error"
            with contextlib.suppress(Exception):
                await self._flush()
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            reason = f"connection lost: {exc.__class__.__name__}"
        finally:
            if self.stream is not None:
                self.server.hub.async_release(self.stream)
                self.stream = None
            self.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.writer.wait_closed(), 2)
        if self.kicked:
            reason, metric = f"disconnected: {self.kicked}", self.kicked_metric
        if metric:
            metrics.RTMP_REJECTED.labels(reason=metric).inc()
        level = logging.WARNING if metric else logging.INFO
        if self.session.authenticated:
            log.log(level, "rtmp conn=%s channel=%s closed: %s", self.remote, self.channel, reason)
        else:  # a stranger can make these as fast as it reconnects: one line per reason per interval
            self.server.quiet.log(metric or "closed", level, "rtmp conn=%s channel=%s closed: %s",
                                  self.remote, self.channel, reason)

    async def _start_tls(self, ctx: ssl.SSLContext) -> None:
        remaining = max(self.cfg.handshake_timeout - (time.monotonic() - self.accepted_at), 0.001)
        # StreamWriter.start_tls tells the stream protocol it runs over TLS only when this coroutine
        # resumes; a peer that closes right after the handshake (ffmpeg refusing our certificate does)
        # reaches its eof_received first, and asyncio then logs a warning per connection. Say it now:
        # the flag only stops eof_received from asking for a half-close, which TLS cannot do anyway.
        protocol = self.writer.transport.get_protocol()
        if hasattr(protocol, "_over_ssl"):
            protocol._over_ssl = True
        try:
            await self.writer.start_tls(ctx, ssl_handshake_timeout=remaining)
        except TimeoutError:
            raise _Closed("no TLS handshake within the handshake timeout", "handshake_timeout") from None
        except (ssl.SSLError, ConnectionError, OSError) as exc:
            raise _Closed(f"TLS handshake failed: {exc}", "tls_handshake") from None

    def _refill_control_credit(self, now: float) -> None:
        if self.session.authenticated:
            self.session.add_control_credit(self._control_rate * (now - self._credit_at), self._control_cap)
            self._credit_at = now

    async def _loop(self) -> None:
        started = self.accepted_at
        while True:
            if self.stream is None and not self.published:
                remaining = self.cfg.handshake_timeout - (time.monotonic() - started)
                if remaining <= 0:
                    raise _Closed("no publish request within the handshake timeout", "handshake_timeout")
                timeout = remaining
            else:
                timeout = self.cfg.idle_timeout
            try:
                data = await asyncio.wait_for(self.reader.read(READ_SIZE), timeout)
            except TimeoutError:
                if self.stream is None and not self.published:
                    raise _Closed("no publish request within the handshake timeout", "handshake_timeout") from None
                raise _Closed(f"no data for {self.cfg.idle_timeout:g}s", "idle_timeout") from None
            arrival = time.monotonic()
            self._refill_control_credit(arrival)
            self.session.receive_data(data)
            for event in self.session.events():
                if not await self._on_event(event, arrival):
                    await self._flush()
                    return
            await self._flush()
            if not data:
                return
            await asyncio.sleep(0)  # a read that found bytes waiting did not yield: let others run

    async def _flush(self) -> None:
        out = self.session.data_to_send()
        if out:
            self.writer.write(out)
            try:
                await asyncio.wait_for(self.writer.drain(), WRITE_TIMEOUT)
            except TimeoutError:
                raise _Closed("peer does not read our replies", "write_timeout") from None

    async def _on_event(self, event: object, arrival: float) -> bool:
        """Handle one event; False ends the connection (after flushing replies)."""
        if isinstance(event, ev.VideoData | ev.AudioData):
            if self.stream is None or event.stream_id != self.stream_id:
                return True
            body = event.data
            metrics.INGEST_BYTES.labels(source="rtmp").inc(len(body))
            if isinstance(event, ev.VideoData):
                pkt = self.normalizer.video(event.timestamp, body, arrival)
            else:
                pkt = self.normalizer.audio(event.timestamp, body, arrival)
            if isinstance(pkt, Unsupported):
                if pkt.what not in self._warned:
                    self._warned.add(pkt.what)
                    log.warning("rtmp conn=%s channel=%s ignoring unsupported %s", self.remote, self.channel, pkt.what)
            elif pkt is not None:
                self.stream.publish(pkt)
            return True
        if isinstance(event, ev.PublishRequested):
            return await self._on_publish(event)
        if isinstance(event, ev.Metadata):
            if self.stream is not None:
                vals = event.values
                if "videocodecid" not in vals and "audiocodecid" in vals:
                    self.stream.set_audio_only()
            return True
        if isinstance(event, ev.Unpublished):
            if self.stream is not None and event.stream_id == self.stream_id:
                # a deliberate stop: the playlist may end now (a lost connection waits for a reconnect)
                self.server.hub.async_release(self.stream, deliberate=True)
                self.stream = None
                log.info("rtmp conn=%s channel=%s unpublished", self.remote, self.channel)
            return True
        if isinstance(event, ev.ConnectionClosed):
            return False
        return True

    def _kick(self, reason: str) -> None:
        """The app ends this publisher (loop thread): the read loop sees the socket close."""
        self.kicked = reason
        self.writer.transport.abort()

    async def _on_publish(self, event: ev.PublishRequested) -> bool:
        if self.stream is not None:
            self.session.reject_publish(event.stream_id, "NetStream.Publish.BadName", "already publishing")
            metrics.PUBLISH_REFUSED.labels(source="rtmp", reason="second_publish").inc()
            return False
        try:
            channel = await self.server.authorizer.authorize(event.stream_key, protocol="rtmp", remote=self.remote)
        except AuthError as exc:
            self.session.reject_publish(event.stream_id, "NetStream.Publish.BadName", f"stream key refused: {exc}")
            metrics.PUBLISH_REFUSED.labels(source="rtmp", reason="bad_key").inc()
            self.server.quiet.warning("bad_key", "rtmp conn=%s publish refused: %s (app=%s)",
                                      self.remote, exc, event.app)
            return False
        self.channel = channel
        try:
            self.stream = self.server.hub.async_claim(channel, "rtmp")
        except PublisherBusy:
            self.session.reject_publish(event.stream_id, "NetStream.Publish.BadName", "channel is already live")
            metrics.PUBLISH_REFUSED.labels(source="rtmp", reason="busy").inc()
            self.server.quiet.warning("busy", "rtmp conn=%s channel=%s publish refused: channel already has a "
                                      "publisher", self.remote, channel)
            return False
        self.stream_id = event.stream_id
        self.stream.on_kick = self._kick
        self.published = True
        if not self.session.authenticated:
            self.server.admission.authenticated(self)
            # the rate applies from here on, to the rest of this read too: start with a full bucket
            self._credit_at = time.monotonic()
            self.session.add_control_credit(0, self._control_cap)
        self.session.accept_publish(event.stream_id)
        log.info("rtmp conn=%s channel=%s publishing", self.remote, channel)
        return True


_REFUSALS = {
    "too_many_connections": "rtmp.max_connections open",
    "too_many_from_address": "rtmp.max_unauthenticated_per_address reached for this address",
    "too_many_unauthenticated": "rtmp.max_unauthenticated reached, all of them waiting for a publish decision",
}


class RtmpServer:
    """The RTMP listener, and the RTMPS one (the same server behind TLS) when a certificate is set."""

    def __init__(self, cfg: RtmpConfig, hub: StreamHub, authorizer: StreamKeyAuthorizer) -> None:
        self.cfg = cfg
        self.hub = hub
        self.authorizer = authorizer
        self.admission = Admission(cfg)
        self.quiet = QuietLog(log)
        self._servers: list[asyncio.Server] = []
        self._conns: set[asyncio.Task[None]] = set()
        self.port = 0
        self.tls_port = 0  # 0 while RTMPS is off

    async def start(self) -> None:
        host, port = parse_hostport(self.cfg.listen, "rtmp.listen")
        server = await asyncio.start_server(self._accept, host, port, reuse_address=True, limit=READ_SIZE)
        self._servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        log.info("RTMP listening on %s:%d (at most %d connections, %d unauthenticated, %d per address)",
                 host, self.port, self.cfg.max_connections, self.cfg.max_unauthenticated,
                 self.cfg.max_unauthenticated_per_address)
        if self.cfg.tls_cert_file and self.cfg.tls_key_file:
            ctx = rtmps_context(self.cfg)
            host, port = parse_hostport(self.cfg.tls_listen, "rtmp.tls_listen")

            async def accept_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await self._accept(reader, writer, ctx)

            server = await asyncio.start_server(accept_tls, host, port, reuse_address=True, limit=READ_SIZE)
            self._servers.append(server)
            self.tls_port = server.sockets[0].getsockname()[1]
            log.info("RTMPS listening on %s:%d", host, self.tls_port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      tls: ssl.SSLContext | None = None) -> None:
        # Admission comes before any byte is read (and, for RTMPS, before the TLS handshake).
        conn = RtmpConnection(self, reader, writer, tls)
        refused = self.admission.admit(conn)
        if refused is not None:
            metrics.RTMP_REJECTED.labels(reason=refused).inc()
            self.quiet.warning(refused, "rtmp conn=%s refused: %s (%d open, %d unauthenticated, %d from %s)",
                               conn.remote, _REFUSALS[refused], self.admission.open,
                               self.admission.unauthenticated, self.admission.pending_from(conn.address),
                               conn.address)
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        metrics.RTMP_CONNECTIONS.inc()
        try:
            await conn.run()
        finally:
            self.admission.release(conn)
            metrics.RTMP_CONNECTIONS.dec()
            self._conns.discard(task)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for t in list(self._conns):
            t.cancel()
        for t in list(self._conns):
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
