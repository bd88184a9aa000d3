"""LL-HLS over HTTP: playlists of a CMAF channel from a real store, delivery directives (400 / at once /
blocked until the commit bus wakes them / 503), delta updates, parts (hinted GETs block), cache headers,
gzip. The store is a real LMDB environment filled by hand as the worker fills it; the client is aiohttp's
test client; playlists are read back with the `m3u8` library."""

from __future__ import annotations

import asyncio
import gzip
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import m3u8
import pytest
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict
from prometheus_client import REGISTRY

from edged.config import Config, HlsConfig
from edged.http.app import HttpFront
from edged.http.hls import split_fragments
from edged.http.lowlatency import accepts_gzip
from edged.relay.commits import CommitBus
from edged.store.segments import SegmentMeta, SegmentStore
from tests.unit.http.llhls_fixture import CHANNEL, PART, Writer, fragment
from tests.unit.protocols.test_llhls import _segment_view, merge

log = logging.getLogger(__name__)
SRC = f"/live/{CHANNEL}/source"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Env:
    def __init__(self, store: SegmentStore, bus: CommitBus, front: HttpFront, client: TestClient) -> None:
        self.store, self.bus, self.front, self.client = store, bus, front, client
        self.w = Writer(store, bus)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = SegmentStore(tmp_path / "store", 64 << 20)
    bus = CommitBus()
    front = HttpFront(Config(hls=HlsConfig()), store, dict, bus=bus)
    client = TestClient(TestServer(front.app), auto_decompress=False)
    await client.start_server()
    yield Env(store, bus, front, client)
    await client.close()
    store.close()


async def get(env: Env, path: str, **headers: str) -> tuple[int, CIMultiDict[str], bytes]:
    async with env.client.get(path, headers=headers) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.read()


async def playlist(env: Env, query: str = "", **headers: str) -> tuple[int, CIMultiDict[str], str]:
    headers.setdefault("Accept-Encoding", "identity")  # aiohttp's client asks for gzip by default
    status, h, body = await get(env, f"{SRC}/index.m3u8{query}", **headers)
    return status, h, body.decode()


async def until_blocked(env: Env, n: int, rendition: str = "source") -> None:
    for _ in range(2000):
        if env.front.hls.blocking.blocked(CHANNEL, rendition) >= n:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{env.front.hls.blocking.blocked(CHANNEL, rendition)} of {n} requests blocked")


async def test_playlist_lists_parts_hint_reports_and_server_control(env: Env) -> None:
    env.w.start()
    env.w.segments(3)
    env.w.part("source", 3)
    env.w.part("source", 3)
    env.w.part("low", 3)
    status, headers, text = await playlist(env)
    assert status == 200 and headers["Cache-Control"] == "max-age=1" and headers["Vary"] == "Accept-Encoding"
    assert headers["Content-Type"].startswith("application/vnd.apple.mpegurl") and "Age" not in headers
    m = m3u8.loads(text)
    assert m.version == 9 and m.target_duration == 1 and m.media_sequence == 0
    assert m.server_control.can_block_reload == "YES"
    assert (m.server_control.part_hold_back, m.server_control.hold_back) == (3 * PART, 3.0)
    assert m.server_control.can_skip_until is None  # a 6-segment window of 1 s is too short for deltas
    assert m.part_inf.part_target == PART
    assert [s.uri for s in m.segments if s.uri] == ["0.m4s", "1.m4s", "2.m4s"]
    assert {s.init_section.uri for s in m.segments if s.uri} == {f"init-{env.w.inits['source']}.mp4"}
    assert [p.uri for p in m.segments[-1].parts] == ["3.0.m4s", "3.1.m4s"]
    assert m.segments[-1].parts[0].independent == "YES" and m.segments[-1].parts[1].independent is None
    assert m.preload_hint.hint_type == "PART" and m.preload_hint.uri == "3.2.m4s"
    assert [(r.uri, r.last_msn, r.last_part) for r in m.rendition_reports] == [("../low/index.m3u8", 3, 0)]
    assert all(s.program_date_time is not None for s in m.segments if s.uri)


