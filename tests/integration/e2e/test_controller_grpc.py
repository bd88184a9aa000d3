"""Controller and edge agents in one process, over real gRPC with real mutual TLS on 127.0.0.1.

The controller (originctl.server.app.Controller) and edge agents (edged.agent.link.Agent) talk through
their real listeners; the admin client is the CLI's. Heartbeats are 0.2 s so states change quickly;
assertions are about states, never about speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edged.agent.errors import EnrollmentError
from edged.agent.link import Agent
from edged.agent.status import NodeStatus
from edged.config import Config, load
from edgenet.v1 import admin_pb2, admin_pb2_grpc, edge_pb2, edge_pb2_grpc
from originctl import trust
from originctl.client import AdminClient
from originctl.config import HealthConfig, ServeConfig
from originctl.errors import NotAuthenticated
from originctl.model import NodeState
from originctl.server.app import Controller

HEARTBEAT = 0.2  # s
WAIT = 20.0  # s: generous bound for a state to be reached on a loaded 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(predicate: Callable[[], Any], what: str, within: float = WAIT) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def serve_cfg(data: Path, grpc_port: int = 0, edge_port: int = 0) -> ServeConfig:
    return ServeConfig(data_dir=str(data), grpc=f"127.0.0.1:{grpc_port}", edge_grpc=f"127.0.0.1:{edge_port}",
                       http="127.0.0.1:0", advertise=False, health=HealthConfig(recover_reports=2))


def edge_cfg(data: Path, origin: str, token: str = "", name: str = "edge") -> Config:
    return load(None, {"data_dir": str(data), "origin": {"address": origin, "enroll_token": token,
                                                         "heartbeat_seconds": HEARTBEAT},
                       "node": {"name": name, "site": "lab", "advertise": False, "prefixes": ["192.0.2.0/24"]}})


def status() -> NodeStatus:
    return NodeStatus(http_url="http://127.0.0.1:8080", http_port=8080, active_streams=1, viewers=7,
                      live_channels=("demo",), egress_bps=1_000_000)


class Fleet:
    """A controller plus helpers; every agent started through it is stopped at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.grpc_port = free_port()
        self.edge_port = free_port()
        self.controller: Controller | None = None
        self.agents: list[Agent] = []

    @property
    def origin(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def ctl(self) -> Controller:
        assert self.controller is not None
        return self.controller

    async def start_controller(self) -> Controller:
        self.controller = Controller(serve_cfg(self.tmp / "origin", self.grpc_port, self.edge_port))
        await self.controller.start()
        return self.controller

    async def stop_controller(self) -> None:
        if self.controller is not None:
            await self.controller.stop()
            self.controller = None

    async def admin(self, fn: Callable[[AdminClient], Any], token: str | None = None) -> Any:
        def call() -> Any:
            with AdminClient(self.origin, token or self.ctl.admin_token) as c:
                return fn(c)
        return await asyncio.to_thread(call)

    async def token(self, ttl: float = 600) -> str:
        tokens, _ = await self.admin(lambda c: c.create_tokens(ttl))
        return str(tokens[0])

    async def agent(self, name: str, token: str = "", data: Path | None = None) -> Agent:
        a = Agent(edge_cfg(data or self.tmp / name, self.origin, token, name), status)
        self.agents.append(a)
        await a.start()
        return a

    def state(self, node_id: str) -> NodeState | None:
        entry = self.ctl.registry.get(node_id) if self.controller else None
        return entry.health.state if entry else None


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    f = Fleet(tmp_path)
    await f.start_controller()
    try:
        yield f
    finally:
        for a in f.agents:
            with contextlib.suppress(Exception):
                await a.stop()
        await f.stop_controller()


async def test_enroll_then_report_over_mutual_tls(fleet: Fleet) -> None:
    agent = await fleet.agent("edge-a", await fleet.token())
    node_id = agent.node_id
    assert node_id.startswith("nd-")
    ident_dir = fleet.tmp / "edge-a" / "agent"
    assert stat.S_IMODE((ident_dir / "node.key").stat().st_mode) == 0o600
    assert (ident_dir / "ca.crt").read_bytes() == fleet.ctl.ca.cert_pem  # type: ignore[union-attr]
    await wait_for(lambda: fleet.state(node_id) is NodeState.HEALTHY, "healthy")
    await wait_for(lambda: agent.connected, "agent connected")

    node = await fleet.admin(lambda c: c.node(node_id))
    assert node.connected and node.info.name == "edge-a" and node.info.site == "lab"
    assert node.info.prefixes == ("192.0.2.0/24",) and node.info.heartbeat_seconds == HEARTBEAT
    assert node.last_report is not None and node.last_report.node.viewers == 7
    assert node.last_report.node.live_channels == ("demo",)
    assert (await fleet.admin(lambda c: c.node("edge-a"))).id == node_id  # by name too
    events = await fleet.admin(lambda c: c.events(node_id))
    kinds = [e.kind for e in reversed(events)]
    assert kinds[:3] == ["enrolled", "connected", "state"]
    assert events[-3].to_state is NodeState.HEALTHY

    async with aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{fleet.ctl.http_port}"
        async with http.get(base + "/healthz") as r:
            assert r.status == 200 and (await r.json())["nodes"]["healthy"] == 1
        async with http.get(base + "/metrics") as r:
            text = await r.text()
    assert 'originctl_nodes{state="healthy"} 1.0' in text
    assert "originctl_reports_received_total" in text and "originctl_report_delay_seconds_bucket" in text


def other_ca_client_cert(node_id: str) -> tuple[bytes, bytes]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "impostor CA")])
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
            .issuer_name(name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)).sign(ca_key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()), cert.public_bytes(serialization.Encoding.PEM))


