"""Fleet distribution with real processes on 127.0.0.1: `originctl serve` (relay.max_children = 2), an ingest
edge A, a relay node R (`[node] relay = true`) and viewer edges B and C, all `edged run --origin`; Debian ffmpeg
publishes to A over RTMP and ffprobe decodes what a relaying edge serves.

With two children per parent the controller hangs the first viewer edge below A and the next ones below R,
recruited below A: one hop and two. The viewer edges' own [hls] settings differ from A's; what they serve
must not. Every process is stopped by PID at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import aiohttp

from tests.conftest import need
from tests.integration.e2e.test_controller_e2e import Origin, Procs, wait_until
from tests.integration.e2e.test_origin_e2e import PARIS, EdgeNode, finish, get, play
from tests.integration.e2e.test_origin_e2e import procs as procs  # noqa: PLC0414 - the fixture, by its name
from tests.integration.procs import ffmpeg_publish

VIEWERS = 200
_EXTINF_RE = re.compile(r"#EXTINF:([\d.]+),\n(\d+)\.m4s")  # CMAF segments (the default format)
_MAP_RE = re.compile(r'#EXT-X-MAP:URI="(init-[0-9a-f]{16}\.mp4)"')


def playlist(edge: EdgeNode, path: str = "source/index.m3u8") -> bytes:
    status, _, body = get(edge.http, f"/live/news/{path}")
    return body if status == 200 else b""


def listed(text: bytes) -> list[int]:
    return [int(m.group(2)) for m in _EXTINF_RE.finditer(text.decode())]


def entries(text: bytes) -> dict[int, str]:
    """sequence number → the lines that describe it in a media playlist (discontinuity, date, duration, URI)."""
    out: dict[int, str] = {}
    body = text.decode().split("#EXT-X-MEDIA-SEQUENCE:", 1)[-1].split("\n", 1)[-1]
    block: list[str] = []
    for line in body.splitlines():
        if line.startswith("#EXT-X-DISCONTINUITY-SEQUENCE"):
            continue
        block.append(line)
        if line.endswith(".m4s") and not line.startswith("#"):
            out[int(line[:-4])] = "\n".join(block)
            block = []
    return out


def metric(edge: EdgeNode, name: str, labels: str = "") -> float:
    body = get(edge.http, "/metrics")[2].decode()
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", body, re.M)
    return float(m.group(1)) if m else 0.0


NAMES = ("a", "r", "b", "c")


def client_in(name: str) -> str:
    """A viewer's address in the prefix of edge `name` (edges are numbered 10.1/16, 10.2/16, ... in NAMES order)."""
    return f"10.{('a', 'r', 'b', 'c', 'd').index(name) + 1}.7.7"


def fleet(procs: Procs, tmp_path: Path, *, linger: float = 30.0,
          names: tuple[str, ...] = NAMES) -> tuple[Origin, dict[str, EdgeNode], dict[str, str]]:
    origin = Origin(procs, tmp_path)
    # it believes X-Forwarded-For from 127.0.0.1, so the test speaks for viewers in each edge's prefix
    origin.config.write_text(origin.config.read_text().replace(
        "[health]", 'trusted_proxies = ["127.0.0.1/32"]\n[health]') + "[relay]\nmax_children = 2\n")
    origin.start()
    tokens = origin.cli("token", "create", "--count", str(len(names))).stdout.split()
    edges = {name: EdgeNode(procs, tmp_path, f"edge-{name}", [f"10.{i}.0.0/16"], PARIS)
             for i, name in enumerate(names, start=1)}
    edges["r"].config.write_text(edges["r"].config.read_text() + "relay = true\n")  # the [node] section is last
    for name, e in edges.items():
        # the viewer edges' own playlist settings differ from the ingest edge's
        hls = "segment_seconds = 1.0\n" if name in ("a", "r") else "segment_seconds = 3.0\nwindow = 3\n"
        e.config.write_text(e.config.read_text() + f"[hls]\n{hls}[relay]\nlinger_seconds = {linger}\n")
        e.start(origin.address, tokens.pop())
    ids = wait_until(lambda: all(e.node_id() for e in edges.values()) and {n: e.node_id() for n, e in edges.items()},
                     "enrollment", procs)
    wait_until(lambda: set(origin.states().values()) == {"healthy"} and len(origin.states()) == len(names),
               "all edges healthy", procs)
    return origin, edges, ids


