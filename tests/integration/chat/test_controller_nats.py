"""The controller in a fleet whose chat runs on NATS ([chat] bus = "nats"), against Debian's nats-server: a
real controller in this process (real gRPC, the `originctl` CLI's own code), NatsBus edges with recording
sinks, and one mixed-fleet edge on the hub bus over mutual TLS."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest

from edged.chat.model import EventKind, NoticeId, RoomEvent
from edged.chat.nats_bus import NatsBus
from edged.chat.nats_wire import decode_checkpoint
from originctl import cli
from originctl.config import ChatConfig
from tests.conftest import free_port
from tests.integration.chat.nats_server import NatsServer
from tests.integration.chat.test_hub_grpc import ALICE, ChatFleet, chat_edges
from tests.integration.chat.test_nats_bus import LIMITS, MOD, TROLL, chatter, say, until
from tests.integration.chat.test_nats_bus import server as server  # noqa: PLC0414 - the fixture, by its name
from tests.unit.chat.recording_sink import RecordingSink

ROOM = "demo"
ROOT = Path(__file__).resolve().parents[3]


class NatsFleet(ChatFleet):
    """A controller with [chat] bus = "nats" on one nats-server, and NatsBus edges; all stopped at the end."""

    def __init__(self, tmp: Path, server: NatsServer) -> None:
        super().__init__(tmp)
        self.server = server
        self.chat = ChatConfig(bus="nats", nats_url=server.url, limits=LIMITS)
        self.buses: list[tuple[NatsBus, RecordingSink]] = []

    async def edge(self, node: str, room: str = ROOM) -> tuple[NatsBus, RecordingSink]:
        bus, sink = NatsBus(self.server.url, node, LIMITS, reconnect_wait_s=0.2, heartbeat_s=1.0), RecordingSink()
        await bus.start(sink)
        self.buses.append((bus, sink))
        bus.watch(room)
        await until(lambda: sink.histories and sink.snapshots and bus.connected, f"{node} live in {room}")
        return bus, sink

    async def chat_cli(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        rc = await asyncio.to_thread(cli.main, ["--origin", self.origin, "--token", self.ctl.admin_token, "chat",
                                                *args])
        out, err = capsys.readouterr()
        return rc, out, err

    async def bans(self, capsys: pytest.CaptureFixture[str], room: str = ROOM) -> list[dict[str, Any]]:
        rc, out, err = await self.chat_cli(capsys, "bans", room, "-o", "json")
        assert rc == 0, err
        return list(json.loads(out))

    async def healthz(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{self.ctl.http_port}/healthz") as r:
            return dict(await r.json())

    async def following(self, want: bool = True, limit_s: float = 30.0) -> dict[str, Any]:
        """/healthz once its chat section says the controller follows the chat stream (or not)."""
        deadline = time.monotonic() + limit_s
        while (health := await self.healthz())["chat"]["connected"] is not want:
            assert time.monotonic() < deadline, f"/healthz chat never connected={want}: {health}"
            await asyncio.sleep(0.05)
        return health

    def counted(self, result: str) -> float:
        value = self.ctl.metrics.registry.get_sample_value("originctl_chat_messages_total", {"result": result})
        return value or 0.0

    async def close(self) -> None:
        for bus, _ in self.buses:
            await bus.close()
        for a in self.agents:
            await a.stop()
        await self.stop_controller()


@pytest.fixture
async def fleet(tmp_path: Path, server: NatsServer) -> AsyncIterator[NatsFleet]:
    f = NatsFleet(tmp_path, server)
    await f.start_controller()
    try:
        yield f
    finally:
        await f.close()


def kinds(sink: RecordingSink, kind: EventKind) -> list[RoomEvent]:
    return [e for e in sink.events if e.kind is kind]


async def test_an_operator_ban_reaches_the_nats_edges_and_is_answered_by_the_room(
        fleet: NatsFleet, capsys: pytest.CaptureFixture[str]) -> None:
    (a, sa), (b, sb) = await fleet.edge("edge-a"), await fleet.edge("edge-b")
    await fleet.following()
    assert await fleet.chat_cli(capsys, "ban", "#Demo", "troll", "--reason", "spam") == (
        0, "#demo: troll is now banned from this channel.\n", "")
    for s in (sa, sb):
        await until(lambda s=s: kinds(s, EventKind.CLEARCHAT), "the ban on every NATS edge")  # type: ignore[misc]
    assert [(e.target_login, e.duration_s) for e in kinds(sa, EventKind.CLEARCHAT)] == [("troll", 0)]
    assert kinds(sa, EventKind.CLEARCHAT) == kinds(sb, EventKind.CLEARCHAT)  # the same seq on both
    spam = say(TROLL, "buy followers")
    b.submit(spam)
    await until(lambda: sb.verdicts, "the banned chatter refused on edge b")
    assert [(v.notice_id, v.submission_id) for v in sb.verdicts] == [(NoticeId.BANNED, spam.id)]

    # the answer is the room's: the same rules, at the action's place in the stream
    rc, _, err = await fleet.chat_cli(capsys, "ban", "demo", "troll")
    assert rc == 1 and "already_banned" in err
    rc, _, err = await fleet.chat_cli(capsys, "unban", "demo", "nobody")
    assert rc == 1 and "bad_unban_no_ban" in err
    assert [(r["login"], r["until_ms"], r["reason"]) for r in await fleet.bans(capsys)] == [("troll", 0, "spam")]
    assert (await fleet.chat_cli(capsys, "slow", "demo", "30s"))[0] == 0
    await until(lambda: kinds(sa, EventKind.ROOMSTATE), "slow mode on edge a")
    rc, out, _ = await fleet.chat_cli(capsys, "mode", "demo", "-o", "json")
    assert rc == 0 and json.loads(out)["modes"]["slow_seconds"] == 30
    assert json.loads(out)["head_seq"] == kinds(sa, EventKind.ROOMSTATE)[0].seq  # the stream's sequence

    hello = say(chatter(1), "hello")
    a.submit(hello)
    await until(lambda: fleet.counted("accepted") >= 1 and fleet.counted("refused") >= 1, "what the controller saw")
    assert fleet.counted("accepted") == 1 and fleet.counted("refused") == 1  # the hello, the troll's spam
    health = (await fleet.healthz())["chat"]
    assert health["bus"] == "nats" and health["connected"] and health["error"] == ""
    assert health["applied_sequence"] >= kinds(sa, EventKind.ROOMSTATE)[0].seq
    assert fleet.ctl.metrics.registry.get_sample_value("originctl_chat_nats_connected") == 1


async def test_a_chatter_moderators_timeout_on_an_edge_shows_in_originctl_chat_bans(
        fleet: NatsFleet, capsys: pytest.CaptureFixture[str]) -> None:
    (a, _), (b, sb) = await fleet.edge("edge-a"), await fleet.edge("edge-b")
    a.submit(say(MOD, "/timeout troll 60 calm down"))
    a.submit(say(MOD, "/subscribers"))
    await until(lambda: kinds(sb, EventKind.CLEARCHAT) and kinds(sb, EventKind.ROOMSTATE), "on edge b")
    timeout = kinds(sb, EventKind.CLEARCHAT)[0]
    wanted = timeout.time_ms + 60_000  # the JetStream time of the /timeout, plus 60 s: what every edge holds

    async def listed() -> list[dict[str, Any]]:
        return await fleet.bans(capsys)

    deadline = time.monotonic() + 30
    while not (rows := await listed()):
        assert time.monotonic() < deadline, "the timeout never showed in `originctl chat bans`"
        await asyncio.sleep(0.1)
    assert [(r["login"], r["until_ms"], r["reason"]) for r in rows] == [("troll", wanted, "calm down")]
    rc, out, _ = await fleet.chat_cli(capsys, "bans", "demo")
    assert rc == 0 and out.splitlines()[1].split()[:3] == ["troll", "-", "timeout"]  # troll never spoke
    rc, out, _ = await fleet.chat_cli(capsys, "mode", "demo")
    assert rc == 0 and "subscribers:   on" in out
    b.submit(say(TROLL, "still here?"))
    await until(lambda: sb.verdicts, "the timed-out chatter refused")
    assert sb.verdicts[0].notice_id == NoticeId.TIMEDOUT
    assert fleet.counted("command") == 2 and fleet.counted("refused") == 1


async def test_state_survives_a_controller_restart_and_following_resumes_at_its_position(
        fleet: NatsFleet, capsys: pytest.CaptureFixture[str]) -> None:
    (a, sa), _ = await fleet.edge("edge-a"), None
    a.submit(say(MOD, "/ban troll"))
    for i in range(5):
        a.submit(say(chatter(i), f"before the restart {i}"))
    await until(lambda: len(sa.messages()) == 5, "the messages before the restart")
    await until(lambda: fleet.ctl.chat_nats is not None and fleet.ctl.chat_nats.next_sseq > sa.events[-1].seq,
                "the controller caught up")
    assert [r["login"] for r in await fleet.bans(capsys)] == ["troll"]
    await fleet.stop_controller()

    # while the controller is away the fleet goes on: an unban, a timeout, three more messages
    a.submit(say(MOD, "/unban troll"))
    a.submit(say(MOD, "/timeout carl 1h"))
    for i in range(3):
        a.submit(say(chatter(i), f"while the controller is away {i}"))
    await until(lambda: len(sa.messages()) == 8, "the edge's messages while the controller is away")
    head = sa.events[-1].seq

    await fleet.start_controller()
    follower = fleet.ctl.chat_nats
    assert follower is not None
    await until(lambda: follower.next_sseq > head, "the restarted controller caught up")
    assert [(r["login"], r["until_ms"] > 0) for r in await fleet.bans(capsys)] == [("carl", True)]
    # resumed at its stored position: only what came while it was away was applied (and counted) again
    assert fleet.counted("accepted") == 3 and fleet.counted("command") == 2
    # the operator's answers are right after a restart too
    rc, _, err = await fleet.chat_cli(capsys, "timeout", "demo", "carl", "10m")
    assert rc == 0, err
    rc, _, err = await fleet.chat_cli(capsys, "unban", "demo", "troll")
    assert rc == 1 and "bad_unban_no_ban" in err


async def test_a_nats_outage_is_shown_refused_and_followed_by_a_resume(
        fleet: NatsFleet, server: NatsServer, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="originctl.chat")
    a, sa = await fleet.edge("edge-a")
    await fleet.following()
    server.stop()
    health = await fleet.following(False)
    assert health["status"] == "ok" and health["chat"]["error"]  # the controller serves; chat says why not
    assert fleet.ctl.metrics.registry.get_sample_value("originctl_chat_nats_connected") == 0
    rc, _, err = await fleet.chat_cli(capsys, "ban", "demo", "troll")
    assert rc != 0 and "unreachable" in err and "not published" in err
    await asyncio.sleep(3)  # the reconnect attempts go on; their log lines are bounded
    outage_lines = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert 1 <= len(outage_lines) <= 3

    server.start()
    await fleet.following(limit_s=60)
    await until(lambda: a.connected, "the edge back on NATS", 60)
    assert (await fleet.chat_cli(capsys, "ban", "demo", "troll"))[0] == 0
    await until(lambda: kinds(sa, EventKind.CLEARCHAT), "the ban after the outage")


async def test_a_mixed_fleet_operator_actions_reach_both_buses(fleet: NatsFleet,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # an edge still on the hub bus (enrolled, its chat stream over mutual TLS) and an edge on NATS: two
    # orders of the room (their chatters do not meet), one operator
    _, sn = await fleet.edge("edge-nats")
    async with chat_edges(fleet, "edge-hub") as (hub_edge,):
        rc, out, _ = await fleet.chat_cli(capsys, "ban", "demo", "troll")
        assert rc == 0 and "banned" in out
        await until(lambda: kinds(sn, EventKind.CLEARCHAT), "the ban on the NATS edge")
        await until(lambda: any(e.kind is EventKind.CLEARCHAT for e in hub_edge.sink.events), "... and the hub edge")
        said = hub_edge.say(ALICE, "on the hub bus")
        await until(lambda: said in hub_edge.sink.ids(), "the hub edge's own message")
        assert said not in sn.ids()
        assert [r["login"] for r in await fleet.bans(capsys)] == ["troll"]


async def test_a_first_start_seeds_rooms_whose_records_aged_out_from_their_checkpoints(
        tmp_path: Path, server: NatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    # the edges created the stream with a 2 s retention; the ban's record is gone when the controller first
    # starts, its checkpoint is not
    edge = NatsBus(server.url, "edge-a", LIMITS, retention_s=2.0, duplicate_window_s=1.0, reconnect_wait_s=0.2,
                   heartbeat_s=1.0)
    sink = RecordingSink()
    await edge.start(sink)
    fleet = NatsFleet(tmp_path, server)
    try:
        edge.watch(ROOM)
        await until(lambda: sink.histories, "the edge live")
        edge.submit(say(MOD, "/ban troll"))
        await until(lambda: kinds(sink, EventKind.CLEARCHAT), "the ban")
        ban_seq = kinds(sink, EventKind.CLEARCHAT)[0].seq
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            kv = await js.key_value("CHAT_ROOMS")

            async def gone() -> bool:
                info = await js.stream_info("CHAT")
                entry = await kv.get(ROOM)
                return info.state.first_seq > ban_seq and decode_checkpoint(entry.value or b"").sseq == ban_seq

            deadline = time.monotonic() + 30
            while not await gone():
                assert time.monotonic() < deadline, "the record never aged out"
                await asyncio.sleep(0.2)
        finally:
            await nc.close()
        await fleet.start_controller()
        assert fleet.ctl.chat_nats is not None
        await fleet.following()
        assert [r["login"] for r in await fleet.bans(capsys)] == ["troll"]
        rc, _, err = await fleet.chat_cli(capsys, "ban", "demo", "troll")
        assert rc == 1 and "already_banned" in err
    finally:
        await edge.close()
        await fleet.close()


async def test_moderation_on_nats_before_any_edge_watches_reaches_a_later_watcher(
        fleet: NatsFleet, capsys: pytest.CaptureFixture[str]) -> None:
    assert (await fleet.chat_cli(capsys, "timeout", "quiet", "troll", "1h"))[0] == 0
    _, sink = await fleet.edge("edge-late", room="quiet")
    assert [r.login for r in sink.snapshots[-1].restrictions] == ["troll"]


class ServeProcess:
    """`python -m originctl serve` with [chat] bus = "nats", and the `originctl` CLI, as real processes."""

    def __init__(self, tmp: Path, nats_url: str) -> None:
        self.grpc, self.edge, self.http = free_port(), free_port(), free_port()
        self.data = tmp / "origin"
        self.config = tmp / "originctl.toml"
        self.config.write_text(
            f'data_dir = "{self.data}"\ngrpc = "127.0.0.1:{self.grpc}"\nedge_grpc = "127.0.0.1:{self.edge}"\n'
            f'http = "127.0.0.1:{self.http}"\nadvertise = false\n'
            f'[chat]\nbus = "nats"\nnats_url = "{nats_url}"\n'
            f'[chat.limits]\nmessages_per_window = {LIMITS.messages_per_window}\n'
            f'moderator_messages_per_window = {LIMITS.moderator_messages_per_window}\n')
        self.log = tmp / "originctl.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ORIGINCTL_")}
        self.env.update(PYTHONUNBUFFERED="1", XDG_CONFIG_HOME=str(tmp / "xdg"), GRPC_VERBOSITY="ERROR")

    def spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as fh:
            return subprocess.Popen([sys.executable, "-m", "originctl", "serve", "--config", str(self.config)],
                                    cwd=ROOT, env=self.env, stdout=fh, stderr=subprocess.STDOUT)

    async def start(self) -> None:
        self.proc = self.spawn()
        deadline = time.monotonic() + 60
        while not await self.following():
            assert self.proc.poll() is None, f"originctl serve exited:\n{self.log.read_text()}"
            assert time.monotonic() < deadline, f"originctl serve never followed NATS:\n{self.log.read_text()}"
            await asyncio.sleep(0.2)

    async def following(self) -> bool:
        try:
            return bool((await self.healthz())["chat"]["connected"])
        except (aiohttp.ClientError, OSError):
            return False

    async def healthz(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.http}/healthz") as r:
            return dict(await r.json())

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(10)

    async def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        token = (self.data / "admin.token").read_text().strip()
        argv = [sys.executable, "-m", "originctl", "--origin", f"127.0.0.1:{self.grpc}", "--token", token, *args]
        return await asyncio.to_thread(subprocess.run, argv, cwd=ROOT, env=self.env, capture_output=True, text=True,
                                       timeout=60)

    async def bans(self) -> list[dict[str, Any]]:
        done = await self.cli("chat", "bans", ROOM, "-o", "json")
        assert done.returncode == 0, done.stderr
        return list(json.loads(done.stdout))


async def test_originctl_serve_and_the_cli_with_nats_edges_across_a_restart(tmp_path: Path,
                                                                            server: NatsServer) -> None:
    ctl = ServeProcess(tmp_path, server.url)
    edge = NatsBus(server.url, "edge-a", LIMITS, reconnect_wait_s=0.2, heartbeat_s=1.0)
    sink = RecordingSink()
    await edge.start(sink)
    try:
        await ctl.start()
        edge.watch(ROOM)
        await until(lambda: sink.histories and edge.connected, "the edge live")

        done = await ctl.cli("chat", "ban", ROOM, "troll", "--reason", "spam")
        assert done.returncode == 0 and done.stdout == "#demo: troll is now banned from this channel.\n", done.stderr
        await until(lambda: kinds(sink, EventKind.CLEARCHAT), "the operator's ban on the edge")
        edge.submit(say(TROLL, "hello?"))
        await until(lambda: sink.verdicts, "the troll refused")
        assert sink.verdicts[0].notice_id == NoticeId.BANNED

        edge.submit(say(MOD, "/timeout carl 60"))
        deadline = time.monotonic() + 30
        while [r["login"] for r in await ctl.bans()] != ["carl", "troll"]:  # by login
            assert time.monotonic() < deadline, "the moderator's timeout never showed in `originctl chat bans`"
            await asyncio.sleep(0.2)

        assert ctl.stop() == 0
        edge.submit(say(MOD, "/slow 10"))  # while the controller is down
        await until(lambda: kinds(sink, EventKind.ROOMSTATE), "slow mode on the edge")
        await ctl.start()
        assert [(r["login"], r["until_ms"] == 0, r["reason"]) for r in await ctl.bans()] == [
            ("carl", False, ""), ("troll", True, "spam")]
        deadline = time.monotonic() + 30
        while "slow:          10s" not in (mode := (await ctl.cli("chat", "mode", ROOM)).stdout):
            assert time.monotonic() < deadline, f"slow mode never showed: {mode}"
            await asyncio.sleep(0.2)
        done = await ctl.cli("chat", "ban", ROOM, "troll")
        assert done.returncode == 1 and "already_banned" in done.stderr
        health = (await ctl.healthz())["chat"]
        assert health["applied_sequence"] == health["stored_sequence"] >= kinds(sink, EventKind.ROOMSTATE)[0].seq
    finally:
        await edge.close()
        ctl.stop()


async def test_a_stream_made_again_is_followed_from_its_start_and_the_rooms_keep_their_state(
        fleet: NatsFleet, server: NatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    follower = fleet.ctl.chat_nats
    assert follower is not None
    follower.check_s = 0.3
    await fleet.following()
    assert (await fleet.chat_cli(capsys, "ban", "demo", "troll"))[0] == 0
    created = follower.stream_created_ms
    nc = await nats.connect(server.url)
    try:
        await nc.jetstream().delete_stream("CHAT")
    finally:
        await nc.close()
    await until(lambda: follower.stream_created_ms not in (0, created) and follower.connected, "the stream made again")
    rc, _, err = await fleet.chat_cli(capsys, "ban", "demo", "troll")
    assert rc == 1 and "already_banned" in err  # the room kept its ban
    assert (await fleet.chat_cli(capsys, "timeout", "demo", "carl", "1m"))[0] == 0
    assert [r["login"] for r in await fleet.bans(capsys)] == ["carl", "troll"]
    assert follower.next_sseq == 3  # the new stream's two records
