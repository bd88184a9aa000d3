"""Fleet distribution, the controller's side: relay parents, the pushed relay map, relaying reports,
re-planning, fleet-wide numbering and certificate renewal. A real controller and real edge agents in one
process over real gRPC + mutual TLS on 127.0.0.1 (the agents stand in for edged: their status is set by
the test; the relay listeners they report are not dialled here)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from edged.agent import enroll
from edged.agent.link import Agent
from edged.agent.relaymap import RelayPeer
from edged.agent.status import NodeStatus
from edged.config import load
from originctl.config import RelayConfig
from originctl.errors import NotFound
from originctl.model import Route
from originctl.server.app import Controller
from tests.integration.e2e.test_controller_grpc import HEARTBEAT, Fleet, serve_cfg, wait_for


class RelayFleet(Fleet):
    max_children = 20

    async def start_controller(self) -> Controller:
        cfg = dataclasses.replace(serve_cfg(self.tmp / "origin", self.grpc_port, self.edge_port),
                                  relay=RelayConfig(max_children=self.max_children))
        self.controller = Controller(cfg)
        await self.controller.start()
        return self.controller


@pytest.fixture
async def fleet(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[RelayFleet]:
    f = RelayFleet(tmp_path)
    f.max_children = getattr(request, "param", 20)
    await f.start_controller()
    try:
        yield f
    finally:
        for a in f.agents:
            with contextlib.suppress(Exception):
                await a.stop()
        await f.stop_controller()


class Edge:
    """An agent with a relay listener port (reported, never dialled here) and live channels the test sets."""

    ports = iter(range(41000, 42000))

    def __init__(self, fleet: Fleet, name: str, *, relay: bool = False, reachable: bool = True) -> None:
        self.fleet, self.name = fleet, name
        self.live: tuple[str, ...] = ()
        self.http_port, self.relay_port = next(self.ports), next(self.ports)
        self.cfg = load(None, {
            "data_dir": str(fleet.tmp / name),
            "origin": {"address": fleet.origin, "heartbeat_seconds": HEARTBEAT},
            "node": {"name": name, "advertise": False, "relay": relay, "reachable": reachable,
                     "public_url": f"http://127.0.0.1:{self.http_port}"},
        })
        self.agent: Agent | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.relay_port}"

    @property
    def id(self) -> str:
        assert self.agent is not None
        return self.agent.node_id

    @property
    def peer(self) -> RelayPeer:
        return RelayPeer(self.id, self.address)

    def status(self) -> NodeStatus:
        return NodeStatus(http_url=f"http://127.0.0.1:{self.http_port}", http_port=self.http_port,
                          relay_port=self.relay_port, active_streams=len(self.live), live_channels=self.live)

    async def start(self, token: str = "") -> Agent:
        cfg = dataclasses.replace(self.cfg, origin=dataclasses.replace(self.cfg.origin, enroll_token=token))
        self.agent = Agent(cfg, self.status)
        self.fleet.agents.append(self.agent)
        await self.agent.start()
        await wait_for(lambda: self.agent is not None and self.agent.connected, f"{self.name} linked")
        return self.agent

    def publish(self, channel: str) -> None:
        assert self.agent is not None
        self.agent.async_stream_started(channel, "rtmp", time_unix_ms=int(time.time() * 1000), transcode=False,
                                        encoder="", renditions=("source",), reason="test", by_controller=True)
        self.live = (*self.live, channel)


async def edges(fleet: Fleet, *specs: tuple[str, dict[str, bool]]) -> list[Edge]:
    out = []
    for name, kw in specs:
        e = Edge(fleet, name, **kw)
        await e.start(await fleet.token())
        out.append(e)
    ctl = fleet.ctl
    await wait_for(lambda: all(ctl.registry.nodes[e.id].health.state.value == "healthy" for e in out), "all healthy")
    return out


async def live(fleet: Fleet, channel: str) -> None:
    await wait_for(lambda: fleet.ctl.relays.trees.get(channel) is not None, f"{channel} planned")


async def wait_for_route(fleet: Fleet, channel: str) -> Route:
    deadline = time.monotonic() + 20
    while True:  # the routing table is rebuilt at most once a second
        route: Route = await fleet.admin(lambda x: x.route(channel, "192.0.2.7"))
        if route.routed or time.monotonic() > deadline:
            assert route.routed, route
            return route
        await asyncio.sleep(0.1)


async def test_parents_map_and_outage(fleet: RelayFleet) -> None:
    a, b = await edges(fleet, ("ingest-a", {}), ("viewer-b", {}))
    assert b.agent is not None and a.agent is not None
    _, key = await fleet.admin(lambda c: c.create_channel("news"))
    assert await b.agent.relay_directory.parent_for("news") is None  # not live anywhere: 404 on the edge
    a.publish("news")
    await live(fleet, "news")
    # the map pushed to B already says where it would subscribe, before it asks
    directory = b.agent.relay_directory
    await wait_for(lambda: directory.route("news") is not None, "the route pushed to B")
    assert directory.route("news").chain == (a.peer,)  # type: ignore[union-attr]
    assert await directory.parent_for("news") == a.peer
    assert await a.agent.relay_directory.parent_for("news") is None  # the ingest edge has no parent

    # B reports it relays the channel: the controller shows the real tree, and /metrics counts it
    directory.report_relaying("news", "child", a.id, 0)
    a.agent.relay_directory.report_relaying("news", "parent", "", 1)
    await wait_for(lambda: all(m.reported for m in fleet.ctl.relays.view("news").members), "both reports in")
    trees = await fleet.admin(lambda c: c.relay_trees("news"))
    assert [(m.node_id, m.parent_node_id, m.role) for m in trees[0].members] == [(a.id, "", "ingest"),
                                                                               (b.id, a.id, "edge")]
    assert trees[0].members[1].reported == f"child of {a.id}" and trees[0].members[0].reported == "parent of 1"
    with pytest.raises(NotFound, match="not live"):
        await fleet.admin(lambda c: c.relay_trees("sports"))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{fleet.ctl.http_port}/metrics") as r:
            text = await r.text()
    assert 'originctl_relay_edges{channel="news"} 1.0' in text and "originctl_relay_fanout_max 1.0" in text

    # a controller outage: B still gets its parent, from the last map
    await fleet.stop_controller()
    await wait_for(lambda: not b.agent.connected, "B notices")  # type: ignore[union-attr]
    assert await directory.parent_for("news") == a.peer
    assert await directory.parent_for("news", exclude=(a.id,)) is None  # nobody else above it


@pytest.mark.parametrize("fleet", [2], indirect=True)  # relay.max_children = 2
async def test_fan_out_cap_relay_nodes_and_reparenting(fleet: RelayFleet) -> None:
    a, r1, r2, b, c = await edges(fleet, ("ingest-a", {}), ("relay-1", {"relay": True}), ("relay-2", {"relay": True}),
                                  ("viewer-b", {}), ("viewer-c", {}))
    assert b.agent is not None and c.agent is not None
    await fleet.admin(lambda x: x.create_channel("news"))
    a.publish("news")
    await live(fleet, "news")
    relays = {r1.id: r1.peer, r2.id: r2.peer}
    # the ingest edge keeps one of its two slots for a relay node: B below it, C below a recruited relay
    assert await b.agent.relay_directory.parent_for("news") == a.peer
    pc = await c.agent.relay_directory.parent_for("news")
    assert pc in relays.values()
    tree = fleet.ctl.relays.trees["news"]
    assert tree.chain(c.id) == (a.id, pc.node_id) and all(n <= 2 for n in tree.fanout().values())  # type: ignore[union-attr]

    # `originctl route` explains the chain to the chosen edge
    route = await wait_for_route(fleet, "news")
    assert route.chain[0] == a.id and route.chain[-1] == route.node_id

    # the ingest edge fails B: B asks again excluding it, and gets a relay node
    again = await b.agent.relay_directory.parent_for("news", exclude=(a.id,))
    assert again in relays.values()
    # C's relay is lost: C is re-planned and told (its pushed route changes) without asking
    assert pc is not None
    lost = next(x for x in (r1, r2) if x.id == pc.node_id)
    c.agent.relay_directory.report_relaying("news", "child", pc.node_id, 0)
    assert lost.agent is not None
    await lost.agent.stop()
    await wait_for(lambda: (r := c.agent.relay_directory.route("news")) is not None  # type: ignore[union-attr]
                   and pc not in r.chain, "C told of its new parent")
    new = await c.agent.relay_directory.parent_for("news")
    assert new is not None and new.node_id != lost.id


async def test_an_unreachable_ingest_edge_pushes_up(fleet: RelayFleet) -> None:
    a, r, b = await edges(fleet, ("ingest-nat", {"reachable": False}), ("relay-1", {"relay": True}), ("viewer-b", {}))
    assert a.agent is not None and b.agent is not None
    await fleet.admin(lambda x: x.create_channel("news"))
    changed: list[int] = []
    a.agent.relay_directory.add_listener(lambda: changed.append(1))
    a.publish("news")
    await wait_for(lambda: a.agent.relay_directory.push_targets() == {"news": r.peer},  # type: ignore[union-attr]
                   "the push target told to the ingest edge")
    assert changed
    assert await b.agent.relay_directory.parent_for("news") == r.peer  # nobody dials the NAT'd edge
    assert fleet.ctl.relays.trees["news"].chain(b.id) == (a.id, r.id)
    shown = await fleet.admin(lambda x: x.node(a.id))
    assert not shown.info.reachable and shown.info.relay is False
    route = b.agent.relay_directory.route("news")
    assert route is not None and route.chain[0] == RelayPeer(a.id, "")  # its port is never handed out to be dialled


async def test_fleet_numbering_survives_a_controller_restart(fleet: RelayFleet) -> None:
    a, b = await edges(fleet, ("ingest-a", {}), ("ingest-b", {}))
    assert a.agent is not None and b.agent is not None
    _, key = await fleet.admin(lambda c: c.create_channel("news"))
    await wait_for(lambda: a.agent.authorizer.lookup(key) == "news", "key pushed")  # type: ignore[union-attr]
    assert await a.agent.authorizer.authorize(key, protocol="rtmp", remote="192.0.2.1:1") == "news"
    assert a.agent.authorizer.numbering_for("news") is None  # nothing committed anywhere yet
    a.agent.async_numbering("news", 17, 2)
    a.agent.async_numbering("news", 18, 2)
    a.agent.async_numbering("nope", 99, 9)  # no such channel: ignored
    await wait_for(lambda: fleet.ctl.numbering.get("news") == (18, 2), "the commits heard")
    assert fleet.ctl.numbering.get("nope") == (0, 0)
    await fleet.stop_controller()
    await fleet.start_controller()
    await wait_for(lambda: b.agent.connected and b.agent.authorizer.fresh(), "B back")  # type: ignore[union-attr]
    # the broadcaster moves to B: B's worker continues at 18 (with a discontinuity)
    assert await b.agent.authorizer.authorize(key, protocol="rtmp", remote="192.0.2.1:1") == "news"
    assert b.agent.authorizer.numbering_for("news") == (18, 2)
    b.agent.async_numbering("news", 10, 1)  # numbers never go back
    await asyncio.sleep(HEARTBEAT)
    assert fleet.ctl.numbering.get("news") == (18, 2)


async def test_a_certificate_from_before_the_relay_is_renewed(fleet: RelayFleet) -> None:
    (e,) = await edges(fleet, ("edge-old", {}))
    assert e.agent is not None and e.agent.identity is not None
    await e.agent.stop()
    # make its certificate what an older controller issued: clientAuth only, same key
    ident = e.agent.identity
    ca = fleet.ctl.ca
    assert ca is not None
    key = serialization.load_pem_private_key(ident.key_pem, None)
    old = ca._sign_leaf(ident.node_id, key.public_key(), 30, [x509.DNSName(ident.node_id)],
                        (ExtendedKeyUsageOID.CLIENT_AUTH,))
    old_pem = old.public_bytes(serialization.Encoding.PEM)
    serial = format(old.serial_number, "x")
    await fleet.ctl.store.update_node_cert(ident.node_id, serial, 0)
    entry = fleet.ctl.registry.nodes[ident.node_id]
    entry.record = dataclasses.replace(entry.record, cert_serial=serial)
    enroll.save_identity(e.cfg.data_path, dataclasses.replace(ident, cert_pem=old_pem))
    assert not enroll.serves_tls(old_pem)

    again = Edge(fleet, "edge-old")
    await again.start()
    agent = again.agent
    assert agent is not None
    await wait_for(lambda: agent.identity is not None and enroll.serves_tls(agent.identity.cert_pem)
                   and agent.connected, "renewed and reconnected")
    renewed = agent.identity
    assert renewed is not None and enroll.serves_tls(renewed.cert_pem) and renewed.node_id == ident.node_id
    assert enroll.load_identity(e.cfg.data_path) == renewed  # saved for the next start
    assert fleet.ctl.registry.nodes[ident.node_id].record.cert_serial != serial
    await wait_for(lambda: fleet.ctl.registry.nodes[ident.node_id].session is not None, "linked with the new one")
