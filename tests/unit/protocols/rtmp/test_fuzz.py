"""Arbitrary bytes may only ever raise ProtocolError subclasses (a crash here is a security bug)."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.errors import RemoteProtocolError
from edged.protocols.rtmp import amf0
from edged.protocols.rtmp import events as ev
from edged.protocols.rtmp.chunk import ChunkWriter
from edged.protocols.rtmp.client import RtmpClientSession
from edged.protocols.rtmp.session import RtmpServerSession
from tests.unit.protocols.rtmp.helpers import SIMPLE_C0C1C2, SessionPair, accept_all, command, fixed_random

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def drive(session: RtmpServerSession | RtmpClientSession, data: bytes, cuts: list[int]) -> None:
    """Feed ``data`` split at ``cuts``, accept any publish, then EOF; only RemoteProtocolError may escape."""
    pieces, start = [], 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        pieces.append(data[start:cut])
        start = cut
    pieces.append(data[start:])
    try:
        for piece in pieces:
            if not piece:
                continue
            session.receive_data(piece)
            for event in session.events():
                if isinstance(event, ev.PublishRequested) and isinstance(session, RtmpServerSession):
                    session.accept_publish(event.stream_id)
            session.data_to_send()
        session.receive_data(b"")
        list(session.events())
    except RemoteProtocolError:
        pass


def _small_server() -> RtmpServerSession:
    # Small caps so random input reaches them; the logic is the same as with the defaults.
    return RtmpServerSession(
        max_chunk_size=4096,
        max_message_size=1 << 16,
        window_ack_size=512,
        max_amf_depth=8,
        max_amf_items=64,
        max_chunk_streams=4,
        random_bytes=fixed_random(),
    )


def _recorded_publish() -> tuple[bytes, bytes]:
    pair = SessionPair(on_server_event=accept_all)
    pair.client.connect()
    pair.pump()
    pair.client.send_metadata({"width": 1.0, "codec": "avc1", "nested": {"list": [1.0, None, True]}})
    pair.client.send_video(0, b"\x17\x00" + bytes(300))
    pair.client.send_audio(0x1000000, b"\xaf\x01" + bytes(50))
    pair.client.unpublish()
    pair.pump()
    return bytes(pair.to_server), bytes(pair.to_client)


CLIENT_BYTES, SERVER_BYTES = _recorded_publish()
# Up to the @setDataFrame message: its 12-byte chunk header precedes the AMF0 string marker.
AFTER_PUBLISH = CLIENT_BYTES[: CLIENT_BYTES.index(b"\x02\x00\x0d@setDataFrame") - 12]


@FUZZ
@given(st.binary(max_size=4000), st.lists(st.integers(0, 5000), max_size=6))
def test_server_arbitrary_bytes_from_the_start(data: bytes, cuts: list[int]) -> None:
    drive(_small_server(), data, cuts)
    drive(_small_server(), b"\x03" + data, cuts)


@FUZZ
@given(st.binary(max_size=4000), st.lists(st.integers(0, 8000), max_size=6))
def test_server_arbitrary_bytes_after_handshake(data: bytes, cuts: list[int]) -> None:
    drive(_small_server(), SIMPLE_C0C1C2 + data, cuts)


@FUZZ
@given(st.binary(max_size=4000), st.lists(st.integers(0, 9000), max_size=6))
def test_server_arbitrary_bytes_while_publishing(data: bytes, cuts: list[int]) -> None:
    drive(_small_server(), AFTER_PUBLISH + data, cuts)


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(CLIENT_BYTES) - 1), st.integers(0, 255)), min_size=1, max_size=4),
    st.lists(st.integers(0, 20000), max_size=4),
)
def test_server_mutated_publish(flips: list[tuple[int, int]], cuts: list[int]) -> None:
    data = bytearray(CLIENT_BYTES)
    for at, value in flips:
        data[at] = value
    drive(_small_server(), bytes(data), cuts)


names = st.sampled_from(
    [
        "connect",
        "createStream",
        "publish",
        "releaseStream",
        "FCPublish",
        "FCUnpublish",
        "deleteStream",
        "closeStream",
        "play",
        "_checkbw",
        "_result",
        "onStatus",
        "@setDataFrame",
        "onMetaData",
        "x",
    ]
)
scalars = st.one_of(st.none(), st.booleans(), st.floats(), st.text(max_size=10), st.just(amf0.UNDEFINED))
amf_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
payloads = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda n, rest: amf0.encode(n, *rest), names, st.lists(amf_values, max_size=4)),
    st.integers(0, 0xFFFFFFFF).map(lambda n: struct.pack(">I", n)),
    st.builds(
        lambda a, b: bytes(a) + bytes(b),
        st.lists(st.integers(0, 7), min_size=2, max_size=2),
        st.binary(max_size=6),
    ),
)
messages = st.lists(
    st.tuples(
        st.sampled_from([2, 3, 4, 5, 6, 8, 64, 400]),
        st.integers(0, 0xFFFFFFFF),
        st.sampled_from([1, 2, 3, 4, 5, 6, 8, 9, 15, 17, 18, 20, 22, 0, 255]),
        st.sampled_from([0, 1, 2, 0xFFFFFFFF]),
        payloads,
    ),
    max_size=12,
)


@FUZZ
@given(messages, st.lists(st.integers(0, 10000), max_size=4))
def test_server_well_framed_random_messages(msgs: list[tuple[Any, ...]], cuts: list[int]) -> None:
    # Valid chunking with random content reaches the command and control handlers.
    writer = ChunkWriter()
    body = b"".join(writer.write(*m) for m in msgs)
    connect = command(ChunkWriter(), "connect", 1, {"app": "live"})
    drive(_small_server(), SIMPLE_C0C1C2 + body, cuts)
    drive(_small_server(), SIMPLE_C0C1C2 + connect + body, cuts)
    drive(_small_server(), AFTER_PUBLISH + body, cuts)


def _fresh_client() -> RtmpClientSession:
    client = RtmpClientSession(
        app="live",
        tc_url="rtmp://127.0.0.1/live",
        stream_key="k",
        random_bytes=fixed_random(1),
        max_amf_depth=8,
        max_amf_items=64,
        max_chunk_streams=4,
    )
    client.connect()
    client.data_to_send()
    return client


@FUZZ
@given(st.binary(max_size=4000), st.lists(st.integers(0, 8000), max_size=6))
def test_client_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    drive(_fresh_client(), data, cuts)
    drive(_fresh_client(), b"\x03" + bytes(3072) + data, cuts)


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(SERVER_BYTES) - 1), st.integers(0, 255)), min_size=1, max_size=4),
    st.lists(st.integers(0, 10000), max_size=4),
)
def test_client_mutated_replies(flips: list[tuple[int, int]], cuts: list[int]) -> None:
    data = bytearray(SERVER_BYTES)
    for at, value in flips:
        data[at] = value
    drive(_fresh_client(), bytes(data), cuts)


@FUZZ
@given(messages)
def test_client_well_framed_random_messages(msgs: list[tuple[Any, ...]]) -> None:
    writer = ChunkWriter()
    drive(_fresh_client(), b"\x03" + bytes(3072) + b"".join(writer.write(*m) for m in msgs), [])
