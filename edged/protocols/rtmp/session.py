"""RTMP session cores, server and client roles: bytes in, events out, bytes out.

Theory of operation. ``receive_data`` only buffers. ``events()`` runs the handshake
(section 5.2), then pulls whole messages from the chunk reader (5.3), handles protocol
control (5.4) and user control (6.2) messages itself, answers the commands a publisher
sends (7.2) and yields events for what the application must act on. Replies queue up
in an output buffer that ``data_to_send()`` drains; call it after every ``events()``
pass and after ``accept_publish``/``reject_publish``.

Everything that moves the state machine is in the two transition tables below. EOF
moves any state to CLOSED and a peer error moves it to ERROR; those two are not listed.
After PublishRequested the server session pauses (like h11's PAUSED): ``events()``
yields nothing more until the application calls accept_publish or reject_publish.

Budgets. Until its first publish is accepted a server session is talking to a stranger, so
it holds small budgets: messages up to ``pre_publish_bytes`` each and in partial messages
together, ``pre_publish_messages`` messages of any kind, a few chunk stream ids and a chunk
count derived from both. A real encoder sends about ten small messages before ``publish``
(connect, releaseStream, FCPublish, createStream, Set Chunk Size, a window size). After the
accept the full caps apply (``max_message_size`` per message, one such message plus
``PARTIAL_HEADROOM`` in all partial messages), and non-media messages spend
``control_credit``, which the server refills with time (the core keeps no clock). Going
over any budget raises ``BudgetExceeded``, a RemoteProtocolError.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from enum import Enum, auto
from typing import Any, ClassVar

from edged.errors import LocalProtocolError, RemoteProtocolError
from edged.protocols.buffer import ReceiveBuffer
from edged.protocols.rtmp import amf0
from edged.protocols.rtmp import chunk as ch
from edged.protocols.rtmp import events as ev
from edged.protocols.rtmp.chunk import BudgetExceeded
from edged.protocols.rtmp.handshake import HandshakeState, RandomBytes, ServerHandshake


class SessionState(Enum):
    """Where a session stands; servers skip IDLE, clients use every state."""

    IDLE = auto()  # client: connect() not called yet
    HANDSHAKE = auto()
    CONNECTING = auto()  # handshake done, connect not yet answered
    CONNECTED = auto()
    PUBLISH_REQUESTED = auto()  # server: waiting for accept/reject; client: publish sent
    PUBLISHING = auto()
    CLOSED = auto()  # EOF, publish rejected or unpublished by the client
    ERROR = auto()  # the peer broke the protocol


class Trigger(Enum):
    """What moves a session from one state to the next."""

    START = auto()
    HANDSHAKE_DONE = auto()
    CONNECT = auto()
    PUBLISH = auto()
    ACCEPT = auto()
    REJECT = auto()
    UNPUBLISH = auto()


S, T = SessionState, Trigger
SERVER_TRANSITIONS: dict[tuple[SessionState, Trigger], SessionState] = {
    (S.HANDSHAKE, T.HANDSHAKE_DONE): S.CONNECTING,
    (S.CONNECTING, T.CONNECT): S.CONNECTED,  # connect command received and answered
    (S.CONNECTED, T.PUBLISH): S.PUBLISH_REQUESTED,  # publish command received
    (S.PUBLISH_REQUESTED, T.ACCEPT): S.PUBLISHING,  # accept_publish()
    (S.PUBLISH_REQUESTED, T.REJECT): S.CLOSED,  # reject_publish()
    (S.PUBLISHING, T.UNPUBLISH): S.CONNECTED,  # FCUnpublish / closeStream / deleteStream
}
CLIENT_TRANSITIONS: dict[tuple[SessionState, Trigger], SessionState] = {
    (S.IDLE, T.START): S.HANDSHAKE,  # connect()
    (S.HANDSHAKE, T.HANDSHAKE_DONE): S.CONNECTING,  # connect command sent
    (S.CONNECTING, T.CONNECT): S.CONNECTED,  # NetConnection.Connect.Success; createStream sent
    (S.CONNECTED, T.PUBLISH): S.PUBLISH_REQUESTED,  # createStream answered; publish sent
    (S.PUBLISH_REQUESTED, T.ACCEPT): S.PUBLISHING,  # NetStream.Publish.Start
    (S.CONNECTING, T.REJECT): S.CLOSED,
    (S.CONNECTED, T.REJECT): S.CLOSED,
    (S.PUBLISH_REQUESTED, T.REJECT): S.CLOSED,
    (S.PUBLISHING, T.UNPUBLISH): S.CLOSED,  # unpublish()
}
del S, T

# Chunk stream ids we send on. Section 5.4: protocol control goes on 2 / message stream 0.
CSID_CONTROL = 2
CSID_COMMAND = 3
CSID_AUDIO = 4
CSID_STATUS = 5  # onStatus and data on a media stream
CSID_VIDEO = 6
CSID_STREAM_COMMAND = 8

# User control events, section 6.2 / 7.1.7.
UC_STREAM_BEGIN = 0
UC_PING_REQUEST = 6
UC_PING_RESPONSE = 7
PEER_BANDWIDTH_DYNAMIC = 2  # section 5.4.5 limit type

# A publisher needs one message stream; a few more allow retries on one connection.
MAX_STREAMS = 8
# Default caps. FFmpeg and OBS send 4096-byte chunks; 64 KiB bounds what one chunk holds.
DEFAULT_MAX_CHUNK_SIZE = 65536
# A 4K keyframe at 50 Mbit/s is ~2 MB; the 24-bit length field would allow 16 MiB (bytes).
DEFAULT_MAX_MESSAGE_SIZE = 8 * 1024 * 1024
# What FFmpeg, OBS and nginx-rtmp send with: few chunk headers, no head-of-line delay (bytes).
DEFAULT_OUT_CHUNK_SIZE = 4096
# The window Flash Media Server and nginx-rtmp announce (bytes).
DEFAULT_WINDOW_ACK_SIZE = 2_500_000
# Publishers use fewer than ten chunk streams, each with at most one partial message.
DEFAULT_MAX_CHUNK_STREAMS = 64
# What partial messages may hold beyond one message at the cap: the audio and data messages
# interleaved with a large video message (bytes).
PARTIAL_HEADROOM = 256 * 1024
# Before the first accepted publish (see "Budgets" above). A connect command is a few hundred
# bytes; OBS, FFmpeg and GStreamer send 5-10 messages on chunk streams 2-8 before publish.
DEFAULT_PRE_PUBLISH_BYTES = 32 * 1024
DEFAULT_PRE_PUBLISH_MESSAGES = 64
PRE_PUBLISH_CHUNK_STREAM_IDS = 16
PRE_PUBLISH_PARTIALS = 4
# The chunk budget before publish: every message may be split, at the default 128-byte chunks.
PRE_PUBLISH_CHUNK_BYTES = ch.DEFAULT_CHUNK_SIZE
# Message types that carry the stream: not counted against control_credit.
MEDIA_TYPES = frozenset((ch.AUDIO, ch.VIDEO, ch.DATA_AMF0, ch.DATA_AMF3))
_U32 = struct.Struct(">I")


class _Session:
    """What both roles share: buffering, chunking, acknowledgements and control messages."""

    _TRANSITIONS: ClassVar[dict[tuple[SessionState, Trigger], SessionState]]

    def __init__(
        self,
        *,
        max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        out_chunk_size: int = DEFAULT_OUT_CHUNK_SIZE,
        window_ack_size: int = DEFAULT_WINDOW_ACK_SIZE,
        max_amf_depth: int = amf0.DEFAULT_MAX_DEPTH,
        max_amf_items: int = amf0.DEFAULT_MAX_ITEMS,
        max_amf_string: int = amf0.DEFAULT_MAX_STRING,
        max_chunk_streams: int = DEFAULT_MAX_CHUNK_STREAMS,
    ) -> None:
        sizes = (max_chunk_size, out_chunk_size, max_message_size, window_ack_size, max_chunk_streams)
        if not all(1 <= value <= ch.MAX_CHUNK_SIZE_FIELD for value in sizes):
            raise ValueError(f"sizes and counts must be within 1..{ch.MAX_CHUNK_SIZE_FIELD}")
        self.state = SessionState.IDLE
        self._buf = ReceiveBuffer()
        self._reader = ch.ChunkReader(
            max_chunk_size, max_message_size, max_chunk_streams, max_partial_bytes=max_message_size + PARTIAL_HEADROOM
        )
        self._writer = ch.ChunkWriter()
        self._out = bytearray()
        self._limits = amf0.Limits(max_amf_depth, max_amf_items, max_amf_string)
        self._out_chunk_size = out_chunk_size
        self._window_ack_size = window_ack_size  # the window we announce to the peer (bytes)
        self._peer_window: int | None = None  # the window the peer announced (bytes)
        self._handshake_bytes = 0
        self._acked = 0  # bytes received when we last sent an Acknowledgement
        self._eof = False
        self._closed_emitted = False

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the peer; ``b""`` means EOF. Never raises."""
        if self._eof:
            return
        if not data:
            self._eof = True
        else:
            self._buf.feed(data)

    def data_to_send(self) -> bytes:
        """Drain every byte the core wants written to the peer."""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for the peer: input not yet parsed plus partial messages."""
        return self._buf.uncommitted + self._reader.partial_bytes

    @property
    def bytes_received(self) -> int:
        """Bytes parsed so far, handshake included (what Acknowledgement counts, section 5.4.3)."""
        return self._handshake_bytes + self._reader.bytes_read

    def events(self) -> Iterator[ev.Event]:
        """Yield events for the bytes buffered so far; raise RemoteProtocolError on bad input."""
        if self.state is SessionState.ERROR:
            raise RemoteProtocolError("the session already failed")
        try:
            while not self._paused():
                if self.state in (SessionState.IDLE, SessionState.HANDSHAKE):
                    if not self._advance_handshake():
                        break
                    continue
                if self.state is SessionState.CLOSED:
                    self._buf.clear()  # nothing more is acted on; keep no bytes around
                    break
                message = self._reader.next_message(self._buf)
                self._maybe_acknowledge()
                if message is None:
                    break
                self._account(message)
                yield from self._on_message(message)
        except RemoteProtocolError:
            self.state = SessionState.ERROR
            raise
        if self._eof and not self._closed_emitted:
            self._closed_emitted = True
            self.state = SessionState.CLOSED
            yield ev.ConnectionClosed()

    def _paused(self) -> bool:
        return False

    def _account(self, message: ch.Message) -> None:
        """Charge one whole message to the peer's budgets; raise BudgetExceeded past them."""

    def _advance_handshake(self) -> bool:
        raise NotImplementedError

    def _transition(self, trigger: Trigger, *, local: bool) -> None:
        new = self._TRANSITIONS.get((self.state, trigger))
        if new is None:
            error = LocalProtocolError if local else RemoteProtocolError
            raise error(f"{trigger.name.lower()} is not allowed in state {self.state.name}")
        self.state = new

    def _maybe_acknowledge(self) -> None:
        # Section 5.4.3/5.4.4: acknowledge once a window's worth of bytes has arrived.
        window = self._peer_window or self._window_ack_size
        received = self.bytes_received
        if received - self._acked >= window:
            self._acked = received
            self._send_control(ch.ACKNOWLEDGEMENT, _U32.pack(received % (1 << 32)))

    # Output helpers

    def _send(self, csid: int, type_id: int, stream_id: int, payload: bytes, timestamp: int = 0) -> None:
        self._out += self._writer.write(csid, timestamp, type_id, stream_id, payload)

    def _send_control(self, type_id: int, payload: bytes) -> None:
        self._send(CSID_CONTROL, type_id, 0, payload)

    def _send_chunk_size(self) -> None:
        self._send_control(ch.SET_CHUNK_SIZE, _U32.pack(self._out_chunk_size))
        self._writer.chunk_size = self._out_chunk_size  # section 5.4.1: applies to what follows

    def _send_command(self, *values: Any, stream_id: int = 0, csid: int = CSID_COMMAND) -> None:
        self._send(csid, ch.COMMAND_AMF0, stream_id, amf0.encode(*values))

    def _send_user_control(self, event_type: int, data: bytes) -> None:
        self._send_control(ch.USER_CONTROL, struct.pack(">H", event_type) + data)

    # Input helpers

    def _on_message(self, message: ch.Message) -> Iterator[ev.Event]:
        type_id = message.type_id
        if type_id == ch.WINDOW_ACK_SIZE:
            self._peer_window = _u32(message.payload, "Window Acknowledgement Size") or None
        elif type_id == ch.SET_PEER_BANDWIDTH:
            # Section 5.4.5: answer with Window Acknowledgement Size when the size differs.
            size = _u32(message.payload, "Set Peer Bandwidth")
            if size and size != self._window_ack_size:
                self._window_ack_size = size
                self._send_control(ch.WINDOW_ACK_SIZE, _U32.pack(size))
        elif type_id == ch.USER_CONTROL:
            if len(message.payload) < 2:
                raise RemoteProtocolError("User Control message shorter than 2 bytes")
            if message.payload[1] == UC_PING_REQUEST and message.payload[0] == 0:
                self._send_user_control(UC_PING_RESPONSE, message.payload[2:6])
        elif type_id in (ch.COMMAND_AMF0, ch.COMMAND_AMF3):
            values = self._decode_amf(message)
            if values is not None:
                if not values or not isinstance(values[0], str):
                    raise RemoteProtocolError("command message does not start with a name")
                tid = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
                command_object = values[2] if len(values) > 2 else None
                yield from self._on_command(message, values[0], tid, command_object, values[3:])
        elif type_id in (ch.DATA_AMF0, ch.DATA_AMF3, ch.AUDIO, ch.VIDEO):
            yield from self._on_media(message)
        # Set Chunk Size and Abort were applied by the chunk reader; Acknowledgement,
        # shared objects, aggregates and unknown types need nothing from us.

    def _decode_amf(self, message: ch.Message) -> list[Any] | None:
        payload = message.payload
        if message.type_id in (ch.COMMAND_AMF3, ch.DATA_AMF3):
            # AMF3-typed messages from AMF0 peers start with a 0 byte and carry AMF0 after it.
            if payload[:1] != b"\x00":
                return None
            payload = payload[1:]
        return amf0.decode(payload, self._limits)

    def _on_command(
        self, message: ch.Message, name: str, tid: float, obj: Any, args: list[Any]
    ) -> Iterator[ev.Event]:
        raise NotImplementedError

    def _on_media(self, message: ch.Message) -> Iterator[ev.Event]:
        return iter(())