def parents_of(origin: Origin) -> dict[str, str]:
    """child node ID → parent node ID in the channel's relay tree (as `originctl relay tree -o json` shows it)."""
    tree = origin.json("relay", "tree", "news")
    return {m["node_id"]: m["parent_node_id"] for m in tree["members"] if m["parent_node_id"]}


def ancestors(parents: dict[str, str], node: str) -> list[str]:
    """`node`'s parent, its parent, ... up to the root of the tree."""
    out: list[str] = []
    while (node := parents.get(node, "")) and node not in out:
        out.append(node)
    return out


def same_playlists(a: EdgeNode, other: EdgeNode, path: str) -> bool:
    """A snapshot where A did not change around the other edge's answer, and both are the same bytes."""
    before, theirs, after = playlist(a, path), playlist(other, path), playlist(a, path)
    return bool(before) and before == after == theirs


def start_viewing(origin: Origin, procs: Procs, edges: dict[str, EdgeNode], ids: dict[str, str],
                  viewers: tuple[str, ...] = ("b", "c")) -> tuple[str, list[str]]:
    """/play sends a viewer in each viewer edge's prefix there, though it does not carry the channel yet; its
    first request is held until its relay subscription is ready. → (the one-hop edge, the two-hop edges)."""
    for name in viewers:
        e = edges[name]
        client = client_in(name)
        status, headers, _ = play(origin, "news", client)
        assert status == 302 and headers["location"] == e.playlist("news"), (
            name, headers, origin.json("route", "news", "--client-ip", client), origin.json("nodes"))
        status, _, body = get(e.http, "/live/news/master.m3u8")
        assert status == 200 and b"#EXT-X-STREAM-INF" in body, (name, status, body)
    parents = wait_until(lambda: (t := parents_of(origin)) and len(t) == len(viewers) + 1 and t,
                         "the tree with the viewer edges and R", procs)
    assert parents[ids["r"]] == ids["a"], parents
    shallow = [n for n in viewers if parents[ids[n]] == ids["a"]]
    deep = [n for n in viewers if parents[ids[n]] == ids["r"]]
    assert len(shallow) == 1 and len(deep) == len(viewers) - 1, parents
    return shallow[0], deep