async def test_a_ts_channel_is_served_as_before(env: Env) -> None:
    env.store.update_channel(CHANNEL, live=True, renditions=[{"name": "source"}], target_duration=2)
    env.store.put_segment(SegmentMeta(CHANNEL, "source", 0, 2.0, False, 0, 0.0, time.time(), 3, time.time_ns()),
                          b"abc", keep=10)
    status, headers, text = await playlist(env, "?_HLS_msn=9")  # directives mean nothing to a TS playlist
    assert status == 200 and "#EXT-X-PART" not in text and "0.ts" in text and "Vary" not in headers
    status, headers, body = await get(env, f"{SRC}/0.ts")
    assert (status, headers["Content-Type"], body) == (200, "video/mp2t", b"abc")
    assert (await get(env, f"{SRC}/0.m4s"))[0] == 404  # a TS segment is not CMAF


@pytest.mark.parametrize("query", [
    "?_HLS_part=1", "?_HLS_msn=x", "?_HLS_msn=-1", "?_HLS_msn=1&_HLS_part=1.5", "?_HLS_skip=NO",
    "?_HLS_msn=5",  # more than two segments past the last complete one (2)
    "?_HLS_msn=3&_HLS_part=20",  # past the Advance Part Limit (3 / 0.25 s = 12 parts)
])
async def test_bad_directives_are_400_with_a_reason(env: Env, query: str) -> None:
    env.w.start()
    env.w.segments(3)
    before = sample("edged_http_requests_total", kind="playlist", result="4xx")
    status, _, text = await playlist(env, query)
    assert status == 400 and text.strip() and "_HLS_" in text
    assert sample("edged_http_requests_total", kind="playlist", result="4xx") == before + 1


async def test_directives_already_satisfied_or_older_than_the_window_answer_at_once(env: Env) -> None:
    env.w.start()
    env.w.segments(10)  # window 6: segments 4..9
    for query in ("?_HLS_msn=9", "?_HLS_msn=8&_HLS_part=3", "?_HLS_msn=1&_HLS_part=0", "?_HLS_msn=9&_HLS_part=3"):
        status, headers, text = await asyncio.wait_for(playlist(env, query), 5)
        assert status == 200 and m3u8.loads(text).media_sequence == 4, query
        assert headers["Cache-Control"] == "public, max-age=6"  # 6 x TD, for a directive's answer
    assert env.front.hls.blocking.blocked() == 0


async def test_a_blocked_reload_is_answered_once_the_part_commits(env: Env) -> None:
    env.w.start()
    env.w.segments(2)
    env.w.part("source", 2)
    task = asyncio.create_task(playlist(env, "?_HLS_msn=2&_HLS_part=1"))
    await until_blocked(env, 1)
    assert sample("edged_hls_blocked_requests", kind="playlist") >= 1
    env.w.part("low", 2)  # another rendition's commit does not satisfy it
    await asyncio.sleep(0.05)
    assert not task.done()
    committed = time.monotonic()
    env.w.part("source", 2)
    status, headers, text = await asyncio.wait_for(task, 5)
    log.info("blocked reload answered %.1f ms after the part's commit", (time.monotonic() - committed) * 1000)
    assert status == 200 and headers["Cache-Control"] == "public, max-age=6"
    m = m3u8.loads(text)
    assert [p.uri for p in m.segments[-1].parts] == ["2.0.m4s", "2.1.m4s"]
    assert m.preload_hint.uri == "2.2.m4s"
    assert env.front.hls.blocking.blocked() == 0


async def test_a_part_past_the_segments_last_means_the_next_segments_first(env: Env) -> None:
    env.w.start()
    env.w.segments(2)
    task = asyncio.create_task(playlist(env, "?_HLS_msn=1&_HLS_part=4"))  # segment 1 has parts 0..3
    await until_blocked(env, 1)
    env.w.part("source", 2)
    status, _, text = await asyncio.wait_for(task, 5)
    assert status == 200 and m3u8.loads(text).segments[-1].parts[0].uri == "2.0.m4s"


async def test_a_segment_request_waits_for_the_whole_segment(env: Env) -> None:
    env.w.start()
    env.w.segments(2)
    task = asyncio.create_task(playlist(env, "?_HLS_msn=2"))
    await until_blocked(env, 1)
    for _ in range(3):
        env.w.part("source", 2)
        await asyncio.sleep(0.02)
        assert not task.done()
    env.w.segment("source", 2)
    status, _, text = await asyncio.wait_for(task, 5)
    assert status == 200 and [s.uri for s in m3u8.loads(text).segments if s.uri][-1] == "2.m4s"


