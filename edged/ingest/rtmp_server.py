"""RTMP publish server: owns sockets, timeouts and limits; the protocol is the sans-IO core."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from edged import metrics
from edged.config import RtmpConfig, parse_hostport
from edged.errors import AuthError, ProtocolError, PublisherBusy
from edged.ingest.auth import StreamKeyAuthorizer
from edged.media.hub import StreamHub
from edged.media.stream import Stream
from edged.protocols.flv import FlvNormalizer, Unsupported
from edged.protocols.rtmp import events as ev
from edged.protocols.rtmp.session import RtmpServerSession

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024  # bytes per socket read
WRITE_TIMEOUT = 10.0  # s: a peer that does not read our replies is dropped


class _Closed(Exception):
    """End this connection; the message is the logged reason."""

    def __init__(self, reason: str, metric: str) -> None:
        super().__init__(reason)
        self.metric = metric


class RtmpConnection:
    """One TCP connection from an encoder."""

    def __init__(self, server: RtmpServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.cfg = server.cfg
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.remote = f"{peer[0]}:{peer[1]}"
        self.session = RtmpServerSession(max_chunk_size=self.cfg.max_chunk_size,
                                         max_message_size=self.cfg.max_message_size)
        self.stream: Stream | None = None
        self.stream_id = 0
        self.normalizer = FlvNormalizer()
        self._warned: set[str] = set()
        self.channel = "-"
        self.published = False  # after the first publish the idle timeout applies, not the handshake one
        self.kicked = ""  # why the app ended this publisher, if it did

    async def run(self) -> None:
        reason, metric = "peer closed the connection", ""
        try:
            await self._loop()
        except _Closed as exc:
            reason, metric = str(exc), exc.metric
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
            reason, metric = f"disconnected: {self.kicked}", "revoked"
        if metric:
            metrics.RTMP_REJECTED.labels(reason=metric).inc()
            log.warning("rtmp conn=%s channel=%s closed: %s", self.remote, self.channel, reason)
        else:
            log.info("rtmp conn=%s channel=%s closed: %s", self.remote, self.channel, reason)

    async def _loop(self) -> None:
        started = time.monotonic()
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
            self.session.receive_data(data)
            for event in self.session.events():
                if not await self._on_event(event, arrival):
                    await self._flush()
                    return
            await self._flush()
            if not data:
                return

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
                self.server.hub.async_release(self.stream)
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
            log.warning("rtmp conn=%s publish refused: %s (app=%s)", self.remote, exc, event.app)
            return False
        self.channel = channel
        try:
            self.stream = self.server.hub.async_claim(channel, "rtmp")
        except PublisherBusy:
            self.session.reject_publish(event.stream_id, "NetStream.Publish.BadName", "channel is already live")
            metrics.PUBLISH_REFUSED.labels(source="rtmp", reason="busy").inc()
            log.warning("rtmp conn=%s channel=%s publish refused: channel already has a publisher",
                        self.remote, channel)
            return False
        self.stream_id = event.stream_id
        self.stream.on_kick = self._kick
        self.published = True
        self.session.accept_publish(event.stream_id)
        log.info("rtmp conn=%s channel=%s publishing", self.remote, channel)
        return True


class RtmpServer:
    def __init__(self, cfg: RtmpConfig, hub: StreamHub, authorizer: StreamKeyAuthorizer) -> None:
        self.cfg = cfg
        self.hub = hub
        self.authorizer = authorizer
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        host, port = parse_hostport(self.cfg.listen, "rtmp.listen")
        self._server = await asyncio.start_server(self._accept, host, port, reuse_address=True,
                                                  limit=READ_SIZE)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("RTMP listening on %s:%d", host, self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= self.cfg.max_connections:
            metrics.RTMP_REJECTED.labels(reason="too_many_connections").inc()
            log.warning("rtmp: refusing connection, %d already open", len(self._conns))
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        metrics.RTMP_CONNECTIONS.inc()
        try:
            await RtmpConnection(self, reader, writer).run()
        finally:
            metrics.RTMP_CONNECTIONS.dec()
            self._conns.discard(task)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._conns):
            t.cancel()
        for t in list(self._conns):
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
