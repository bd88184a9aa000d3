"""Chat over WebSocket on the HTTP front: IRC lines in text frames, at `/chat` (and at `/`, where tmi.js and
other Twitch web clients dial: `ws://HOST:PORT/`).

A frame may carry several lines separated by CRLF, the last one with or without its CRLF; the
subprotocol `irc` is echoed when the client offers it (tmi.js does). Binary frames are read the same
way. Frames larger than `MAX_FRAME_BYTES` close the connection (aiohttp answers 1009); the lines inside
are held to IRC's limits by the session.

Each connection has a bounded queue in front of its socket: what the service hands it is appended and
a writer task sends everything queued as one text frame (several lines, as Twitch does). The service
drops a client whose queue (plus the transport's buffer) passes `[chat] max_queue_bytes`.

The HTTP front's connection guard still applies: a WebSocket counts against `http.max_connections`, and
one whose socket stops taking bytes for `http.send_timeout` is aborted by the guard's sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from aiohttp import WSMsgType, web

from edged.chat.service import ChatConnection, ChatService

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 1024  # one frame: many lines, each within IRC's 512 + 8191 bytes
CLOSE_TIMEOUT = 2.0  # s the closing handshake may take


class WsConnection(ChatConnection):
    """One IRC-over-WebSocket client."""

    kind = "ws"
    wants_history = True

    def __init__(self, service: ChatService, request: web.Request, ws: web.WebSocketResponse) -> None:
        super().__init__(service, str(request.remote or "?"))
        self.request = request
        self.ws = ws
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._closing = False  # flush what is queued, then close
        self._writer: asyncio.Task[None] | None = None

    def start_writer(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_forever(), name="edged-chat-ws-writer")

    async def stop_writer(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    # ChatConnection

    def write(self, data: bytes) -> None:
        self._queue.append(data)
        self._queued += len(data)
        self._wake.set()

    def backlog(self) -> int:
        tr = self.request.transport
        return self._queued + (tr.get_write_buffer_size() if tr is not None else 0)

    def shutdown(self, abort: bool) -> None:
        if abort:
            tr = self.request.transport
            if tr is not None:
                tr.abort()
            if self._writer is not None:
                self._writer.cancel()
            return
        self._closing = True
        self._wake.set()

    async def _write_forever(self) -> None:
        ws = self.ws
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._queue:
                    data = b"".join(self._queue)
                    self._queue.clear()
                    self._queued = 0
                    await ws.send_frame(data, WSMsgType.TEXT)
                if self._closing and not self._queue:
                    await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT)
                    return
        except (ConnectionError, RuntimeError, TimeoutError) as exc:  # the socket went away under us
            log.debug("chat conn=%s WebSocket write ended: %r", self.remote, exc)
            tr = self.request.transport
            if tr is not None:
                tr.abort()


class ChatWebSocket:
    """The `/chat` (and `/`) WebSocket endpoint of the HTTP front."""

    def __init__(self, service: ChatService) -> None:
        self.service = service

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/chat", self.chat)
        app.router.add_get("/", self.chat_root)

    async def chat_root(self, request: web.Request) -> web.StreamResponse:
        """`/` is the chat WebSocket only for a WebSocket upgrade (there is no page here)."""
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise web.HTTPNotFound()
        return await self.chat(request)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("irc",), autoping=True, heartbeat=None, compress=False,
                                   max_msg_size=MAX_FRAME_BYTES, decode_text=False)
        if not ws.can_prepare(request).ok:
            raise web.HTTPBadRequest(text="this is the chat WebSocket (IRC over WebSocket, subprotocol irc)\n")
        conn = WsConnection(self.service, request, ws)
        if not self.service.connection_made(conn):
            raise web.HTTPServiceUnavailable(headers={"Retry-After": "1"}, text="chat is full here\n")
        try:
            await ws.prepare(request)
            conn.start_writer()
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    data = msg.data if isinstance(msg.data, bytes) else str(msg.data).encode()
                    self.service.data_received(conn, data, frame=True)
                    if conn.closing:
                        break
                elif msg.type is WSMsgType.ERROR:
                    if not conn.closing:
                        self.service.close(conn, "protocol", f"WebSocket error: {ws.exception()!r}")
                    break
        finally:
            self.service.connection_lost(conn)
            if conn.closing in ("lost", "slow_reader"):
                await conn.stop_writer()
            elif conn._writer is not None:
                # let a graceful close finish flushing (RECONNECT, a NOTICE), within bounds
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(asyncio.shield(conn._writer), CLOSE_TIMEOUT + 1)
                await conn.stop_writer()
        return ws
