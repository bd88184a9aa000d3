"""The relay over real gRPC with mutual TLS on loopback, between in-process nodes with real LMDB stores."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from edged.config import RelayConfig
from edged.relay import manager, records
from edged.relay.client import ChannelNotFound, ParentLost, ParentRefused, RelayClient
from edged.relay.feed import Feed
from edged.relay.gate import Availability
from edged.relay.server import positions_from_pb, to_pb
from edged.relay.tls import FleetIdentity, server_credentials
from edgenet.v1 import relay_pb2, relay_pb2_grpc
from originctl.server.enrollment import CertificateAuthority
from tests.integration.relay.harness import CHANNEL, Node, Peer, StaticDirectory, identity

FAST = RelayConfig(start_timeout=5.0, linger_seconds=30.0, stall_timeout=1.0, keepalive_seconds=0.2, send_timeout=1.0)


async def until(pred: Callable[[], object], seconds: float, what: str) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if got := pred():
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path / "ca")


@pytest.fixture
async def nodes(tmp_path: Path, ca: CertificateAuthority) -> AsyncIterator[Callable[..., Node]]:
    made: list[Node] = []

    def make(node_id: str, cfg: RelayConfig = FAST, directory: StaticDirectory | None = None,
             window: int = 6) -> Node:
        n = Node(tmp_path, ca, node_id, cfg, directory, window)
        made.append(n)
        return n

    yield make
    for n in reversed(made):
        with contextlib.suppress(Exception):
            await n.stop()


async def test_a_child_holds_what_the_parent_holds_then_follows_live(nodes: Callable[..., Node]) -> None:
    a = await nodes("edge-a").start()
    a.publish(renditions=("source", "360p"))
    sent: dict[tuple[str, int], bytes] = {}
    for seq in range(10):  # more than a window: the child starts at the live window
        for r in ("source", "360p"):
            sent[(r, seq)] = a.commit(seq, rendition=r)
    b = await nodes("edge-b", directory=StaticDirectory({CHANNEL: [a.peer]})).start()
    assert await b.manager.request(CHANNEL) is Availability.WAITED
    assert b.seqs() == list(range(4, 10)) and b.seqs(rendition="360p") == list(range(4, 10))
    assert await b.manager.request(CHANNEL) is Availability.READY  # later requests: the same subscription
    assert a.server is not None and a.server.children(CHANNEL) == 1
    lag_before = metric("edged_relay_lag_seconds_count")
    for seq in range(10, 14):
        for r in ("source", "360p"):
            sent[(r, seq)] = a.commit(seq, rendition=r)
    await until(lambda: b.seqs() == list(range(4, 14)) and b.seqs(rendition="360p") == list(range(4, 14)), 5,
                "live segments at the child")
    for (r, seq), payload in sent.items():
        if seq >= 4:
            assert b.store.read(CHANNEL, r, seq) == payload
            mine, theirs = b.store.meta(CHANNEL, r, seq), a.store.meta(CHANNEL, r, seq)
            assert mine is not None and theirs is not None and mine.origin_ns == theirs.written_ns
            assert dataclasses.replace(mine, written_ns=0, origin_ns=0) == dataclasses.replace(theirs, written_ns=0)
    assert metric("edged_relay_lag_seconds_count") - lag_before == 8
    # the channel record (renditions, shape of the playlists) is the ingest edge's
    info_a, info_b = a.store.channel(CHANNEL), b.store.channel(CHANNEL)
    assert info_a is not None and info_b is not None
    for key in ("renditions", "target_duration", "window", "reconnect_grace", "independent", "live", "session"):
        assert info_b[key] == info_a[key], key
    a.end()
    await until(lambda: (b.store.channel(CHANNEL) or {}).get("live") is False, 5, "the stream's end at the child")
    assert (b.store.channel(CHANNEL) or {})["ended_deliberately"] is True
    assert b.directory.reported[CHANNEL] == ("child", "edge-a", 0)


async def test_a_relay_node_serves_on_and_fan_out_is_one_stream_per_child(nodes: Callable[..., Node]) -> None:
    a = await nodes("edge-a").start()
    a.publish()
    for seq in range(3):
        a.commit(seq)
    r = await nodes("relay-1", directory=StaticDirectory({CHANNEL: [a.peer]})).start()
    children = [await nodes(f"edge-{i}", directory=StaticDirectory({CHANNEL: [r.peer]})).start() for i in range(3)]
    got = await asyncio.gather(*(c.manager.request(CHANNEL) for c in children for _ in range(20)))
    assert set(got) <= {Availability.WAITED, Availability.READY}
    assert a.server is not None and r.server is not None
    assert a.server.children(CHANNEL) == 1  # the relay node's one subscription, whatever its fan-out
    assert r.server.children(CHANNEL) == 3  # one per child, however many requests each had
    out_before = metric("edged_relay_bytes_total", direction="out")
    a.commit(3, size=100_000)
    await until(lambda: all(c.seqs() == [0, 1, 2, 3] for c in children), 5, "segment 3 two hops down")
    assert r.directory.reported[CHANNEL] == ("child", "edge-a", 3)
    # segment 3 crossed the fleet four times (the ingest edge to the relay node, the relay node to each of its
    # three children; both nodes count in this one process), never once per request: the rest is keepalives
    sent = metric("edged_relay_bytes_total", direction="out") - out_before
    assert 4 * 100_000 <= sent < 5 * 100_000


async def test_resume_by_position_after_the_parent_restarts(nodes: Callable[..., Node]) -> None:
    a = await nodes("edge-a").start()
    a.publish()
    for seq in range(3):
        a.commit(seq)
    b = await nodes("edge-b", directory=StaticDirectory({CHANNEL: [a.peer]})).start()
    assert await b.manager.request(CHANNEL) is Availability.WAITED
    resumed = metric("edged_relay_resume_total", result="resumed")
    port = a.port
    await a.stop_server()
    for seq in range(3, 7):  # committed while the child is cut off
        a.commit(seq)
    await asyncio.sleep(FAST.stall_timeout)
    await a.serve(port)
    for seq in range(7, 9):
        a.commit(seq)
    await until(lambda: b.seqs() == list(range(9)), 10, "every segment at the child after the restart")
    assert metric("edged_relay_resume_total", result="resumed") > resumed
    assert metric("edged_relay_reparent_total", reason="error") + metric("edged_relay_reparent_total",
                                                                          reason="stall") >= 1


class StallingParent(relay_pb2_grpc.RelayServiceServicer):
    """A parent that serves a real feed of another node's store, then stops sending anything (a hung
    process with its connections open)."""

    def __init__(self, node: Node, records_before_stall: int) -> None:
        self.node = node
        self.left = records_before_stall
        self.stalled = asyncio.Event()

    async def Subscribe(self, request: relay_pb2.SubscribeRequest, context: object) -> None:
        feed = Feed(self.node.store, self.node.bus, request.channel, positions_from_pb(request.positions), window=6,
                    keepalive=FAST.keepalive_seconds, max_backlog=32)
        async for rec in feed.records():
            if self.left <= 0:
                self.stalled.set()
                await asyncio.sleep(3600)
            self.left -= 1
            await context.write(to_pb(rec))  # type: ignore[attr-defined]


async def test_a_stalled_parent_is_replaced_by_a_sibling_without_a_hole(nodes: Callable[..., Node],
                                                                        ca: CertificateAuthority) -> None:
    a = await nodes("edge-a").start()
    a.publish()
    a.commit(0)
    ident = identity(ca, "relay-1")
    stalling = StallingParent(a, records_before_stall=4)  # channel, segment 0, caught up, segment 1
    server = grpc.aio.server()
    relay_pb2_grpc.add_RelayServiceServicer_to_server(stalling, server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(ident))
    await server.start()
    try:
        r2 = await nodes("relay-2", directory=StaticDirectory({CHANNEL: [a.peer]})).start()
        b = await nodes("edge-b", directory=StaticDirectory(
            {CHANNEL: [Peer("relay-1", f"127.0.0.1:{port}"), r2.peer]})).start()
        assert await b.manager.request(CHANNEL) is Availability.WAITED
        stalls = metric("edged_relay_reparent_total", reason="stall")
        for seq in range(1, 6):
            a.commit(seq)
            await asyncio.sleep(0.2)
        assert stalling.stalled.is_set()
        await until(lambda: b.seqs() == [0, 1, 2, 3, 4, 5], 10, "every segment via the sibling")
        assert b.manager.subscriptions()[CHANNEL] == "relay-2"
        assert metric("edged_relay_reparent_total", reason="stall") == stalls + 1
        assert ("news", ("relay-1",)) in b.directory.asked
    finally:
        await server.stop(0)


async def test_position_gone_restarts_at_the_live_window(nodes: Callable[..., Node]) -> None:
    a = await nodes("edge-a").start()
    a.publish()
    for seq in range(40, 50):
        a.commit(seq)
    b = await nodes("edge-b", directory=StaticDirectory({CHANNEL: [a.peer]})).start()
    b.store.update_channel(CHANNEL, renditions=[{"name": "source"}], live=True)
    b.commit(3)  # an old copy: segment 4 is long gone from the parent
    gone = metric("edged_relay_resume_total", result="gone")
    assert await b.manager.request(CHANNEL) in (Availability.WAITED, Availability.READY)
    await until(lambda: b.seqs()[-1] == 49, 5, "the live window")
    assert b.seqs() == [3, *range(44, 50)]  # never a number reused, the hole stays a hole
    assert metric("edged_relay_resume_total", result="gone") == gone + 1


async def test_linger_drops_the_subscription_after_the_last_request(nodes: Callable[..., Node]) -> None:
    a = await nodes("edge-a").start()
    a.publish()
    a.commit(0)
    cfg = dataclasses.replace(FAST, linger_seconds=0.5)
    b = await nodes("edge-b", cfg=cfg, directory=StaticDirectory({CHANNEL: [a.peer]})).start()
    assert await b.manager.request(CHANNEL) is Availability.WAITED
    assert a.server is not None
    await until(lambda: a.server is not None and a.server.children(CHANNEL) == 0, 10, "the linger drop")
    assert CHANNEL not in b.manager.subscriptions() and CHANNEL not in b.directory.reported
    info = b.store.channel(CHANNEL) or {}
    assert info["live"] is False  # a stale copy is never served as live
    assert b.seqs() == [0]  # the segments stay until normal eviction
    # the next request subscribes again
    assert await b.manager.request(CHANNEL) is Availability.WAITED
    assert (b.store.channel(CHANNEL) or {})["live"] is True


async def test_unknown_channel_is_not_found_and_a_channel_live_nowhere_is_absent(
        nodes: Callable[..., Node]) -> None:
    a = await nodes("edge-a").start()
    b = await nodes("edge-b", directory=StaticDirectory({"nosuch": [a.peer]})).start()
    with pytest.raises(ChannelNotFound):
        async for _ in b.client().subscribe(a.address, "edge-a", "nosuch", {}):
            pass
    assert await b.manager.request("nosuch") is Availability.ABSENT
    assert await b.manager.request("other") is Availability.ABSENT  # the directory names no parent


async def _read_all(client: RelayClient, address: str, node_id: str) -> None:
    async for _ in client.subscribe(address, node_id, CHANNEL, {}):
        pass


async def test_clients_without_a_fleet_certificate_are_refused(nodes: Callable[..., Node], tmp_path: Path,
                                                               ca: CertificateAuthority) -> None:
    a = await nodes("edge-a").start()
    a.publish()
    a.commit(0)
    other_ca = CertificateAuthority.load_or_create(tmp_path / "other-ca")
    stranger = identity(other_ca, "edge-x")
    # a certificate from another CA, trusting ours: the parent refuses it in the handshake
    foreign = RelayClient(FleetIdentity("edge-x", stranger.key_pem, stranger.cert_pem, ca.cert_pem),
                          max_record_bytes=FAST.max_record_bytes, stall_timeout=2)
    with pytest.raises(ParentLost, match="UNAVAILABLE"):
        await _read_all(foreign, a.address, "edge-a")
    # no client certificate at all
    async with grpc.aio.secure_channel(a.address, grpc.ssl_channel_credentials(ca.cert_pem),
                                       options=[("grpc.ssl_target_name_override", "edge-a")]) as ch:
        call = relay_pb2_grpc.RelayServiceStub(ch).Subscribe(relay_pb2.SubscribeRequest(channel=CHANNEL))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(call.read(), 5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # an enrolled node naming a parent that is not the one it dialled does not trust the answer
    b = await nodes("edge-b").start()
    with pytest.raises(ParentLost, match="UNAVAILABLE"):
        await _read_all(b.client(), a.address, "edge-c")
    # a path through the parent itself (a loop) is refused
    with pytest.raises(ParentRefused, match="FAILED_PRECONDITION"):
        async for _ in b.client().subscribe(a.address, "edge-a", CHANNEL, {}, ("edge-b", "edge-a")):
            pass
    assert a.server is not None and a.server.children(CHANNEL) == 0


async def test_a_child_that_stops_reading_is_dropped_and_others_go_on(nodes: Callable[..., Node]) -> None:
    a = await nodes("edge-a").start()
    a.publish()
    a.commit(0)
    b = await nodes("edge-b", directory=StaticDirectory({CHANNEL: [a.peer]})).start()
    assert await b.manager.request(CHANNEL) is Availability.WAITED
    dropped = metric("edged_relay_children_dropped_total", reason="send_timeout") + metric(
        "edged_relay_children_dropped_total", reason="slow")
    stuck = await nodes("edge-stuck").start()
    creds = grpc.ssl_channel_credentials(stuck.ident.ca_pem, stuck.ident.key_pem, stuck.ident.cert_pem)
    async with grpc.aio.secure_channel(a.address, creds, options=[("grpc.ssl_target_name_override", "edge-a")]) as ch:
        call = relay_pb2_grpc.RelayServiceStub(ch).Subscribe(relay_pb2.SubscribeRequest(channel=CHANNEL))
        first = await call.read()  # subscribed; from now on it reads nothing
        assert first.kind in (int(records.Kind.CHANNEL), int(records.Kind.RESYNC))
        assert a.server is not None
        await until(lambda: a.server is not None and a.server.children(CHANNEL) == 2, 5, "both children")
        for seq in range(1, 40):  # big segments fill the stuck child's flow-control window
            a.commit(seq, size=512 * 1024)
            await asyncio.sleep(0.02)
        await until(lambda: a.server is not None and a.server.children(CHANNEL) == 1, 15, "the stuck child dropped")
        call.cancel()
    total = metric("edged_relay_children_dropped_total", reason="send_timeout") + metric(
        "edged_relay_children_dropped_total", reason="slow")
    assert total == dropped + 1
    await until(lambda: b.seqs() == list(range(40)), 10, "every segment at the child that reads")


async def test_an_ingest_edge_nobody_can_dial_pushes_up_to_a_relay_node(nodes: Callable[..., Node]) -> None:
    # the controller names the relay node's parent without an address: nobody can dial it, it pushes
    r = await nodes("relay-1", directory=StaticDirectory({CHANNEL: [Peer("edge-a", "")]})).start()
    directory = StaticDirectory()
    directory.pushes[CHANNEL] = r.peer
    a = await nodes("edge-a", directory=directory).start()
    await a.stop_server()  # nobody can dial it
    a.publish()
    for seq in range(3):
        a.commit(seq)
    early = asyncio.create_task(r.manager.request(CHANNEL))  # a viewer on the relay node before the push
    await asyncio.sleep(0.3)
    assert not early.done()
    a.pusher.reconcile()  # edged/app.py calls it on every stream start and relay map change
    await until(lambda: r.seqs() == [0, 1, 2] and r.server is not None and r.server.pushed(CHANNEL), 5,
                "the pushed segments at the relay node")
    assert await early is Availability.WAITED
    assert directory.reported[CHANNEL] == ("push", "relay-1", 0)
    b = await nodes("edge-b", directory=StaticDirectory({CHANNEL: [r.peer]})).start()
    assert await b.manager.request(CHANNEL) is Availability.WAITED  # served below the relay node
    assert await r.manager.request(CHANNEL) is Availability.LOCAL  # the relay node asks nobody for it
    a.commit(3)
    await until(lambda: b.seqs() == [0, 1, 2, 3], 5, "a live segment, pushed then relayed")
    a.end()
    await until(lambda: (b.store.channel(CHANNEL) or {}).get("live") is False, 5, "the end below the relay node")
    await until(lambda: CHANNEL not in directory.reported and r.server is not None and not r.server.pushed(CHANNEL),
                5, "the push to end with the stream")


async def test_made_up_channel_names_do_not_become_a_controller_call_each(nodes: Callable[..., Node]) -> None:
    b = await nodes("edge-b").start()  # its directory names no parent for anything
    began = time.monotonic()
    got = [await b.manager.request(f"made-up-{i}") for i in range(200)]
    elapsed = time.monotonic() - began
    assert set(got) == {Availability.ABSENT, Availability.UNAVAILABLE} and Availability.UNAVAILABLE in got
    # the controller was asked at most a burst's worth plus the refill over the time it took
    assert len(b.directory.asked) <= manager.NEW_BURST + manager.NEW_PER_SECOND * elapsed + 1
    assert got.count(Availability.ABSENT) == len(b.directory.asked)
    assert await b.manager.request("made-up-0") is Availability.ABSENT  # remembered: not asked again
    assert len(b.directory.asked) == got.count(Availability.ABSENT)


async def test_a_relay_port_in_use_is_an_error_not_a_crash(nodes: Callable[..., Node]) -> None:
    a = await nodes("edge-a").start()
    b = nodes("edge-b")
    with pytest.raises(OSError, match=f"cannot listen for the relay on 127.0.0.1:{a.port}"):
        await b.serve(a.port)  # edged/app.py logs it and runs on without a relay listener