async def test_a_request_held_past_three_target_durations_is_503(env: Env) -> None:
    env.w.start()
    env.w.segments(2)
    before = sample("edged_hls_blocking_refused_total", reason="timeout")
    started = time.monotonic()
    status, headers, _ = await asyncio.wait_for(playlist(env, "?_HLS_msn=2&_HLS_part=0"), 10)
    log.info("503 after %.2f s (3 x TD = 3 s)", time.monotonic() - started)
    assert status == 503 and headers["Retry-After"] == "1"
    assert sample("edged_hls_blocking_refused_total", reason="timeout") == before + 1
    assert env.front.hls.blocking.blocked() == 0


async def test_past_the_waiter_cap_a_request_is_503_at_once(env: Env) -> None:
    env.w.start()
    env.w.segments(2)
    env.front.hls.blocking.cap = 3
    before = sample("edged_hls_blocking_refused_total", reason="max_blocking_requests")
    held = [asyncio.create_task(playlist(env, "?_HLS_msn=2&_HLS_part=0")) for _ in range(3)]
    await until_blocked(env, 3)
    status, headers, _ = await asyncio.wait_for(playlist(env, "?_HLS_msn=2&_HLS_part=0"), 5)
    assert status == 503 and headers["Retry-After"] == "1"
    assert sample("edged_hls_blocking_refused_total", reason="max_blocking_requests") == before + 1
    # another rendition has its own set
    low = asyncio.create_task(get(env, f"/live/{CHANNEL}/low/index.m3u8?_HLS_msn=2"))
    await until_blocked(env, 1, "low")
    env.w.part("source", 2)
    env.w.segment("low", 2)
    assert [r[0] for r in await asyncio.gather(*held, low)] == [200] * 4


async def test_a_stream_end_answers_every_waiter(env: Env) -> None:
    env.w.start()
    env.w.segments(2)
    tasks = [asyncio.create_task(playlist(env, "?_HLS_msn=3&_HLS_part=0")) for _ in range(5)]
    await until_blocked(env, 5)
    env.w.end()
    for status, _, text in await asyncio.wait_for(asyncio.gather(*tasks), 5):
        assert status == 200 and m3u8.loads(text).is_endlist and "PRELOAD-HINT" not in text


async def test_a_lost_publishers_waiters_are_answered_when_its_grace_ends(env: Env) -> None:
    """No commit says that a reconnect grace ran out: held requests (before and after the loss) are
    answered with the ended playlist then, not with the 3 x TD 503."""
    env.w.target = 10  # held up to 30 s
    env.w.start(reconnect_grace=0.6)
    env.w.segments(2)
    early = asyncio.create_task(playlist(env, "?_HLS_msn=2&_HLS_part=0"))
    await until_blocked(env, 1)
    env.store.update_channel(CHANNEL, live=False, ended=time.time(), ended_deliberately=False)
    env.bus.channel_changed(CHANNEL)
    await asyncio.sleep(0.05)
    assert not early.done()  # within the grace the publisher may come back
    late = asyncio.create_task(playlist(env, "?_HLS_msn=2&_HLS_part=1"))
    await until_blocked(env, 2)
    started = time.monotonic()
    for status, _, text in await asyncio.wait_for(asyncio.gather(early, late), 5):
        assert status == 200 and m3u8.loads(text).is_endlist
    log.info("answered %.0f ms after the block began (grace 600 ms from the loss)",
             (time.monotonic() - started) * 1000)


async def test_one_read_and_one_render_for_many_woken_waiters(env: Env) -> None:
    env.w.start()
    env.w.segments(2)
    hls = env.front.hls
    tasks = [asyncio.create_task(playlist(env, "?_HLS_msn=2&_HLS_part=0")) for _ in range(50)]
    await until_blocked(env, 50)
    reads, renders = hls.blocking.reads, hls.memo.renders
    env.w.part("source", 2)
    answers = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert {a[2] for a in answers} == {answers[0][2]} and answers[0][0] == 200
    assert hls.blocking.reads - reads == 1 and hls.memo.renders - renders == 1


async def test_delta_update_merged_with_the_previous_full_playlist_is_the_full_one(env: Env) -> None:
    env.w.window = 14
    env.w.start()  # 14 x 1 s reaches past 6 x TD + 2 TD: skips advertised
    env.w.segments(12)
    _, _, previous = await playlist(env)
    env.w.segments(16, start=12)
    env.w.part("source", 16)
    _, _, full = await playlist(env)
    for skip in ("YES", "v2"):
        status, _, delta = await playlist(env, f"?_HLS_skip={skip}")
        assert status == 200 and m3u8.loads(full).server_control.can_skip_until == 6.0
        d = m3u8.loads(delta)
        assert d.version == 10 and d.skip.skipped_segments > 0
        assert merge(previous, delta) == _segment_view(m3u8.loads(full))
        assert delta.split("#EXT-X-PRELOAD-HINT")[1] == full.split("#EXT-X-PRELOAD-HINT")[1]
    status, headers, delta = await playlist(env, "?_HLS_msn=16&_HLS_part=0&_HLS_skip=YES")
    assert status == 200 and "#EXT-X-SKIP" in delta and headers["Cache-Control"] == "public, max-age=6"


