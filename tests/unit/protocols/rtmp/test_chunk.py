"""Chunk stream (RTMP 1.0 section 5.3): headers, timestamps, reassembly, control, caps."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.errors import RemoteProtocolError
from edged.protocols.buffer import ReceiveBuffer
from edged.protocols.rtmp.chunk import (
    ChunkReader,
    ChunkWriter,
    Message,
    encode_basic_header,
    unwrap_timestamp,
)

EXT = 0xFFFFFF


def chunk(
    fmt: int,
    csid: int,
    data: bytes = b"",
    ts: int | None = None,
    length: int | None = None,
    type_id: int = 9,
    stream_id: int = 1,
    ext: int | None = None,
) -> bytes:
    """Build one chunk by hand (header fields per section 5.3.1.2)."""
    out = bytearray(encode_basic_header(fmt, csid))
    if fmt <= 2:
        out += (EXT if ext is not None else (ts or 0)).to_bytes(3, "big")
    if fmt <= 1:
        out += (len(data) if length is None else length).to_bytes(3, "big") + bytes([type_id])
    if fmt == 0:
        out += struct.pack("<I", stream_id)
    if ext is not None:
        out += struct.pack(">I", ext)
    return bytes(out + data)


def reader(**kw: int) -> ChunkReader:
    return ChunkReader(
        max_chunk_size=kw.pop("max_chunk_size", 65536),
        max_message_size=kw.pop("max_message_size", 1 << 20),
        max_chunk_streams=kw.pop("max_chunk_streams", 8),
        **kw,
    )


def read_all(r: ChunkReader, data: bytes, piece: int | None = None) -> list[Message]:
    buf = ReceiveBuffer()
    out = []
    step = piece or max(len(data), 1)
    for start in range(0, len(data), step):
        buf.feed(data[start : start + step])
        while (m := r.next_message(buf)) is not None:
            out.append(m)
    return out


@pytest.mark.parametrize(
    ("csid", "encoded"),
    [
        (2, b"\x02"),
        (63, b"\x3f"),
        (64, b"\x00\x00"),
        (319, b"\x00\xff"),
        (320, b"\x01\x00\x01"),
        (65599, b"\x01\xff\xff"),
    ],
)
def test_basic_header_forms(csid: int, encoded: bytes) -> None:
    assert encode_basic_header(0, csid) == encoded
    assert encode_basic_header(3, csid)[0] == encoded[0] | 0xC0
    msgs = read_all(reader(), chunk(0, csid, b"hi", ts=5))
    assert msgs == [Message(csid, 5, 9, 1, b"hi")]


@pytest.mark.parametrize("csid", [0, 1, 65600])
def test_basic_header_rejects_out_of_range_ids(csid: int) -> None:
    with pytest.raises(ValueError):
        encode_basic_header(0, csid)


def test_all_four_header_types() -> None:
    data = (
        chunk(0, 4, b"aaaa", ts=1000, type_id=8, stream_id=7)
        + chunk(1, 4, b"bbbbb", ts=20, type_id=9)  # delta 20, new length and type
        + chunk(2, 4, b"ccccc", ts=33)  # delta 33, same length and type
        + chunk(3, 4, b"ddddd")  # repeats delta 33
    )
    for piece in (None, 1, 3):
        msgs = read_all(reader(), data, piece)
        assert [(m.timestamp, m.type_id, m.stream_id, m.payload) for m in msgs] == [
            (1000, 8, 7, b"aaaa"),
            (1020, 9, 7, b"bbbbb"),
            (1053, 9, 7, b"ccccc"),
            (1086, 9, 7, b"ddddd"),
        ]


def test_type3_after_type0_repeats_the_type0_timestamp_as_delta() -> None:
    # Section 5.3.1.2.4 / FFmpeg: the delta of a type-3 header after type 0 is the type-0 timestamp.
    msgs = read_all(reader(), chunk(0, 4, b"ab", ts=40) + chunk(3, 4, b"cd"))
    assert [m.timestamp for m in msgs] == [40, 80]


def test_message_split_into_chunks_keeps_its_first_timestamp() -> None:
    body = bytes(range(256)) + bytes(44)
    data = chunk(0, 6, body[:128], ts=7, length=300) + chunk(3, 6, body[128:256]) + chunk(3, 6, body[256:])
    assert read_all(reader(), data, 1) == [Message(6, 7, 9, 1, body)]


def test_extended_timestamp_on_type0_and_its_continuations() -> None:
    body = b"x" * 300
    big = 0x01000000
    data = (
        chunk(0, 6, body[:128], length=300, ext=big)
        + chunk(3, 6, body[128:256], ext=big)  # FFmpeg/OBS repeat the 4 bytes on continuations
        + chunk(3, 6, body[256:], ext=big)
    )
    for piece in (None, 1, 2):
        assert read_all(reader(), data, piece) == [Message(6, big, 9, 1, body)]


def test_type3_new_message_after_extended_header_reads_the_extended_field() -> None:
    big = 0x01000000
    data = chunk(0, 6, b"a" * 10, ext=big) + chunk(3, 6, b"b" * 10, ext=big)
    msgs = read_all(reader(), data)
    assert [m.timestamp for m in msgs] == [big, 2 * big]
    # A later ordinary type-1 header switches the extended field off again.
    more = chunk(1, 6, b"c" * 5, ts=40) + chunk(3, 6, b"d" * 5)
    r = reader()
    msgs = read_all(r, data + more)
    assert [m.timestamp for m in msgs] == [big, 2 * big, 2 * big + 40, 2 * big + 80]


def test_extended_delta_on_type1_and_type2() -> None:
    data = chunk(0, 4, b"a", ts=10) + chunk(1, 4, b"bb", ext=0x01000005) + chunk(2, 4, b"cc", ext=0x01000000)
    msgs = read_all(reader(), data)
    assert [m.timestamp for m in msgs] == [10, 10 + 0x01000005, 10 + 0x02000005]


def test_timestamps_unwrap_past_32_bits() -> None:
    start = 0xFFFFFFF0
    data = (
        chunk(0, 4, b"a", ext=start)
        + chunk(1, 4, b"b", ts=0x20)  # crosses 2**32 by delta
        + chunk(0, 4, b"c", ts=0x30)  # absolute value after the wrap
        + chunk(0, 4, b"d", ts=0x28)  # small step back (audio/video interleave): passed through
    )
    msgs = read_all(reader(), data)
    assert [m.timestamp for m in msgs] == [start, (1 << 32) + 0x10, (1 << 32) + 0x30, (1 << 32) + 0x28]


@given(st.integers(0, (1 << 40)), st.integers(0, (1 << 32) - 1))
def test_unwrap_is_congruent_and_near(reference: int, raw: int) -> None:
    got = unwrap_timestamp(reference, raw)
    assert got >= 0 and got % (1 << 32) == raw
    if reference >= 1 << 31:
        assert abs(got - reference) <= 1 << 31


@given(st.lists(st.integers(0, 0xFFFFFFF), min_size=1, max_size=40), st.integers(0, (1 << 32) - 1))
def test_deltas_accumulate_monotonically(deltas: list[int], start: int) -> None:
    data = bytearray(chunk(0, 5, b"s", ext=start) if start >= EXT else chunk(0, 5, b"s", ts=start))
    for i, d in enumerate(deltas):
        fmt = 1 if i % 2 else 2
        data += chunk(fmt, 5, b"m", ts=d if d < EXT else None, ext=d if d >= EXT else None)
    msgs = read_all(reader(), bytes(data))
    expected = [start]
    for d in deltas:
        expected.append(expected[-1] + d)
    assert [m.timestamp for m in msgs] == expected


def test_interleaved_chunk_streams() -> None:
    a = bytes(range(200)) + bytes(100)
    b = b"B" * 200
    data = (
        chunk(0, 4, a[:128], ts=1, length=300, type_id=8)
        + chunk(0, 6, b[:128], ts=2, length=200, type_id=9)
        + chunk(3, 4, a[128:256])
        + chunk(3, 6, b[128:])
        + chunk(3, 4, a[256:])
    )
    for piece in (None, 1, 5):
        msgs = read_all(reader(), data, piece)
        assert msgs == [Message(6, 2, 9, 1, b), Message(4, 1, 8, 1, a)]


def set_chunk_size(n: int) -> bytes:
    return chunk(0, 2, struct.pack(">I", n), type_id=1, stream_id=0)


def test_set_chunk_size_applies_to_following_chunks() -> None:
    body = b"z" * 1000
    r = reader()
    msgs = read_all(r, set_chunk_size(4096) + chunk(0, 6, body, ts=3), 1)
    assert r.chunk_size == 4096
    assert msgs[-1] == Message(6, 3, 9, 1, body)


def test_set_chunk_size_mid_message_on_another_stream() -> None:
    body = b"q" * 300
    data = chunk(0, 6, body[:128], length=300) + set_chunk_size(1000) + chunk(3, 6, body[128:])
    msgs = read_all(reader(), data)
    assert msgs[-1].payload == body


@pytest.mark.parametrize("size", [0, 0x80000000, 0xFFFFFFFF, 65537])
def test_absurd_chunk_sizes_are_refused(size: int) -> None:
    with pytest.raises(RemoteProtocolError):
        read_all(reader(max_chunk_size=65536), set_chunk_size(size))


def test_short_control_payloads_are_refused() -> None:
    with pytest.raises(RemoteProtocolError):
        read_all(reader(), chunk(0, 2, b"\x00\x01", type_id=1, stream_id=0))
    with pytest.raises(RemoteProtocolError):
        read_all(reader(), chunk(0, 2, b"\x00", type_id=2, stream_id=0))


def test_abort_discards_the_partial_message() -> None:
    abort = chunk(0, 2, struct.pack(">I", 6), type_id=2, stream_id=0)
    data = chunk(0, 6, b"p" * 128, length=300) + abort + chunk(0, 6, b"fresh", ts=9)
    msgs = read_all(reader(), data)
    assert [m.type_id for m in msgs] == [2, 9]
    assert msgs[-1].payload == b"fresh"
    # Aborting a chunk stream with nothing pending is harmless.
    assert len(read_all(reader(), abort)) == 1


def test_message_length_over_cap_is_refused_from_the_header_alone() -> None:
    with pytest.raises(RemoteProtocolError, match="cap"):
        read_all(reader(max_message_size=1000), chunk(0, 4, b"", length=1001))
    with pytest.raises(RemoteProtocolError):
        read_all(reader(max_message_size=1000), chunk(0, 4, b"a", ts=0) + chunk(1, 4, b"", length=0xFFFFFF))


def test_partial_message_count_is_capped() -> None:
    data = b"".join(chunk(0, csid, b"p" * 128, length=200) for csid in (3, 4, 5))
    with pytest.raises(RemoteProtocolError, match="partial"):
        read_all(reader(max_chunk_streams=2), data)


def test_whole_messages_pass_while_partials_are_at_the_cap() -> None:
    data = chunk(0, 3, b"p" * 128, length=200) + chunk(0, 4, b"whole") + chunk(3, 3, b"q" * 72)
    msgs = read_all(reader(max_chunk_streams=1), data)
    assert [(m.csid, len(m.payload)) for m in msgs] == [(4, 5), (3, 200)]


def test_known_chunk_stream_ids_are_capped() -> None:
    data = b"".join(chunk(0, csid, b"m") for csid in range(3, 10))
    with pytest.raises(RemoteProtocolError, match="chunk stream ids"):
        read_all(reader(max_chunk_stream_ids=4), data)


def test_partial_bytes_are_capped() -> None:
    data = chunk(0, 3, b"p" * 128, length=1000) + chunk(0, 4, b"p" * 128, length=1000)
    data += chunk(3, 3, b"p" * 128)
    with pytest.raises(RemoteProtocolError, match="buffered"):
        read_all(reader(max_partial_bytes=300), data)


def test_partial_bytes_cap_applies_to_continuations() -> None:
    data = chunk(0, 3, b"p" * 128, length=1000) + chunk(3, 3, b"p" * 128)
    with pytest.raises(RemoteProtocolError, match="buffered"):
        read_all(reader(max_partial_bytes=200), data)


@pytest.mark.parametrize("fmt", [1, 2, 3])
def test_first_header_of_a_chunk_stream_must_be_type0(fmt: int) -> None:
    with pytest.raises(RemoteProtocolError):
        read_all(reader(), chunk(fmt, 5, b"x", ts=1, length=1))


def test_new_header_inside_a_message_is_refused() -> None:
    data = chunk(0, 6, b"a" * 128, length=300) + chunk(0, 6, b"b")
    with pytest.raises(RemoteProtocolError):
        read_all(reader(), data)


def test_zero_length_message() -> None:
    assert read_all(reader(), chunk(0, 3, b"", ts=4, type_id=18)) == [Message(3, 4, 18, 1, b"")]


def test_incomplete_chunk_consumes_nothing() -> None:
    r = reader()
    buf = ReceiveBuffer()
    full = chunk(0, 6, b"abcdef", ts=1)
    buf.feed(full[:-1])
    assert r.next_message(buf) is None
    assert r.bytes_read == 0 and buf.uncommitted == len(full) - 1
    buf.feed(full[-1:])
    assert r.next_message(buf) == Message(6, 1, 9, 1, b"abcdef")
    assert r.bytes_read == len(full)


def test_writer_uses_type0_then_type3() -> None:
    w = ChunkWriter(128)
    out = w.write(5, 10, 9, 1, b"v" * 300)
    assert out[0] == 0x05 and out[12 + 128] == 0xC5 and out[12 + 128 + 1 + 128] == 0xC5
    assert len(out) == 12 + 300 + 2
    assert w.bytes_written == len(out)


def test_writer_repeats_extended_timestamp_on_continuations() -> None:
    w = ChunkWriter(128)
    out = w.write(5, 0x12345678, 9, 1, b"v" * 200)
    assert out[1:4] == b"\xff\xff\xff" and out[12:16] == b"\x12\x34\x56\x78"
    cont = 16 + 128
    assert out[cont] == 0xC5 and out[cont + 1 : cont + 5] == b"\x12\x34\x56\x78"
    assert read_all(reader(), out) == [Message(5, 0x12345678, 9, 1, b"v" * 200)]


def test_writer_refuses_oversized_message() -> None:
    with pytest.raises(ValueError):
        ChunkWriter().write(3, 0, 9, 1, bytes(0x1000000))


messages = st.lists(
    st.tuples(
        st.sampled_from([2, 3, 4, 63, 64, 200, 319, 320, 1000, 65599]),
        st.integers(0, (1 << 31) - 1),
        st.sampled_from([3, 4, 5, 6, 8, 9, 15, 17, 18, 20, 22, 99]),
        st.integers(0, (1 << 32) - 1),
        st.binary(max_size=700),
    ),
    max_size=12,
)


@settings(max_examples=150)
@given(messages, st.integers(1, 600), st.integers(1, 97))
def test_writer_reader_round_trip(
    msgs: list[tuple[int, int, int, int, bytes]], size: int, piece: int
) -> None:
    w = ChunkWriter(size)
    data = b"".join(w.write(*m) for m in msgs)
    r = reader(max_chunk_streams=64)
    r.chunk_size = size
    got = read_all(r, data, piece)
    assert [(m.csid, m.timestamp, m.type_id, m.stream_id, m.payload) for m in got] == msgs
