"""The edge's chat service with in-memory connections and a scripted bus: batching, shared rendering, slow
readers, joins waiting for a room's snapshot, history, verdict routing, GAP notices, resynchronisation."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from edged.chat.bus import ChatSink
from edged.chat.identity import case_safe_token, token_from_password
from edged.chat.model import (
    ChatLine,
    Chatter,
    EventKind,
    RoomEvent,
    RoomModes,
    RoomSnapshot,
    Submission,
    Verdict,
)
from edged.chat.service import ChatConnection, ChatService
from edged.config import ChatConfig
from edged.protocols.irc.message import Message, parse

CAPS = b"CAP REQ :twitch.tv/tags twitch.tv/commands twitch.tv/membership\r\n"


class FakeBus:
    def __init__(self) -> None:
        self.sink: ChatSink | None = None
        self.watched: list[str] = []
        self.unwatched: list[str] = []
        self.submitted: list[Submission] = []

    @property
    def connected(self) -> bool:
        return True

    async def start(self, sink: ChatSink) -> None:
        self.sink = sink

    async def close(self) -> None:
        pass

    def watch(self, room: str) -> None:
        self.watched.append(room)

    def unwatch(self, room: str) -> None:
        self.unwatched.append(room)

    def submit(self, submission: Submission) -> None:
        self.submitted.append(submission)


class FakeConnection(ChatConnection):
    """A client whose writes land in a list; its backlog is whatever the test says."""

    def __init__(self, service: ChatService, history: bool = False) -> None:
        super().__init__(service, "test")
        self.wants_history = history
        self.writes: list[bytes] = []
        self.pending = 0  # the backlog the test pretends the kernel has not taken
        self.shut: bool | None = None
        self.wrote = asyncio.Event()

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.wrote.set()

    def backlog(self) -> int:
        return self.pending

    def shutdown(self, abort: bool) -> None:
        self.shut = abort
        self.service.connection_lost(self)  # the transport is gone at once here

    def lines(self) -> list[Message]:
        return [parse(x) for x in b"".join(self.writes).decode().split("\r\n") if x]

    def commands(self) -> list[str]:
        return [m.command for m in self.lines()]

    def clear(self) -> None:
        self.writes.clear()
        self.wrote.clear()

    async def next_write(self) -> None:
        await asyncio.wait_for(self.wrote.wait(), 5)
        self.wrote.clear()


@pytest.fixture
async def svc() -> AsyncIterator[tuple[ChatService, FakeBus]]:
    bus = FakeBus()
    service = ChatService(ChatConfig(batch_seconds=0.0), bus)
    await service.start()
    yield service, bus
    await service.stop()


def _connect(service: ChatService, nick: str = "justinfan1", history: bool = False) -> FakeConnection:
    c = FakeConnection(service, history)
    assert service.connection_made(c)
    service.data_received(c, CAPS + f"NICK {nick}\r\n".encode())
    assert c.session.registered
    c.clear()
    return c


def _snapshot(room: str = "demo", modes: RoomModes | None = None) -> RoomSnapshot:
    return RoomSnapshot(room=room, room_id="42", modes=modes or RoomModes())


def _line(i: int, login: str = "alice") -> ChatLine:
    now_ms = int(time.time() * 1000)
    return ChatLine(id=f"m{i}", chatter=Chatter(user_id=f"u-{login}", login=login), text=f"text {i}",
                    sent_ms=now_ms - 100 + i)


def _message(i: int, login: str = "alice", room: str = "demo") -> RoomEvent:
    return RoomEvent(room=room, seq=i, kind=EventKind.MESSAGE, time_ms=1000 + i, room_id="42", line=_line(i, login))


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_join_waits_for_the_rooms_snapshot_and_the_room_is_watched_once(svc: tuple[ChatService,
                                                                                           FakeBus]) -> None:
    service, bus = svc
    a, b = _connect(service, "justinfan1"), _connect(service, "justinfan2")
    service.data_received(a, b"JOIN #demo\r\n")
    service.data_received(b, b"JOIN #demo\r\n")
    assert bus.watched == ["demo"]
    assert a.writes == [] and service.members("demo") == 0
    service.on_snapshot(_snapshot(modes=RoomModes(slow_seconds=10)))
    for c in (a, b):
        assert c.commands() == ["JOIN", "353", "366", "ROOMSTATE"]
        assert c.lines()[-1].tags["slow"] == "10" and c.lines()[-1].tags["room-id"] == "42"
    assert service.members("demo") == 2
    service.data_received(a, b"PART #demo\r\n")
    assert bus.unwatched == []
    service.connection_lost(b)
    assert bus.unwatched == ["demo"] and service.rooms() == 0


async def test_events_arriving_together_are_written_in_one_write_per_member(svc: tuple[ChatService,
                                                                                       FakeBus]) -> None:
    service, _ = svc
    members = [_connect(service, f"justinfan{i}") for i in range(5)]
    for c in members:
        service.data_received(c, b"JOIN #demo\r\n")
    service.on_snapshot(_snapshot())
    for c in members:
        c.clear()
    for i in range(1, 4):
        service.on_event(_message(i))
    for c in members:
        await c.next_write()
        assert len(c.writes) == 1
        assert [m.params[1] for m in c.lines()] == ["text 1", "text 2", "text 3"]
    assert len({c.writes[0] for c in members}) == 1  # one rendering shared by members with the same caps


async def test_the_sender_gets_userstate_and_its_verdicts_alone(svc: tuple[ChatService, FakeBus]) -> None:
    service, bus = svc
    # an authenticated sender without a verifier cannot log in; give its session a chatter directly
    sender = FakeConnection(service)
    assert service.connection_made(sender)
    service.data_received(sender, CAPS + b"NICK alice\r\n")
    assert sender.commands()[-1] == "NOTICE" and sender.shut is False  # refused: no keys here
    chatter = Chatter(user_id="u-alice", login="alice")
    sender = FakeConnection(service)
    assert service.connection_made(sender)
    service.data_received(sender, CAPS + b"NICK justinfan3\r\n")
    sender.session.chatter = chatter  # what accept_login would have set for a verified token
    sender.session.nick = "alice"
    other = _connect(service, "justinfan4")
    for c in (sender, other):
        service.data_received(c, b"JOIN #demo\r\n")
    service.on_snapshot(_snapshot())
    sender.clear()
    other.clear()
    service.data_received(sender, b"PRIVMSG #demo :hi\r\nPRIVMSG #demo :again\r\n")
    first, second = bus.submitted
    assert first.chatter == chatter and first.text == "hi" and first.room == "demo"
    service.on_event(dataclasses.replace(_message(1), line=dataclasses.replace(_line(1), id=first.id, chatter=chatter)))
    await other.next_write()
    await sender.next_write()
    assert sender.commands() == ["USERSTATE"] and other.commands() == ["PRIVMSG"]
    sender.clear()
    other.clear()
    service.on_verdict(Verdict(submission_id=second.id, room="demo", login="alice", ok=False,
                               notice_id="msg_duplicate", text="duplicate"))
    assert sender.lines()[-1].tags["msg-id"] == "msg_duplicate"
    assert other.writes == []


async def test_a_slow_reader_is_dropped_and_the_others_still_get_the_batch(svc: tuple[ChatService,
                                                                                     FakeBus]) -> None:
    service, _ = svc
    fast, slow = _connect(service, "justinfan1"), _connect(service, "justinfan2")
    for c in (fast, slow):
        service.data_received(c, b"JOIN #demo\r\n")
    service.on_snapshot(_snapshot())
    before = _metric("edged_chat_messages_total", direction="out", result="dropped_slow")
    closed = _metric("edged_chat_closed_total", reason="slow_reader")
    slow.pending = service.cfg.max_queue_bytes + 1
    service.on_event(_message(1))
    service.on_event(_message(2))
    await fast.next_write()
    assert [m.params[1] for m in fast.lines()[-2:]] == ["text 1", "text 2"]
    assert slow.shut is True and service.members("demo") == 1
    assert _metric("edged_chat_messages_total", direction="out", result="dropped_slow") == before + 2
    assert _metric("edged_chat_closed_total", reason="slow_reader") == closed + 1


async def test_history_goes_to_web_clients_once_it_arrives_less_what_moderation_removed(
        svc: tuple[ChatService, FakeBus]) -> None:
    service, _ = svc
    web = _connect(service, "justinfan1", history=True)
    service.data_received(web, b"JOIN #demo\r\n")
    service.on_snapshot(_snapshot())
    assert web.commands() == ["JOIN", "353", "366", "ROOMSTATE"]
    web.clear()
    service.on_history("demo", [_line(1), _line(2, "troll"), _line(3)])
    assert [m.params[1] for m in web.lines()] == ["text 1", "text 2", "text 3"]
    assert all(m.tags["historical"] == "1" for m in web.lines())
    # a ban of troll and a deleted line: a later web client does not get them
    service.on_event(RoomEvent(room="demo", seq=4, kind=EventKind.CLEARCHAT, time_ms=2000, room_id="42",
                               target_login="troll"))
    service.on_event(RoomEvent(room="demo", seq=5, kind=EventKind.CLEARMSG, time_ms=2001, room_id="42",
                               line=_line(3)))
    await web.next_write()
    late = _connect(service, "justinfan2", history=True)
    service.data_received(late, b"JOIN #demo\r\n")
    assert [m.params[1] for m in late.lines() if m.command == "PRIVMSG"] == ["text 1"]


async def test_gap_becomes_a_notice_and_a_resync_with_new_modes_a_roomstate(svc: tuple[ChatService,
                                                                                       FakeBus]) -> None:
    service, _ = svc
    c = _connect(service)
    service.data_received(c, b"JOIN #demo\r\n")
    service.on_snapshot(_snapshot())
    c.clear()
    service.on_event(RoomEvent(room="demo", seq=9, kind=EventKind.GAP, time_ms=3000, room_id="42"))
    await c.next_write()
    assert c.lines()[-1].command == "NOTICE" and c.lines()[-1].tags["msg-id"] == "msg_gap"
    c.clear()
    service.on_snapshot(_snapshot(modes=RoomModes(subscribers_only=True)))
    assert c.commands() == ["ROOMSTATE"] and c.lines()[0].tags == {"room-id": "42", "subs-only": "1"}
    service.on_snapshot(_snapshot(modes=RoomModes(subscribers_only=True)))  # unchanged: nothing
    assert c.commands() == ["ROOMSTATE"]


async def test_a_join_is_completed_without_a_snapshot_after_a_while(svc: tuple[ChatService, FakeBus]) -> None:
    service, _ = svc
    c = _connect(service)
    service.data_received(c, b"JOIN #demo\r\n")
    assert c.writes == []
    service.sweep(service.clock() + 6.0)
    assert c.commands()[:3] == ["JOIN", "353", "366"]


async def test_bus_state_is_a_gauge_and_in_health(svc: tuple[ChatService, FakeBus]) -> None:
    service, _ = svc
    service.on_bus_state(True)
    assert _metric("edged_chat_bus_connected") == 1 and service.health()["bus_connected"] is True
    service.on_bus_state(False)
    assert _metric("edged_chat_bus_connected") == 0 and service.health()["bus_connected"] is False


async def test_reconnect_only_to_logged_in_clients_with_commands() -> None:
    service = ChatService(ChatConfig(), FakeBus())
    await service.start()
    try:
        logged = _connect(service)
        plain = FakeConnection(service)
        assert service.connection_made(plain)
        service.data_received(plain, b"NICK justinfan9\r\n")  # no twitch.tv/commands
        plain.clear()
        fresh = FakeConnection(service)
        assert service.connection_made(fresh)
        assert service.reconnect_all(grace=None) == 1
        assert logged.commands() == ["RECONNECT"] and plain.writes == [] and fresh.writes == []
    finally:
        await service.stop()


def test_case_safe_tokens_round_trip_and_plain_jwts_pass_through() -> None:
    jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    safe = case_safe_token(jwt)
    assert "." not in safe and safe == safe.lower()
    assert token_from_password(safe) == jwt and token_from_password(safe.upper()) == jwt
    assert token_from_password(jwt) == jwt
    assert token_from_password("schmoopiie") == "schmoopiie"  # not base32 of a JWT: left alone
    assert token_from_password("") == ""