def _u32(payload: bytes, what: str) -> int:
    if len(payload) < 4:
        raise RemoteProtocolError(f"{what} payload shorter than 4 bytes")
    value: int = _U32.unpack_from(payload)[0]
    return value


def _status(level: str, code: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"level": level, "code": code, "description": description, **extra}


def _split_name(name: str) -> tuple[str, str]:
    key, _, query = name.partition("?")
    return key, query


class RtmpServerSession(_Session):
    """Server role: accepts one publisher per connection."""

    _TRANSITIONS = SERVER_TRANSITIONS

    def __init__(
        self,
        max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        out_chunk_size: int = DEFAULT_OUT_CHUNK_SIZE,
        window_ack_size: int = DEFAULT_WINDOW_ACK_SIZE,
        max_amf_depth: int = amf0.DEFAULT_MAX_DEPTH,
        max_amf_items: int = amf0.DEFAULT_MAX_ITEMS,
        max_chunk_streams: int = DEFAULT_MAX_CHUNK_STREAMS,
        *,
        max_amf_string: int = amf0.DEFAULT_MAX_STRING,
        pre_publish_bytes: int = DEFAULT_PRE_PUBLISH_BYTES,
        pre_publish_messages: int = DEFAULT_PRE_PUBLISH_MESSAGES,
        random_bytes: RandomBytes = os.urandom,
    ) -> None:
        if pre_publish_bytes < 1 or pre_publish_messages < 1:
            raise ValueError("pre-publish budgets must be at least 1")
        super().__init__(
            max_chunk_size=max_chunk_size,
            max_message_size=max_message_size,
            out_chunk_size=out_chunk_size,
            window_ack_size=window_ack_size,
            max_amf_depth=max_amf_depth,
            max_amf_items=max_amf_items,
            max_amf_string=max_amf_string,
            max_chunk_streams=max_chunk_streams,
        )
        self.state = SessionState.HANDSHAKE
        self._handshake = ServerHandshake(random_bytes)
        self.app = ""
        self._streams: set[int] = set()
        self._next_stream_id = 1
        self._publish_stream: int | None = None
        self._publish_key = ""
        self._requested_stream: int | None = None  # stream of the latest publish request (kept after it ends)
        # The full caps, restored once a publish is accepted; until then the pre-publish budgets apply.
        reader = self._reader
        self._full_caps = (reader.max_message_size, reader.max_partial_bytes, reader.max_chunk_streams,
                           reader.max_chunk_stream_ids)
        reader.max_message_size = min(pre_publish_bytes, reader.max_message_size)
        reader.max_partial_bytes = min(pre_publish_bytes, reader.max_partial_bytes)
        reader.max_chunk_streams = min(PRE_PUBLISH_PARTIALS, reader.max_chunk_streams)
        reader.max_chunk_stream_ids = PRE_PUBLISH_CHUNK_STREAM_IDS
        reader.max_chunks = pre_publish_messages + pre_publish_bytes // PRE_PUBLISH_CHUNK_BYTES
        self._messages_left = pre_publish_messages
        self.pre_publish_messages = pre_publish_messages
        self.authenticated = False  # a publish was accepted on this connection
        # Non-media messages the peer may still send after publish; None: no limit. The server
        # refills it with add_control_credit as time passes.
        self.control_credit: float | None = None

    @property
    def digest_handshake(self) -> bool:
        """True when the client used the Flash Player 9 digest handshake."""
        return self._handshake.digest

    def add_control_credit(self, amount: float, cap: float) -> None:
        """Allow ``amount`` more non-media messages after publish, holding at most ``cap`` unused."""
        credit = cap if self.control_credit is None else self.control_credit + amount
        self.control_credit = min(credit, cap)

    def accept_publish(self, stream_id: int) -> None:
        """Answer PublishRequested with NetStream.Publish.Start; media events follow."""
        self._check_pending(stream_id)
        self._transition(Trigger.ACCEPT, local=True)
        if not self.authenticated:
            self.authenticated = True
            reader = self._reader
            (reader.max_message_size, reader.max_partial_bytes, reader.max_chunk_streams,
             reader.max_chunk_stream_ids) = self._full_caps
            reader.max_chunks = None
        self._send_user_control(UC_STREAM_BEGIN, _U32.pack(stream_id))
        info = _status(
            "status",
            "NetStream.Publish.Start",
            f"{self._publish_key} is now published.",
            details=self._publish_key,
        )
        self._send_command("onStatus", 0.0, None, info, stream_id=stream_id, csid=CSID_STATUS)

    def reject_publish(
        self,
        stream_id: int,
        code: str = "NetStream.Publish.BadName",
        description: str = "Publishing refused.",
    ) -> None:
        """Answer PublishRequested with an error onStatus; the session then closes."""
        self._check_pending(stream_id)
        self._transition(Trigger.REJECT, local=True)
        info = _status("error", code, description)
        self._send_command("onStatus", 0.0, None, info, stream_id=stream_id, csid=CSID_STATUS)

    def _check_pending(self, stream_id: int) -> None:
        if self.state is not SessionState.PUBLISH_REQUESTED or stream_id != self._publish_stream:
            raise LocalProtocolError(
                f"no publish request pending on stream {stream_id} (state {self.state.name})"
            )

    def _paused(self) -> bool:
        return self.state is SessionState.PUBLISH_REQUESTED

    def _account(self, message: ch.Message) -> None:
        if not self.authenticated:
            self._messages_left -= 1
            if self._messages_left < 0:
                raise BudgetExceeded(f"more than {self.pre_publish_messages} messages before publishing")
        elif self.control_credit is not None and message.type_id not in MEDIA_TYPES:
            self.control_credit -= 1
            if self.control_credit < 0:
                raise BudgetExceeded("non-media messages over the rate budget")

    def _advance_handshake(self) -> bool:
        self._out += self._handshake.advance(self._buf)
        self._handshake_bytes = self._handshake.bytes_read
        if self._handshake.state is not HandshakeState.DONE:
            return False
        self._transition(Trigger.HANDSHAKE_DONE, local=False)
        return True

    def _on_command(
        self, message: ch.Message, name: str, tid: float, obj: Any, args: list[Any]
    ) -> Iterator[ev.Event]:
        if name == "connect":
            yield self._on_connect(tid, obj)
            return
        if self.state is SessionState.CONNECTING:
            raise RemoteProtocolError(f"{name} before connect", "NetConnection.Connect.Rejected")
        if name in ("releaseStream", "FCPublish", "FCUnpublish"):
            # Adobe-era calls with no effect here; FFmpeg and OBS tolerate either answer.
            if tid:
                self._send_command("_result", tid, None, amf0.UNDEFINED)
            if name == "FCUnpublish":
                yield from self._unpublish(self._publish_stream)
        elif name == "createStream":
            # Section 7.2.1.3: the result carries the new message stream id.
            if len(self._streams) >= MAX_STREAMS:
                raise RemoteProtocolError(f"more than {MAX_STREAMS} streams on one connection")
            stream_id = self._next_stream_id
            self._next_stream_id += 1
            self._streams.add(stream_id)
            self._send_command("_result", tid, None, float(stream_id))
        elif name == "publish":
            yield self._on_publish(message.stream_id, args)
        elif name == "closeStream":
            yield from self._unpublish(message.stream_id)  # sent on the stream it closes
        elif name == "deleteStream":
            # Teardown never fails: whatever names the stream, the encoder is leaving anyway.
            target = self._delete_stream_target(args[0] if args else None, message.stream_id)
            if target is not None:
                self._streams.discard(target)
                yield from self._unpublish(target)
        elif name == "play":
            info = _status("error", "NetStream.Play.Failed", "This server only accepts publishers.")
            stream_id = message.stream_id
            self._send_command("onStatus", 0.0, None, info, stream_id=stream_id, csid=CSID_STATUS)
        elif name in ("_result", "_error", "onStatus", "onBWDone"):
            pass  # replies and notifications; we never call the client
        elif tid:
            # getStreamLength, _checkbw and the like: fail the call, keep the connection.
            info = _status("error", "NetConnection.Call.Failed", f"Method {name} is not supported.")
            self._send_command("_error", tid, None, info)

    def _on_connect(self, tid: float, obj: Any) -> ev.Event:
        if self.state is not SessionState.CONNECTING:
            raise RemoteProtocolError("connect sent twice", "NetConnection.Connect.Rejected")
        if not isinstance(obj, dict):
            raise RemoteProtocolError("connect without a command object", "NetConnection.Connect.Rejected")
        app = obj.get("app")
        tc_url = obj.get("tcUrl")
        self.app = app if isinstance(app, str) else ""
        self._transition(Trigger.CONNECT, local=False)
        # Section 7.2.1.1: Window Acknowledgement Size, Set Peer Bandwidth, then the result.
        self._send_control(ch.WINDOW_ACK_SIZE, _U32.pack(self._window_ack_size))
        self._send_control(
            ch.SET_PEER_BANDWIDTH, _U32.pack(self._window_ack_size) + bytes((PEER_BANDWIDTH_DYNAMIC,))
        )
        self._send_chunk_size()
        properties = {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0}
        info = _status("status", "NetConnection.Connect.Success", "Connection succeeded.", objectEncoding=0.0)
        self._send_command("_result", tid, properties, info)
        return ev.Connected(self.app, tc_url if isinstance(tc_url, str) else "", dict(obj))

    def _on_publish(self, stream_id: int, args: list[Any]) -> ev.Event:
        if stream_id not in self._streams:
            raise RemoteProtocolError(
                f"publish on stream {stream_id}, which createStream never returned",
                "NetStream.Publish.BadConnection",
            )
        if self.state is not SessionState.CONNECTED:
            raise RemoteProtocolError("publish while already publishing", "NetStream.Publish.BadConnection")
        name = args[0] if args else None
        if not isinstance(name, str):
            raise RemoteProtocolError("publish without a publishing name", "NetStream.Publish.BadName")
        publish_type = args[1] if len(args) > 1 and isinstance(args[1], str) else "live"
        key, query = _split_name(name)
        self._transition(Trigger.PUBLISH, local=False)
        self._publish_stream = self._requested_stream = stream_id
        self._publish_key = key
        return ev.PublishRequested(stream_id, self.app, key, publish_type, query)

    def _unpublish(self, stream_id: int | None) -> Iterator[ev.Event]:
        if (
            self.state is SessionState.PUBLISHING
            and stream_id is not None
            and stream_id == self._publish_stream
        ):
            self._transition(Trigger.UNPUBLISH, local=False)
            self._publish_stream = None
            yield ev.Unpublished(stream_id)

    def _delete_stream_target(self, value: Any, sent_on: int) -> int | None:
        """The stream a deleteStream means: section 7.2.2.3 passes its id (a number); GStreamer's
        rtmp2sink passes the publishing name; some send nothing (then: the stream it came on)."""
        if isinstance(value, float):
            if math.isfinite(value) and 0 <= value < (1 << 32) and value == int(value):
                return int(value)
            return None
        if isinstance(value, str):
            if self._requested_stream is not None and _split_name(value)[0] == self._publish_key:
                return self._requested_stream
            return None
        return sent_on if sent_on in self._streams else None

    def _on_media(self, message: ch.Message) -> Iterator[ev.Event]:
        if self.state is not SessionState.PUBLISHING or message.stream_id != self._publish_stream:
            return  # media for a stream that is not (or no longer) published is dropped
        stream_id, type_id = message.stream_id, message.type_id
        if type_id == ch.AUDIO:
            yield ev.AudioData(stream_id, message.timestamp, message.payload)
        elif type_id == ch.VIDEO:
            yield ev.VideoData(stream_id, message.timestamp, message.payload)
        else:
            values = self._decode_amf(message)
            if values and values[0] == "@setDataFrame":
                values = values[1:]  # FFmpeg and OBS wrap onMetaData in @setDataFrame
            if values and values[0] == "onMetaData" and len(values) > 1 and isinstance(values[1], dict):
                yield ev.Metadata(stream_id, dict(values[1]))


def _stream_id_arg(value: Any) -> int:
    if not isinstance(value, float) or not math.isfinite(value) or not 0 <= value < (1 << 32):
        raise RemoteProtocolError(f"invalid stream id {value!r}")
    return int(value)
