"""The README's nginx shared-cache configuration, run as written (only its ports and cache directory
changed) in front of an edge's HTTP front: directive playlists cache per query string, parts and init
segments are cached as immutable, held reloads through the cache reach the edge once per directive
(proxy_cache_lock) and answer every viewer after the commit, gzip varies by Accept-Encoding, errors are
not cached. Skipped where Debian's nginx is not installed."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import m3u8
import pytest

from edged.config import Config, HlsConfig, HttpConfig
from edged.http.app import HttpFront
from edged.relay.commits import CommitBus
from edged.store.segments import SegmentStore
from tests.integration.relay.test_relay_grpc import until
from tests.unit.http.llhls_fixture import CHANNEL, Writer

log = logging.getLogger(__name__)
README = Path(__file__).resolve().parents[3] / "README.md"
pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")


def readme_nginx_conf() -> str:
    """The ```nginx block of the README."""
    blocks = re.findall(r"```nginx\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1, "the README has one nginx configuration"
    return blocks[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def nginx_for(tmp_path: Path) -> Iterator[object]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(edge_port: int) -> str:
        snippet = readme_nginx_conf()
        for old in ("127.0.0.1:8080", "listen 8081;", "/var/cache/nginx/edged"):
            assert old in snippet, old
        port = free_port()
        prefix = tmp_path / "nginx"
        (prefix / "logs").mkdir(parents=True)
        snippet = (snippet.replace("127.0.0.1:8080", f"127.0.0.1:{edge_port}")
                   .replace("listen 8081;", f"listen 127.0.0.1:{port};")
                   .replace("/var/cache/nginx/edged", str(prefix / "cache")))
        temps = "\n".join(f"{k}_temp_path {prefix}/{k}_temp;" for k in
                          ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        user = "user root;\n" if os.geteuid() == 0 else ""  # its workers must reach the (0700) temporary dir
        conf = prefix / "nginx.conf"
        conf.write_text(f"daemon off;\n{user}worker_processes 1;\npid {prefix}/nginx.pid;\n"
                        f"error_log {prefix}/logs/error.log warn;\nevents {{ worker_connections 1024; }}\n"
                        f"http {{\naccess_log off;\n{temps}\n{snippet}\n}}\n")
        check = subprocess.run(["nginx", "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        procs.append(subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(conf)]))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return f"http://127.0.0.1:{port}"
            time.sleep(0.05)
        raise AssertionError((prefix / "logs" / "error.log").read_text())

    yield start
    for p in procs:  # by its PID; the master stops its worker on SIGTERM
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[tuple[HttpFront, Writer]]:
    store = SegmentStore(tmp_path / "store", 64 << 20)
    bus = CommitBus()
    front = HttpFront(Config(http=HttpConfig(listen="127.0.0.1:0"), hls=HlsConfig()), store, dict, bus=bus)
    await front.start()
    yield front, Writer(store, bus)
    await front.stop()
    store.close()


async def _get(s: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    async with s.get(url, headers={"Accept-Encoding": "identity", **headers}) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_the_readme_cache_in_front_of_an_edge(edge: tuple[HttpFront, Writer], nginx_for: object) -> None:
    front, w = edge
    cache = nginx_for(front.port)  # type: ignore[operator]
    w.start()
    w.segments(3)
    w.part("source", 3)
    src = f"{cache}/live/{CHANNEL}/source"
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        # a directive's answer is cached (6 x TD) under its own query string
        first = await _get(s, f"{src}/index.m3u8?_HLS_msn=3&_HLS_part=0")
        again = await _get(s, f"{src}/index.m3u8?_HLS_msn=3&_HLS_part=0")
        assert first[0] == again[0] == 200 and first[2] == again[2]
        assert (first[1]["X-Cache-Status"], again[1]["X-Cache-Status"]) == ("MISS", "HIT")
        assert again[1]["Cache-Control"] == "public, max-age=6"
        other = await _get(s, f"{src}/index.m3u8?_HLS_msn=2")
        assert other[1]["X-Cache-Status"] == "MISS"

        # held reloads through the cache: the edge holds one, nginx the rest; all answered after the commit
        query = "?_HLS_msn=3&_HLS_part=1"
        held = [asyncio.create_task(_get(s, f"{src}/index.m3u8{query}")) for _ in range(5)]
        await until(lambda: front.hls.blocking.blocked(CHANNEL, "source") >= 1, 10, "a held reload at the edge")
        await asyncio.sleep(0.3)  # time for the other four to reach nginx
        assert front.hls.blocking.blocked(CHANNEL, "source") == 1  # proxy_cache_lock: one goes to the edge
        committed = time.monotonic()
        w.part("source", 3)
        answers = await asyncio.wait_for(asyncio.gather(*held), 30)
        log.info("5 held reloads through nginx all answered %.0f ms after the commit (cache status %s)",
                 (time.monotonic() - committed) * 1000, [a[1].get("X-Cache-Status") for a in answers])
        assert [a[0] for a in answers] == [200] * 5 and len({a[2] for a in answers}) == 1
        assert [p.uri for p in m3u8.loads(answers[0][2].decode()).segments[-1].parts] == ["3.0.m4s", "3.1.m4s"]

        # parts and init segments: immutable, served from the cache the second time
        for path in ("3.1.m4s", f"init-{w.inits['source']}.mp4", "2.m4s"):
            a, b = await _get(s, f"{src}/{path}"), await _get(s, f"{src}/{path}")
            assert a[0] == b[0] == 200 and a[2] == b[2] and b[1]["X-Cache-Status"] == "HIT", path
            assert b[1]["Cache-Control"] == "public, max-age=86400, immutable"

        # gzip varies by Accept-Encoding
        zipped = await _get(s, f"{src}/index.m3u8?_HLS_msn=3&_HLS_part=1", **{"Accept-Encoding": "gzip"})
        assert zipped[0] == 200 and zipped[1].get("Content-Encoding") == "gzip"
        assert gzip.decompress(zipped[2]) == answers[0][2]

        # errors are not cached: a part that does not exist yet is 404, then there once committed
        missing = await _get(s, f"{src}/5.0.m4s")  # two segments ahead: not waited for
        assert missing[0] == 404
        w.segment("source", 3)
        w.segment("source", 4)
        w.part("source", 5)
        found = await _get(s, f"{src}/5.0.m4s")
        assert found[0] == 200 and found[1]["X-Cache-Status"] == "MISS"