async def test_a_hinted_part_get_blocks_and_sends_the_same_bytes_as_a_later_get(env: Env) -> None:
    env.w.start()
    env.w.segments(2)
    env.w.part("source", 2)
    _, _, text = await playlist(env)
    hint = m3u8.loads(text).preload_hint.uri
    assert hint == "2.1.m4s"
    task = asyncio.create_task(get(env, f"{SRC}/{hint}"))
    await until_blocked(env, 1)
    assert sample("edged_hls_blocked_requests", kind="part") >= 1
    committed = time.monotonic()
    payload = env.w.part("source", 2)
    status, headers, body = await asyncio.wait_for(task, 5)
    log.info("hinted part sent %.1f ms after its commit", (time.monotonic() - committed) * 1000)
    assert status == 200 and body == payload
    assert headers["Content-Type"] == "video/mp4" and headers["Cache-Control"] == "public, max-age=86400, immutable"
    assert (await get(env, f"{SRC}/{hint}"))[2] == body
    # the next segment's first part counts among the next three too; one far ahead or long gone is 404
    assert (await get(env, f"{SRC}/2.9.m4s"))[0] == 404
    assert (await get(env, f"{SRC}/7.0.m4s"))[0] == 404


async def test_a_full_length_segment_in_progress_hints_its_own_next_part(env: Env) -> None:
    """The worker commits a segment's final part with the segment, so a segment in progress always has one
    more part to come: the hint names it, however long the segment already is."""
    env.w.start()
    env.w.segments(2)
    for _ in range(4):  # as long as segment 1 already
        env.w.part("source", 2)
    _, _, text = await playlist(env)
    assert m3u8.loads(text).preload_hint.uri == "2.4.m4s"
    task = asyncio.create_task(get(env, f"{SRC}/2.4.m4s"))
    await until_blocked(env, 1)
    await asyncio.sleep(0.02)
    assert not task.done()
    payload = env.w.part("source", 2)
    assert (await asyncio.wait_for(task, 5))[2] == payload


async def test_a_hinted_part_that_never_comes_is_404(env: Env) -> None:
    env.w.start()
    env.w.segments(2)
    env.w.part("source", 2)
    task = asyncio.create_task(get(env, f"{SRC}/2.3.m4s"))  # two past the hint: waits
    await until_blocked(env, 1)
    env.w.part("source", 2)
    await asyncio.sleep(0.02)
    assert not task.done()
    env.w.end()  # the stream ends before part 3 exists
    assert (await asyncio.wait_for(task, 5))[0] == 404


async def test_init_segment_and_part_routes_with_ranges_and_head(env: Env) -> None:
    env.w.start()
    env.w.segments(2)
    init_id = env.w.inits["source"]
    status, headers, body = await get(env, f"{SRC}/init-{init_id}.mp4")
    assert (status, body) == (200, b"ftyp-and-moov-of-source")
    assert headers["Content-Type"] == "video/mp4" and headers["Cache-Control"] == "public, max-age=86400, immutable"
    assert (await get(env, f"{SRC}/init-{'0' * 16}.mp4"))[0] == 404
    status, headers, body = await get(env, f"{SRC}/1.m4s")
    parts = [fragment("source", 1, i) for i in range(4)]
    assert (status, body, headers["Content-Type"]) == (200, b"".join(parts), "video/mp4")
    assert headers["Cache-Control"] == "public, max-age=86400, immutable"
    status, headers, body = await get(env, f"{SRC}/1.2.m4s", Range="bytes=4-11")
    assert (status, body, headers["Content-Range"]) == (206, parts[2][4:12], f"bytes 4-11/{len(parts[2])}")
    assert (await get(env, f"{SRC}/1.2.m4s", Range=f"bytes={len(parts[2])}-"))[0] == 416
    async with env.client.head(f"{SRC}/1.2.m4s") as resp:
        assert resp.status == 200 and int(resp.headers["Content-Length"]) == len(parts[2])


