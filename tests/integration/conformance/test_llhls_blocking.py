"""LL-HLS blocking over real sockets: 2,000 concurrent blocking playlist requests on one rendition (a
bounded aiohttp client) are all answered after one part commit, the waiters return to 0 and the
process's memory stays bounded; and a relaying edge answers blocking requests from its own store, woken
by the parts its relay applies (blocking never crosses the fleet)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import m3u8
import pytest

from edged.config import Config, HlsConfig, HttpConfig
from edged.http.app import HttpFront
from edged.relay.commits import CommitBus
from edged.store.segments import SegmentStore
from originctl.server.enrollment import CertificateAuthority
from tests.integration.relay.harness import CHANNEL as RELAYED
from tests.integration.relay.harness import CmafRendition, Node, StaticDirectory
from tests.integration.relay.test_relay_grpc import FAST, until
from tests.unit.http.llhls_fixture import CHANNEL, Writer

log = logging.getLogger(__name__)
LOAD = 2000


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture
async def front(tmp_path: Path) -> AsyncIterator[tuple[HttpFront, Writer]]:
    store = SegmentStore(tmp_path / "store", 64 << 20)
    bus = CommitBus()
    cfg = Config(http=HttpConfig(listen="127.0.0.1:0", max_connections_per_address=LOAD + 100,
                                 max_connections=LOAD + 200), hls=HlsConfig())
    f = HttpFront(cfg, store, dict, bus=bus)
    await f.start()
    yield f, Writer(store, bus)
    await f.stop()
    store.close()


async def test_two_thousand_blocked_reloads_answered_after_one_commit(front: tuple[HttpFront, Writer]) -> None:
    http, w = front
    w.target = 30  # requests are held up to 3 x TD: 90 s, longer than opening 2,000 connections on a loaded box
    w.start()
    w.segments(3)
    w.part("source", 3)
    url = f"http://127.0.0.1:{http.port}/live/{CHANNEL}/source/index.m3u8?_HLS_msn=3&_HLS_part=1"
    hls = http.hls
    connector = aiohttp.TCPConnector(limit=LOAD, limit_per_host=LOAD)  # bounded: one connection per request
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def one() -> tuple[int, bytes, float]:
            async with session.get(url, headers={"Accept-Encoding": "gzip"}) as resp:
                body = await resp.read()
                return resp.status, body, time.monotonic()

        rss_before = rss_kib()
        tasks = [asyncio.create_task(one()) for _ in range(LOAD)]
        await until(lambda: hls.blocking.blocked(CHANNEL, "source") >= LOAD, 60, f"{LOAD} blocked requests")
        rss_blocked = rss_kib()
        reads, renders = hls.blocking.reads, hls.memo.renders
        committed = time.monotonic()
        w.part("source", 3)
        answers = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    delays = sorted(t - committed for _, _, t in answers)
    log.info("%d blocked reloads: answered %.1f ms (first) .. %.1f ms (p50) .. %.1f ms (last) after the commit; "
             "RSS %d KiB before, %d KiB with all blocked (+%d KiB), %d state read(s), %d render(s)", LOAD,
             delays[0] * 1000, delays[len(delays) // 2] * 1000, delays[-1] * 1000, rss_before, rss_blocked,
             rss_blocked - rss_before, hls.blocking.reads - reads, hls.memo.renders - renders)
    assert [s for s, _, _ in answers] == [200] * LOAD
    bodies = {b for _, b, _ in answers}
    assert len(bodies) == 1
    m = m3u8.loads(bodies.pop().decode())  # the client undid the gzip
    assert [p.uri for p in m.segments[-1].parts] == ["3.0.m4s", "3.1.m4s"]
    assert hls.blocking.blocked() == 0
    assert hls.blocking.reads - reads == 1 and hls.memo.renders - renders == 1
    # generous: both ends of 2,000 connections live in this process (about 100 KiB per pair at most)
    assert rss_blocked - rss_before < 200 * 1024


@pytest.fixture
async def relayed(tmp_path: Path) -> AsyncIterator[tuple[Node, Node, str]]:
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    a = await Node(tmp_path, ca, "edge-a", FAST).start()
    b = await Node(tmp_path, ca, "edge-b", FAST, StaticDirectory({RELAYED: [a.peer]})).start()
    cfg = Config(http=HttpConfig(listen="127.0.0.1:0"), hls=HlsConfig())
    http = HttpFront(cfg, b.store, dict, b.manager, bus=b.bus)
    await http.start()
    yield a, b, f"http://127.0.0.1:{http.port}/live/{RELAYED}/source"
    await http.stop()
    for n in (b, a):
        with contextlib.suppress(Exception):
            await n.stop()


async def test_a_relaying_edge_answers_blocking_requests_from_its_own_store(
        relayed: tuple[Node, Node, str]) -> None:
    a, b, url = relayed
    a.publish(part_target=0.5)
    src = CmafRendition(a)
    for seq in range(3):
        src.whole(seq)
    src.part(3)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{url}/index.m3u8") as resp:  # the first request subscribes edge B
            assert resp.status == 200
        await until(lambda: (p := b.store.pending(RELAYED, "source")) is not None and len(p.parts) == 1, 10,
                    "edge B holds part 3.0")
        held = asyncio.create_task(s.get(f"{url}/index.m3u8?_HLS_msn=3&_HLS_part=1"))
        hinted = asyncio.create_task(s.get(f"{url}/3.1.m4s"))
        await asyncio.sleep(0.2)
        assert not held.done() and not hinted.done()
        committed = time.monotonic()
        data = src.part(3)  # at the ingest edge; edge B's applier commits it there and tells B's bus
        async with await asyncio.wait_for(held, 10) as resp:
            text = await resp.text()
            log.info("relaying edge answered the blocked reload %.1f ms after the ingest edge's commit",
                     (time.monotonic() - committed) * 1000)
            assert resp.status == 200 and resp.headers["Cache-Control"].startswith("public, max-age=")
            assert int(resp.headers["Age"]) >= 0
            assert [p.uri for p in m3u8.loads(text).segments[-1].parts] == ["3.0.m4s", "3.1.m4s"]
        async with await asyncio.wait_for(hinted, 10) as resp:
            assert resp.status == 200 and await resp.read() == data and "Age" in resp.headers
