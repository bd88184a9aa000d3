"""Real processes on 127.0.0.1: `originctl serve`, two `edged run --origin` edges, ffmpeg publishing over RTMP,
and the `originctl` CLI: channels and keys, authorization by the controller on every edge, viewer routing at
/play (prefix, GeoIP distance, drain), and the offline/unknown answers.

The controller believes X-Forwarded-For from 127.0.0.1 (trusted_proxies), so one test client can speak for
viewers anywhere; its GeoIP database is generated here (mmdb-writer), never downloaded. Every process is
stopped by PID at the end.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from tests.conftest import free_port
from tests.integration.e2e.test_controller_e2e import Origin, Procs, wait_until
from tests.integration.procs import ffmpeg_publish

HEARTBEAT = 0.3  # s
AUTH_CACHE = 4.0  # s: origin.auth_cache_seconds on the edges
PARIS = (48.86, 2.35)
BERLIN = (52.52, 13.40)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORIGINCTL_")}
    env.update(PYTHONUNBUFFERED="1", XDG_CONFIG_HOME=str(tmp_path / "xdg"), GRPC_VERBOSITY="ERROR")
    p = Procs(tmp_path, env)
    try:
        yield p
    finally:
        p.stop_all()


class EdgeNode:
    """`edged run --origin` with prefixes and coordinates in its config; passthrough only (--no-transcode)."""

    def __init__(self, procs: Procs, tmp: Path, name: str, prefixes: list[str], loc: tuple[float, float],
                 srt: bool = False, auth_cache: float = AUTH_CACHE) -> None:
        self.procs, self.name = procs, name
        self.data = tmp / name
        self.http, self.rtmp, self.relay, self.irc = free_port(), free_port(), free_port(), free_port()
        self.srt = free_port(socket.SOCK_DGRAM) if srt else 0
        self.config = tmp / f"{name}.toml"
        self.config.write_text(
            f"[origin]\nheartbeat_seconds = {HEARTBEAT}\nauth_cache_seconds = {auth_cache}\n"
            f'[node]\nname = "{name}"\nadvertise = false\nprefixes = {json.dumps(prefixes)}\n'
            f"latitude = {loc[0]}\nlongitude = {loc[1]}\n")

    def start(self, origin: str, token: str) -> None:
        self.procs.start(self.name, [
            sys.executable, "-m", "edged", "run", "--config", str(self.config), "--data-dir", str(self.data),
            "--rtmp", f"127.0.0.1:{self.rtmp}", "--http", f"127.0.0.1:{self.http}", "--no-transcode",
            "--relay", f"127.0.0.1:{self.relay}", "--irc", f"127.0.0.1:{self.irc}",
            *(["--srt", f"127.0.0.1:{self.srt}"] if self.srt else ["--no-srt"]),
            "--origin", origin, f"--enroll-token={token}"])

    def node_id(self) -> str:
        meta = self.data / "agent" / "identity.json"
        return str(json.loads(meta.read_text())["node_id"]) if meta.exists() else ""

    def rtmp_url(self, key: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp}/live/{key}"

    def srt_url(self, key: str) -> str:
        return f"srt://127.0.0.1:{self.srt}?streamid=%23!::r={key},m=publish"

    def playlist(self, channel: str) -> str:
        return f"http://127.0.0.1:{self.http}/live/{channel}/master.m3u8"


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One GET on 127.0.0.1 without following redirects."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def play(origin: Origin, channel: str, client: str, want_json: bool = False) -> tuple[int, dict[str, str], Any]:
    headers = {"X-Forwarded-For": f"{client}, 127.0.0.1"}  # the proxy at 127.0.0.1 appended itself
    if want_json:
        headers["Accept"] = "application/json"
    status, h, body = get(origin.http, f"/play/{channel}", headers)
    return status, h, json.loads(body) if h.get("content-type", "").startswith("application/json") else body


def finish(p: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The exit status within `timeout`, else None (killed); its stderr pipe closed either way."""
    try:
        p.communicate(timeout=timeout)
        return p.returncode
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return None


def _fmt(url: str) -> str:
    return "mpegts" if url.startswith("srt:") else "flv"


def publish_ok(url: str, seconds: float = 2.0) -> bool:
    """ffmpeg publishes for `seconds` and exits 0 only if the edge accepted the key."""
    return finish(ffmpeg_publish(url, seconds, size="320x180", rate=15, fmt=_fmt(url)), seconds + 30) == 0


