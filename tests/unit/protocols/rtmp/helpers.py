"""In-memory plumbing between an RTMP client core and a server core (h11's ConnectionPair)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edged.protocols.buffer import ReceiveBuffer
from edged.protocols.rtmp import amf0
from edged.protocols.rtmp import events as ev
from edged.protocols.rtmp.chunk import COMMAND_AMF0, ChunkReader, ChunkWriter, Message
from edged.protocols.rtmp.client import RtmpClientSession
from edged.protocols.rtmp.session import RtmpServerSession


def fixed_random(seed: int = 1) -> Callable[[int], bytes]:
    """A deterministic stand-in for os.urandom."""
    state = [seed]

    def random_bytes(n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            state[0] = (state[0] * 1103515245 + 12345) & 0x7FFFFFFF
            out.append(state[0] >> 16 & 0xFF)
        return bytes(out)

    return random_bytes


def feed(session: Any, data: bytes, piece: int | None = None) -> list[ev.Event]:
    """Feed ``data`` to a session (in ``piece``-byte slices if given) and collect its events."""
    out: list[ev.Event] = []
    step = piece or max(len(data), 1)
    for start in range(0, len(data), step):
        session.receive_data(data[start : start + step])
        out.extend(session.events())
    return out


class SessionPair:
    """A client and a server core wired together in memory."""

    def __init__(
        self,
        client: RtmpClientSession | None = None,
        server: RtmpServerSession | None = None,
        piece: int | None = None,
        on_server_event: Callable[[RtmpServerSession, ev.Event], None] | None = None,
    ) -> None:
        self.client = client or RtmpClientSession(
            app="live", tc_url="rtmp://127.0.0.1/live", stream_key="k", random_bytes=fixed_random(1)
        )
        self.server = server or RtmpServerSession(random_bytes=fixed_random(2))
        self.piece = piece
        self.on_server_event = on_server_event
        self.server_events: list[ev.Event] = []
        self.client_events: list[ev.Event] = []
        self.to_server = bytearray()  # every byte the client sent
        self.to_client = bytearray()  # every byte the server sent

    def pump(self) -> tuple[list[ev.Event], list[ev.Event]]:
        """Move bytes both ways until neither side has anything to send; return new (server, client) events."""
        server_new: list[ev.Event] = []
        client_new: list[ev.Event] = []
        while True:
            moved = False
            data = self.client.data_to_send()
            if data:
                moved = True
                self.to_server += data
                server_new += self._feed_server(data)
            data = self.server.data_to_send()
            if data:
                moved = True
                self.to_client += data
                client_new += feed(self.client, data, self.piece)
            if not moved:
                break
        self.server_events += server_new
        self.client_events += client_new
        return server_new, client_new

    def _feed_server(self, data: bytes) -> list[ev.Event]:
        out: list[ev.Event] = []
        step = self.piece or len(data)
        for start in range(0, len(data), step):
            self.server.receive_data(data[start : start + step])
            for event in self.server.events():
                out.append(event)
                if self.on_server_event is not None:
                    self.on_server_event(self.server, event)
        return out

    def close_client_side(self) -> list[ev.Event]:
        """Deliver EOF to the server; return its events."""
        self.server.receive_data(b"")
        events = list(self.server.events())
        self.server_events += events
        return events


def accept_all(server: RtmpServerSession, event: ev.Event) -> None:
    """on_server_event hook that accepts every publish request."""
    if isinstance(event, ev.PublishRequested):
        server.accept_publish(event.stream_id)


SIMPLE_C0C1C2 = b"\x03" + bytes(1536) + bytes(1536)
HANDSHAKE_REPLY_SIZE = 1 + 2 * 1536  # S0 + S1 + S2


class PeerView:
    """Reads what a session sent, the way its peer's chunk reader would."""

    def __init__(self, skip: int = HANDSHAKE_REPLY_SIZE) -> None:
        self._skip = skip
        self._buf = ReceiveBuffer()
        self._reader = ChunkReader(1 << 24, 1 << 24, 64)

    def feed(self, data: bytes) -> list[Message]:
        cut = min(self._skip, len(data))
        self._skip -= cut
        self._buf.feed(data[cut:])
        out = []
        while (message := self._reader.next_message(self._buf)) is not None:
            out.append(message)
        return out


def command(
    writer: ChunkWriter,
    name: str,
    tid: float,
    obj: Any = None,
    *args: Any,
    stream_id: int = 0,
    type_id: int = COMMAND_AMF0,
    prefix: bytes = b"",
) -> bytes:
    """One command message from a hand-driven client."""
    payload = prefix + amf0.encode(name, float(tid), obj, *args)
    return writer.write(3 if stream_id == 0 else 8, 0, type_id, stream_id, payload)


def amf_values(message: Message) -> list[Any]:
    return amf0.decode(message.payload)


def connected_server(**kwargs: Any) -> tuple[RtmpServerSession, ChunkWriter, PeerView]:
    """A server core past the handshake and connect, its replies already read."""
    server = RtmpServerSession(random_bytes=fixed_random(), **kwargs)
    writer = ChunkWriter()
    view = PeerView()
    server.receive_data(
        SIMPLE_C0C1C2 + command(writer, "connect", 1, {"app": "live", "tcUrl": "rtmp://h/live"})
    )
    events = list(server.events())
    assert [type(e) for e in events] == [ev.Connected]
    view.feed(server.data_to_send())
    return server, writer, view


def publishing_server(**kwargs: Any) -> tuple[RtmpServerSession, ChunkWriter, PeerView]:
    """A server core with stream 1 created, published and accepted."""
    server, writer, view = connected_server(**kwargs)
    server.receive_data(
        command(writer, "createStream", 4) + command(writer, "publish", 0, None, "key", "live", stream_id=1)
    )
    events = list(server.events())
    assert isinstance(events[-1], ev.PublishRequested)
    server.accept_publish(1)
    view.feed(server.data_to_send())
    return server, writer, view
