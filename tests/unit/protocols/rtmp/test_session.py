"""Session cores (RTMP 1.0 sections 5.4, 6.2, 7.2): publish flows, control messages, errors."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from typing import Any

import pytest

from edged.errors import LocalProtocolError, RemoteProtocolError
from edged.protocols.rtmp import amf0
from edged.protocols.rtmp import events as ev
from edged.protocols.rtmp.chunk import ChunkWriter, Message
from edged.protocols.rtmp.client import RtmpClientSession
from edged.protocols.rtmp.handshake import ServerHandshake
from edged.protocols.rtmp.session import RtmpServerSession, SessionState
from tests.unit.protocols.rtmp.helpers import (
    SIMPLE_C0C1C2,
    PeerView,
    SessionPair,
    accept_all,
    amf_values,
    command,
    connected_server,
    fixed_random,
    publishing_server,
)

BIG_TS = 0x01000010  # past the 24-bit field: exercises extended timestamps end to end


def _names(messages: list[Message]) -> list[object]:
    return [amf_values(m)[0] if m.type_id in (18, 20) else m.type_id for m in messages]


@pytest.mark.parametrize(("piece", "digest"), [(None, False), (1, False), (1, True), (13, True)])
def test_full_publish_flow(piece: int | None, digest: bool) -> None:
    client = RtmpClientSession(
        app="live",
        tc_url="rtmp://127.0.0.1/live",
        stream_key="k?token=t",
        out_chunk_size=4096,
        digest_handshake=digest,
        random_bytes=fixed_random(9),
    )
    pair = SessionPair(client=client, piece=piece, on_server_event=accept_all)
    client.connect()
    pair.pump()
    assert client.state is pair.server.state is SessionState.PUBLISHING
    assert client.digest_handshake is digest and pair.server.digest_handshake is digest
    key_frame = b"\x17\x01" + bytes(10_000)  # larger than the 4096-byte chunk size
    client.send_metadata({"width": 320.0, "encoder": "test"})
    client.send_video(0, key_frame)
    client.send_audio(21, b"\xaf\x01" + b"a" * 50)
    client.send_video(33, b"\x27\x01" + b"p" * 300)
    client.send_video(BIG_TS, b"\x27\x01" + b"q" * 5000)
    client.unpublish()
    pair.pump()
    pair.close_client_side()

    server_events = pair.server_events
    assert server_events == [
        ev.Connected(
            "live",
            "rtmp://127.0.0.1/live",
            {
                "app": "live",
                "type": "nonprivate",
                "flashVer": "FMLE/3.0 (compatible; edged)",
                "tcUrl": "rtmp://127.0.0.1/live",
            },
        ),
        ev.PublishRequested(1, "live", "k", "live", "token=t"),
        ev.Metadata(1, {"width": 320.0, "encoder": "test"}),
        ev.VideoData(1, 0, key_frame),
        ev.AudioData(1, 21, b"\xaf\x01" + b"a" * 50),
        ev.VideoData(1, 33, b"\x27\x01" + b"p" * 300),
        ev.VideoData(1, BIG_TS, b"\x27\x01" + b"q" * 5000),
        ev.Unpublished(1),
        ev.ConnectionClosed(),
    ]
    assert [type(e) for e in pair.client_events] == [ev.Connected, ev.PublishAccepted]
    assert pair.client_events[1] == ev.PublishAccepted(1)
    assert pair.server.state.name == "CLOSED"

    # What the client sent, in order (section 7.2.1 / 7.2.2).
    sent = PeerView(skip=1 + 1536 + 1536).feed(bytes(pair.to_server))
    assert _names(sent) == [
        1,
        "connect",
        "releaseStream",
        "FCPublish",
        "createStream",
        "publish",
        "@setDataFrame",
        9,
        8,
        9,
        9,
        "FCUnpublish",
        "deleteStream",
    ]
    # What the server answered (section 7.2.1.1: window, bandwidth, chunk size, result).
    replies = PeerView().feed(bytes(pair.to_client))
    assert [m.type_id for m in replies[:3]] == [5, 6, 1]
    assert struct.unpack(">I", replies[0].payload)[0] == 2_500_000
    assert replies[1].payload == struct.pack(">I", 2_500_000) + b"\x02"
    assert struct.unpack(">I", replies[2].payload)[0] == 4096
    connect_result = amf_values(replies[3])
    assert connect_result[:2] == ["_result", 1.0]
    assert connect_result[3]["code"] == "NetConnection.Connect.Success"
    results = [amf_values(m) for m in replies[4:7]]
    assert [r[:2] for r in results] == [["_result", 2.0], ["_result", 3.0], ["_result", 4.0]]
    assert results[2][3] == 1.0  # createStream's new stream id
    assert replies[7].type_id == 4 and replies[7].payload == b"\x00\x00\x00\x00\x00\x01"  # StreamBegin 1
    status = amf_values(replies[8])
    assert status[0] == "onStatus" and status[3]["code"] == "NetStream.Publish.Start"
    assert replies[8].stream_id == 1


def test_reject_publish_flow() -> None:
    def reject(server: RtmpServerSession, event: ev.Event) -> None:
        if isinstance(event, ev.PublishRequested):
            server.reject_publish(event.stream_id, "NetStream.Publish.BadName", "unknown key")

    pair = SessionPair(piece=1, on_server_event=reject)
    pair.client.connect()
    pair.pump()
    assert pair.client_events[-1] == ev.PublishRejected("NetStream.Publish.BadName", "unknown key")
    assert pair.client.state is SessionState.CLOSED
    assert pair.server.state is SessionState.CLOSED
    with pytest.raises(LocalProtocolError):
        pair.client.send_video(0, b"x")
    # Anything the peer still sends is dropped; EOF is still reported.
    pair.server.receive_data(b"\x07garbage that would not parse")
    assert list(pair.server.events()) == []
    assert pair.close_client_side() == [ev.ConnectionClosed()]


def test_publish_pauses_events_until_the_application_decides() -> None:
    server, writer, view = connected_server()
    video = writer.write(6, 40, 9, 1, b"\x17frame")
    server.receive_data(
        command(writer, "createStream", 2) + command(writer, "publish", 0, None, "key", stream_id=1) + video
    )
    events = list(server.events())
    assert events == [ev.PublishRequested(1, "live", "key", "live", "")]
    assert list(server.events()) == []  # still paused
    server.accept_publish(1)
    assert list(server.events()) == [ev.VideoData(1, 40, b"\x17frame")]


def test_decision_inside_the_event_loop_continues_the_same_pass() -> None:
    server, writer, _ = connected_server()
    server.receive_data(
        command(writer, "createStream", 2)
        + command(writer, "publish", 0, None, "key", stream_id=1)
        + writer.write(6, 1, 8, 1, b"a")
    )
    seen = []
    for event in server.events():
        seen.append(event)
        if isinstance(event, ev.PublishRequested):
            server.accept_publish(event.stream_id)
    assert [type(e) for e in seen] == [ev.PublishRequested, ev.AudioData]


def test_accept_and_reject_misuse_are_local_errors() -> None:
    server, writer, _ = connected_server()
    with pytest.raises(LocalProtocolError):
        server.accept_publish(1)
    server.receive_data(
        command(writer, "createStream", 2) + command(writer, "publish", 0, None, "k", stream_id=1)
    )
    list(server.events())
    with pytest.raises(LocalProtocolError):
        server.accept_publish(2)
    server.accept_publish(1)
    with pytest.raises(LocalProtocolError):
        server.reject_publish(1)


def test_acknowledgement_after_the_window() -> None:
    server, writer, view = publishing_server(window_ack_size=5000)
    received_before = server.bytes_received
    assert received_before < 5000 and not [m for m in view.feed(server.data_to_send()) if m.type_id == 3]
    acks = []
    for i in range(20):
        server.receive_data(writer.write(6, i * 33, 9, 1, bytes(1000)))
        list(server.events())
        acks += [(m, server.bytes_received) for m in view.feed(server.data_to_send()) if m.type_id == 3]
    assert len(acks) >= 3
    sequence = [struct.unpack(">I", m.payload)[0] for m, _ in acks]
    assert sequence == [total for _, total in acks]  # section 5.4.3: bytes received so far
    assert all(b - a >= 5000 for a, b in zip(sequence, sequence[1:], strict=False))
    assert sequence[0] >= 5000


def test_peer_window_acknowledgement_size_is_honoured() -> None:
    server, writer, view = publishing_server(window_ack_size=100_000)
    server.receive_data(writer.write(2, 0, 5, 0, struct.pack(">I", 3000)))
    for i in range(10):
        server.receive_data(writer.write(6, i, 9, 1, bytes(1000)))
    list(server.events())
    assert len([m for m in view.feed(server.data_to_send()) if m.type_id == 3]) >= 3


def test_ping_request_gets_ping_response() -> None:
    server, writer, view = connected_server()
    server.receive_data(writer.write(2, 0, 4, 0, b"\x00\x06\x00\x00\x12\x34"))
    assert list(server.events()) == []
    (reply,) = view.feed(server.data_to_send())
    assert reply.type_id == 4 and reply.payload == b"\x00\x07\x00\x00\x12\x34"


def test_other_user_control_events_are_ignored() -> None:
    server, writer, view = connected_server()
    server.receive_data(writer.write(2, 0, 4, 0, b"\x00\x03" + bytes(8)))  # SetBufferLength
    assert list(server.events()) == [] and server.data_to_send() == b""


def test_set_peer_bandwidth_is_answered_with_window_size() -> None:
    server, writer, view = connected_server()
    server.receive_data(writer.write(2, 0, 6, 0, struct.pack(">I", 1_000_000) + b"\x02"))
    list(server.events())
    (reply,) = view.feed(server.data_to_send())
    assert reply.type_id == 5 and struct.unpack(">I", reply.payload)[0] == 1_000_000


@pytest.mark.parametrize("name", ["_checkbw", "getStreamLength", "someVendorCall"])
def test_unknown_calls_with_a_transaction_id_get_error(name: str) -> None:
    server, writer, view = connected_server()
    server.receive_data(command(writer, name, 7, None, "arg"))
    assert list(server.events()) == []
    (reply,) = view.feed(server.data_to_send())
    values = amf_values(reply)
    assert values[:2] == ["_error", 7.0] and values[3]["level"] == "error"
    assert server.state is SessionState.CONNECTED


def test_unknown_notifications_are_ignored() -> None:
    server, writer, view = connected_server()
    server.receive_data(
        command(writer, "whatever", 0) + command(writer, "_result", 3) + command(writer, "onBWDone", 0)
    )
    assert list(server.events()) == [] and server.data_to_send() == b""


def test_play_is_refused_with_on_status() -> None:
    server, writer, view = connected_server()
    server.receive_data(
        command(writer, "createStream", 2) + command(writer, "play", 0, None, "k", stream_id=1)
    )
    list(server.events())
    replies = view.feed(server.data_to_send())
    assert amf_values(replies[-1])[3]["code"] == "NetStream.Play.Failed"


def test_close_stream_and_delete_stream_unpublish_once() -> None:
    server, writer, _ = publishing_server()
    server.receive_data(
        command(writer, "closeStream", 0, None, stream_id=1) + command(writer, "deleteStream", 5, None, 1.0)
    )
    assert list(server.events()) == [ev.Unpublished(1)]
    assert server.state is SessionState.CONNECTED


def test_fcunpublish_then_delete_stream() -> None:
    server, writer, _ = publishing_server()
    server.receive_data(
        command(writer, "FCUnpublish", 5, None, "key") + command(writer, "deleteStream", 6, None, 1.0)
    )
    assert list(server.events()) == [ev.Unpublished(1)]


def test_publish_again_after_unpublish() -> None:
    server, writer, _ = publishing_server()
    server.receive_data(
        command(writer, "deleteStream", 6, None, 1.0)
        + command(writer, "createStream", 7)
        + command(writer, "publish", 0, None, "again", "record", stream_id=2)
    )
    assert list(server.events()) == [ev.Unpublished(1), ev.PublishRequested(2, "live", "again", "record", "")]


def test_direct_on_metadata_and_amf3_data() -> None:
    server, writer, _ = publishing_server()
    meta = amf0.encode("onMetaData", {"a": 1.0})
    server.receive_data(
        writer.write(5, 0, 18, 1, meta)
        + writer.write(
            5, 0, 15, 1, b"\x00" + amf0.encode("@setDataFrame", "onMetaData", amf0.EcmaArray(b=2.0))
        )
        + writer.write(5, 0, 15, 1, b"\x0a\x0b")  # real AMF3: ignored
        + writer.write(5, 0, 18, 1, amf0.encode("onTextData", {"t": "x"}))  # other data: ignored
        + writer.write(5, 0, 18, 1, amf0.encode("onMetaData", "not a map"))
    )
    assert list(server.events()) == [ev.Metadata(1, {"a": 1.0}), ev.Metadata(1, {"b": 2.0})]


def test_amf3_command_with_amf0_inside() -> None:
    server = RtmpServerSession(random_bytes=fixed_random())
    writer = ChunkWriter()
    server.receive_data(
        SIMPLE_C0C1C2 + command(writer, "connect", 1, {"app": "a"}, type_id=17, prefix=b"\x00")
    )
    assert list(server.events()) == [ev.Connected("a", "", {"app": "a"})]


def test_media_for_other_streams_is_dropped() -> None:
    server, writer, _ = publishing_server()
    server.receive_data(
        writer.write(6, 0, 9, 7, b"x") + writer.write(6, 0, 8, 0, b"y") + writer.write(6, 0, 9, 1, b"z")
    )
    assert list(server.events()) == [ev.VideoData(1, 0, b"z")]


def test_media_before_publish_is_dropped() -> None:
    server, writer, _ = connected_server()
    server.receive_data(
        writer.write(6, 0, 9, 1, b"x") + writer.write(5, 0, 18, 1, amf0.encode("onMetaData", {}))
    )
    assert list(server.events()) == []


def test_abort_through_the_session() -> None:
    server, writer, _ = publishing_server()
    partial = writer.write(6, 0, 9, 1, bytes(300))[: 12 + 128]  # first chunk only
    server.receive_data(
        partial + writer.write(2, 0, 2, 0, struct.pack(">I", 6)) + writer.write(7, 5, 9, 1, b"ok")
    )
    assert list(server.events()) == [ev.VideoData(1, 5, b"ok")]


def test_set_chunk_size_through_the_session() -> None:
    server, writer, _ = publishing_server()
    server.receive_data(writer.write(2, 0, 1, 0, struct.pack(">I", 8192)))
    writer.chunk_size = 8192
    server.receive_data(writer.write(6, 1, 9, 1, bytes(8000)))
    assert list(server.events()) == [ev.VideoData(1, 1, bytes(8000))]


@pytest.mark.parametrize("size", [0, 0x80000000, 65537])
def test_absurd_chunk_size_ends_the_session(size: int) -> None:
    server, writer, _ = connected_server(max_chunk_size=65536)
    server.receive_data(writer.write(2, 0, 1, 0, struct.pack(">I", size)))
    with pytest.raises(RemoteProtocolError):
        list(server.events())
    assert server.state is SessionState.ERROR
    with pytest.raises(RemoteProtocolError):  # the session stays failed
        list(server.events())


def test_absurd_message_length_ends_the_session() -> None:
    server, writer, _ = publishing_server(max_message_size=1 << 20)
    header = b"\x06" + b"\x00\x00\x00" + (0xFFFFFF).to_bytes(3, "big") + b"\x09" + struct.pack("<I", 1)
    server.receive_data(header)
    with pytest.raises(RemoteProtocolError):
        list(server.events())


@pytest.mark.parametrize(
    ("build", "hint"),
    [
        (lambda w: command(w, "createStream", 2), "NetConnection.Connect.Rejected"),
        (lambda w: command(w, "connect", 1, "not an object"), "NetConnection.Connect.Rejected"),
        (lambda w: w.write(3, 0, 20, 0, amf0.encode(5.0, 1.0)), None),
        (lambda w: w.write(3, 0, 20, 0, b""), None),
        (lambda w: w.write(2, 0, 4, 0, b"\x00"), None),
        (lambda w: w.write(2, 0, 5, 0, b"\x00"), None),
    ],
)
def test_bad_first_commands(build, hint) -> None:  # type: ignore[no-untyped-def]
    server = RtmpServerSession(random_bytes=fixed_random())
    server.receive_data(SIMPLE_C0C1C2 + build(ChunkWriter()))
    with pytest.raises(RemoteProtocolError) as info:
        list(server.events())
    assert info.value.reply_hint == hint


@pytest.mark.parametrize(
    "build",
    [
        lambda w: command(w, "connect", 1, {"app": "again"}),
        lambda w: command(w, "publish", 0, None, "k", stream_id=1),  # stream never created
        lambda w: command(w, "createStream", 2) + command(w, "publish", 0, None, stream_id=1),  # no name
        lambda w: b"".join(command(w, "createStream", i) for i in range(9)),
    ],
)
def test_bad_later_commands(build) -> None:  # type: ignore[no-untyped-def]
    server, writer, _ = connected_server()
    server.receive_data(build(writer))
    with pytest.raises(RemoteProtocolError):
        list(server.events())


def test_second_publish_while_publishing_is_refused() -> None:
    server, writer, _ = publishing_server()
    server.receive_data(
        command(writer, "createStream", 9) + command(writer, "publish", 0, None, "x", stream_id=2)
    )
    with pytest.raises(RemoteProtocolError):
        list(server.events())


def test_truncated_input_at_eof() -> None:
    server, writer, _ = publishing_server()
    frame = writer.write(6, 0, 9, 1, bytes(1000))
    server.receive_data(frame[:-1])
    server.receive_data(b"")
    server.receive_data(b"late bytes are ignored")
    assert list(server.events()) == [ev.ConnectionClosed()]
    assert server.state is SessionState.CLOSED
    assert list(server.events()) == []


def test_eof_during_handshake() -> None:
    server = RtmpServerSession()
    server.receive_data(b"\x03" + bytes(100))
    server.receive_data(b"")
    assert list(server.events()) == [ev.ConnectionClosed()]


def test_complete_messages_before_eof_are_delivered() -> None:
    server, writer, _ = publishing_server()
    server.receive_data(writer.write(6, 3, 9, 1, b"v"))
    server.receive_data(b"")
    assert list(server.events()) == [ev.VideoData(1, 3, b"v"), ev.ConnectionClosed()]


def test_eof_while_paused_reports_closed() -> None:
    server, writer, _ = connected_server()
    server.receive_data(
        command(writer, "createStream", 2) + command(writer, "publish", 0, None, "k", stream_id=1)
    )
    assert [type(e) for e in server.events()] == [ev.PublishRequested]
    server.receive_data(b"")
    assert list(server.events()) == [ev.ConnectionClosed()]
    with pytest.raises(LocalProtocolError):
        server.accept_publish(1)


def test_bad_handshake_version_is_a_remote_error() -> None:
    server = RtmpServerSession()
    server.receive_data(b"\x06")
    with pytest.raises(RemoteProtocolError):
        list(server.events())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_chunk_size": 0},
        {"out_chunk_size": 0},
        {"out_chunk_size": 1 << 31},
        {"window_ack_size": 0},
        {"max_amf_depth": 0},
        {"max_chunk_streams": 0},
    ],
)
def test_constructor_validates_caps(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RtmpServerSession(**kwargs)


def _fake_server_reply(*values: list[Any], stream_id: int = 0) -> bytes:
    writer = ChunkWriter()
    return b"".join(writer.write(3, 0, 20, stream_id, amf0.encode(*v)) for v in values)


def _client_after_handshake() -> RtmpClientSession:
    client = RtmpClientSession("live", "rtmp://h/live", "key", random_bytes=fixed_random())
    client.connect()
    hello = client.data_to_send()
    from edged.protocols.buffer import ReceiveBuffer

    buf = ReceiveBuffer()
    buf.feed(hello)
    client.receive_data(ServerHandshake(fixed_random(4)).advance(buf))
    assert list(client.events()) == []
    client.data_to_send()
    return client


def test_client_connect_error_is_reported_as_rejection() -> None:
    client = _client_after_handshake()
    info = {"level": "error", "code": "NetConnection.Connect.Rejected", "description": "no"}
    client.receive_data(_fake_server_reply(["_error", 1.0, None, info]))
    assert list(client.events()) == [ev.PublishRejected("NetConnection.Connect.Rejected", "no")]
    assert client.state is SessionState.CLOSED


def test_client_connect_result_without_success_is_rejection() -> None:
    client = _client_after_handshake()
    client.receive_data(_fake_server_reply(["_result", 1.0, None, "odd"]))
    assert list(client.events()) == [ev.PublishRejected("", "")]


def test_client_create_stream_error_and_bad_stream_id() -> None:
    ok = {"level": "status", "code": "NetConnection.Connect.Success"}
    client = _client_after_handshake()
    client.receive_data(_fake_server_reply(["_result", 1.0, None, ok], ["_error", 4.0, None, {"code": "x"}]))
    assert [type(e) for e in client.events()] == [ev.Connected, ev.PublishRejected]
    client = _client_after_handshake()
    client.receive_data(_fake_server_reply(["_result", 1.0, None, ok], ["_result", 4.0, None, -1.0]))
    with pytest.raises(RemoteProtocolError):
        list(client.events())


def test_client_answers_ping_and_ignores_server_calls() -> None:
    client = _client_after_handshake()
    writer = ChunkWriter()
    client.receive_data(
        writer.write(2, 0, 4, 0, b"\x00\x06\x00\x00\x00\x09") + _fake_server_reply(["onBWDone", 0.0, None])
    )
    assert list(client.events()) == []
    (reply,) = PeerView(skip=0).feed(client.data_to_send())
    assert reply.payload == b"\x00\x07\x00\x00\x00\x09"


def test_client_misuse_is_local_error() -> None:
    client = RtmpClientSession("live", "rtmp://h/live", "key")
    calls: list[Callable[[], None]] = [
        lambda: client.send_audio(0, b""),
        lambda: client.send_metadata({}),
        client.unpublish,
    ]
    for call in calls:
        with pytest.raises(LocalProtocolError):
            call()
    client.connect()
    with pytest.raises(LocalProtocolError):
        client.connect()


def test_client_ignores_bytes_before_connect() -> None:
    client = RtmpClientSession("live", "rtmp://h/live", "key")
    client.receive_data(b"\x03")
    assert list(client.events()) == []


def test_events_are_frozen_and_slotted() -> None:
    event = ev.VideoData(1, 2, b"x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.timestamp = 3  # type: ignore[misc]
    assert not hasattr(event, "__dict__")
    assert not hasattr(ev.ConnectionClosed(), "__dict__")
