"""Hostile RTMP peers (raw sockets on loopback) against a real edged: memory, connection caps, floods.

Each test states the property it checks and prints the figures the issue's closing note records
(run with -s to see them): connections the attackers held, honest work served meanwhile, and the
edged process's RSS (VmRSS) and open descriptors before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from pathlib import Path

import aiohttp

from edged.protocols.rtmp import amf0
from tests.integration.conformance.rtmp_peers import (
    chunk,
    close_all,
    closed_by_server,
    connect_command,
    eventually,
    handshaked,
    metric,
    open_fds,
    open_from,
    ping_request,
    publish,
    rss_kib,
    still_open,
)
from tests.integration.procs import EdgeProcess, ffmpeg_publish, http_get, wait_for

KEY = "honest-key"


def _edge(tmp_path: Path, rtmp: dict[str, object], channels: dict[str, str] | None = None) -> EdgeProcess:
    conf = tmp_path / "edged.toml"
    conf.write_text("[rtmp]\n" + "".join(f"{k} = {v!r}\n" for k, v in rtmp.items()))
    return EdgeProcess(tmp_path / "edge", channels or {"demo": KEY},
                       extra=["--no-srt", "--no-transcode", "--config", str(conf)], hls_format="ts")


def _pid(edge: EdgeProcess) -> int:
    assert edge.proc is not None
    return edge.proc.pid


def _metrics(edge: EdgeProcess) -> str:
    return http_get(edge.http + "/metrics")[2].decode()


# --- memory before authentication --------------------------------------------------------------------

HOLDERS = 100  # attackers that buffer as much as the pre-publish budget lets them, and hold it
GREEDY = 20  # attackers that try what used to work: partial messages up to the 8 MiB message cap
RSS_BOUND_KIB = 20 * 1024  # for all 100 together (~200 KiB each); before the budget they could hold ~3.2 GB


async def test_strangers_cannot_make_edged_buffer_much(tmp_path: Path, stop_later: list[EdgeProcess]) -> None:
    """100 handshaked peers that never publish, each holding partial messages on three chunk streams,
    grow edged's RSS by less than RSS_BOUND_KIB in all; peers asking for more are closed with a reason."""
    edge = _edge(tmp_path, {"handshake_timeout": 30.0, "max_unauthenticated": 200,
                            "max_unauthenticated_per_address": 200})
    stop_later.append(edge.start())
    pid = _pid(edge)
    await asyncio.sleep(1.0)  # let start-up allocations settle
    rss0, fds0 = rss_kib(pid), open_fds(pid)

    set_chunk_size = chunk(2, 1, (4096).to_bytes(4, "big"))
    # three messages of 30000 bytes, two 4096-byte chunks of each sent: 24 KiB held, under the 32 KiB budget
    held = set_chunk_size + b"".join(
        chunk(csid, 20, bytes(8192), length=30000, size=4096)[: 12 + 4096 + 1 + 4096] for csid in (3, 4, 5))
    holders: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    greedy: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(HOLDERS):
            r, w = await handshaked(edge.rtmp_port)
            w.write(held)
            holders.append((r, w))
        for _ in range(GREEDY):
            r, w = await handshaked(edge.rtmp_port)
            w.write(set_chunk_size + b"".join(
                chunk(csid, 9, bytes(65536), length=8 * 1024 * 1024, size=4096) for csid in (3, 4, 5)))
            greedy.append((r, w))
        for _, w in holders + greedy:
            with contextlib.suppress(ConnectionError):
                await w.drain()
        closed = await asyncio.gather(*(closed_by_server(r, 10) for r, _ in greedy))
        await asyncio.sleep(1.0)  # the holders' bytes are all read by now
        rss1, fds1 = rss_kib(pid), open_fds(pid)
        holding = sum(still_open(r, w) for r, w in holders)
    finally:
        await close_all([w for _, w in holders + greedy])
    await eventually(lambda: open_fds(pid) <= fds0 + 2, 10, "edged to close the attackers' descriptors")
    rss2, fds2 = rss_kib(pid), open_fds(pid)
    print(f"\nFIGURES memory-before-auth: holders held {holding}/{HOLDERS} connections with 24 KiB partials each, "
          f"{sum(closed)}/{GREEDY} greedy peers closed; RSS {rss0} -> {rss1} KiB (+{rss1 - rss0}) while held, "
          f"{rss2} KiB after; fds {fds0} -> {fds1} -> {fds2}")

    assert holding == HOLDERS  # the budget let them stay: this is what they can hold, not what we cut
    assert all(closed)
    assert rss1 - rss0 < RSS_BOUND_KIB
    wait_for(lambda: edge.log().count("over budget:") >= 1, 5, "the reason in the log")
    assert "exceeds the 32768-byte cap" in edge.log()
    assert metric(_metrics(edge), "edged_rtmp_rejected_total", reason="budget_exceeded") >= GREEDY