def test_viewer_edges_serve_the_ingest_edges_stream_byte_for_byte(procs: Procs, tmp_path: Path) -> None:
    origin, edges, ids = fleet(procs, tmp_path)
    a = edges["a"]
    pub = ffmpeg_publish(a.rtmp_url(origin.cli("channel", "create", "news").stdout.strip()), 90, size="320x180",
                         rate=15)
    try:
        wait_until(lambda: len(listed(playlist(a))) >= 2, "two segments on A", procs)
        shallow, (deep,) = start_viewing(origin, procs, edges, ids)
        route = origin.json("route", "news", "--client-ip", client_in(deep))
        assert route["chain"] == [ids["a"], ids["r"], ids[deep]], route
        wait_until(lambda: len(listed(playlist(a))) >= 5, "five segments on A", procs)
        for name in (shallow, deep):  # identical playlists: master and media, one hop and two
            e = edges[name]
            wait_until(lambda e=e: same_playlists(a, e, "master.m3u8"), f"{name}'s master = A's", procs)
            wait_until(lambda e=e: same_playlists(a, e, "source/index.m3u8"), f"{name}'s playlist = A's", procs)
        text = playlist(edges[deep]).decode()
        assert "#EXT-X-TARGETDURATION:3\n" in text and text.count("#EXTINF") >= 5  # A's shape, not 9 s / 3
        # for 30 s: every segment either edge lists is described the same way as at A (date, duration, cut),
        # and each playlist A answered in between is byte for byte what the relaying edges answer
        seen: dict[str, dict[int, str]] = {"a": {}, shallow: {}, deep: {}}
        equal = {shallow: 0, deep: 0}
        until = time.monotonic() + 30
        while time.monotonic() < until:
            for name in seen:
                seen[name].update(entries(playlist(edges[name])))
            for name in equal:
                equal[name] += same_playlists(a, edges[name], "source/index.m3u8")
            time.sleep(0.2)
        for name in (shallow, deep):
            assert seen[name] and all(seen["a"][seq] == entry for seq, entry in seen[name].items()), name
            assert len(seen[name]) >= 25 and equal[name] >= 20, (name, len(seen[name]), equal)
        # segment bytes equal (sha256), and a relayed copy is marked with its Age
        seqs = listed(playlist(edges[deep]))
        for seq in seqs:
            sa = get(a.http, f"/live/news/source/{seq}.m4s")
            sd = get(edges[deep].http, f"/live/news/source/{seq}.m4s")
            assert sa[0] == sd[0] == 200 and hashlib.sha256(sa[2]).digest() == hashlib.sha256(sd[2]).digest()
            assert "age" in sd[1] and "age" not in sa[1]
        # ffprobe decodes the two-hop edge's variant with continuous timestamps
        joined = tmp_path / "deep.mp4"
        init_uri = _MAP_RE.findall(playlist(edges[deep]).decode())[-1]
        joined.write_bytes(get(edges[deep].http, f"/live/news/source/{init_uri}")[2]
                           + b"".join(get(edges[deep].http, f"/live/news/source/{s}.m4s")[2] for s in seqs))
        out = subprocess.run([need("ffprobe"), "-v", "error", "-select_streams", "v:0", "-show_entries",
                              "packet=pts_time", "-of", "csv=p=0", str(joined)],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and not out.stderr.strip(), out.stderr
        pts = sorted(float(x.split(",")[0]) for x in out.stdout.split())
        assert len(pts) >= 15 * len(seqs) - 2 and max(b - a for a, b in zip(pts, pts[1:], strict=False)) < 0.2

        # 200 concurrent viewers on the two-hop edge: still one subscription per hop
        asyncio.run(_viewers(edges[deep], VIEWERS))
        assert metric(edges[deep], "edged_relay_subscriptions", '{role="child"}') == 1
        assert metric(edges["r"], "edged_relay_subscriptions", '{role="parent"}') == 1  # the deep edge only
        assert metric(edges["r"], "edged_relay_subscriptions", '{role="child"}') == 1
        assert metric(a, "edged_relay_subscriptions", '{role="parent"}') == 2  # the shallow edge and R
        assert metric(edges[deep], "edged_http_requests_total", '{kind="segment",result="local"}') >= VIEWERS
        # what R sent is what the deep edge received: one copy of the stream
        sent, got = (metric(edges["r"], "edged_relay_bytes_total", '{direction="out"}'),
                     metric(edges[deep], "edged_relay_bytes_total", '{direction="in"}'))
        assert got > 0 and abs(sent - got) < 200_000, (sent, got)
        assert metric(edges[deep], "edged_relay_lag_seconds_count") >= len(seqs)
    finally:
        pub.terminate()
        finish(pub, 10)
    # the broadcaster stopped (a deliberate unpublish): every edge ends the playlist
    for e in edges.values():
        if e is not edges["r"]:
            wait_until(lambda e=e: b"#EXT-X-ENDLIST" in playlist(e), f"{e.name}'s playlist ended", procs)


async def _viewers(edge: EdgeNode, n: int) -> None:
    """`n` viewers at once, each loading the master playlist, the media playlist and its last segment."""
    base = f"http://127.0.0.1:{edge.http}/live/news"

    async def viewer(session: aiohttp.ClientSession) -> None:
        async with session.get(f"{base}/master.m3u8") as r:
            assert r.status == 200
        async with session.get(f"{base}/source/index.m3u8") as r:
            assert r.status == 200
            last = listed(await r.read())[-1]
        async with session.get(f"{base}/source/{last}.m4s") as r:
            assert r.status == 200 and len(await r.read()) > 0

    connector = aiohttp.TCPConnector(limit=n)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as s:
        await asyncio.gather(*(viewer(s) for _ in range(n)))


class Poller(threading.Thread):
    """A viewer polling an edge's media playlist: every sequence number it saw listed, and in which order."""

    def __init__(self, edge: EdgeNode) -> None:
        super().__init__(daemon=True)
        self.edge = edge
        self.seen: list[int] = []
        self.media_sequences: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                text = playlist(self.edge)
            except OSError:
                text = b""
            if m := re.search(rb"#EXT-X-MEDIA-SEQUENCE:(\d+)", text):
                self.media_sequences.append(int(m.group(1)))
            self.seen += [s for s in listed(text) if not self.seen or s > self.seen[-1]]
            time.sleep(0.25)


def test_a_relay_node_killed_mid_stream_and_the_linger(procs: Procs, tmp_path: Path) -> None:
    """Viewer edges B, C and D: one below A, two below R. With the controller hung, R is killed: both edges
    below it re-parent (to A, from the last relay map) and their viewers see every number once."""
    origin, edges, ids = fleet(procs, tmp_path, linger=3.0, names=("a", "r", "b", "c", "d"))
    a = edges["a"]
    pub = ffmpeg_publish(a.rtmp_url(origin.cli("channel", "create", "news").stdout.strip()), 60, size="320x180",
                         rate=15)
    pollers: list[Poller] = []
    try:
        wait_until(lambda: len(listed(playlist(a))) >= 2, "two segments on A", procs)
        shallow, deep = start_viewing(origin, procs, edges, ids, ("b", "c", "d"))
        pollers = [Poller(edges[name]) for name in deep]
        for p in pollers:
            p.start()
        wait_until(lambda: all(len(p.seen) >= 3 for p in pollers), "the viewers of the deep edges playing", procs)
        # the controller hangs: running subscriptions keep flowing
        controller = procs.procs["originctl"]
        controller.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: all(metric(edges[n], "edged_controller_link_up") == 0 for n in deep),
                       "the deep edges to count the controller down", procs)
            stopped_at = [p.seen[-1] for p in pollers]
            wait_until(lambda: all(p.seen[-1] >= at + 2 for p, at in zip(pollers, stopped_at, strict=True)),
                       "segments through the outage", procs)
            # ... and with the controller still out, kill -9 of the relay node mid-stream: the deep edges
            # re-parent from the last relay map they were pushed (up the chain, to A) and resume by position
            procs.signal("edge-r", 9)
            killed_at = [p.seen[-1] for p in pollers]
            wait_until(lambda: all(p.seen[-1] >= at + 4 for p, at in zip(pollers, killed_at, strict=True)),
                       "segments after the relay node died", procs, within=30)
        finally:
            controller.send_signal(signal.SIGCONT)
        for p in pollers:
            p.stop.set()
            p.join(5)
        for name, p in zip(deep, pollers, strict=True):
            # every number exactly once, in order, across the re-parenting
            assert p.seen == list(range(p.seen[0], p.seen[-1] + 1)), (name, p.seen)
            assert p.media_sequences == sorted(p.media_sequences), name
            e = edges[name]
            assert metric(e, "edged_relay_reparent_total", '{reason="error"}') + metric(
                e, "edged_relay_reparent_total", '{reason="stall"}') >= 1, name
            assert metric(e, "edged_relay_resume_total", '{result="resumed"}') >= 1, name
            wait_until(lambda name=name: parents_of(origin).get(ids[name]) == ids["a"],
                       f"the controller's tree, {name} below A", procs)
        # nobody asks the viewer edges for the channel any more: all drop their subscriptions
        for name in (shallow, *deep):
            wait_until(lambda name=name: metric(edges[name], "edged_relay_subscriptions", '{role="child"}') == 0,
                       f"{name}'s subscription to linger out", procs, within=20)
        wait_until(lambda: metric(a, "edged_relay_subscriptions", '{role="parent"}') == 0,
                   "A without children", procs)
    finally:
        for p in pollers:
            p.stop.set()
        pub.terminate()
        finish(pub, 10)


