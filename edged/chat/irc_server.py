"""Chat over IRC: the TCP listener (`[chat] irc_listen`, default 0.0.0.0:6667) and the same behind TLS
(`[chat] irc_tls_listen`, on when `tls_cert_file` and `tls_key_file` are set).

The server owns sockets only: each accepted socket becomes an `IrcConnection` (an asyncio Protocol, no
task per connection) that hands received bytes to the chat service and writes what it is given straight
to its transport. What the client has not read yet stays in the transport's buffer; the service drops a
client whose buffer passes `[chat] max_queue_bytes`. Admission (the per-edge connection cap), logins,
timeouts and PINGs are the service's (`edged.chat.service`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import cast

from edged.chat.service import ChatConnection, ChatService
from edged.config import ChatConfig, parse_hostport, tls_server_context

log = logging.getLogger(__name__)

BACKLOG = 1024  # listen backlog: a crowd of bots reconnecting at once


class IrcConnection(ChatConnection, asyncio.Protocol):
    """One IRC client on TCP or TLS."""

    def __init__(self, service: ChatService, tls: bool) -> None:
        super().__init__(service)
        self.kind = "ircs" if tls else "irc"
        self._tr: asyncio.Transport | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = cast(asyncio.Transport, transport)
        self._tr = tr
        peer = tr.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.remote = f"{peer[0]}:{peer[1]}"
        if not self.service.connection_made(self):
            tr.abort()

    def data_received(self, data: bytes) -> None:
        self.service.data_received(self, data)

    def eof_received(self) -> bool | None:
        return False  # the client is done: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.service.connection_lost(self)
        self._tr = None

    # ChatConnection

    def write(self, data: bytes) -> None:
        tr = self._tr
        if tr is not None and not tr.is_closing():
            tr.write(data)

    def backlog(self) -> int:
        tr = self._tr
        return tr.get_write_buffer_size() if tr is not None else 0

    def shutdown(self, abort: bool) -> None:
        tr = self._tr
        if tr is None:
            return
        if abort:
            tr.abort()
        else:
            tr.close()


class IrcServer:
    """The IRC listeners of the chat service."""

    def __init__(self, cfg: ChatConfig, service: ChatService) -> None:
        self.cfg = cfg
        self.service = service
        self._servers: list[asyncio.Server] = []
        self.port = 0  # 0 while the plain listener is off
        self.tls_port = 0  # 0 while the TLS listener is off

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        try:
            if cfg.irc_listen:
                host, port = parse_hostport(cfg.irc_listen, "chat.irc_listen")
                server = await loop.create_server(lambda: IrcConnection(self.service, False), host, port,
                                                  reuse_address=True, backlog=BACKLOG)
                self._servers.append(server)
                self.port = server.sockets[0].getsockname()[1]
                log.info("chat: IRC listening on %s:%d", host, self.port)
            if cfg.tls_cert_file and cfg.tls_key_file:
                ctx: ssl.SSLContext = tls_server_context(cfg.tls_cert_file, cfg.tls_key_file, "chat")
                host, port = parse_hostport(cfg.irc_tls_listen, "chat.irc_tls_listen")
                server = await loop.create_server(lambda: IrcConnection(self.service, True), host, port,
                                                  reuse_address=True, backlog=BACKLOG, ssl=ctx,
                                                  ssl_handshake_timeout=cfg.login_timeout)
                self._servers.append(server)
                self.tls_port = server.sockets[0].getsockname()[1]
                log.info("chat: IRC over TLS listening on %s:%d", host, self.tls_port)
        except OSError:
            await self.stop()
            raise

    async def stop(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for server in servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 2)
            except (TimeoutError, OSError):
                pass