async def test_parts_of_a_relayed_whole_segment_are_cut_from_it(env: Env) -> None:
    """A relay replay brings complete segments without their parts: the parts are its moof+mdat pairs."""
    env.w.start()
    env.w.segments(3)
    meta = env.store.meta(CHANNEL, "source", 2)
    assert meta is not None
    whole = env.store.read(CHANNEL, "source", 2)
    assert whole is not None and split_fragments(whole) == [fragment("source", 2, i) for i in range(4)]
    relayed = SegmentMeta(**{**{f: getattr(meta, f) for f in meta.__dataclass_fields__}, "seq": 3,
                             "origin_ns": time.time_ns() - 2_000_000_000})
    stored, _ = env.store.apply_segment(relayed, whole, keep=20)
    assert stored and env.store.read_part(CHANNEL, "source", 3, 1) is None
    env.front.hls.gate = _Here()
    status, headers, body = await get(env, f"{SRC}/3.1.m4s")
    assert (status, body) == (200, fragment("source", 2, 1)) and int(headers["Age"]) >= 1
    assert split_fragments(b"\x00\x00\x00\x09moof") == []  # a box past the end


class _Here:
    """A relay gate for a channel held here already."""

    async def request(self, channel: str, path: tuple[str, ...] = ()) -> object:
        from edged.relay.gate import Availability

        return Availability.READY

    def touch(self, channel: str) -> None:
        pass

    async def segment_soon(self, channel: str, rendition: str, seq: int) -> bool:
        return False


