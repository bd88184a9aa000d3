"""RTMP chunk stream (Adobe RTMP specification 1.0, section 5.3): reader and writer.

A message travels as chunks of at most the sender's chunk size, each with a basic
header (format 0-3 and chunk stream id), a message header of 11, 7, 3 or 0 bytes and
optionally a 4-byte extended timestamp. Chunks of different chunk streams interleave;
each chunk stream id keeps the last header it saw so later headers can omit fields.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from edged.errors import RemoteProtocolError
from edged.protocols.buffer import ReceiveBuffer


class BudgetExceeded(RemoteProtocolError):
    """The peer went over a size or count budget (well-formed input, just too much of it)."""


# Message type ids: section 5.4 (protocol control), 6.2 (user control), 7.1 (the rest).
SET_CHUNK_SIZE = 1
ABORT = 2
ACKNOWLEDGEMENT = 3
USER_CONTROL = 4
WINDOW_ACK_SIZE = 5
SET_PEER_BANDWIDTH = 6
AUDIO = 8
VIDEO = 9
DATA_AMF3 = 15
COMMAND_AMF3 = 17
DATA_AMF0 = 18
COMMAND_AMF0 = 20

DEFAULT_CHUNK_SIZE = 128  # section 5.4.1: until Set Chunk Size, chunks carry 128 bytes
MAX_CHUNK_SIZE_FIELD = 0x7FFFFFFF  # section 5.4.1: 31 bits, the top bit must be zero
MIN_CSID = 2  # section 5.3.1.1: 0 and 1 select the 2- and 3-byte basic header forms
MAX_CSID = 65599  # 65535 + 64, the largest the 3-byte form can carry
MAX_MESSAGE_LENGTH_FIELD = 0xFFFFFF  # 24-bit message length (bytes)
EXTENDED_TIMESTAMP = 0xFFFFFF  # section 5.3.1.3: the 24-bit field saying "see the next 4 bytes"
# A chunk stream id carries ~100 bytes of header state even without a partial message;
# real publishers use fewer than ten ids, so 1024 bounds memory with no false alarms.
DEFAULT_MAX_CHUNK_STREAM_IDS = 1024

_HEADER_SIZES = (11, 7, 3, 0)  # section 5.3.1.2: message header size by chunk format
_U32 = struct.Struct(">I")
_WRAP = 1 << 32
_HALF = 1 << 31


@dataclass(frozen=True, slots=True)
class Message:
    """One reassembled RTMP message."""

    csid: int
    timestamp: int  # ms, unwrapped past 2**32
    type_id: int
    stream_id: int
    payload: bytes


@dataclass(slots=True)
class _ChunkStreamState:
    """What section 5.3.1.2 lets later chunks of one chunk stream id omit."""

    timestamp: int = 0  # ms, absolute and unwrapped, of the latest message
    delta: int = 0  # the 32-bit delta a format-3 header starting a new message repeats
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False  # the latest format 0/1/2 header used the extended timestamp
    partial: bytearray | None = None  # body of a message still arriving


def unwrap_timestamp(reference: int, raw: int) -> int:
    """Place a 32-bit timestamp on the 64-bit line nearest to ``reference`` (never below 0)."""
    candidate = reference - reference % _WRAP + raw
    if candidate < reference - _HALF:
        candidate += _WRAP
    elif candidate > reference + _HALF and candidate >= _WRAP:
        candidate -= _WRAP
    return candidate


class ChunkReader:
    """Reassembles messages from chunks; applies Set Chunk Size and Abort itself."""

    def __init__(
        self,
        max_chunk_size: int,
        max_message_size: int,
        max_chunk_streams: int,
        max_chunk_stream_ids: int = DEFAULT_MAX_CHUNK_STREAM_IDS,
        max_partial_bytes: int | None = None,
    ) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.max_chunk_size = max_chunk_size
        self.max_message_size = max_message_size
        self.max_chunk_streams = max_chunk_streams
        self.max_chunk_stream_ids = max_chunk_stream_ids
        # Every partial message is below max_message_size; this also bounds their sum.
        self.max_partial_bytes = 4 * max_message_size if max_partial_bytes is None else max_partial_bytes
        self.bytes_read = 0
        self.chunks_read = 0
        # Chunks this reader may read in all (None: no limit); a peer past it is over budget.
        self.max_chunks: int | None = None
        self._streams: dict[int, _ChunkStreamState] = {}
        self._partials = 0  # chunk streams holding a partial message
        self._partial_bytes = 0
        self._last_timestamp = 0  # latest message timestamp on any chunk stream (ms)

    def next_message(self, buf: ReceiveBuffer) -> Message | None:
        """Consume whole chunks from ``buf`` until a message completes; None if more bytes are needed."""
        while True:
            message = self._read_chunk(buf)
            if message is None:
                buf.rollback()
                return None
            if message is not _NO_MESSAGE:
                assert isinstance(message, Message)
                self._apply_control(message)
                return message

    @property
    def partial_bytes(self) -> int:
        """Bytes held in partial messages right now."""
        return self._partial_bytes

    @property
    def chunk_stream_ids(self) -> int:
        """Chunk stream ids seen so far (each keeps its last header)."""
        return len(self._streams)

    def abort(self, csid: int) -> None:
        """Discard the partial message of ``csid`` (section 5.4.2)."""
        state = self._streams.get(csid)
        if state is not None and state.partial is not None:
            self._drop_partial(state)

    def _read_chunk(self, buf: ReceiveBuffer) -> Message | object | None:
        first = buf.consume_exactly(1)
        if first is None:
            return None
        fmt, csid = first[0] >> 6, first[0] & 0x3F
        if csid == 0:  # section 5.3.1.1: 2-byte form, ids 64-319
            more = buf.consume_exactly(1)
            if more is None:
                return None
            csid = more[0] + 64
        elif csid == 1:  # 3-byte form, ids 64-65599, little-endian
            more = buf.consume_exactly(2)
            if more is None:
                return None
            csid = more[0] + more[1] * 256 + 64
        header = buf.consume_exactly(_HEADER_SIZES[fmt])
        if header is None:
            return None
        state = self._streams.get(csid)
        if state is None:
            if fmt != 0:
                raise RemoteProtocolError(f"chunk stream {csid} starts with a format-{fmt} header")
            if len(self._streams) >= self.max_chunk_stream_ids:
                raise BudgetExceeded(f"more than {self.max_chunk_stream_ids} chunk stream ids in use")
        partial = state.partial if state is not None else None
        if partial is not None and fmt != 3:
            raise RemoteProtocolError(f"chunk stream {csid} got a new header inside a message")

        ts_field = int.from_bytes(header[0:3], "big") if fmt < 3 else 0
        # Section 5.3.1.3: a type-3 chunk carries the extended field when its chunk stream's
        # latest type 0/1/2 header did (FFmpeg and OBS also send it on continuations).
        extended = ts_field == EXTENDED_TIMESTAMP if fmt < 3 else state is not None and state.extended
        ts_value = ts_field
        if extended:
            ext = buf.consume_exactly(4)
            if ext is None:
                return None
            ts_value = _U32.unpack(ext)[0]
        if fmt <= 1:
            length = int.from_bytes(header[3:6], "big")
            if length > self.max_message_size:
                raise BudgetExceeded(f"message of {length} bytes exceeds the {self.max_message_size}-byte cap")
        else:
            assert state is not None
            length = state.length
        size = min(self.chunk_size, length - (len(partial) if partial is not None else 0))
        if partial is None and size < length and self._partials >= self.max_chunk_streams:
            raise BudgetExceeded(f"more than {self.max_chunk_streams} partial messages at once")
        if (partial is not None or size < length) and self._partial_bytes + size > self.max_partial_bytes:
            raise BudgetExceeded(f"partial messages exceed the {self.max_partial_bytes}-byte buffered-bytes cap")
        data = buf.consume_exactly(size)
        if data is None:
            return None
        self.bytes_read += buf.commit()
        self.chunks_read += 1
        if self.max_chunks is not None and self.chunks_read > self.max_chunks:
            raise BudgetExceeded(f"more than {self.max_chunks} chunks")

        # The whole chunk is in hand: only now touch the per-stream state.
        if state is None:
            state = self._streams[csid] = _ChunkStreamState()
        if partial is None:
            self._start_message(state, fmt, header, ts_value, extended, length)
            if size == length:
                return self._finish(csid, state, data)
            state.partial = bytearray(data)
            self._partials += 1
            self._partial_bytes += size
            return _NO_MESSAGE
        partial += data
        self._partial_bytes += size
        if len(partial) < state.length:
            return _NO_MESSAGE
        body = bytes(partial)
        self._drop_partial(state)
        return self._finish(csid, state, body)

    def _start_message(
        self, state: _ChunkStreamState, fmt: int, header: bytes, ts_value: int, extended: bool, length: int
    ) -> None:
        if fmt == 0:
            # Section 5.3.1.2.1: absolute timestamp; a later format-3 header repeats it as a delta.
            state.timestamp = unwrap_timestamp(self._last_timestamp, ts_value)
            state.delta = ts_value
            state.stream_id = int.from_bytes(header[7:11], "little")
        elif fmt in (1, 2):
            state.timestamp += ts_value  # sections 5.3.1.2.2-3: timestamp delta
            state.delta = ts_value
        else:
            # Section 5.3.1.2.4: a format-3 header starting a message repeats the last delta;
            # an extended field, when present, carries that delta again.
            if extended:
                state.delta = ts_value
            state.timestamp += state.delta
        if fmt <= 1:
            state.length = length
            state.type_id = header[6]
        if fmt < 3:
            state.extended = extended
        self._last_timestamp = state.timestamp

    def _finish(self, csid: int, state: _ChunkStreamState, body: bytes) -> Message:
        return Message(csid, state.timestamp, state.type_id, state.stream_id, body)

    def _drop_partial(self, state: _ChunkStreamState) -> None:
        assert state.partial is not None
        self._partials -= 1
        self._partial_bytes -= len(state.partial)
        state.partial = None

    def _apply_control(self, message: Message) -> None:
        if message.type_id == SET_CHUNK_SIZE:
            size = _read_u32(message.payload, "Set Chunk Size")
            if size == 0 or size > MAX_CHUNK_SIZE_FIELD:
                raise RemoteProtocolError(f"invalid chunk size {size}")
            if size > self.max_chunk_size:
                raise RemoteProtocolError(f"chunk size {size} exceeds the {self.max_chunk_size}-byte cap")
            self.chunk_size = size
        elif message.type_id == ABORT:
            self.abort(_read_u32(message.payload, "Abort Message"))


_NO_MESSAGE = object()  # a chunk was consumed but no message completed


def _read_u32(payload: bytes, what: str) -> int:
    if len(payload) < 4:
        raise RemoteProtocolError(f"{what} payload of {len(payload)} bytes is shorter than 4")
    value: int = _U32.unpack_from(payload)[0]
    return value


def encode_basic_header(fmt: int, csid: int) -> bytes:
    """Section 5.3.1.1: the 1-, 2- or 3-byte basic header."""
    if not MIN_CSID <= csid <= MAX_CSID:
        raise ValueError(f"chunk stream id {csid} outside {MIN_CSID}..{MAX_CSID}")
    if csid < 64:
        return bytes((fmt << 6 | csid,))
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    rest = csid - 64
    return bytes((fmt << 6 | 1, rest & 0xFF, rest >> 8))


class ChunkWriter:
    """Splits messages into chunks: format 0 first, then format-3 continuations."""

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size
        self.bytes_written = 0

    def write(self, csid: int, timestamp: int, type_id: int, stream_id: int, payload: bytes) -> bytes:
        """Return the chunks carrying one message."""
        if len(payload) > MAX_MESSAGE_LENGTH_FIELD:
            raise ValueError(f"message of {len(payload)} bytes does not fit the 24-bit length field")
        ts = timestamp % _WRAP
        extended = ts >= EXTENDED_TIMESTAMP
        ext = _U32.pack(ts) if extended else b""
        parts = [
            encode_basic_header(0, csid),
            min(ts, EXTENDED_TIMESTAMP).to_bytes(3, "big"),
            len(payload).to_bytes(3, "big"),
            bytes((type_id,)),
            stream_id.to_bytes(4, "little"),
            ext,
            payload[: self.chunk_size],
        ]
        continuation = encode_basic_header(3, csid) + ext  # section 5.3.1.3: ext repeats on format 3
        for start in range(self.chunk_size, len(payload), self.chunk_size):
            parts.append(continuation)
            parts.append(payload[start : start + self.chunk_size])
        out = b"".join(parts)
        self.bytes_written += len(out)
        return out