def test_a_broadcaster_moving_to_another_ingest_edge_continues_on_a_relaying_edge(procs: Procs,
                                                                                   tmp_path: Path) -> None:
    origin, edges, ids = fleet(procs, tmp_path)
    a, b, c = edges["a"], edges["b"], edges["c"]
    key = origin.cli("channel", "create", "news").stdout.strip()
    pub = ffmpeg_publish(a.rtmp_url(key), 60, size="320x180", rate=15)
    poller = Poller(b)
    try:
        wait_until(lambda: len(listed(playlist(a))) >= 2, "two segments on A", procs)
        status, _, _ = get(b.http, "/live/news/master.m3u8")  # B relays it from A
        assert status == 200
        poller.start()
        wait_until(lambda: len(poller.seen) >= 3, "the viewer of B playing", procs)
        pub.kill()  # the broadcaster is lost (no unpublish): A keeps the playlist open for the reconnect grace
        finish(pub, 10)
        pub = ffmpeg_publish(c.rtmp_url(key), 60, size="320x180", rate=15)  # ... and comes back on C
        last_on_a = poller.seen[-1]
        wait_until(lambda: poller.seen[-1] >= last_on_a + 4, "segments from C on B", procs, within=40)
        poller.stop.set()
        poller.join(5)
        assert poller.seen == list(range(poller.seen[0], poller.seen[-1] + 1)), poller.seen  # the numbering goes on
        # the controller's tree follows B's report of its new parent (under load, a moment later): B hangs
        # below C, directly or through the relay node (a parent that ended B's stream is excluded for a while)
        wait_until(lambda: ancestors(parents_of(origin), ids["b"])[-1:] == [ids["c"]], "the controller's tree, "
                   "B below C", procs)
        # B serves C's playlist: never ended, the cut marked where C's numbers begin
        wait_until(lambda: same_playlists(c, b, "source/index.m3u8"), "B's playlist = C's", procs)
        text = playlist(b).decode()
        assert "#EXT-X-ENDLIST" not in text and "#EXT-X-DISCONTINUITY\n" in text, text
        first_on_c = listed(text.split("#EXT-X-DISCONTINUITY\n", 1)[1].encode())[0]
        assert first_on_c > last_on_a, (first_on_c, last_on_a, text)  # and no number is missing (above)
    finally:
        poller.stop.set()
        pub.terminate()
        finish(pub, 10)