def refused_within(url: str, within: float) -> bool:
    """Publishing with a refused key fails at once (RTMP: NetStream.Publish.BadName; SRT: refused in the
    handshake by the edge's key table)."""
    rc = finish(ffmpeg_publish(url, 20, size="320x180", rate=15, fmt=_fmt(url)), within + 5)
    return rc is not None and rc != 0


def geoip_db(path: Path) -> Path:
    w = MMDBWriter(ip_version=4, database_type="GeoLite2-City")
    # edge-a's ISP block lies in Berlin on the map: the prefix must still win over distance
    w.insert_network(IPSet(["10.1.0.0/16", "198.51.100.0/24"]),
                     {"location": {"latitude": BERLIN[0], "longitude": BERLIN[1]}})
    w.insert_network(IPSet(["203.0.113.0/24"]), {"location": {"latitude": PARIS[0], "longitude": PARIS[1]}})
    w.to_db_file(str(path))
    return path


def test_channels_authorization_and_viewer_routing(procs: Procs, tmp_path: Path) -> None:
    origin = Origin(procs, tmp_path)
    db = geoip_db(tmp_path / "city.mmdb")
    origin.config.write_text(origin.config.read_text().replace(
        "[health]", f'trusted_proxies = ["127.0.0.1/32"]\ngeoip_database = "{db}"\n[health]'))
    origin.start()
    tokens = origin.cli("token", "create", "--count", "2").stdout.split()
    a = EdgeNode(procs, tmp_path, "edge-a", ["10.1.0.0/16"], PARIS)
    b = EdgeNode(procs, tmp_path, "edge-b", ["10.2.0.0/16"], BERLIN, srt=True)
    a.start(origin.address, tokens[0])
    b.start(origin.address, tokens[1])
    ids = wait_until(lambda: a.node_id() and b.node_id() and (a.node_id(), b.node_id()), "enrollment", procs)
    wait_until(lambda: origin.states() == dict.fromkeys(ids, "healthy"), "two healthy edges", procs)

    # a channel: only the key on stdout
    done = origin.cli("channel", "create", "news")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert done.stdout.count("\n") == 1 and len(key) >= 32
    assert origin.cli("channel", "create", "news").returncode == 1  # exists
    assert origin.cli("channel", "create", "bad/name").returncode == 2

    # unknown channel, and a known one that is not live: 404 with a JSON reason
    status, _, body = play(origin, "nope", "10.1.2.3")
    assert status == 404 and body["error"] == "unknown-channel"
    status, _, body = play(origin, "news", "10.1.2.3")
    assert status == 404 and body["error"] == "offline"

    # the key publishes on both edges (the controller authorizes it everywhere)
    pubs = [ffmpeg_publish(e.rtmp_url(key), 40, size="320x180", rate=15) for e in (a, b)]
    try:
        def both_live() -> bool:
            streams = origin.json("streams")
            return sorted(s["node_id"] for s in streams if s["channel"] == "news") == sorted(ids)
        wait_until(both_live, "news live on both edges", procs)
        streams = origin.json("streams")
        assert all(s["mode"] == "passthrough" and s["decided_by_controller"] for s in streams)
        assert all("transcoding is off on the node" in s["reason"] for s in streams), streams
        assert "news" in origin.cli("streams", "-o", "wide").stdout

        # routing: prefix first (even where GeoIP puts the client nearer the other edge), then distance
        def routed_to(client: str, node: str) -> Any:
            status, h, _ = play(origin, "news", client)
            return status == 302 and h["location"] == (a if node == ids[0] else b).playlist("news")
        wait_until(lambda: routed_to("10.1.2.3", ids[0]), "prefix → edge-a", procs)
        assert routed_to("10.2.9.9", ids[1])
        status, _, body = play(origin, "news", "10.1.2.3", want_json=True)
        assert status == 200 and (body["node"], body["reason"]) == (ids[0], "prefix")
        assert body["alternates"] == [{"node": ids[1], "url": b.playlist("news")}]
        status, _, body = play(origin, "news", "198.51.100.7", want_json=True)
        assert (body["node"], body["reason"]) == (ids[1], "nearest")
        status, _, body = play(origin, "news", "203.0.113.5", want_json=True)
        assert (body["node"], body["reason"]) == (ids[0], "nearest")
        explained = origin.json("route", "news", "--client-ip", "10.1.2.3")
        assert (explained["node_id"], explained["reason"]) == (ids[0], "prefix")
        assert explained["client_location"] == list(BERLIN)
        # the 302 leads to a playable master playlist on that edge
        wait_until(lambda: get(a.http, "/live/news/master.m3u8")[0] == 200, "edge-a's playlist", procs)

        # a draining node gets no new viewers
        drain = origin.cli("drain", "edge-a", "--wait", "0")
        assert drain.returncode == 0 and "draining" in drain.stdout, drain.stderr
        wait_until(lambda: routed_to("10.1.2.3", ids[1]), "edge-a skipped while draining", procs)
        assert origin.cli("uncordon", "edge-a").returncode == 0
        wait_until(lambda: routed_to("10.1.2.3", ids[0]), "edge-a back after uncordon", procs)
        metrics = origin.metrics()
        assert 'originctl_route_decisions_total{outcome="prefix"}' in metrics
        assert 'originctl_route_decisions_total{outcome="offline"} 1.0' in metrics
        assert "originctl_route_decisions_per_second" in metrics
    finally:
        for p in pubs:
            if p.poll() is None:
                p.terminate()
            finish(p, 10)

    # rotation: the old key is refused on every edge within the cache bound; the new key publishes
    sports = origin.cli("channel", "create", "sports").stdout.strip()
    assert publish_ok(a.rtmp_url(sports))
    assert publish_ok(b.srt_url(sports)), procs.dump()  # SRT: the handshake answers from the pushed key table
    rotated = origin.cli("channel", "rotate-key", "sports").stdout.strip()
    assert rotated and rotated != sports
    for url in (a.rtmp_url(sports), b.rtmp_url(sports), b.srt_url(sports)):
        assert refused_within(url, AUTH_CACHE), procs.dump()
    assert publish_ok(b.rtmp_url(rotated))

    # deletion: the channel stops (its live publisher is disconnected, its key publishes nowhere, viewers 404)
    live = ffmpeg_publish(a.rtmp_url(rotated), 60, size="320x180", rate=15)
    try:
        wait_until(lambda: any(s["channel"] == "sports" for s in origin.json("streams")), "sports live on edge-a",
                   procs)
        assert origin.cli("channel", "delete", "sports").returncode == 0
        rc = finish(live, 20)
    finally:
        if live.poll() is None:
            live.kill()
            finish(live, 5)
    assert rc not in (None, 0), "the live publisher was disconnected well before its 60 s"
    for e in (a, b):
        assert refused_within(e.rtmp_url(rotated), AUTH_CACHE), procs.dump()
    status, _, body = play(origin, "sports", "10.1.2.3")
    assert status == 404 and body["error"] == "unknown-channel"
    listed = origin.json("channels")
    assert [c["name"] for c in listed] == ["news"]
    ended = origin.json("streams", "--all")
    assert any(s["channel"] == "sports" and s["ended_unix_ms"] for s in ended)
    logs = "\n".join(p.read_text(errors="replace") for p in procs.logs)
    assert "unknown stream key" in logs
    assert "channel=sports disconnecting the publisher: its stream key was rotated or revoked" in logs

    # drain reports until the node has no streams and no viewers (edge-b's publishers are gone)
    drain = origin.cli("drain", "edge-b", "--wait", "30s", "--interval", "0.3")
    assert drain.returncode == 0 and "drained (no streams, no viewers)" in drain.stdout, drain.stderr
    assert origin.json("node", "show", ids[1])["state"] == "draining"
    assert origin.cli("uncordon", ids[1]).returncode == 0

    # a controller outage: the edges answer from the key table for auth_cache_seconds, then refuse
    backup = origin.cli("channel", "create", "backup").stdout.strip()
    assert procs.signal("originctl", signal.SIGTERM) == 0
    stopped = time.monotonic()
    assert publish_ok(b.rtmp_url(backup), 1.0)
    assert time.monotonic() < stopped + AUTH_CACHE, "the machine is too slow for this check"
    time.sleep(max(0.0, stopped + AUTH_CACHE + 0.5 - time.monotonic()))
    assert refused_within(b.rtmp_url(backup), 1.0)
    _, _, text = get(b.http, "/metrics")
    assert 'edged_publish_authorizations_total{result="allowed",via="cache"} 1.0' in text.decode()
    edge_b_log = next(p for p in procs.logs if p.name.startswith("edge-b")).read_text(errors="replace")
    assert "the key table it pushed expired" in edge_b_log