# --- one client reconnecting in a loop against the connection cap -----------------------------------

ATTACKERS = 40  # concurrent reconnect loops, all from one source address (127.0.0.2)
HONEST_PUBLISHES = 3  # ffmpeg publishes from 127.0.0.1, one after another, during the attack


async def test_one_reconnecting_client_cannot_hold_the_connection_cap(
        tmp_path: Path, stop_later: list[EdgeProcess]) -> None:
    """An unauthenticated client reconnecting as fast as it is refused holds at most its per-address share;
    every honest publish meanwhile is accepted, and the refusals are counted, not logged one by one."""
    per_address = 8
    edge = _edge(tmp_path, {"max_connections": 60, "max_unauthenticated": 30,
                            "max_unauthenticated_per_address": per_address, "handshake_timeout": 3.0})
    stop_later.append(edge.start())
    pid = _pid(edge)
    rss0, fds0 = rss_kib(pid), open_fds(pid)
    stop = asyncio.Event()
    attempts = refused = held_now = held_max = 0

    async def attacker() -> None:
        nonlocal attempts, refused, held_now, held_max
        while not stop.is_set():
            try:
                r, w = await open_from(edge.rtmp_port, "127.0.0.2")
            except OSError:
                await asyncio.sleep(0.05)
                continue
            attempts += 1
            try:
                w.write(b"\x03")  # C0, then nothing: hold the slot until the handshake timeout
                if await closed_by_server(r, 0.3):
                    refused += 1
                    await asyncio.sleep(0.05)
                    continue
                held_now += 1
                held_max = max(held_max, held_now)
                stop_wait = asyncio.ensure_future(stop.wait())
                closed = asyncio.ensure_future(closed_by_server(r, 10))
                await asyncio.wait((stop_wait, closed), return_when=asyncio.FIRST_COMPLETED)
                stop_wait.cancel()
                closed.cancel()
                held_now -= 1
            finally:
                w.transport.abort()

    tasks = [asyncio.create_task(attacker()) for _ in range(ATTACKERS)]
    accepted = 0
    try:
        await asyncio.sleep(1.0)  # the attack is under way before the first encoder arrives
        for _ in range(HONEST_PUBLISHES):
            before = edge.log().count("channel=demo publishing")
            enc = ffmpeg_publish(edge.rtmp_url(KEY), 2, size="320x240")
            _, err = await asyncio.to_thread(enc.communicate, timeout=30)
            assert enc.returncode == 0, err.decode(errors="replace")
            accepted += edge.log().count("channel=demo publishing") - before
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0.5)
    await eventually(lambda: open_fds(pid) <= fds0 + 2, 10, "edged to close the attackers' descriptors")
    rss1, fds1 = rss_kib(pid), open_fds(pid)
    text = _metrics(edge)
    from_address = metric(text, "edged_rtmp_rejected_total", reason="too_many_from_address")
    log = edge.log()
    refusal_lines = log.count("refused: rtmp.max_unauthenticated_per_address")
    warnings = log.count(" WARNING ")
    print(f"\nFIGURES reconnect-loop: {attempts} attacker connections, {refused} refused at once "
          f"({from_address:g} counted too_many_from_address), at most {held_max} held at a time; "
          f"honest publishes accepted {accepted}/{HONEST_PUBLISHES}; {refusal_lines} refusal log lines, "
          f"{warnings} warnings in all; RSS {rss0} -> {rss1} KiB; fds {fds0} -> {fds1}")

    assert accepted == HONEST_PUBLISHES
    assert held_max <= per_address
    assert refused >= 50 and from_address >= refused  # the attack was pressing on the cap all along
    assert 1 <= refusal_lines <= 4  # one line per 10 s interval, with a count of the rest
    assert "more like it" in log or refusal_lines == 1


# --- control-message floods and the shared loop ------------------------------------------------------

FLOODERS = 30  # unauthenticated connections sending Ping Requests as fast as they can, reconnecting
FLOOD_SECONDS = 6.0
PINGS = b"".join(ping_request(i) for i in range(500))  # 9 KB per write


