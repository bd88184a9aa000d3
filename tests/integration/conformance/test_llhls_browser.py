"""hls.js in low-latency mode plays edged's LL-HLS in headless Chromium, at the ingest edge and at an edge
one relay hop away; ffprobe reads the same playlists.

Real processes on 127.0.0.1: `originctl serve`, an ingest edge A and a viewer edge B (`edged run --origin`,
default [hls]: cmaf, 0.5 s parts); Debian's ffmpeg publishes a 640x360 30 fps test pattern (keyframe every
2 s, AAC) to A; B relays the channel from A on its first request. The page counts what hls.js asked for
(blocking playlist reloads, part and segment requests, via xhrSetup) and loaded (FRAG_LOADED with part
info), and samples `hls.latency` and `Date.now() - hls.playingDate`; the latency is printed (FIGURES),
never asserted. One fleet for the module; every process is stopped by PID at the end.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import need
from tests.integration.e2e.test_controller_e2e import Origin, Procs, wait_until
from tests.integration.e2e.test_origin_e2e import PARIS, EdgeNode
from tests.integration.llhls_tools import (
    HLS_JS,
    PART_URI_RE,
    PageServer,
    get,
    latencies,
    parse_media,
    pct,
    play,
    played,
    publish,
    stop,
)

CHANNEL = "news"
PLAY_SECONDS = 12.0  # of playback per player
LL_CONFIG: dict[str, Any] = {"lowLatencyMode": True}


@dataclass
class Fleet:
    procs: Procs
    a: EdgeNode
    b: EdgeNode
    pages: PageServer

    def url(self, edge: EdgeNode, path: str = "master.m3u8") -> str:
        return f"http://127.0.0.1:{edge.http}/live/{CHANNEL}/{path}"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    need("ffmpeg")
    if need("chromium") and not HLS_JS.exists():
        pytest.fail("hls.js is required (make test fetches it)")
    tmp = tmp_path_factory.mktemp("llhls-browser")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORIGINCTL_")}
    env.update(PYTHONUNBUFFERED="1", XDG_CONFIG_HOME=str(tmp / "xdg"), GRPC_VERBOSITY="ERROR")
    procs = Procs(tmp, env)
    pub: subprocess.Popen[bytes] | None = None
    pages: PageServer | None = None
    try:
        origin = Origin(procs, tmp)
        origin.start()
        tokens = origin.cli("token", "create", "--count", "2").stdout.split()
        a = EdgeNode(procs, tmp, "edge-a", ["10.1.0.0/16"], PARIS)
        b = EdgeNode(procs, tmp, "edge-b", ["10.2.0.0/16"], PARIS)
        a.start(origin.address, tokens[0])
        b.start(origin.address, tokens[1])
        wait_until(lambda: a.node_id() and b.node_id(), "enrollment", procs)
        wait_until(lambda: set(origin.states().values()) == {"healthy"} and len(origin.states()) == 2,
                   "two healthy edges", procs)
        key = origin.cli("channel", "create", CHANNEL).stdout.strip()
        pub = publish(a.rtmp_url(key), 150)
        pages = PageServer()
        f = Fleet(procs, a, b, pages)
        wait_until(lambda: get(f.url(a, "source/index.m3u8"))[2].count(b"#EXTINF") >= 2, "two segments on A", procs)
        yield f
    finally:
        if pages is not None:
            pages.close()
        stop(pub)
        procs.stop_all()


def _figures(where: str, st: dict[str, Any]) -> None:
    wall, hls = latencies(st, settle=3.0)
    print(f"\nFIGURES llhls-browser {where}: Date.now()-playingDate p50 {pct(wall, 50):.2f} p95 {pct(wall, 95):.2f} s; "
          f"hls.latency p50 {pct(hls, 50):.2f} p95 {pct(hls, 95):.2f} s (target {played(st)[-1].get('target')}); "
          f"parts {st['parts']} segments {st['frags']} requests {st['requests']}; waiting {st['waiting']} "
          f"stalled {st['stalled']} ({st['stallSeconds']:.2f} s); errors {st['errors']}")


def _check_played(st: dict[str, Any]) -> None:
    assert st["fatal"] is None, st
    assert st["lowLatencyMode"] is True and st["canBlockReload"] is True and st["partTarget"] == 0.5, st
    assert (st["w"], st["h"]) == (640, 360), st
    assert st["levels"] and "avc1" in st["levels"][0]["codecs"] and "mp4a.40.2" in st["levels"][0]["codecs"], st
    samples = played(st)
    assert samples, st
    advanced = samples[-1]["ct"] - samples[0]["ct"]
    assert advanced >= PLAY_SECONDS / 2, (advanced, samples)
    assert st["decoded"] > 30 * PLAY_SECONDS / 2, st
    # parts, not just segments: hls.js loaded parts it asked for by their own URIs, with blocking reloads
    assert st["parts"] >= 5 and st["requests"]["part"] >= 5, st
    assert all(PART_URI_RE.search(u) for u in st["partUris"]), st["partUris"]
    assert st["requests"]["blocking"] >= 5, st
    wall, hls = latencies(st, settle=3.0)
    assert wall and hls, st  # program date times reached the player, and it computes its latency


def _ffprobe(url: str) -> None:
    probe = subprocess.run([need("ffprobe"), "-v", "error", "-show_entries", "stream=codec_type,codec_name",
                            "-of", "json", url], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and not probe.stderr.strip(), probe.stderr
    streams = sorted((s["codec_type"], s["codec_name"]) for s in json.loads(probe.stdout)["streams"])
    assert streams == [("audio", "aac"), ("video", "h264")], probe.stdout


def test_hlsjs_low_latency_plays_parts_from_the_ingest_edge(fleet: Fleet) -> None:
    st = play(fleet.pages, "ingest", fleet.url(fleet.a), PLAY_SECONDS, LL_CONFIG)
    _figures("ingest edge A", st)
    _check_played(st)
    _ffprobe(fleet.url(fleet.a, "source/index.m3u8"))


def test_hlsjs_low_latency_plays_parts_from_a_relaying_edge(fleet: Fleet) -> None:
    a, b = fleet.a, fleet.b
    wait_until(lambda: get(fleet.url(b))[0] == 200, "B relaying the channel", fleet.procs)
    media = fleet.url(b, "source/index.m3u8")
    wait_until(lambda: (m := parse_media(get(media)[2].decode())).pending is not None or m.segments,
               "B's LL-HLS playlist", fleet.procs)
    # B answers a blocking reload for its next part from its own store, with that part listed
    pl = parse_media(get(media)[2].decode())
    msn, idx = pl.next_part()
    status, _, body = get(f"{media}?_HLS_msn={msn}&_HLS_part={idx}", timeout=20)
    assert status == 200, (status, body[:300])
    after = parse_media(body.decode())
    assert after.position() >= (msn, idx) or after.segments[-1].seq >= msn, body.decode()
    assert after.server_control == pl.server_control == parse_media(
        get(fleet.url(a, "source/index.m3u8"))[2].decode()).server_control
    # a relayed part is the ingest edge's bytes, marked with its Age
    seq, i, part = after.all_parts()[-1]
    sa, ha, pa = get(fleet.url(a, f"source/{part.uri}"))
    sb, hb, pb = get(fleet.url(b, f"source/{part.uri}"))
    assert sa == sb == 200 and pa == pb and len(pb) > 0, (seq, i, sa, sb)
    assert hb.get("content-type") == "video/mp4" and "age" in hb and "age" not in ha, (ha, hb)

    st = play(fleet.pages, "relay", fleet.url(b), PLAY_SECONDS, LL_CONFIG)
    _figures("relaying edge B (one hop)", st)
    _check_played(st)
    _ffprobe(media)
    assert re.search(r"^#EXT-X-PART-INF:PART-TARGET=0\.500$", get(media)[2].decode(), re.M)
