"""Fleet-wide numbering with real processes on 127.0.0.1: `originctl serve`, two `edged run --origin` edges and
ffmpeg publishing over RTMP. A broadcaster publishes to edge A, stops, and publishes the same channel to edge B:
B's playlist continues A's sequence numbers after an EXT-X-DISCONTINUITY (the controller keeps each channel's
next sequence and discontinuity count, from A's commits, and hands them to B's publish). The CLI's relay verbs
are run against the live controller too. Every process is stopped by PID at the end."""

from __future__ import annotations

import re
from pathlib import Path

from tests.integration.e2e.test_controller_e2e import Origin, Procs, wait_until
from tests.integration.e2e.test_origin_e2e import PARIS, EdgeNode, finish, get
from tests.integration.e2e.test_origin_e2e import procs as procs  # noqa: PLC0414 - the fixture, by its name
from tests.integration.procs import ffmpeg_publish


def media_playlist(edge: EdgeNode, channel: str) -> str:
    status, _, body = get(edge.http, f"/live/{channel}/source/index.m3u8")
    return body.decode() if status == 200 else ""


def sequences(playlist: str) -> list[int]:
    """The sequence numbers a media playlist lists."""
    m = re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", playlist)
    if m is None:
        return []
    first = int(m.group(1))
    return list(range(first, first + playlist.count("#EXTINF")))


def test_a_broadcaster_moving_to_another_ingest_edge_continues_the_numbering(procs: Procs, tmp_path: Path) -> None:
    origin = Origin(procs, tmp_path)
    origin.start()
    tokens = origin.cli("token", "create", "--count", "2").stdout.split()
    a = EdgeNode(procs, tmp_path, "edge-a", ["10.1.0.0/16"], PARIS)
    b = EdgeNode(procs, tmp_path, "edge-b", ["10.2.0.0/16"], PARIS)
    for e in (a, b):
        e.config.write_text(e.config.read_text() + "[hls]\nsegment_seconds = 1.0\n")
    a.start(origin.address, tokens[0])
    b.start(origin.address, tokens[1])
    ids = wait_until(lambda: a.node_id() and b.node_id() and (a.node_id(), b.node_id()), "enrollment", procs)
    wait_until(lambda: origin.states() == dict.fromkeys(ids, "healthy"), "two healthy edges", procs)
    key = origin.cli("channel", "create", "news").stdout.strip()
    gone = origin.cli("relay", "tree", "news")
    assert gone.returncode == 1 and "not live" in gone.stderr

    # on edge A until it has listed a few segments; then the broadcaster stops
    pub = ffmpeg_publish(a.rtmp_url(key), 60, size="320x180", rate=15)
    try:
        wait_until(lambda: len(sequences(media_playlist(a, "news"))) >= 3, "three segments on edge A", procs)
        tree = origin.cli("relay", "tree", "news")
        assert tree.returncode == 0 and f"ingested on {ids[0]}" in tree.stdout, tree.stderr
        assert "RELAYED-BY" in origin.cli("streams", "-o", "wide").stdout
    finally:
        pub.terminate()
        finish(pub, 10)
    ended = wait_until(lambda: "#EXT-X-ENDLIST" in (p := media_playlist(a, "news")) and p, "A's playlist ended", procs)
    last_on_a = sequences(ended)[-1]
    # the controller heard A's last commit (`channels` shows the fleet numbering)
    wait_until(lambda: [c for c in origin.json("channels") if c["next_seq"] == last_on_a + 1], "A's numbers", procs)

    # the same channel, now on edge B: B's store never saw it, yet it continues at A's next number
    pub = ffmpeg_publish(b.rtmp_url(key), 60, size="320x180", rate=15)
    try:
        playlist = wait_until(lambda: (p := media_playlist(b, "news")) and sequences(p) and p,
                              "B's first segment", procs)
        assert sequences(playlist)[0] == last_on_a + 1, (last_on_a, playlist)
        first_segment = playlist.split("#EXT-X-MEDIA-SEQUENCE", 1)[1]
        assert "#EXT-X-DISCONTINUITY\n" in first_segment.split("#EXTINF", 1)[0], playlist  # marked as a cut
        disc = re.search(r"#EXT-X-DISCONTINUITY-SEQUENCE:(\d+)", playlist)
        before = [c for c in origin.json("channels") if c["name"] == "news"][0]
        assert before["disc_seq"] >= 1 and (disc is None or int(disc.group(1)) == before["disc_seq"] - 1)
        route = origin.json("route", "news", "--client-ip", "10.1.2.3")
        assert route["node_id"] in ids and route["chain"][0] == ids[1] and route["chain"][-1] == route["node_id"]
    finally:
        pub.terminate()
        finish(pub, 10)
    logs = "\n".join(p.read_text(errors="replace") for p in procs.logs)
    assert f"channel=news continues the fleet-wide numbering at {last_on_a + 1}" in logs
