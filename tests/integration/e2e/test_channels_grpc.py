"""Channels, publish authorization, placement, streams and viewer routing: controller and edge agent in one
process over real gRPC + mutual TLS on 127.0.0.1 (the agent stands in for edged; its status is a dict)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edged.agent.link import Agent
from edged.agent.status import NodeStatus
from edged.config import load
from edged.errors import AuthError
from originctl.errors import Conflict, NotFound
from tests.integration.e2e.test_controller_grpc import HEARTBEAT, Fleet, wait_for

CACHE = 1.0  # s: origin.auth_cache_seconds for these edges


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


async def eventually(check: Callable[[], Awaitable[Any]], what: str, within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {value!r})")
        await asyncio.sleep(0.05)


async def route_when(fleet: Fleet, channel: str, ip: str, pred: Callable[[Any], bool], what: str) -> Any:
    async def check() -> Any:
        route = await fleet.admin(lambda c: c.route(channel, ip))
        return route if pred(route) else None
    return await eventually(check, what)


class FakeEdge:
    """An agent whose node status (live channels, viewers) the test sets."""

    def __init__(self, fleet: Fleet, name: str, prefixes: list[str], public_url: str) -> None:
        self.fleet, self.name = fleet, name
        self.live: tuple[str, ...] = ()
        self.cfg = load(None, {
            "data_dir": str(fleet.tmp / name),
            "origin": {"address": fleet.origin, "heartbeat_seconds": HEARTBEAT, "auth_cache_seconds": CACHE},
            "node": {"name": name, "advertise": False, "prefixes": prefixes, "latitude": 48.86, "longitude": 2.35,
                     "public_url": public_url},
        })
        self.agent: Agent | None = None

    def status(self) -> NodeStatus:
        return NodeStatus(http_url="http://unused", active_streams=len(self.live), live_channels=self.live)

    async def start(self, token: str = "") -> Agent:
        from dataclasses import replace

        cfg = replace(self.cfg, origin=replace(self.cfg.origin, enroll_token=token))
        self.agent = Agent(cfg, self.status)
        self.fleet.agents.append(self.agent)
        await self.agent.start()
        await wait_for(lambda: self.agent is not None and self.agent.authorizer.fresh() and self.agent.connected,
                       f"{self.name}: linked with a key table")
        return self.agent

    def started(self, channel: str, reason: str) -> None:
        assert self.agent is not None
        self.agent.async_stream_started(channel, "rtmp", time_unix_ms=int(time.time() * 1000), transcode=False,
                                        encoder="", renditions=("source",), reason=reason, by_controller=True)
        self.live = (*self.live, channel)


async def test_keys_placement_streams_routes_and_outage(fleet: Fleet) -> None:
    edge = FakeEdge(fleet, "edge-a", ["10.1.0.0/16"], "http://edge-a.test:8080")
    agent = await edge.start(await fleet.token())
    auth = agent.authorizer

    _, key = await fleet.admin(lambda c: c.create_channel("news"))
    with pytest.raises(Conflict, match="exists"):
        await fleet.admin(lambda c: c.create_channel("news"))
    await wait_for(lambda: auth.lookup(key) == "news", "the new key pushed to the edge")
    assert await auth.authorize(key, protocol="rtmp", remote="192.0.2.9:5000") == "news"
    mode, reason = auth.placement_for("news") or ("", "")
    assert mode == "passthrough" and "transcoding is off on the node" in reason

    # the edge's stream event and reports make it a live stream, with its placement and the reason
    edge.started("news", reason)
    streams = await eventually(lambda: fleet.admin(lambda c: c.streams()), "the stream listed")
    assert [(s.channel, s.node_id, s.mode, s.protocol, s.decided_by_controller) for s in streams] == [
        ("news", agent.node_id, "passthrough", "rtmp", True)]
    assert "transcoding is off" in streams[0].reason
    channels = await fleet.admin(lambda c: c.channels())
    assert [(c.name, c.live_nodes) for c in channels] == [("news", (agent.node_id,))]

    # viewers: prefix match, else the least loaded; /play answers 302, or JSON
    route = await route_when(fleet, "news", "10.1.2.3", lambda r: r.routed, "a route")
    assert (route.reason, route.node_id, route.url) == ("prefix", agent.node_id,
                                                         "http://edge-a.test:8080/live/news/master.m3u8")
    assert route.detail == "10.1.0.0/16 contains 10.1.2.3"
    play = f"http://127.0.0.1:{fleet.ctl.http_port}/play"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{play}/news", allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == route.url
        async with http.get(f"{play}/news", headers={"Accept": "application/json"}) as r:
            body = await r.json()
            assert r.status == 200 and body["node"] == agent.node_id and body["reason"] == "least-loaded"
            assert body["client_ip"] == "127.0.0.1"
        async with http.get(f"{play}/nope") as r:
            assert r.status == 404 and (await r.json())["error"] == "unknown-channel"

        # a draining node takes no new viewers
        await fleet.admin(lambda c: c.set_draining(agent.node_id, True))
        route = await route_when(fleet, "news", "10.1.2.3", lambda r: not r.routed, "the draining node skipped")
        assert route.reason == "unavailable" and "draining" in route.detail
        async with http.get(f"{play}/news") as r:
            assert r.status == 503 and (await r.json())["reason"] == "unavailable"
        await fleet.admin(lambda c: c.set_draining(agent.node_id, False))
        await route_when(fleet, "news", "10.1.2.3", lambda r: r.routed, "routed again after uncordon")

        # rotation: the old key stops at once (pushed; and the controller refuses it), the new one works
        _, key2 = await fleet.admin(lambda c: c.rotate_channel_key("news"))
        await wait_for(lambda: auth.lookup(key) is None and auth.lookup(key2) == "news", "rotation pushed")
        with pytest.raises(AuthError, match="unknown stream key"):
            await auth.authorize(key, protocol="srt", remote="192.0.2.9:5000")
        assert await auth.authorize(key2, protocol="srt", remote="192.0.2.9:5000") == "news"

        # deletion: the key is revoked everywhere, viewers get 404
        await fleet.admin(lambda c: c.delete_channel("news"))
        await wait_for(lambda: auth.lookup(key2) is None, "revocation pushed")
        with pytest.raises(AuthError):
            await auth.authorize(key2, protocol="rtmp", remote="192.0.2.9:5000")
        with pytest.raises(NotFound):
            await fleet.admin(lambda c: c.rotate_channel_key("news"))
        async with http.get(f"{play}/news") as r:
            assert r.status == 404 and (await r.json())["error"] == "unknown-channel"

    # the edge says the stream ended
    assert agent is not None
    agent.async_stream_ended("news", "rtmp")
    edge.live = ()
    await eventually(lambda: _none_live(fleet), "the stream ended")
    ended = await fleet.admin(lambda c: c.streams(include_ended=True))
    assert [(s.channel, s.end_reason) for s in ended] == [("news", "the publisher stopped")]

    # a controller outage: cached answers for auth_cache_seconds after the link is lost, then refused
    _, key3 = await fleet.admin(lambda c: c.create_channel("sports"))
    await wait_for(lambda: auth.lookup(key3) == "sports", "key pushed")
    await fleet.stop_controller()
    await wait_for(lambda: not agent.connected, "the edge notices")
    lost_at = time.monotonic()
    assert await auth.authorize(key3, protocol="rtmp", remote="192.0.2.9:5000") == "sports"
    assert auth.placement_for("sports") is None  # nobody placed it: the node decides
    await asyncio.sleep(max(0.0, lost_at + CACHE + 0.2 - time.monotonic()))
    with pytest.raises(AuthError, match="expired"):
        await auth.authorize(key3, protocol="rtmp", remote="192.0.2.9:5000")
    await fleet.start_controller()  # channels survive the restart; the edge re-attaches and is served again
    await wait_for(lambda: auth.fresh() and auth.lookup(key3) == "sports", "a fresh key table")
    assert await auth.authorize(key3, protocol="rtmp", remote="192.0.2.9:5000") == "sports"


async def _none_live(fleet: Fleet) -> bool:
    return not await fleet.admin(lambda c: c.streams())


async def test_a_lost_node_has_its_streams_ended_and_reports_reconcile(fleet: Fleet) -> None:
    edge = FakeEdge(fleet, "edge-b", [], "http://edge-b.test:8080")
    agent = await edge.start(await fleet.token())
    _, key = await fleet.admin(lambda c: c.create_channel("music"))
    await wait_for(lambda: agent.authorizer.lookup(key) == "music", "key pushed")
    # live on the edge without a start event (as after a controller outage): the report adds it
    edge.live = ("music",)
    streams = await eventually(lambda: fleet.admin(lambda c: c.streams()), "the reported stream")
    assert (streams[0].channel, streams[0].mode, streams[0].protocol) == ("music", "unknown", "")
    assert "reported live by the edge" in streams[0].reason
    await agent.stop()  # goodbye: the node is lost at once, and its streams end
    await eventually(lambda: _none_live(fleet), "the lost node's stream ended")
    ended = await fleet.admin(lambda c: c.streams(include_ended=True))
    assert ended[0].end_reason.startswith("node lost")


async def test_a_missing_geoip_database_is_a_config_error(tmp_path: Path) -> None:
    from dataclasses import replace

    from originctl.errors import ConfigError
    from originctl.server.app import Controller
    from tests.integration.e2e.test_controller_grpc import serve_cfg

    ctl = Controller(replace(serve_cfg(tmp_path / "origin"), geoip_database=str(tmp_path / "missing.mmdb")))
    with pytest.raises(ConfigError, match="geoip_database: cannot open GeoIP database"):
        await ctl.start()