async def _connect(port: int, creds: grpc.ChannelCredentials) -> grpc.StatusCode:
    options = [("grpc.ssl_target_name_override", trust.CONTROLLER_TLS_NAME)]
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options=options) as ch:
        call = edge_pb2_grpc.EdgeServiceStub(ch).Connect(timeout=5)
        try:
            await call.write(edge_pb2.EdgeMessage(hello=edge_pb2.Hello()))
            await call.read()
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        except grpc.aio.UsageError:
            return await call.code()
        call.cancel()
        return grpc.StatusCode.OK


async def test_edge_port_refuses_peers_without_a_valid_client_certificate(fleet: Fleet) -> None:
    agent = await fleet.agent("edge-a", await fleet.token())
    ca = fleet.ctl.ca.cert_pem  # type: ignore[union-attr]
    assert await _connect(fleet.ctl.edge_port, grpc.ssl_channel_credentials(ca)) is grpc.StatusCode.UNAVAILABLE
    key, cert = other_ca_client_cert(agent.node_id)
    assert await _connect(fleet.ctl.edge_port, grpc.ssl_channel_credentials(ca, key, cert)) \
        is grpc.StatusCode.UNAVAILABLE
    # the real identity works on the edge port, and the main port does not serve edge streams at all
    assert agent.identity is not None
    good = grpc.ssl_channel_credentials(ca, agent.identity.key_pem, agent.identity.cert_pem)
    await agent.stop()
    assert await _connect(fleet.ctl.edge_port, good) is grpc.StatusCode.OK
    assert await _connect(fleet.ctl.grpc_port, good) is grpc.StatusCode.UNIMPLEMENTED


async def test_tokens_are_one_time_and_checked(fleet: Fleet, tmp_path: Path) -> None:
    token = await fleet.token()
    await fleet.agent("edge-a", token)
    with pytest.raises(EnrollmentError, match="already used"):
        await fleet.agent("edge-b", token)
    short = await fleet.token(ttl=0.1)
    await asyncio.sleep(0.3)
    with pytest.raises(EnrollmentError, match="expired"):
        await fleet.agent("edge-c", short)
    unknown = trust.make_token(trust.new_secret(), fleet.ctl.ca.fingerprint)  # type: ignore[union-attr]
    with pytest.raises(EnrollmentError, match="unknown enrollment token"):
        await fleet.agent("edge-d", unknown)
    foreign = trust.make_token(trust.split_token(await fleet.token())[0], "0" * 32)
    with pytest.raises(EnrollmentError, match="not the one that issued this token"):
        await fleet.agent("edge-e", foreign)
    with pytest.raises(EnrollmentError, match="not enrolled"):
        await fleet.agent("edge-f", "")
    assert len(fleet.ctl.registry.nodes) == 1
    assert not (tmp_path / "edge-b" / "agent" / "identity.json").exists()


async def test_admin_api_needs_the_admin_token(fleet: Fleet) -> None:
    fp = fleet.ctl.ca.fingerprint  # type: ignore[union-attr]
    with pytest.raises(NotAuthenticated, match=r"wrong admin token: .* controller keeps it in .*admin\.token"):
        await fleet.admin(lambda c: c.nodes(), token=trust.make_token("guess", fp))
    creds = grpc.ssl_channel_credentials(fleet.ctl.ca.cert_pem)  # type: ignore[union-attr]
    options = [("grpc.ssl_target_name_override", trust.CONTROLLER_TLS_NAME)]
    async with grpc.aio.secure_channel(fleet.origin, creds, options=options) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await admin_pb2_grpc.AdminServiceStub(ch).ListNodes(admin_pb2.ListNodesRequest(), timeout=5)
    assert exc.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "missing admin token" in (exc.value.details() or "")


