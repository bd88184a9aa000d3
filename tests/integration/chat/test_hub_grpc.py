"""Chat with the controller as hub: a real controller and enrolled edge agents in one process, over real gRPC
and mutual TLS on 127.0.0.1, each edge's HubBus riding on its agent's link. The chat service on top of the
bus is a recording sink here (the IRC/WebSocket side has its own tests)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import stat
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from edged.agent.link import CHAT_KEYS_FILE, Agent
from edged.chat.hub_bus import HubBus
from edged.chat.identity import InvalidToken, TokenVerifier, mint
from edged.chat.model import (
    ChatLimits,
    Chatter,
    EventKind,
    NoticeId,
    Submission,
)
from originctl import cli
from originctl.config import ChatConfig
from originctl.errors import Conflict
from originctl.server.app import Controller
from originctl.server.chat_keys import SIGNING_KEY_FILE
from tests.integration.e2e.test_controller_grpc import Fleet, serve_cfg, wait_for
from tests.unit.chat.recording_sink import RecordingSink

ALICE = Chatter(user_id="1", login="alice", display_name="Alice")
BOB = Chatter(user_id="2", login="bob", display_name="Bob")


class ChatFleet(Fleet):
    chat = ChatConfig()

    async def start_controller(self) -> Controller:
        self.controller = Controller(dataclasses.replace(serve_cfg(self.tmp / "origin", self.grpc_port,
                                                                   self.edge_port), chat=self.chat))
        await self.controller.start()
        return self.controller


@pytest.fixture
async def fleet(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[ChatFleet]:
    f = ChatFleet(tmp_path)
    f.chat = getattr(request, "param", ChatConfig())
    await f.start_controller()
    try:
        yield f
    finally:
        for a in f.agents:
            with contextlib.suppress(Exception):
                await a.stop()
        await f.stop_controller()


class ChatEdge:
    def __init__(self, agent: Agent, bus: HubBus, sink: RecordingSink) -> None:
        self.agent, self.bus, self.sink = agent, bus, sink

    def say(self, chatter: Chatter, text: str, room: str = "demo") -> str:
        sub_id = str(uuid.uuid4())
        self.bus.submit(Submission(id=sub_id, room=room, chatter=chatter, text=text, sent_ms=int(time.time() * 1000),
                                   origin_node=self.agent.node_id))
        return sub_id


@contextlib.asynccontextmanager
async def chat_edges(fleet: Fleet, *names: str, rooms: tuple[str, ...] = ("demo",)) -> AsyncIterator[list[ChatEdge]]:
    out: list[ChatEdge] = []
    try:
        for name in names:
            agent = await fleet.agent(name, await fleet.token())
            await wait_for(lambda a=agent: a.connected, f"{name} linked")  # type: ignore[misc]
            sink = RecordingSink()
            bus = HubBus(agent, ChatLimits())
            await bus.start(sink)
            for room in rooms:
                bus.watch(room)
            out.append(ChatEdge(agent, bus, sink))
        for e in out:
            await wait_for(lambda e=e: e.bus.connected and len(e.sink.histories) == len(rooms),  # type: ignore[misc]
                           "watching with snapshot and history")
        yield out
    finally:
        for e in out:
            await e.bus.close()


async def test_two_edges_one_room_same_order_ban_reaches_both_and_survives_a_restart(fleet: ChatFleet) -> None:
    async with chat_edges(fleet, "edge-a", "edge-b") as (a, b):
        sent = []
        for i in range(40):  # interleaved from both edges
            sent.append(a.say(ALICE, f"from a {i}") if i % 2 == 0 else b.say(BOB, f"from b {i}"))
        await wait_for(lambda: len(a.sink.messages()) == 40 and len(b.sink.messages()) == 40, "40 on both edges")
        seq_a = [(e.seq, e.line.id if e.line else "") for e in a.sink.messages()]
        seq_b = [(e.seq, e.line.id if e.line else "") for e in b.sink.messages()]
        assert seq_a == seq_b  # the same messages, the same seqs, the same order
        assert sorted(i for _, i in seq_a) == sorted(sent)
        assert [s for s, _ in seq_a] == list(range(1, 41))
        origins = {e.line.origin_node for e in a.sink.messages() if e.line is not None}
        assert origins == {a.agent.node_id, b.agent.node_id}  # stamped by the hub from each stream's certificate
        assert not any(e.local for e in a.sink.events)

        result = await fleet.admin(lambda c: c.chat_moderate("demo", "ban", target_login="bob", reason="spam"))
        assert result.ok and result.notice_id == "ban_success"
        assert result.room.watching_nodes == tuple(sorted((a.agent.node_id, b.agent.node_id)))
        for e in (a, b):
            await wait_for(lambda e=e: any(ev.kind is EventKind.CLEARCHAT and ev.target_login == "bob"  # type: ignore[misc]
                                           for ev in e.sink.events), "the ban on every edge")
        b.say(BOB, "let me back in")
        await wait_for(lambda: b.sink.verdicts, "the refusal on edge B")
        assert b.sink.verdicts[-1].notice_id == NoticeId.BANNED and not a.sink.verdicts  # to the sender only

        head = a.sink.events[-1].seq
        await fleet.stop_controller()
        await wait_for(lambda: a.sink.states[-1:] == [False] and b.sink.states[-1:] == [False], "degraded")
        await fleet.start_controller()
        await wait_for(lambda: a.bus.connected and b.bus.connected, "both back")
        b.say(BOB, "and now?")
        await wait_for(lambda: len(b.sink.verdicts) == 2, "the ban still holds")
        assert b.sink.verdicts[-1].notice_id == NoticeId.BANNED
        view = await fleet.admin(lambda c: c.chat_room("#Demo"))
        assert [(r.login, r.permanent, r.reason) for r in view.restrictions] == [("bob", True, "spam")]
        assert view.head_seq == head  # a clean restart continues the numbering exactly
        a.say(ALICE, "after the restart")
        await wait_for(lambda: len(b.sink.messages()) == 41, "new messages flow")
        assert b.sink.messages()[-1].seq == head + 1
        assert not any(e.kind is EventKind.GAP for e in b.sink.events)  # resumed, nothing lost


async def test_a_reconnecting_edge_resumes_from_its_last_seq(fleet: ChatFleet) -> None:
    async with chat_edges(fleet, "edge-a", "edge-b") as (a, b):
        a.say(ALICE, "before")
        await wait_for(lambda: len(b.sink.messages()) == 1, "first message")
        hub = fleet.ctl.chat
        hub._sessions[b.agent.node_id].close("test: dropped")  # B's stream ends; B misses what follows
        missed = [a.say(ALICE, f"while away {i}") for i in range(5)]
        await wait_for(lambda: len(a.sink.messages()) == 6, "A has them")
        await wait_for(lambda: len(b.sink.messages()) == 6, "B resumed")
        assert b.sink.ids()[1:] == missed
        assert [e.seq for e in b.sink.messages()] == list(range(1, 7))
        assert not any(e.kind is EventKind.GAP for e in b.sink.events)
        assert len(b.sink.histories) == 1  # the history is for the first watch only


@pytest.mark.parametrize("fleet", [ChatConfig(resume_events=2)], indirect=True)
async def test_an_edge_that_missed_more_than_the_ring_gets_a_gap(fleet: ChatFleet) -> None:
    async with chat_edges(fleet, "edge-a", "edge-b") as (a, b):
        hub = fleet.ctl.chat
        hub._sessions[b.agent.node_id].close("test: dropped")
        for i in range(5):
            a.say(ALICE if i % 2 else BOB, f"m{i}")
        await wait_for(lambda: any(e.kind is EventKind.GAP for e in b.sink.events), "a gap on B")
        gap = next(e for e in b.sink.events if e.kind is EventKind.GAP)
        await wait_for(lambda: len(b.sink.messages()) == 2, "what the ring still held")
        assert gap.seq == 3 and [e.line.text for e in b.sink.messages() if e.line] == ["m3", "m4"]
        a.say(ALICE, "after the gap")
        await wait_for(lambda: len(b.sink.messages()) == 3, "B follows again")
        assert b.sink.messages()[-1].seq == 6


async def test_controller_outage_chat_goes_on_locally_and_is_replayed_once(fleet: ChatFleet) -> None:
    async with chat_edges(fleet, "edge-a", "edge-b") as (a, b):
        a.say(ALICE, "online")
        await wait_for(lambda: len(b.sink.messages()) == 1, "online message")
        await fleet.stop_controller()
        await wait_for(lambda: not a.bus.connected and not b.bus.connected, "degraded")
        away = [a.say(ALICE, f"while the hub is away {i}") for i in range(3)]
        b_away = b.say(BOB, "b alone")
        await wait_for(lambda: len(a.sink.messages()) == 4 and len(b.sink.messages()) == 2, "local delivery")
        assert [(e.local, e.seq) for e in a.sink.messages()[1:]] == [(True, 0)] * 3
        assert a.sink.ids()[1:] == away and b.sink.ids() == [b.sink.ids()[0], b_away]

        await fleet.start_controller()
        await wait_for(lambda: len(b.sink.messages()) == 5 and len(a.sink.messages()) == 5, "replayed")
        assert b.sink.ids()[2:] == away  # once each, in order, sequenced by the hub
        assert not any(e.local for e in b.sink.messages()[2:])
        assert a.sink.ids()[4] == b_away
        a.say(ALICE, "after")
        await wait_for(lambda: len(b.sink.messages()) == 6 and len(a.sink.messages()) == 6, "live again")
        for e in (a, b):
            assert len(e.sink.ids()) == len(set(e.sink.ids()))  # nothing delivered twice
        assert a.sink.states == [True, False, True] and b.sink.states == [True, False, True]
        hub_order = [ev.event.line.id for ev in fleet.ctl.chat._rooms["demo"].ring
                     if ev.event.kind is EventKind.MESSAGE and ev.event.line is not None]
        assert hub_order[-5:-1] == [*away, b_away] or hub_order[-5:-1] == [b_away, *away]


async def test_tokens_minted_verify_with_keys_pushed_and_cached_through_an_outage(fleet: ChatFleet,
                                                                                tmp_path: Path) -> None:
    key_file = tmp_path / "origin" / SIGNING_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    agent = await fleet.agent("edge-a", await fleet.token())
    await wait_for(lambda: agent.chat_keys, "keys pushed")
    pushed: list[tuple[bytes, ...]] = []
    agent.on_chat_keys(pushed.append)
    assert pushed == [agent.chat_keys]
    token, expires = await fleet.admin(lambda c: c.chat_token("42", "Alice", display_name="Alice A",
                                                              roles=("moderator", "subscriber"), ttl_seconds=600))
    assert expires > time.time() * 1000
    chatter = TokenVerifier(agent.chat_keys or ()).verify(token)
    assert chatter == Chatter(user_id="42", login="alice", display_name="Alice A",
                              roles=frozenset({"moderator", "subscriber"}))
    cache = tmp_path / "edge-a" / "agent" / CHAT_KEYS_FILE
    await wait_for(cache.exists, "keys cached")

    await agent.stop()
    await fleet.stop_controller()
    again = Agent(agent.cfg, agent._status)  # the same edge restarted while the controller is down
    fleet.agents.append(again)
    await again.start()
    assert not again.connected
    assert TokenVerifier(again.chat_keys or ()).verify(token).login == "alice"
    await fleet.start_controller()  # the same key after a controller restart
    await wait_for(lambda: again.connected, "reconnected")
    token2, _ = await fleet.admin(lambda c: c.chat_token("43", "bob"))
    assert TokenVerifier(again.chat_keys or ()).verify(token2).login == "bob"


@pytest.fixture
def auth_service_key(tmp_path: Path) -> tuple[ed25519.Ed25519PrivateKey, Path]:
    key = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "auth.pem"
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, path


async def test_configured_keys_are_pushed_and_the_controller_mints_none(tmp_path: Path,
                                                                       auth_service_key: tuple[
                                                                           ed25519.Ed25519PrivateKey, Path]) -> None:
    key, path = auth_service_key
    fleet = ChatFleet(tmp_path)
    fleet.chat = ChatConfig(jwt_public_keys=(str(path),))
    await fleet.start_controller()
    try:
        agent = await fleet.agent("edge-a", await fleet.token())
        await wait_for(lambda: agent.chat_keys, "keys pushed")
        token = mint(key, user_id="7", login="carol", now=time.time())
        assert TokenVerifier(agent.chat_keys or ()).verify(token).login == "carol"
        other = mint(ed25519.Ed25519PrivateKey.generate(), user_id="7", login="carol", now=time.time())
        with pytest.raises(InvalidToken):
            TokenVerifier(agent.chat_keys or ()).verify(other)
        with pytest.raises(Conflict, match="jwt_public_keys"):
            await fleet.admin(lambda c: c.chat_token("7", "carol"))
        assert not (tmp_path / "origin" / SIGNING_KEY_FILE).exists()
    finally:
        for a in fleet.agents:
            await a.stop()
        await fleet.stop_controller()


async def test_originctl_chat_commands(fleet: ChatFleet, capsys: pytest.CaptureFixture[str]) -> None:
    async with chat_edges(fleet, "edge-a") as (a,):
        base = ["--origin", fleet.origin, "--token", fleet.ctl.admin_token]

        async def run(*args: str) -> tuple[int, str, str]:
            rc = await asyncio.to_thread(cli.main, [*base, "chat", *args])
            out, err = capsys.readouterr()
            return rc, out, err

        assert await run("ban", "demo", "bob", "--reason", "spam") == (0, "#demo: bob is now banned from this channel.\n", "")
        rc, _, err = await run("ban", "#demo", "Bob")
        assert rc == 1 and "already_banned" in err
        rc, out, _ = await run("timeout", "demo", "carl", "90s")
        assert rc == 0 and "carl" in out
        rc, out, _ = await run("bans", "demo")
        lines = out.splitlines()
        assert lines[0].split() == ["LOGIN", "USER-ID", "KIND", "EXPIRES", "REASON"]
        assert lines[1].split()[:3] == ["bob", "-", "ban"] and lines[1].endswith("spam")
        assert lines[2].split()[:3] == ["carl", "-", "timeout"]
        rc, out, _ = await run("bans", "demo", "-o", "json")
        assert [(r["login"], r["until_ms"] == 0) for r in json.loads(out)] == [("bob", True), ("carl", False)]
        assert (await run("unban", "demo", "carl"))[0] == 0
        rc, _, err = await run("unban", "demo", "carl")
        assert rc == 1 and "bad_unban_no_ban" in err
        assert (await run("slow", "demo", "30s"))[0] == 0
        rc, out, _ = await run("mode", "demo", "--subscribers", "--r9k")
        assert rc == 0 and "subscribers:   on" in out and "r9k:           on" in out and "slow:          30s" in out
        rc, out, _ = await run("mode", "demo", "-o", "json")
        assert json.loads(out)["modes"] == {"slow_seconds": 30, "subscribers_only": True, "emote_only": False,
                                            "r9k": True}
        assert (await run("slow", "demo", "off"))[0] == 0
        rc, out, _ = await run("mode", "demo", "--no-subscribers", "--no-r9k")
        assert rc == 0 and "subscribers:   off" in out
        msg = a.say(ALICE, "delete me")
        await wait_for(lambda: a.sink.ids()[-1:] == [msg], "the message")
        rc, out, _ = await run("delete", "demo", msg)
        assert rc == 0
        await wait_for(lambda: any(e.kind is EventKind.CLEARMSG for e in a.sink.events), "CLEARMSG on the edge")
        rc, out, err = await run("token", "--user", "9", "--login", "dave", "--role", "vip", "--ttl", "5m")
        assert rc == 0 and err == ""
        assert TokenVerifier(a.agent.chat_keys or ()).verify(out.strip()).roles == frozenset({"vip"})
        rc, _, err = await run("token", "--user", "9", "--login", "not a nick")
        assert rc == 2 and "--login" in err
        rc, _, err = await run("ban", "bad room!", "x")
        assert rc == 2 and "invalid room" in err
        kinds = [e.kind for e in a.sink.events if e.kind is not EventKind.MESSAGE]
        assert kinds == [EventKind.CLEARCHAT, EventKind.CLEARCHAT, EventKind.UNBAN, *[EventKind.ROOMSTATE] * 6,
                         EventKind.CLEARMSG]
