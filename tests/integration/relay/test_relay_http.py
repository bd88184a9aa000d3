"""The HTTP front of a relaying edge: identical playlists and bytes whatever its own [hls] config, the first
request held until the relay is ready, 503 + Retry-After when it is not, 404 for a channel live nowhere."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import REGISTRY

from edged.config import Config, HlsConfig, HttpConfig, RelayConfig
from edged.http.app import HttpFront
from originctl.server.enrollment import CertificateAuthority
from tests.integration.relay.harness import CHANNEL, Node, Peer, StaticDirectory
from tests.integration.relay.test_relay_grpc import FAST, until


def requests(kind: str, result: str) -> float:
    return REGISTRY.get_sample_value("edged_http_requests_total", {"kind": kind, "result": result}) or 0.0


@pytest.fixture
async def fronts(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    made: list[Node] = []
    http: list[HttpFront] = []

    async def make(node_id: str, hls: HlsConfig, directory: StaticDirectory | None = None,
                   gate: bool = True, relay: RelayConfig = FAST) -> tuple[Node, str]:
        node = await Node(tmp_path, ca, node_id, relay, directory, window=hls.window).start()
        made.append(node)
        cfg = Config(http=HttpConfig(listen="127.0.0.1:0"), hls=hls)
        front = HttpFront(cfg, node.store, dict, node.manager if gate else None)
        await front.start()
        http.append(front)
        return node, f"http://127.0.0.1:{front.port}"

    yield make
    for f in http:
        await f.stop()
    for n in reversed(made):
        with contextlib.suppress(Exception):
            await n.stop()


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str], bytes]:
    async with session.get(url) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_a_relaying_edge_serves_what_the_ingest_edge_serves(fronts: Callable[..., object]) -> None:
    a, url_a = await fronts("edge-a", HlsConfig(window=4), gate=False)  # type: ignore[operator, misc]
    a.publish()
    for seq in range(8):
        a.commit(seq, discontinuity=seq == 5, disc_seq=1 if seq >= 5 else 0)
    # edge B's own playlist settings differ: what it serves must not
    b, url_b = await fronts("edge-b", HlsConfig(window=10, max_segment_seconds=12, reconnect_grace_seconds=1),
                            StaticDirectory({CHANNEL: [a.peer]}))  # type: ignore[operator, misc]
    waited = requests("master", "relay_wait")
    async with aiohttp.ClientSession() as s:
        status, _, master_b = await _get(s, f"{url_b}/live/{CHANNEL}/master.m3u8")  # the first request waits
        assert status == 200 and requests("master", "relay_wait") == waited + 1
        assert master_b == (await _get(s, f"{url_a}/live/{CHANNEL}/master.m3u8"))[2]
        a.commit(8, disc_seq=1)
        await until(lambda: b.seqs()[-1:] == [8], 5, "segment 8 at edge B")
        media_a = (await _get(s, f"{url_a}/live/{CHANNEL}/source/index.m3u8"))[2]
        status, _, media_b = await _get(s, f"{url_b}/live/{CHANNEL}/source/index.m3u8")
        assert status == 200 and media_b == media_a
        assert b"#EXT-X-MEDIA-SEQUENCE:5" in media_a and b"#EXT-X-TARGETDURATION:6" in media_a
        assert b"#EXT-X-DISCONTINUITY\n" in media_a
        for seq in (6, 7, 8):
            st_a, h_a, body_a = await _get(s, f"{url_a}/live/{CHANNEL}/source/{seq}.ts")
            st_b, h_b, body_b = await _get(s, f"{url_b}/live/{CHANNEL}/source/{seq}.ts")
            assert st_a == st_b == 200 and body_a == body_b
            assert "Age" not in h_a and int(h_b["Age"]) >= 0  # a relayed copy says how old it is
        # the stream ends: both edges end the playlist alike (the ingest edge's grace, not B's 1 s)
        a.end(deliberate=False)
        await until(lambda: (b.store.channel(CHANNEL) or {}).get("live") is False, 5, "the end at edge B")
        await asyncio.sleep(1.2)
        media_a = (await _get(s, f"{url_a}/live/{CHANNEL}/source/index.m3u8"))[2]
        media_b = (await _get(s, f"{url_b}/live/{CHANNEL}/source/index.m3u8"))[2]
        assert media_b == media_a and b"#EXT-X-ENDLIST" not in media_b


async def test_not_ready_in_time_is_503_and_live_nowhere_is_404(fronts: Callable[..., object]) -> None:
    # a parent that accepts the TCP connection and never answers the TLS handshake
    held: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda r, w: held.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        b, url_b = await fronts("edge-b", HlsConfig(), StaticDirectory(
            {CHANNEL: [Peer("edge-a", f"127.0.0.1:{port}")]}),
            relay=dataclasses.replace(FAST, start_timeout=0.5))  # type: ignore[operator, misc]
        before = requests("playlist", "503"), requests("master", "404")
        async with aiohttp.ClientSession() as s:
            status, headers, _ = await _get(s, f"{url_b}/live/{CHANNEL}/source/index.m3u8")
            assert status == 503 and headers["Retry-After"] == "1"
            status, _, _ = await _get(s, f"{url_b}/live/elsewhere/master.m3u8")
            assert status == 404
        assert (requests("playlist", "503"), requests("master", "404")) == (before[0] + 1, before[1] + 1)
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


async def test_a_segment_just_past_the_newest_waits_for_it(fronts: Callable[..., object]) -> None:
    a, url_a = await fronts("edge-a", HlsConfig(), gate=False)  # type: ignore[operator, misc]
    a.publish()
    for seq in range(4):
        a.commit(seq)
    b, url_b = await fronts("edge-b", HlsConfig(), StaticDirectory({CHANNEL: [a.peer]}))  # type: ignore[operator, misc]
    async with aiohttp.ClientSession() as s:
        assert (await _get(s, f"{url_b}/live/{CHANNEL}/master.m3u8"))[0] == 200
        # a player that switched from an edge which already listed segment 4 asks for it here
        early = asyncio.create_task(_get(s, f"{url_b}/live/{CHANNEL}/source/4.ts"))
        await asyncio.sleep(0.3)
        assert not early.done()
        payload = a.commit(4)
        status, _, body = await early
        assert status == 200 and body == payload
        assert (await _get(s, f"{url_b}/live/{CHANNEL}/source/9.ts"))[0] == 404  # far ahead: no wait