async def test_control_floods_do_not_starve_viewers_or_publishers(
        tmp_path: Path, stop_later: list[EdgeProcess]) -> None:
    """Ping floods before authentication end each flooder at the pre-publish message budget, a flood after
    publish ends at the control-message rate; meanwhile every viewer request is answered and the honest
    publisher keeps adding segments. (The flooders share the honest encoder's address, so the per-address
    cap is raised: this test is about the loop, not about admission.)"""
    edge = _edge(tmp_path, {"max_unauthenticated_per_address": 64}, {"demo": KEY, "flood": "flood-key"})
    stop_later.append(edge.start())
    pid = _pid(edge)
    honest = ffmpeg_publish(edge.rtmp_url(KEY), FLOOD_SECONDS + 10, size="320x240")
    playlist_url = f"{edge.http}/live/demo/source/index.m3u8"

    def last_segment() -> int:
        status, _, body = http_get(playlist_url)
        numbers = [int(line[:-3]) for line in body.decode().splitlines() if line.endswith(".ts")]
        return max(numbers) if status == 200 and numbers else -1

    try:
        await asyncio.to_thread(wait_for, lambda: last_segment() >= 0, 20, "the honest publisher's first segment")
        rss0, fds0 = rss_kib(pid), open_fds(pid)
        first_seen = last_segment()
        stop = asyncio.Event()
        flood_closed = 0

        async def flooder() -> None:
            nonlocal flood_closed
            while not stop.is_set():
                try:
                    r, w = await handshaked(edge.rtmp_port)
                    w.write(connect_command())
                    while not stop.is_set() and still_open(r, w):
                        w.write(PINGS)
                        await w.drain()
                except (ConnectionError, asyncio.IncompleteReadError):
                    pass
                else:
                    w.transport.abort()
                    if stop.is_set():
                        return
                flood_closed += 1

        async def viewer(http: aiohttp.ClientSession, out: list[tuple[int, float]]) -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                async with http.get(playlist_url) as resp:
                    await resp.read()
                    out.append((resp.status, time.perf_counter() - t0))
                await asyncio.sleep(0.05)

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
            quiet: list[tuple[int, float]] = []
            for _ in range(20):
                t0 = time.perf_counter()
                async with http.get(playlist_url) as resp:
                    await resp.read()
                    quiet.append((resp.status, time.perf_counter() - t0))
            r_auth, w_auth, _ = await publish(edge.rtmp_port, "flood-key")
            during: list[tuple[int, float]] = []
            tasks = [asyncio.create_task(flooder()) for _ in range(FLOODERS)]
            tasks.append(asyncio.create_task(viewer(http, during)))
            with contextlib.suppress(ConnectionError):
                for _ in range(10):  # 5000 pings after publish: far past the 2 s burst at 50/s
                    w_auth.write(PINGS)
                    await w_auth.drain()
            auth_closed = await closed_by_server(r_auth, 10)
            w_auth.transport.abort()
            await asyncio.sleep(FLOOD_SECONDS)
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        live = edge.health()["live_channels"]
        advanced = last_segment() - first_seen
        await eventually(lambda: open_fds(pid) <= fds0 + 2, 10, "edged to close the flooders' descriptors")
        rss1, fds1 = rss_kib(pid), open_fds(pid)
    finally:
        honest.kill()
        honest.communicate()
    log = edge.log()
    budget_closes = metric(_metrics(edge), "edged_rtmp_rejected_total", reason="budget_exceeded")
    quiet_ms = [t * 1000 for _, t in quiet]
    during_ms = [t * 1000 for _, t in during]
    print(f"\nFIGURES control-flood: {FLOODERS} flooders made {flood_closed} connections, {budget_closes:g} ended "
          f"over budget; viewer playlist {len(during)} requests during the flood, all "
          f"{'200' if all(s == 200 for s, _ in during) else 'NOT 200'}: median {statistics.median(during_ms):.1f} ms, "
          f"max {max(during_ms):.1f} ms (quiet: median {statistics.median(quiet_ms):.1f} ms, "
          f"max {max(quiet_ms):.1f} ms); honest publisher +{advanced} segments; RSS {rss0} -> {rss1} KiB; "
          f"fds {fds0} -> {fds1}")

    assert all(status == 200 for status, _ in quiet + during) and len(during) >= 10
    assert auth_closed
    assert "channel=flood closed: over budget: non-media messages over the rate budget" in log
    assert "more than 64 messages before publishing" in log
    assert flood_closed >= FLOODERS and budget_closes >= FLOODERS
    assert "demo" in live and advanced >= 1  # the honest publisher kept streaming through it


async def test_a_flood_packed_behind_the_publish_is_rate_limited(tmp_path: Path,
                                                                 stop_later: list[EdgeProcess]) -> None:
    """connect, createStream, publish and 1500 pings in one write: the rate applies from the accept on."""
    edge = _edge(tmp_path, {}, {"demo": KEY})
    stop_later.append(edge.start())
    r, w = await handshaked(edge.rtmp_port)
    create = chunk(3, 20, amf0.encode("createStream", 2.0, None))
    publish_cmd = chunk(8, 20, amf0.encode("publish", 0.0, None, KEY, "live"), stream_id=1)
    w.write(connect_command() + create + publish_cmd + PINGS * 3)  # 1500 pings, all in one read
    with contextlib.suppress(ConnectionError):
        await w.drain()
    assert await closed_by_server(r, 10)
    w.transport.abort()
    await eventually(lambda: "closed: over budget: non-media messages over the rate budget" in edge.log(), 10,
                     "the reason in the log")
    assert "channel=demo publishing" in edge.log()
