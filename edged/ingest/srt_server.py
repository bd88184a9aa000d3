"""SRT ingest: a libsrt listener whose publishers feed the StreamHub like RTMP publishers do.

Threads and who owns what:
- libsrt's receive thread runs the listen callback (`_on_listen`) during the handshake. It decides
  synchronously: parse the stream ID (sans-IO core), ask the authorizer's cached `lookup(key)`,
  refuse busy channels, and set the channel's own passphrase on the new socket. A refusal sets an
  SRT reject code, so the caller fails to connect and never reaches the hub.
- One epoll thread (`_run`) owns every SRT socket: accepts, `srt_recvmsg` into each publisher's
  BytePipe, periodic `srt_bstats`, and closing (the loop asks through `_commands`).
- One demux thread per publisher (ts_demux.TsDemuxer) turns the MPEG-TS into MediaPackets.
- The event loop (`_serve` per publisher) runs the definitive `await authorizer.authorize(...)`,
  claims the channel, publishes packets (delivered with call_soon_threadsafe), watches the idle
  and no-media timers, and releases the channel when the publisher goes away.
Nothing here calls libsrt on the loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass, field

from edged import metrics
from edged.config import SrtConfig, parse_hostport
from edged.errors import AuthError, PublisherBusy
from edged.ingest import libsrt, srt_metrics
from edged.ingest.auth import StreamKeyAuthorizer
from edged.ingest.ts_demux import BytePipe, TsDemuxer
from edged.media.hub import StreamHub
from edged.media.packet import MediaPacket
from edged.media.stream import Stream
from edged.protocols import srt_streamid
from edged.protocols.srt_streamid import StreamIdError

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 256  # SRT callers at once (accepted + in handshake); each costs a thread
LISTEN_BACKLOG = 64  # pending handshakes libsrt queues for accept
EPOLL_TIMEOUT_MS = 100  # ms: how often the epoll thread looks at close requests and the stop flag
MAX_READS_PER_WAKEUP = 512  # messages read from one socket before serving the others (~670 KB)
STATS_INTERVAL = 5.0  # s between srt_bstats samples per publisher
CHECK_INTERVAL = 0.25  # s between idle checks of a publisher on the loop
NO_MEDIA_TIMEOUT = 20.0  # s with bytes arriving but no decodable media before the publisher is dropped
DEMUX_EXIT_TIMEOUT = 5.0  # s to wait for a demux thread after its socket closed
STOP_GRACE = 5.0  # s for publishers to end during stop() before their tasks are cancelled
_MSG_BUF = 1500  # bytes: one live-mode SRT message is at most 1456
# s: a caller that closes its socket sends a shutdown right behind its last data, so the link breaks
# within the receiver latency of the last payload; a lost link breaks only after the peer idle timeout
# (5 s at least) of silence. A break sooner than this after the last payload is a deliberate close.
CLOSE_SILENCE = 1.5


@dataclass(eq=False)
class _Conn:
    """One accepted SRT caller. Fields marked (thread) are written by the epoll thread only."""

    sock: int
    peer: str
    key: str
    channel_hint: str  # what lookup() answered in the handshake (the passphrase was chosen for it)
    pipe: BytePipe
    last_recv: float  # (thread) monotonic time of the last payload received
    bytes_in: int = 0  # (thread)
    closed: bool = False  # (thread) socket closed and pipe ended
    closed_at: float = 0.0  # (thread) monotonic time it was closed
    close_reason: str | None = None  # why we closed it (None: the peer went away)
    channel: str | None = None  # set on the loop once the channel is claimed
    publishing: bool = False  # loop: packets are being published to `stream`
    stream: Stream | None = None
    last_media: float = 0.0  # loop: monotonic time of the last packet published
    demux_done: asyncio.Event = field(default_factory=asyncio.Event)
    demux_reason: str | None = None
    kicked: str = ""  # loop: the app ended this publisher (e.g. its key was revoked)


class SrtServer:
    """Accepts SRT publishers on `cfg.listen` (UDP) and publishes their streams into `hub`."""

    def __init__(self, cfg: SrtConfig, hub: StreamHub, authorizer: StreamKeyAuthorizer, *,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self._cfg = cfg
        self._hub = hub
        self._auth = authorizer
        self._max_connections = max_connections
        self._lib: libsrt.SrtLib | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener = libsrt.SRT_INVALID_SOCK
        self._eid = -1
        self._port = 0
        self._thread: threading.Thread | None = None
        self._stopping = False  # refuse new callers, end publishers
        self._exit = False  # the epoll thread closes what is left and returns
        self._conns: dict[int, _Conn] = {}  # (thread) socket → connection
        self._commands: queue.SimpleQueue[tuple[_Conn, str | None]] = queue.SimpleQueue()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The UDP port actually bound (useful with port 0)."""
        return self._port

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind and listen; raises DependencyMissing when libsrt is absent, SrtCallError on bind."""
        self._loop = asyncio.get_running_loop()
        host, port = parse_hostport(self._cfg.listen, "srt.listen")
        self._lib = await asyncio.to_thread(libsrt.load)
        await asyncio.to_thread(self._open, host, port)
        self._thread = threading.Thread(target=self._run, name="srt-epoll", daemon=True)
        self._thread.start()
        log.info("SRT listening on %s:%d/udp (libsrt %s, latency %d ms, encryption %s)", host, self._port,
                 self._lib.version_str, self._cfg.latency_ms,
                 "required" if self._cfg.passphrase else
                 ("per channel" if self._cfg.channel_passphrases else "off"))

    async def stop(self) -> None:
        """End every publisher (their streams end cleanly), then close the listener."""
        if self._thread is None:
            return
        self._stopping = True
        for conn in list(self._conns.values()):
            self._commands.put((conn, "shutdown"))
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        self._exit = True
        thread, self._thread = self._thread, None
        await asyncio.to_thread(thread.join)
        log.info("SRT listener on port %d stopped", self._port)

    def _open(self, host: str, port: int) -> None:
        lib = self._lib
        assert lib is not None
        if not _is_numeric(host):
            host = str(socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][4][0])
        lib.startup()
        # libsrt logs to stderr by default; errors go to our logger, and they tell us about
        # passphrase refusals, which happen inside libsrt after our listen callback.
        lib.set_log_level(libsrt.LOG_ERR)
        lib.set_log_handler(_libsrt_log)
        s = lib.create_socket()
        try:
            cfg = self._cfg
            lib.set_bool(s, libsrt.Opt.RCVSYN, False)  # accept/recv never block; epoll says when
            lib.set_int(s, libsrt.Opt.LATENCY, cfg.latency_ms)
            lib.set_int(s, libsrt.Opt.RCVLATENCY, cfg.latency_ms)
            lib.set_int(s, libsrt.Opt.PEERIDLETIMEO, int(max(5.0, cfg.idle_timeout) * 1000))
            lib.set_bool(s, libsrt.Opt.ENFORCEDENCRYPTION, True)  # no unencrypted caller on a secret
            if cfg.passphrase:
                lib.set_str(s, libsrt.Opt.PASSPHRASE, cfg.passphrase)
            if cfg.pbkeylen:
                lib.set_int(s, libsrt.Opt.PBKEYLEN, cfg.pbkeylen)
            lib.bind(s, host, port)
            self._port = lib.sockname(s)[1]
            lib.set_listen_callback(s, self._on_listen)
            lib.listen(s, LISTEN_BACKLOG)
            self._eid = lib.epoll_create()
            lib.epoll_add(self._eid, s, libsrt.Epoll.IN | libsrt.Epoll.ERR)
        except Exception:
            lib.close(s)
            lib.cleanup()
            raise
        self._listener = s

    # -- handshake (libsrt's thread) -------------------------------------------------------------
    def _on_listen(self, ns: int, peer: tuple[str, int] | None, streamid: bytes) -> int | None:
        """Accept (None) or refuse (SRT reject code) a caller before the handshake completes."""
        if self._stopping:
            return srt_streamid.REJ_OVERLOAD
        if len(self._conns) >= self._max_connections:
            srt_metrics.refused("capacity")
            return srt_streamid.REJ_OVERLOAD
        try:
            key = srt_streamid.publish_key(streamid)
        except StreamIdError as exc:
            srt_metrics.refused("mode" if exc.reject_code == srt_streamid.REJ_BAD_MODE else "bad_streamid")
            _refusal_log("SRT caller %s refused: %s", _fmt_peer(peer), exc)
            return exc.reject_code
        channel = self._lookup(key)
        if channel is None:
            srt_metrics.refused("unknown_key")
            _refusal_log("SRT caller %s refused: unknown stream key", _fmt_peer(peer))
            return srt_streamid.REJ_FORBIDDEN
        if self._hub.get(channel) is not None:  # racy pre-check; claim_publisher decides
            srt_metrics.refused("busy")
            _refusal_log("channel=%s SRT caller %s refused: channel already has a publisher",
                         channel, _fmt_peer(peer))
            return srt_streamid.REJ_CONFLICT
        secret = self._cfg.channel_passphrases.get(channel)
        if secret:
            assert self._lib is not None
            self._lib.set_str(ns, libsrt.Opt.PASSPHRASE, secret)
        return None

    def _lookup(self, key: str) -> str | None:
        """The authorizer's synchronous answer; must not block (it runs inside the handshake)."""
        return self._auth.lookup(key)

    # -- epoll thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        lib = self._lib
        assert lib is not None
        events = lib.epoll_events(64)
        buf = ctypes.create_string_buffer(_MSG_BUF)
        next_stats = time.monotonic() + STATS_INTERVAL
        try:
            while not self._exit:
                try:
                    self._drain_commands()
                    ready = lib.epoll_wait(self._eid, events, EPOLL_TIMEOUT_MS)
                    for fd, _ev in ready:
                        if fd == self._listener:
                            self._accept_one()
                        elif (conn := self._conns.get(fd)) is not None:
                            self._read(conn, buf)
                    now = time.monotonic()
                    if now >= next_stats:
                        next_stats = now + STATS_INTERVAL
                        self._collect_stats()
                except Exception:  # noqa: BLE001 - one bad socket must not stop SRT ingest for all
                    log.exception("SRT epoll loop error")
                    time.sleep(EPOLL_TIMEOUT_MS / 1000)
        finally:
            for conn in list(self._conns.values()):
                self._close(conn, "shutdown")
            lib.epoll_release(self._eid)
            lib.close(self._listener)
            lib.cleanup()

    def _accept_one(self) -> None:
        """Accept one pending caller; epoll is level-triggered and reports the next one again
        (calling srt_accept until it fails would make libsrt log an error each time)."""
        lib = self._lib
        assert lib is not None
        try:
            ns, peer = lib.accept(self._listener)
        except libsrt.SrtCallError as exc:
            log.warning("srt_accept failed: %s", exc)
            return
        if ns == libsrt.SRT_INVALID_SOCK:
            return
        try:
            lib.set_bool(ns, libsrt.Opt.RCVSYN, False)
            key = srt_streamid.publish_key(lib.get_bytes(ns, libsrt.Opt.STREAMID))
        except (libsrt.SrtCallError, StreamIdError) as exc:  # the callback already vetted it
            log.warning("SRT caller %s dropped after accept: %s", _fmt_peer(peer), exc)
            lib.close(ns)
            return
        conn = _Conn(sock=ns, peer=_fmt_peer(peer), key=key, channel_hint=self._lookup(key) or "",
                     pipe=BytePipe(), last_recv=time.monotonic())
        self._conns[ns] = conn
        lib.epoll_add(self._eid, ns, libsrt.Epoll.IN | libsrt.Epoll.ERR)
        self._to_loop(self._async_accepted, conn)

    def _read(self, conn: _Conn, buf: ctypes.Array[ctypes.c_char]) -> None:
        lib = self._lib
        assert lib is not None
        got = 0
        try:
            for _ in range(MAX_READS_PER_WAKEUP):
                n = lib.recvmsg(conn.sock, buf)
                if n <= 0:
                    break
                got += n
                if not conn.pipe.write(ctypes.string_at(buf, n), time.monotonic()):
                    if not conn.pipe.closed:
                        self._close(conn, "overflow")
                    return
        except libsrt.SrtCallError as exc:
            if exc.code not in (libsrt.Err.ECONNLOST, libsrt.Err.ENOCONN, libsrt.Err.EINVSOCK):
                log.info("SRT caller %s: %s", conn.peer, exc)
            self._close(conn, None)
        if got:
            conn.bytes_in += got
            conn.last_recv = time.monotonic()

    def _collect_stats(self) -> None:
        lib = self._lib
        assert lib is not None
        for conn in list(self._conns.values()):
            if not conn.publishing:
                continue
            try:
                stats = lib.bstats(conn.sock, clear=True)
            except libsrt.SrtCallError:
                continue  # broken: epoll reports it next
            self._to_loop(self._async_stats, conn, stats)

    def _drain_commands(self) -> None:
        while True:
            try:
                conn, reason = self._commands.get_nowait()
            except queue.Empty:
                return
            self._close(conn, reason)

    def _close(self, conn: _Conn, reason: str | None) -> None:
        """Close the socket and end the pipe (the demuxer drains it, then ends)."""
        if conn.closed:
            return
        lib = self._lib
        assert lib is not None
        conn.closed = True
        conn.closed_at = time.monotonic()
        conn.close_reason = reason
        self._conns.pop(conn.sock, None)
        lib.epoll_remove(self._eid, conn.sock)
        lib.close(conn.sock)
        if reason in ("overflow", "shutdown"):
            conn.pipe.abort()
        else:
            conn.pipe.close()
        self._to_loop(self._async_closed, conn)

    def _to_loop(self, fn, *args) -> None:  # type: ignore[no-untyped-def]
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to tell
            loop.call_soon_threadsafe(fn, *args)

    # -- event loop -----------------------------------------------------------------------------
    def _async_accepted(self, conn: _Conn) -> None:
        if self._stopping:
            self._commands.put((conn, "shutdown"))
            return
        task = asyncio.get_running_loop().create_task(self._serve(conn), name=f"srt-{conn.peer}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _async_closed(self, conn: _Conn) -> None:
        if conn.stream is None:  # never published: no demuxer will report the end
            conn.demux_done.set()

    def _async_stats(self, conn: _Conn, stats: libsrt.LinkStats) -> None:
        if conn.publishing and conn.channel is not None:
            srt_metrics.observe(conn.channel, stats)

    def _async_deliver(self, conn: _Conn, packets: list[MediaPacket]) -> None:
        stream = conn.stream
        if stream is None or not conn.publishing:
            return
        n = 0
        for p in packets:
            stream.publish(p)
            n += len(p.data)
        conn.last_media = time.monotonic()
        metrics.INGEST_BYTES.labels(source="srt").inc(n)

    def _async_demux_ended(self, conn: _Conn, reason: str | None) -> None:
        conn.demux_reason = reason
        conn.demux_done.set()

    async def _serve(self, conn: _Conn) -> None:
        srt_metrics.CONNECTIONS.inc()
        try:
            try:
                channel = await self._auth.authorize(conn.key, protocol="srt", remote=conn.peer)
            except AuthError as exc:
                srt_metrics.refused("unknown_key")
                log.info("SRT caller %s refused: %s", conn.peer, exc)
                return
            except Exception:  # noqa: BLE001 - e.g. the controller is unreachable: refuse this one
                srt_metrics.refused("auth_error")
                log.exception("SRT caller %s refused: the authorizer failed", conn.peer)
                return
            if channel != conn.channel_hint:
                # the passphrase checked in the handshake belonged to another channel
                srt_metrics.refused("unknown_key")
                log.warning("channel=%s SRT caller %s refused: key maps to %r in the handshake cache",
                            channel, conn.peer, conn.channel_hint)
                return
            if conn.closed:
                return
            try:
                async with self._hub.claim_publisher(channel, source="srt") as stream:
                    await self._publish(conn, channel, stream)
            except PublisherBusy:
                srt_metrics.refused("busy")
                log.info("channel=%s SRT caller %s refused: channel already has a publisher", channel,
                         conn.peer)
        finally:
            self._commands.put((conn, "shutdown" if self._stopping else "done"))
            srt_metrics.CONNECTIONS.dec()

    async def _publish(self, conn: _Conn, channel: str, stream: Stream) -> None:
        loop = asyncio.get_running_loop()
        conn.channel = channel
        conn.stream = stream
        conn.publishing = True
        conn.last_media = time.monotonic()
        stream.on_kick = lambda why: setattr(conn, "kicked", why)  # the idle check below acts on it

        def deliver(packets: list[MediaPacket]) -> None:  # demux thread
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._async_deliver, conn, packets)

        def ended(reason: str | None) -> None:  # demux thread
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._async_demux_ended, conn, reason)

        demux = TsDemuxer(conn.pipe, deliver, ended, name=f"srt-demux-{channel}")
        log.info("channel=%s SRT publisher %s started", channel, conn.peer)
        reason: str | None = None
        try:
            demux.start()
            idle = self._cfg.idle_timeout
            while not conn.demux_done.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(conn.demux_done.wait(), CHECK_INTERVAL)
                if conn.demux_done.is_set():
                    break
                now = time.monotonic()
                if conn.kicked:
                    reason = "revoked"
                elif now - conn.last_recv > idle:
                    reason = "idle"
                elif now - conn.last_media > max(NO_MEDIA_TIMEOUT, idle):
                    reason = "no_media"
                if reason:
                    srt_metrics.refused(reason)
                    self._commands.put((conn, reason))
                    break
            # the socket closes (ours or the peer's), the demuxer drains what it has, then ends
            try:
                await asyncio.wait_for(conn.demux_done.wait(), DEMUX_EXIT_TIMEOUT)
            except TimeoutError:
                conn.pipe.abort()
                log.warning("channel=%s SRT demuxer did not stop in time", channel)
            if conn.demux_reason:
                srt_metrics.refused("demux")
        finally:
            conn.publishing = False
            conn.pipe.abort()
            srt_metrics.forget_channel(channel)
            # The caller closed its socket (not our timeout, a demux error or a lost link): its
            # playlist may end now; a lost one stays open for a reconnect.
            deliberate = (reason is None and conn.closed and conn.close_reason is None and not conn.demux_reason
                          and conn.closed_at - conn.last_recv < min(CLOSE_SILENCE, self._cfg.idle_timeout / 2))
            self._hub.async_release(stream, deliberate=deliberate)
            why = reason or conn.demux_reason or conn.close_reason or (
                "publisher closed" if deliberate else "publisher lost")
            log.info("channel=%s SRT publisher %s ended (%s): %d bytes, %d packets, %d unusable",
                     channel, conn.peer, why, conn.bytes_in, demux.packets, demux.normalizer.dropped)


