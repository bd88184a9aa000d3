"""Chat across the fleet with real processes on 127.0.0.1: `originctl serve` and three enrolled edges
(`edged run --origin`), each with its own IRC port and /chat WebSocket; the bus is the controller's hub, or
NATS JetStream (Debian's nats-server, started here) for the cross-edge tests marked so.

Chatters are real clients: raw IRC over TCP on edge A, the Python `irc` library (jaraco) on edge B, IRC over
WebSocket (aiohttp) on edge C; tokens come from `originctl chat token`. Every process is stopped by PID.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import irc.client
import pytest

from tests.integration.chat.edge_chat_harness import IrcClient, WsClient
from tests.integration.e2e.test_controller_e2e import Origin, Procs, free_port, wait_until
from tests.integration.e2e.test_origin_e2e import PARIS, EdgeNode
from tests.integration.e2e.test_origin_e2e import procs as procs  # noqa: PLC0414 - the fixture, by its name

ROOM = "news"
MESSAGES = 5000
SENDERS = {"a": 7, "b": 7, "c": 6}  # 20 chatters on three edges
LIMITS = "[chat.limits]\nmessages_per_window = 100000\nmoderator_messages_per_window = 100000\n"
WAIT = 30.0


class ChatFleet:
    def __init__(self, procs: Procs, tmp: Path, bus: str) -> None:
        self.procs, self.tmp, self.bus = procs, tmp, bus
        self.origin = Origin(procs, tmp)
        self.nats_port = 0
        chat = ""
        if bus == "nats":  # the controller follows the rooms on NATS (bans, modes) and publishes operators' actions
            self.nats_port = free_port()
            store = tmp / "nats"
            store.mkdir()
            procs.start("nats", [shutil.which("nats-server") or "nats-server", "-js", "-a", "127.0.0.1",
                                 "-p", str(self.nats_port), "-sd", str(store)])
            chat = f'[chat]\nbus = "nats"\nnats_url = "nats://127.0.0.1:{self.nats_port}"\n'
        self.origin.config.write_text(self.origin.config.read_text() + chat + LIMITS)
        self.origin.start()
        tokens = self.origin.cli("token", "create", "--count", "3").stdout.split()
        self.edges: dict[str, EdgeNode] = {}
        for i, name in enumerate(("a", "b", "c"), start=1):
            e = EdgeNode(procs, tmp, f"edge-{name}", [f"10.{i}.0.0/16"], PARIS)
            extra = LIMITS.replace("[chat.limits]", "[chat]\n[chat.limits]")
            if bus == "nats":
                extra = extra.replace("[chat]\n", f'[chat]\nbus = "nats"\nnats_url = "nats://127.0.0.1:{self.nats_port}"\n')
            e.config.write_text(e.config.read_text() + extra)
            e.start(self.origin.address, tokens.pop())
            self.edges[name] = e
        wait_until(lambda: all(e.node_id() for e in self.edges.values()), "enrollment", procs)
        wait_until(lambda: all(self.chat_ready(e) for e in self.edges.values()), "chat on every edge", procs)

    def chat_ready(self, e: EdgeNode) -> bool:
        """The edge's chat bus is up and it verifies tokens (the controller's keys arrived)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{e.http}/healthz", timeout=2) as r:
                chat = json.loads(r.read())["chat"]
        except (OSError, KeyError, ValueError):
            return False
        return bool(chat.get("bus_connected")) and int(chat.get("token_keys", 0)) > 0

    def token(self, login: str, *roles: str, case_safe: bool = False) -> str:
        args = ["chat", "token", "--user", f"u-{login}", "--login", login, *(["--case-safe"] if case_safe else [])]
        for r in roles:
            args += ["--role", r]
        done = self.origin.cli(*args)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def restart_controller(self, sig: int = signal.SIGTERM) -> None:
        self.procs.signal("originctl", sig)
        self.origin.start()

    def wait_buses(self) -> None:
        wait_until(lambda: all(self.chat_ready(e) for e in self.edges.values()), "chat buses up again", self.procs)


@pytest.fixture(params=["hub", pytest.param("nats", marks=pytest.mark.skipif(
    shutil.which("nats-server") is None, reason="needs Debian's nats-server (make test installs it)"))])
def fleet(request: pytest.FixtureRequest, procs: Procs, tmp_path: Path) -> Iterator[ChatFleet]:
    yield ChatFleet(procs, tmp_path, request.param)