async def test_gzip_when_accepted(env: Env) -> None:
    env.w.start()
    env.w.segments(3)
    _, plain_headers, plain = await playlist(env, **{"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain_headers and plain_headers["Vary"] == "Accept-Encoding"
    status, headers, body = await get(env, f"{SRC}/index.m3u8", **{"Accept-Encoding": "br;q=1, gzip;q=0.5"})
    assert status == 200 and headers["Content-Encoding"] == "gzip" and headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(body).decode() == plain and len(body) < len(plain)
    assert accepts_gzip("*") and accepts_gzip("GZIP") and not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("*, gzip;q=0") and not accepts_gzip("br") and not accepts_gzip(None)


async def test_cache_headers_and_age_on_relayed_playlists(env: Env) -> None:
    env.w.start()
    env.w.segments(2)
    meta = env.store.meta(CHANNEL, "source", 1)
    assert meta is not None
    whole = env.store.read(CHANNEL, "source", 1)
    assert whole is not None
    relayed = SegmentMeta(**{**{f: getattr(meta, f) for f in meta.__dataclass_fields__}, "seq": 2,
                             "origin_ns": time.time_ns() - 3_000_000_000})
    env.store.apply_segment(relayed, whole, keep=20)
    env.bus.segment(CHANNEL, "source", 2)
    status, headers, _ = await playlist(env)
    assert status == 200 and headers["Cache-Control"] == "max-age=1" and int(headers["Age"]) >= 3


async def test_playlist_and_part_metrics_kinds(env: Env) -> None:
    env.w.start()
    env.w.segments(2)
    kinds = {k: sample("edged_http_requests_total", kind=k, result="local") for k in ("part", "init", "segment")}
    await get(env, f"{SRC}/1.1.m4s")
    await get(env, f"{SRC}/init-{env.w.inits['source']}.mp4")
    await get(env, f"{SRC}/1.m4s")
    for k, v in kinds.items():
        assert sample("edged_http_requests_total", kind=k, result="local") == v + 1, k


async def test_a_gap_part_is_listed_gap_yes_and_its_get_is_404_at_once(env: Env) -> None:
    """An ingest gap: the part is listed with GAP=YES (the m3u8 library reads it), the hint names the part
    after it, its GET is 404 saying why, without blocking (also for a hinted GET that it turns out to be),
    and parts cut from a relayed whole segment skip it (a gap has no moof+mdat)."""
    env.w.start()
    env.w.segments(2)
    env.w.part("source", 2)
    env.w.part("source", 2, gap=True)
    _, _, text = await playlist(env)
    assert re.search(r"^#EXT-X-PART:DURATION=0\.25\d*,URI=\"2\.1\.m4s\",GAP=YES$", text, re.M), text
    m = m3u8.loads(text)
    listed = [(p.uri, p.gap) for s in m.segments for p in s.parts] + [(p.uri, p.gap) for p in m.segments[-1].parts]
    assert ("2.1.m4s", "YES") in listed and ("2.0.m4s", None) in listed
    assert m.preload_hint.uri == "2.2.m4s"
    status, _, body = await get(env, f"{SRC}/2.1.m4s")
    assert (status, body) == (404, b"part 2.1 is a gap\n")
    assert env.front.hls.blocking.blocked(CHANNEL, "source") == 0
    task = asyncio.create_task(get(env, f"{SRC}/2.2.m4s"))  # the hinted part: it waits, then is a gap
    await until_blocked(env, 1)
    env.w.part("source", 2, gap=True)
    assert (await asyncio.wait_for(task, 5))[:3:2] == (404, b"part 2.2 is a gap\n")
    meta = env.w.segment("source", 2)
    assert meta.gaps == (1, 2) and len(meta.parts) == 4
    whole = env.store.read(CHANNEL, "source", 2)
    assert whole == fragment("source", 2, 0) + fragment("source", 2, 3)
    _, _, text = await playlist(env)
    seg2 = next(s for s in m3u8.loads(text).segments if s.uri == "2.m4s")
    assert [p.gap for p in seg2.parts] == [None, "YES", "YES", None]
    # a relayed copy of the segment without its parts: the parts are cut from it, gaps skipped
    relayed = SegmentMeta(**{**{f: getattr(meta, f) for f in meta.__dataclass_fields__}, "seq": 3})
    assert env.store.apply_segment(relayed, whole, keep=20)[0]
    assert env.store.read_part(CHANNEL, "source", 3, 3) is None
    assert (await get(env, f"{SRC}/3.3.m4s"))[:3:2] == (200, fragment("source", 2, 3))
    assert (await get(env, f"{SRC}/3.0.m4s"))[:3:2] == (200, fragment("source", 2, 0))
    assert (await get(env, f"{SRC}/3.2.m4s"))[:3:2] == (404, b"part 3.2 is a gap\n")


async def test_playlists_carry_an_etag_and_answer_304_while_unchanged(env: Env) -> None:
    env.w.start()
    env.w.segments(2)
    env.w.part("source", 2)
    status, h, text = await playlist(env)
    assert status == 200 and h["ETag"].startswith('"')
    etag = h["ETag"]
    status, h304, body = await get(env, f"{SRC}/index.m3u8", **{"Accept-Encoding": "identity",
                                                                "If-None-Match": f'W/"x", {etag}'})
    assert status == 304 and body == b"" and h304["ETag"] == etag and h304["Cache-Control"] == h["Cache-Control"]
    # the gzip form is another representation: another validator
    _, hgz, _ = await get(env, f"{SRC}/index.m3u8", **{"Accept-Encoding": "gzip"})
    assert hgz["Content-Encoding"] == "gzip" and hgz["ETag"] not in (etag, "")
    assert (await get(env, f"{SRC}/index.m3u8", **{"Accept-Encoding": "gzip", "If-None-Match": hgz["ETag"]}))[0] == 304
    assert (await get(env, f"{SRC}/index.m3u8", **{"Accept-Encoding": "identity", "If-None-Match": hgz["ETag"]}))[0] == 200
    env.w.part("source", 2)  # a commit changes the playlist: the old validator no longer matches
    status, h2, _ = await get(env, f"{SRC}/index.m3u8", **{"Accept-Encoding": "identity", "If-None-Match": etag})
    assert status == 200 and h2["ETag"] != etag
    # the master playlist too
    _, hm, _ = await get(env, f"/live/{CHANNEL}/master.m3u8")
    assert (await get(env, f"/live/{CHANNEL}/master.m3u8", **{"If-None-Match": hm["ETag"]}))[0] == 304


async def test_plain_reloads_are_answered_from_the_rendered_bytes_until_a_commit(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.w.start()
    env.w.segments(2)
    env.w.part("source", 2)
    _, _, first = await playlist(env)
    reads = 0
    channel_record = env.store.channel

    def counted(name: str) -> dict[str, Any] | None:
        nonlocal reads
        reads += 1
        return channel_record(name)

    monkeypatch.setattr(env.store, "channel", counted)
    for _ in range(20):
        assert (await playlist(env))[2] == first
    assert reads == 0  # a lookup and a write
    env.w.part("source", 2)  # the commit bumps the channel's version: the next reload reads and renders
    _, _, after = await playlist(env)
    assert reads >= 1 and after.count("#EXT-X-PART:") == first.count("#EXT-X-PART:") + 1
    reads = 0
    assert (await playlist(env))[2] == after and reads == 0