def _libsrt_log(level: int, area: str, message: str) -> None:
    """libsrt's own log lines (level LOG_ERR and worse) → our logger; counts encryption refusals."""
    if "encryption" in message and "reject" in message:
        srt_metrics.refused("encryption")
        if "Peer does not" in message:
            why = "the caller sent no passphrase"
        elif "Peer declares" in message:
            why = "the caller is encrypted but this channel has no passphrase"
        else:
            why = "wrong passphrase"
        _refusal_log("SRT caller refused in the handshake: %s", why)
        return
    log.debug("libsrt [%s]: %s", area, message)


_REFUSAL_LOG_INTERVAL = 10.0  # s: refusals are logged at info at most this often, else at debug
_last_refusal_log = 0.0


def _refusal_log(msg: str, *args: object) -> None:
    """Log a refused caller loudly now and then, quietly otherwise (callers may retry in a loop,
    and anyone can send handshakes to an open UDP port)."""
    global _last_refusal_log
    now = time.monotonic()
    if now - _last_refusal_log >= _REFUSAL_LOG_INTERVAL:
        _last_refusal_log = now
        log.info(msg, *args)
    else:
        log.debug(msg, *args)


def _fmt_peer(peer: tuple[str, int] | None) -> str:
    if peer is None:
        return "?"
    host, port = peer
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_numeric(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return True
        except OSError:
            pass
    return False
