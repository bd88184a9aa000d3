"""In-process chat edge for tests: the chat service on a LocalBus, its IRC listener and the WebSocket
endpoint on a bare aiohttp app, all on 127.0.0.1 with free ports; real clients (sockets, aiohttp) talk to it.
Also token minting (an Ed25519 key made per test) and a small line-reading IRC client."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from edged.chat.identity import TokenVerifier, mint
from edged.chat.irc_server import IrcServer
from edged.chat.local_bus import LocalBus
from edged.chat.service import ChatService
from edged.chat.ws import ChatWebSocket
from edged.config import ChatConfig
from edged.protocols.irc.message import Message, parse

CAPS = "twitch.tv/tags twitch.tv/commands twitch.tv/membership"
WAIT = 5.0  # s any expected line may take (generous: loaded CI machines)


class Keys:
    """A signing key and the verifier that trusts it."""

    def __init__(self) -> None:
        self.private = ed25519.Ed25519PrivateKey.generate()
        self.public_pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.verifier = TokenVerifier([self.public_pem])

    def token(self, login: str, *roles: str, user_id: str = "", ttl: float = 3600.0) -> str:
        return mint(self.private, user_id=user_id or f"u-{login}", login=login, roles=roles, ttl_seconds=ttl,
                    now=time.time())


class _MessageClient:
    """What both test clients share: wait for the line you expect, or for the server to close. A subclass
    reads one message with `next` (None at EOF) and names what it reads in its failures."""

    unit = "line"  # what "no expected ... within" names
    eof = "connection closed"  # what `until` says when the server closes first
    closed_errors: tuple[type[BaseException], ...] = ()  # also mean "closed" to `closed`

    async def next(self, timeout: float = WAIT) -> Message | None:  # noqa: ASYNC109
        raise NotImplementedError

    async def until(self, pred: Any, timeout: float = WAIT) -> list[Message]:  # noqa: ASYNC109
        """Lines up to and including the first that satisfies `pred`; AssertionError at EOF or timeout."""
        got: list[Message] = []

        def missed() -> AssertionError:
            return AssertionError(f"no expected {self.unit} within {timeout}s; "
                                  f"got {[m.serialize() for m in got]}")

        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise missed() from None
            try:
                msg = await self.next(left)
            except TimeoutError:
                raise missed() from None
            if msg is None:
                raise AssertionError(f"{self.eof}; got {[m.serialize() for m in got]}")
            got.append(msg)
            if pred(msg):
                return got

    async def closed(self, timeout: float = WAIT) -> list[Message]:  # noqa: ASYNC109
        """Every line until the server closes the connection (AssertionError if it does not in time)."""
        got: list[Message] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = await self.next(max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                raise AssertionError(f"still open after {timeout}s; got {[m.serialize() for m in got]}") from None
            except self.closed_errors:
                return got
            if msg is None:
                return got
            got.append(msg)


class IrcClient(_MessageClient):
    """A raw IRC client over TCP: send lines, wait for the line you expect."""

    closed_errors = (ConnectionResetError,)

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.seen: list[Message] = []

    @classmethod
    async def connect(cls, port: int) -> IrcClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, *lines: str) -> None:
        self.writer.write("".join(f"{line}\r\n" for line in lines).encode())
        await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def login(self, nick: str, token: str = "", caps: str = CAPS) -> list[Message]:
        lines = [f"CAP REQ :{caps}"] if caps else []
        lines.append(f"PASS oauth:{token}" if token else "PASS SCHMOOPIIE")
        lines.append(f"NICK {nick}")
        await self.send(*lines)
        return await self.until(lambda msg: msg.command in ("376", "NOTICE"))

    async def join(self, room: str) -> list[Message]:
        await self.send(f"JOIN #{room}")
        return await self.until(lambda msg: msg.command == "ROOMSTATE" and msg.params[0] == f"#{room}")

    async def next(self, timeout: float = WAIT) -> Message | None:  # noqa: ASYNC109
        """The next line, or None at EOF."""
        raw = await asyncio.wait_for(self.reader.readline(), timeout)
        if not raw:
            return None
        msg = parse(raw.decode().rstrip("\r\n"))
        self.seen.append(msg)
        return msg

    def close(self) -> None:
        self.writer.close()


class WsClient(_MessageClient):
    """An IRC-over-WebSocket client (aiohttp)."""

    unit = "frame"
    eof = "WebSocket closed"

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http = session
        self.ws = ws
        self.buffer: list[Message] = []

    @classmethod
    async def connect(cls, url: str, protocols: tuple[str, ...] = ("irc",)) -> WsClient:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(url, protocols=protocols)
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    async def send_frame(self, text: str) -> None:
        await self.ws.send_str(text)

    async def next(self, timeout: float = WAIT) -> Message | None:  # noqa: ASYNC109
        while not self.buffer:
            frame = await asyncio.wait_for(self.ws.receive(), timeout)
            if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                              aiohttp.WSMsgType.ERROR):
                return None
            text = frame.data if isinstance(frame.data, str) else frame.data.decode()
            self.buffer.extend(parse(line) for line in text.split("\r\n") if line)
        return self.buffer.pop(0)

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()


@dataclass
class ChatEdge:
    service: ChatService
    irc: IrcServer
    ws_port: int
    keys: Keys
    bus: LocalBus
    clients: list[Any] = field(default_factory=list)

    @property
    def irc_port(self) -> int:
        return self.irc.port

    @property
    def ws_url(self) -> str:
        return f"http://127.0.0.1:{self.ws_port}/chat"

    async def irc_client(self, nick: str = "", *roles: str, caps: str = CAPS) -> IrcClient:
        """A connected client, logged in as `nick` (anonymous for justinfanNNN, else with a token)."""
        c = await IrcClient.connect(self.irc_port)
        self.clients.append(c)
        if nick:
            token = "" if nick.startswith("justinfan") else self.keys.token(nick, *roles)
            got = await c.login(nick, token, caps)
            assert got[-1].command == "376", [m.serialize() for m in got]
        return c

    async def ws_client(self, nick: str = "", *roles: str) -> WsClient:
        c = await WsClient.connect(self.ws_url)
        self.clients.append(c)
        if nick:
            token = "" if nick.startswith("justinfan") else self.keys.token(nick, *roles)
            await c.send_frame(f"CAP REQ :{CAPS}\r\n" + (f"PASS oauth:{token}\r\n" if token else "") + f"NICK {nick}")
            got = await c.until(lambda msg: msg.command in ("376", "NOTICE"))
            assert got[-1].command == "376", [m.serialize() for m in got]
        return c


@asynccontextmanager
async def chat_edge(**overrides: Any) -> AsyncIterator[ChatEdge]:
    """A running chat edge; keyword arguments override ChatConfig fields (`limits=ChatLimits(...)` too)."""
    cfg = dataclasses.replace(ChatConfig(irc_listen="127.0.0.1:0"), **overrides)
    keys = Keys()
    bus = LocalBus(cfg.limits)
    service = ChatService(cfg, bus, keys.verifier, node_id=lambda: "node-test")
    await service.start()
    irc = IrcServer(cfg, service)
    await irc.start()
    app = web.Application()
    ChatWebSocket(service).add_routes(app)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    edge = ChatEdge(service, irc, port, keys, bus)
    try:
        yield edge
    finally:
        for c in edge.clients:
            if isinstance(c, WsClient):
                await c.close()
            else:
                c.close()
        await service.stop()
        await irc.stop()
        await runner.cleanup()


async def eventually(pred: Any, what: str, wait: float = WAIT) -> None:
    """Wait until `pred()` is true (AssertionError naming `what` after `wait` seconds)."""
    for _ in range(int(wait / 0.01)):
        if pred():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")
