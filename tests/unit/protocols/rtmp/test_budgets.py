"""Server-core budgets (what a stranger may make us hold or do) and teardown as real encoders send it."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given

from edged.errors import RemoteProtocolError
from edged.protocols.rtmp import events as ev
from edged.protocols.rtmp.chunk import AUDIO, SET_CHUNK_SIZE, USER_CONTROL, VIDEO, BudgetExceeded, ChunkWriter
from edged.protocols.rtmp.session import (
    DEFAULT_PRE_PUBLISH_BYTES,
    DEFAULT_PRE_PUBLISH_MESSAGES,
    PARTIAL_HEADROOM,
    RtmpServerSession,
    SessionState,
)
from tests.unit.protocols.rtmp.helpers import (
    SIMPLE_C0C1C2,
    SessionPair,
    accept_all,
    command,
    connected_server,
    fixed_random,
    publishing_server,
)
from tests.unit.protocols.rtmp.test_fuzz import FUZZ, messages

PING = struct.pack(">HI", 6, 1234)  # User Control: Ping Request (section 7.1.7)
MAX_CHUNK_HEADER = 3 + 11 + 4  # longest basic header + type-0 message header + extended timestamp


def _fragment(csid: int, type_id: int, length: int, data: bytes) -> bytes:
    """The first (type-0) chunk of a message of ``length`` bytes, carrying only ``data``."""
    return bytes((csid,)) + bytes(3) + length.to_bytes(3, "big") + bytes((type_id,)) + bytes(4) + data


# --- teardown: what OBS, FFmpeg and GStreamer's rtmp2sink send ---------------------------------------


def test_gstreamer_teardown_fcunpublish_then_delete_stream_by_name() -> None:
    server, writer, _ = publishing_server()
    server.receive_data(
        command(writer, "FCUnpublish", 5, None, "key") + command(writer, "deleteStream", 6, None, "key")
    )
    assert list(server.events()) == [ev.Unpublished(1)]
    assert server.state is SessionState.CONNECTED
    server.receive_data(b"")
    assert list(server.events()) == [ev.ConnectionClosed()]


@pytest.mark.parametrize(
    "args",
    [(1.0,), ("key",), ("key?token=abc",)],
    ids=["number", "name", "name-with-query"],
)
def test_delete_stream_alone_unpublishes(args: tuple[Any, ...]) -> None:
    server, writer, _ = publishing_server()
    server.receive_data(command(writer, "deleteStream", 6, None, *args))
    assert list(server.events()) == [ev.Unpublished(1)]


def test_delete_stream_without_argument_means_the_stream_it_came_on() -> None:
    server, writer, _ = publishing_server()
    server.receive_data(command(writer, "deleteStream", 6, None, stream_id=1))
    assert list(server.events()) == [ev.Unpublished(1)]


@pytest.mark.parametrize(
    "args",
    [(), ("someone-else",), (float("nan"),), (-1.0,), (2.5,), (1e300,), (True,), ({"a": 1.0},)],
)
def test_delete_stream_naming_nothing_we_know_is_ignored(args: tuple[Any, ...]) -> None:
    server, writer, _ = publishing_server()
    server.receive_data(command(writer, "deleteStream", 6, None, *args))
    assert list(server.events()) == []
    assert server.state is SessionState.PUBLISHING


def test_delete_stream_before_any_publish_is_harmless() -> None:
    server, writer, _ = connected_server()
    server.receive_data(command(writer, "createStream", 2) + command(writer, "deleteStream", 3, None, "key"))
    assert list(server.events()) == []
    assert server.state is SessionState.CONNECTED


# --- before publish: bytes ----------------------------------------------------------------------------


def test_a_real_publish_fits_the_pre_publish_budgets() -> None:
    pair = SessionPair(on_server_event=accept_all)
    pair.client.connect()
    pair.pump()
    assert pair.server.state is SessionState.PUBLISHING
    assert pair.server.authenticated
    # what a publisher sends before publish is a handful of small messages, far under the budget
    assert pair.server.pre_publish_messages - pair.server._messages_left <= 10


def test_pre_publish_message_over_the_byte_budget_is_refused_from_its_header() -> None:
    server = RtmpServerSession(random_bytes=fixed_random(), pre_publish_bytes=4096)
    server.receive_data(SIMPLE_C0C1C2 + _fragment(3, 20, 4097, b"\x02"))
    with pytest.raises(BudgetExceeded, match="4096-byte cap"):
        list(server.events())
    assert server.state is SessionState.ERROR


def test_pre_publish_partial_messages_are_bounded_in_sum() -> None:
    # three partial messages of 1500 bytes each are within the per-message budget, not in sum
    server = RtmpServerSession(random_bytes=fixed_random(), pre_publish_bytes=4096)
    data = SIMPLE_C0C1C2 + b"".join(_fragment(csid, 20, 4000, b"p" * 128) for csid in (3, 4, 5))
    data += b"".join(bytes((0xC0 | csid,)) + b"q" * 128 for csid in (3, 4, 5) for _ in range(10))
    server.receive_data(data)
    with pytest.raises(BudgetExceeded, match="buffered-bytes"):
        list(server.events())


def test_pre_publish_chunk_stream_ids_are_few() -> None:
    server = RtmpServerSession(random_bytes=fixed_random())
    server.receive_data(SIMPLE_C0C1C2 + b"".join(_fragment(csid, 8, 2, b"a") for csid in range(3, 30)))
    with pytest.raises(BudgetExceeded):
        list(server.events())


def test_after_accept_the_full_caps_apply() -> None:
    server, writer, _ = publishing_server(max_message_size=1 << 20)
    big = b"\x17\x01" + bytes(200_000)  # far over the pre-publish byte budget, under the cap
    writer.chunk_size = 4096
    server.receive_data(
        ChunkWriter().write(2, 0, SET_CHUNK_SIZE, 0, struct.pack(">I", 4096)) + writer.write(6, 0, VIDEO, 1, big)
    )
    assert list(server.events()) == [ev.VideoData(1, 0, big)]


def test_after_accept_partial_messages_are_bounded_in_sum() -> None:
    cap = 1 << 20
    server, _, _ = publishing_server(max_message_size=cap)
    writer = ChunkWriter(65536)
    data = ChunkWriter().write(2, 0, SET_CHUNK_SIZE, 0, struct.pack(">I", 65536))
    first_chunk, next_chunk = 12 + 65536, 1 + 65536
    # one message at the cap, its last chunk missing, then a second one past the headroom
    data += writer.write(6, 0, VIDEO, 1, bytes(cap))[: first_chunk + 14 * next_chunk]
    more = PARTIAL_HEADROOM // 65536 + 1
    data += writer.write(7, 0, VIDEO, 1, bytes(cap))[: first_chunk + more * next_chunk]
    server.receive_data(data)
    with pytest.raises(BudgetExceeded, match="buffered-bytes"):
        list(server.events())


@given(messages)
@FUZZ
def test_a_stranger_never_makes_the_core_hold_more_than_the_budget(msgs: list[tuple[Any, ...]]) -> None:
    budget = 2048
    server = RtmpServerSession(random_bytes=fixed_random(), pre_publish_bytes=budget)
    writer = ChunkWriter()
    data = SIMPLE_C0C1C2 + b"".join(writer.write(*m) for m in msgs)
    try:
        for start in range(0, len(data), 700):
            server.receive_data(data[start : start + 700])
            list(server.events())
            server.data_to_send()
            if server.state is SessionState.PUBLISH_REQUESTED:
                return  # paused for the application; it reads nothing more until it decides
            assert server._reader.partial_bytes <= budget
            assert server.buffered_bytes <= budget + MAX_CHUNK_HEADER + budget
    except RemoteProtocolError:
        pass


# --- before publish: messages and chunks --------------------------------------------------------------


def test_pings_before_publish_spend_the_message_budget() -> None:
    server, writer, _ = connected_server(pre_publish_messages=20)  # connect was the first
    server.receive_data(b"".join(writer.write(2, 0, USER_CONTROL, 0, PING) for _ in range(19)))
    list(server.events())
    assert len(server.data_to_send()) > 0  # each answered with a Ping Response
    server.receive_data(writer.write(2, 0, USER_CONTROL, 0, PING))
    with pytest.raises(BudgetExceeded, match="20 messages before publishing"):
        list(server.events())


def test_unknown_commands_before_publish_spend_the_message_budget() -> None:
    server, writer, _ = connected_server()
    server.receive_data(b"".join(command(writer, "getStreamLength", i) for i in range(DEFAULT_PRE_PUBLISH_MESSAGES)))
    with pytest.raises(BudgetExceeded):
        list(server.events())


def test_tiny_chunks_before_publish_spend_the_chunk_budget() -> None:
    server = RtmpServerSession(random_bytes=fixed_random())
    one_byte_chunks = ChunkWriter().write(2, 0, SET_CHUNK_SIZE, 0, struct.pack(">I", 1))
    body = _fragment(3, 20, 2000, b"a") + b"\xc3a" * 1999  # one 2000-byte message in 1-byte chunks
    server.receive_data(SIMPLE_C0C1C2 + one_byte_chunks + body)
    with pytest.raises(BudgetExceeded, match="chunks"):
        list(server.events())
    assert DEFAULT_PRE_PUBLISH_BYTES > 2000  # the bytes budget alone would have let it through


# --- after publish: control credit --------------------------------------------------------------------


def test_control_credit_after_publish_charges_only_non_media() -> None:
    server, writer, _ = publishing_server()
    assert _credit(server) is None  # unlimited until the server sets a budget
    server.add_control_credit(0, 3)
    assert _credit(server) == 3
    media = b"".join(writer.write(4, i, AUDIO, 1, b"\xaf\x01" + bytes(20)) for i in range(50))
    server.receive_data(media + b"".join(writer.write(2, 0, USER_CONTROL, 0, PING) for _ in range(3)))
    events = list(server.events())
    assert len(events) == 50 and _credit(server) == 0
    server.add_control_credit(1.5, 3)  # time passed: one and a half more allowed
    server.receive_data(writer.write(2, 0, USER_CONTROL, 0, PING))
    list(server.events())
    server.receive_data(writer.write(2, 0, USER_CONTROL, 0, PING))
    with pytest.raises(BudgetExceeded, match="rate budget"):
        list(server.events())


def _credit(server: RtmpServerSession) -> float | None:
    return server.control_credit


def test_control_credit_is_capped() -> None:
    server, _, _ = publishing_server()
    server.add_control_credit(0, 10)
    server.add_control_credit(1000, 10)
    assert server.control_credit == 10


@pytest.mark.parametrize(("nbytes", "messages"), [(0, 64), (32768, 0)])
def test_budgets_must_be_positive(nbytes: int, messages: int) -> None:
    with pytest.raises(ValueError):
        RtmpServerSession(pre_publish_bytes=nbytes, pre_publish_messages=messages)