async def test_unreachable_controller_does_not_block_start(tmp_path: Path) -> None:
    f = Fleet(tmp_path)
    await f.start_controller()
    token = await f.token()
    await f.stop_controller()
    try:
        started = time.monotonic()
        agent = await f.agent("edge-a", token)
        assert agent.identity is None and time.monotonic() - started < 10
        await f.start_controller()
        node_id = await wait_for(lambda: agent.node_id, "background enrollment")
        await wait_for(lambda: f.state(node_id) is NodeState.HEALTHY, "healthy")
    finally:
        for a in f.agents:
            await a.stop()
        await f.stop_controller()


async def test_silent_node_is_lost_and_comes_back_through_probation(fleet: Fleet) -> None:
    agent = await fleet.agent("edge-a", await fleet.token())
    node_id = agent.node_id
    await wait_for(lambda: fleet.state(node_id) is NodeState.HEALTHY, "healthy")
    # a crash: the reporting task dies without a Goodbye (the TCP connection stays open)
    agent._stopping = True
    assert agent._task is not None
    agent._task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await agent._task
    agent._task = None
    await wait_for(lambda: fleet.state(node_id) is NodeState.LOST, "lost")
    events = await fleet.admin(lambda c: c.events(node_id, 1))
    assert events[0].to_state is NodeState.LOST and "intervals of 0.2 s" in events[0].reason

    again = await fleet.agent("edge-a", data=fleet.tmp / "edge-a")  # same identity, no token
    assert again.node_id == node_id
    await wait_for(lambda: fleet.state(node_id) is NodeState.DEGRADED, "degraded (probation)")
    await wait_for(lambda: fleet.state(node_id) is NodeState.HEALTHY, "healthy again")
    transitions = [(e.from_state, e.to_state) for e in reversed(await fleet.admin(lambda c: c.events(node_id)))
                   if e.kind == "state"]
    assert transitions[-3:] == [(NodeState.HEALTHY, NodeState.LOST), (NodeState.LOST, NodeState.DEGRADED),
                                (NodeState.DEGRADED, NodeState.HEALTHY)]


async def test_graceful_stop_says_goodbye(fleet: Fleet) -> None:
    agent = await fleet.agent("edge-a", await fleet.token())
    await wait_for(lambda: fleet.state(agent.node_id) is NodeState.HEALTHY, "healthy")
    await agent.stop()
    entry = fleet.ctl.registry.get(agent.node_id)
    assert entry is not None
    await wait_for(lambda: entry.health.state is NodeState.LOST and entry.session is None, "lost at once")
    assert entry.health.state_reason == "edge disconnected: edged stopping"


async def test_controller_restart_edges_reattach_without_enrolling(fleet: Fleet) -> None:
    agents = [await fleet.agent(f"edge-{i}", await fleet.token()) for i in range(3)]
    ids = {a.node_id for a in agents}
    await wait_for(lambda: all(fleet.state(i) is NodeState.HEALTHY for i in ids), "all healthy")
    await fleet.stop_controller()
    await wait_for(lambda: not any(a.connected for a in agents), "edges notice")
    await fleet.start_controller()
    assert set(fleet.ctl.registry.nodes) == ids  # from SQLite
    await wait_for(lambda: all(a.connected for a in agents), "edges re-attach")
    await wait_for(lambda: all(fleet.state(i) is NodeState.HEALTHY for i in ids), "all healthy again")
    assert {a.node_id for a in agents} == ids
    events = await fleet.admin(lambda c: c.events(limit=1000))
    assert sum(e.kind == "enrolled" for e in events) == 3


async def test_drain_reaches_the_edge(fleet: Fleet) -> None:
    agent = await fleet.agent("edge-a", await fleet.token())
    await wait_for(lambda: agent.connected, "connected")
    node = await fleet.admin(lambda c: c.set_draining(agent.node_id, True))
    assert node.state is NodeState.DRAINING and node.draining
    await wait_for(lambda: agent.draining, "edge told to drain")
    await fleet.admin(lambda c: c.set_draining(agent.node_id, False))
    await wait_for(lambda: not agent.draining, "edge told to stop draining")
    await wait_for(lambda: fleet.state(agent.node_id) is NodeState.HEALTHY, "healthy")