def test_an_ingest_edge_nobody_can_dial_pushes_its_channel_up(procs: Procs, tmp_path: Path) -> None:
    """A (`reachable = false`) pushes to one of two relay nodes; B hangs below it. That relay node is killed:
    A pushes to the other, B re-parents there, and its viewer sees every number once."""
    origin = Origin(procs, tmp_path)
    origin.config.write_text(origin.config.read_text().replace(
        "[health]", 'trusted_proxies = ["127.0.0.1/32"]\n[health]'))
    origin.start()
    tokens = origin.cli("token", "create", "--count", "4").stdout.split()
    edges = {name: EdgeNode(procs, tmp_path, f"edge-{name}", [f"10.{i}.0.0/16"], PARIS)
             for i, name in enumerate(("a", "b", "r1", "r2"), start=1)}
    edges["a"].config.write_text(edges["a"].config.read_text() + "reachable = false\n")  # behind NAT
    for name in ("r1", "r2"):
        edges[name].config.write_text(edges[name].config.read_text() + "relay = true\n")
    for e in edges.values():
        e.config.write_text(e.config.read_text() + "[hls]\nsegment_seconds = 1.0\n")
        e.start(origin.address, tokens.pop())
    ids = wait_until(lambda: all(e.node_id() for e in edges.values()) and {n: e.node_id() for n, e in edges.items()},
                     "enrollment", procs)
    wait_until(lambda: set(origin.states().values()) == {"healthy"} and len(origin.states()) == 4,
               "four healthy edges", procs)
    a, b = edges["a"], edges["b"]
    pub = ffmpeg_publish(a.rtmp_url(origin.cli("channel", "create", "news").stdout.strip()), 60, size="320x180",
                         rate=15)
    poller = Poller(b)
    try:
        # A pushes the channel up to a relay node as soon as the controller names one
        wait_until(lambda: metric(a, "edged_relay_subscriptions", '{role="push"}') == 1, "A pushing", procs)
        target = wait_until(lambda: next((n for n in ("r1", "r2") if parents_of(origin).get(ids[n]) == ids["a"]), ""),
                            "the relay node A pushes to", procs)
        r = edges[target]
        wait_until(lambda: len(listed(playlist(r))) >= 2, "the pushed segments on the relay node", procs)
        status, headers, _ = play(origin, "news", "10.2.7.7")
        assert status == 302 and headers["location"] == b.playlist("news")
        status, _, _ = get(b.http, "/live/news/master.m3u8")
        assert status == 200
        assert parents_of(origin).get(ids["b"]) == ids[target]  # below the relay node: nobody dials A
        wait_until(lambda: same_playlists(a, b, "source/index.m3u8"), "B's playlist = A's", procs)
        assert metric(a, "edged_relay_subscriptions", '{role="parent"}') == 0
        assert metric(r, "edged_relay_subscriptions", '{role="parent"}') == 1
        # the relay node A pushes to dies: A pushes to the other one, B follows it
        poller.start()
        wait_until(lambda: len(poller.seen) >= 3, "the viewer of B playing", procs)
        procs.signal(f"edge-{target}", 9)
        killed_at = poller.seen[-1]
        wait_until(lambda: poller.seen[-1] >= killed_at + 4, "segments after the relay node died", procs, within=30)
        poller.stop.set()
        poller.join(5)
        assert poller.seen == list(range(poller.seen[0], poller.seen[-1] + 1)), poller.seen
        other = "r2" if target == "r1" else "r1"
        wait_until(lambda: parents_of(origin).get(ids["b"]) == ids[other], "B below the other relay node", procs)
    finally:
        poller.stop.set()
        pub.terminate()
        finish(pub, 10)
    wait_until(lambda: b"#EXT-X-ENDLIST" in playlist(b), "B's playlist ended", procs)