@pytest.fixture
def hub_fleet(procs: Procs, tmp_path: Path) -> Iterator[ChatFleet]:
    yield ChatFleet(procs, tmp_path, "hub")


class JaracoChatters(threading.Thread):
    """Chatters using the `irc` library's reactor (one thread), each sending its share on a schedule."""

    def __init__(self, port: int, logins: list[tuple[str, str]], per_client: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.reactor = irc.client.Reactor()
        self.conns: list[Any] = []
        self.welcomed: set[str] = set()
        self.joined: set[str] = set()
        self.notices: list[str] = []
        self.per_client, self.rate = per_client, rate
        self.go = threading.Event()
        self.join = threading.Event()
        self.join_sent = False
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.reactor.add_global_handler("welcome", lambda c, e: self.welcomed.add(c.get_nickname()))
        self.reactor.add_global_handler("join", self._on_join)
        self.reactor.add_global_handler("pubnotice", lambda c, e: self.notices.append(str(e.arguments)))
        for login, token in logins:
            c = self.reactor.server().connect("127.0.0.1", port, login, password=f"oauth:{token}", username=login)
            c.cap("REQ", "twitch.tv/tags", "twitch.tv/commands")
            self.conns.append(c)

    def _on_join(self, c: Any, e: Any) -> None:
        if irc.client.NickMask(e.source).nick == c.get_nickname():
            self.joined.add(c.get_nickname())

    def run(self) -> None:
        try:
            while not self.go.is_set():  # everything on the connections happens on this thread
                if self.join.is_set() and not self.join_sent:
                    for c in self.conns:
                        c.join(f"#{ROOM}")
                    self.join_sent = True
                self.reactor.process_once(0.05)
            start = time.monotonic()
            sent = 0
            while sent < self.per_client:
                due = min(self.per_client, int((time.monotonic() - start) * self.rate) + 1)
                while sent < due:
                    for c in self.conns:
                        c.privmsg(f"#{ROOM}", f"{c.get_nickname()} m{sent}")
                    sent += 1
                self.reactor.process_once(0.01)
            self.done.set()
            while True:
                self.reactor.process_once(0.1)
        except BaseException as exc:  # surfaced by the test
            self.error = exc
            self.done.set()


async def _observe(client: IrcClient, want: int, within: float) -> list[tuple[str, str]]:
    """(id, text) of every PRIVMSG this client receives, until `want` of them or the deadline."""
    got: list[tuple[str, str]] = []
    deadline = time.monotonic() + within
    while len(got) < want and time.monotonic() < deadline:
        try:
            msg = await client.next(max(0.05, deadline - time.monotonic()))
        except TimeoutError:
            break
        if msg is None:
            break
        if msg.command == "PRIVMSG":
            got.append((msg.tags.get("id", ""), msg.params[-1]))
        elif msg.command == "PING":
            await client.send("PONG :tmi.twitch.tv")
    return got


async def _observer(e: EdgeNode) -> IrcClient:
    c = await IrcClient.connect(e.irc)
    await c.login("justinfan4242")
    await c.join(ROOM)
    return c


async def _ws_sender(e: EdgeNode, login: str, token: str) -> WsClient:
    ws = await WsClient.connect(f"ws://127.0.0.1:{e.http}/chat")
    await ws.send_frame(f"CAP REQ :twitch.tv/tags twitch.tv/commands\r\nPASS oauth:{token}\r\nNICK {login}\r\n")
    await ws.until(lambda m: m.command == "376")
    await ws.send_frame(f"JOIN #{ROOM}\r\n")
    await ws.until(lambda m: m.command == "ROOMSTATE")
    return ws


async def _send_paced(send: Any, login: str, count: int, rate: float) -> None:
    start = time.monotonic()
    for n in range(count):
        await send(f"PRIVMSG #{ROOM} :{login} m{n}")
        delay = start + (n + 1) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def test_every_edge_delivers_the_same_sequence_of_5000_interleaved_messages(fleet: ChatFleet) -> None:
    per_client = MESSAGES // sum(SENDERS.values())
    rate = 12.0  # messages/s per chatter (under the edge's 20 lines/s per connection), 240/s in all
    logins = {edge: [f"{edge}chatter{k}" for k in range(n)] for edge, n in SENDERS.items()}
    tokens = {login: fleet.token(login) for names in logins.values() for login in names}
    a, b, c = fleet.edges["a"], fleet.edges["b"], fleet.edges["c"]
    jaraco = JaracoChatters(b.irc, [(login, tokens[login]) for login in logins["b"]], per_client, rate)

    async def scenario() -> dict[str, list[tuple[str, str]]]:
        observers = {name: await _observer(e) for name, e in fleet.edges.items()}
        raw = []
        for login in logins["a"]:
            cl = await IrcClient.connect(a.irc)
            await cl.login(login, tokens[login])
            await cl.join(ROOM)
            raw.append(cl)
        wss = [await _ws_sender(c, login, tokens[login]) for login in logins["c"]]
        jaraco.start()
        await asyncio.to_thread(wait_until, lambda: len(jaraco.welcomed) == len(logins["b"]),
                                "the irc library's chatters welcomed", fleet.procs)
        jaraco.join.set()
        await asyncio.to_thread(wait_until, lambda: len(jaraco.joined) == len(logins["b"]),
                                "the irc library's chatters joined", fleet.procs)
        watchers = [asyncio.create_task(_observe(o, MESSAGES, 120)) for o in observers.values()]
        jaraco.go.set()
        await asyncio.gather(
            *(_send_paced(cl.send, login, per_client, rate) for cl, login in zip(raw, logins["a"], strict=True)),
            *(_send_paced(lambda line, ws=ws: ws.send_frame(line + "\r\n"), login, per_client, rate)
              for ws, login in zip(wss, logins["c"], strict=True)))
        seen = dict(zip(observers, await asyncio.gather(*watchers), strict=True))
        for cl in [*raw, *observers.values()]:
            cl.close()
        for ws in wss:
            await ws.close()
        return seen

    seen = asyncio.run(scenario())
    assert jaraco.error is None and jaraco.done.is_set(), jaraco.error
    assert not jaraco.notices, jaraco.notices[:5]
    sent = {f"{login} m{n}" for names in logins.values() for login in names for n in range(per_client)}
    for name, got in seen.items():
        ids = [i for i, _ in got]
        assert len(got) == MESSAGES and len(set(ids)) == MESSAGES and all(ids), (name, len(got), len(set(ids)))
        assert {text for _, text in got} == sent, name  # nothing lost, nothing made up
        for login in (x for names in logins.values() for x in names):  # each chatter's own order kept
            mine = [int(t.rsplit("m", 1)[1]) for _, t in got if t.startswith(f"{login} ")]
            assert mine == list(range(per_client)), (name, login)
    assert seen["a"] == seen["b"] == seen["c"]  # the same ids in the same order on every edge


def test_a_timeout_on_one_edge_holds_on_another_and_bans_survive_a_controller_restart(fleet: ChatFleet) -> None:
    a, b, c = fleet.edges["a"], fleet.edges["b"], fleet.edges["c"]
    mod_token, victim_token, villain_token = (fleet.token("modder", "moderator"), fleet.token("victim"),
                                              fleet.token("villain"))

    async def first() -> None:
        watcher = await _observer(c)
        mod = await IrcClient.connect(a.irc)
        await mod.login("modder", mod_token)
        await mod.join(ROOM)
        victim = await IrcClient.connect(b.irc)
        await victim.login("victim", victim_token)
        await victim.join(ROOM)
        villain = await IrcClient.connect(b.irc)
        await villain.login("villain", villain_token)
        await villain.join(ROOM)
        await victim.send(f"PRIVMSG #{ROOM} :before the timeout")
        await watcher.until(lambda m: m.command == "PRIVMSG" and m.params[-1] == "before the timeout")
        await mod.send(f"PRIVMSG #{ROOM} :/timeout victim 120 spam")
        await mod.until(lambda m: m.command == "NOTICE" and m.tags.get("msg-id") == "timeout_success")
        clear = await watcher.until(lambda m: m.command == "CLEARCHAT")
        assert clear[-1].params[-1] == "victim" and clear[-1].tags.get("ban-duration") == "120", clear[-1]
        await victim.send(f"PRIVMSG #{ROOM} :after the timeout")
        refused = await victim.until(lambda m: m.command == "NOTICE")
        assert refused[-1].tags.get("msg-id") == "msg_timedout", refused[-1]
        await mod.send(f"PRIVMSG #{ROOM} :/ban villain")
        await mod.until(lambda m: m.command == "NOTICE" and m.tags.get("msg-id") == "ban_success")
        clear = await watcher.until(lambda m: m.command == "CLEARCHAT")
        assert clear[-1].params[-1] == "villain" and "ban-duration" not in clear[-1].tags, clear[-1]
        await villain.send(f"PRIVMSG #{ROOM} :still here")
        refused = await villain.until(lambda m: m.command == "NOTICE")
        assert refused[-1].tags.get("msg-id") == "msg_banned", refused[-1]
        # nothing the victim or villain sent after their restriction reached the other edge
        rest = await _observe(watcher, 1, 1.0)
        assert rest == [], rest
        for cl in (watcher, mod, victim, villain):
            cl.close()

    asyncio.run(first())
    fleet.restart_controller()
    fleet.wait_buses()

    def restricted() -> set[str]:
        bans = fleet.origin.json("chat", "bans", ROOM)
        return {r["login"] for r in (bans["restrictions"] if isinstance(bans, dict) else bans)}

    # the controller knows (it ordered the room, or followed it on NATS), and still does after its restart
    wait_until(lambda: {"victim", "villain"} <= restricted(), "the ban and the timeout in originctl chat bans",
               fleet.procs)

    async def after() -> None:
        villain = await IrcClient.connect(c.irc)  # another edge, after the restart
        await villain.login("villain", villain_token)
        await villain.join(ROOM)
        await villain.send(f"PRIVMSG #{ROOM} :I am back")
        refused = await villain.until(lambda m: m.command == "NOTICE")
        assert refused[-1].tags.get("msg-id") == "msg_banned", refused[-1]
        villain.close()

    asyncio.run(after())


def test_chat_goes_on_locally_while_the_controller_is_down_and_arrives_once_after(hub_fleet: ChatFleet) -> None:
    fleet = hub_fleet
    a, b = fleet.edges["a"], fleet.edges["b"]
    token = fleet.token("lonely")

    async def scenario() -> None:
        here, there = await _observer(a), await _observer(b)
        chatter = await IrcClient.connect(a.irc)
        await chatter.login("lonely", token)
        await chatter.join(ROOM)
        await chatter.send(f"PRIVMSG #{ROOM} :while all is well")
        for o in (here, there):
            await o.until(lambda m: m.command == "PRIVMSG" and m.params[-1] == "while all is well")
        fleet.procs.signal("originctl", signal.SIGKILL)
        await asyncio.to_thread(wait_until, lambda: not fleet.chat_ready(a), "edge A to see the hub gone",
                                fleet.procs)
        for n in range(5):
            await chatter.send(f"PRIVMSG #{ROOM} :during the outage {n}")
        local = await _observe(here, 5, WAIT)
        assert [t for _, t in local] == [f"during the outage {n}" for n in range(5)], local
        await asyncio.to_thread(fleet.origin.start)
        await asyncio.to_thread(fleet.wait_buses)
        arrived = await _observe(there, 5, WAIT)
        assert [t for _, t in arrived] == [f"during the outage {n}" for n in range(5)], arrived
        assert [i for i, _ in arrived] == [i for i, _ in local]  # the same messages, the same ids
        again = await _observe(here, 1, 3.0) + await _observe(there, 1, 1.0)
        assert again == [], again  # once, on both edges
        for cl in (here, there, chatter):
            cl.close()

    asyncio.run(scenario())


def test_drain_sends_reconnect_to_the_edges_chat_clients(hub_fleet: ChatFleet) -> None:
    fleet = hub_fleet
    b = fleet.edges["b"]

    token = fleet.token("Shouty", case_safe=True).lower()  # as tmi.js sends it: lower-cased

    async def scenario() -> None:
        client = await _observer(b)
        chatter = await IrcClient.connect(b.irc)
        welcome = await chatter.login("shouty", token)
        assert welcome[-1].command == "376", welcome[-1]  # the case-safe form survived lower-casing
        done = await asyncio.to_thread(fleet.origin.cli, "drain", b.node_id(), "--wait", "0")
        assert done.returncode in (0, 1), done.stderr
        got = await client.until(lambda m: m.command == "RECONNECT", timeout=WAIT)
        assert got[-1].command == "RECONNECT"
        got = await chatter.until(lambda m: m.command == "RECONNECT", timeout=WAIT)
        client.close()
        chatter.close()

    asyncio.run(scenario())
