"""ReceiveBuffer: tentative reads, commit and rollback."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edged.protocols.buffer import ReceiveBuffer


def test_consume_exactly_waits_for_enough_bytes() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"abc")
    assert buf.consume_exactly(4) is None
    assert len(buf) == 3
    assert buf.consume_exactly(2) == b"ab"
    assert len(buf) == 1


def test_rollback_returns_to_last_commit() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"abcdef")
    assert buf.consume_exactly(2) == b"ab"
    assert buf.commit() == 2
    assert buf.consume_exactly(3) == b"cde"
    buf.rollback()
    assert buf.consume_exactly(4) == b"cdef"
    assert buf.uncommitted == 4


def test_split_header_is_reparsed_from_its_start() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"\x01")
    assert buf.consume_exactly(1) == b"\x01"
    assert buf.consume_exactly(2) is None
    buf.rollback()
    buf.feed(b"\x02\x03")
    assert buf.consume_exactly(1) == b"\x01"
    assert buf.consume_exactly(2) == b"\x02\x03"


def test_peek_at_most_and_clear() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"xyz")
    assert buf.peek(2) == b"xy"
    assert buf.consume_at_most(10) == b"xyz"
    assert not buf
    buf.feed(b"more")
    assert buf.clear() == 7
    assert len(buf) == 0 and buf.uncommitted == 0


def test_negative_sizes_consume_nothing() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"ab")
    assert buf.consume_exactly(-1) is None
    assert buf.consume_at_most(-5) == b""
    assert len(buf) == 2


@given(st.lists(st.binary(max_size=200_000 // 8), max_size=8), st.lists(st.integers(0, 5000), max_size=40))
def test_committed_reads_reassemble_the_stream(pieces: list[bytes], reads: list[int]) -> None:
    buf = ReceiveBuffer()
    whole = b"".join(pieces)
    for piece in pieces:
        buf.feed(piece)
    got = bytearray()
    for n in reads:
        chunk = buf.consume_exactly(n)
        if chunk is None:
            buf.rollback()
            continue
        got += chunk
        buf.commit()
    got += buf.consume_at_most(len(whole))
    assert bytes(got) == whole
