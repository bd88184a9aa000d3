"""The HTTP front under hostile load, against a real edged process.

Attackers are raw sockets on 127.0.0.1 (idle sockets, slowloris heads, peers that stop reading,
garbage requests, one address opening too many connections); the honest viewer is urllib/http.client
(and ffmpeg publishes, so a real playlist is fetched). Each test asserts the property (attack sockets
closed by the server, the viewer answered, the log bounded) and prints the figures it saw: sockets
held, honest requests served, edged's RSS and open descriptors before and after, log bytes written.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.integration.procs import EdgeProcess, http_get, wait_for

KEY = "hostile-key"


# --- helpers -------------------------------------------------------------------------------------------

def figures(edge: EdgeProcess) -> dict[str, int]:
    """edged's resident memory (KiB), open descriptors, and log size (bytes) now."""
    assert edge.proc is not None
    pid = edge.proc.pid
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    return {"rss_kib": rss, "fds": len(os.listdir(f"/proc/{pid}/fd")), "log_bytes": edge.log_path.stat().st_size}


def metric(edge: EdgeProcess, name: str, source: str = "127.0.0.1") -> float:
    """One sample of edged's /metrics (`name` with its labels, as printed), fetched from `source`."""
    conn = http.client.HTTPConnection("127.0.0.1", edge.http_port, timeout=5, source_address=(source, 0))
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def report(what: str, before: dict[str, int], after: dict[str, int], **extra: object) -> None:
    print(f"\n[{what}] " + " ".join(f"{k}={v}" for k, v in extra.items())
          + f" rss_kib {before['rss_kib']}->{after['rss_kib']} fds {before['fds']}->{after['fds']}"
          f" log_bytes_written={after['log_bytes'] - before['log_bytes']}")


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    s.setblocking(False)
    return s


def closed_by_server(s: socket.socket) -> bool:
    """The server closed (FIN or reset) this socket; whatever it sent before is read and dropped."""
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def refused(port: int) -> bool:
    """A request on a new connection is refused: a bare 503, or the connection closed or reset before any
    response (which of the two a client sees depends on when its request crossed the server's close)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 503
    except (ConnectionError, http.client.RemoteDisconnected):
        return True
    finally:
        conn.close()


def still_open(socks: list[socket.socket]) -> list[socket.socket]:
    return [s for s in socks if not closed_by_server(s)]


class Viewer(threading.Thread):
    """An honest viewer fetching `paths` in a loop (a new connection each time, like a fresh player)."""

    def __init__(self, edge: EdgeProcess, paths: list[str], source: str = "127.0.0.1") -> None:
        super().__init__(daemon=True)
        self.edge, self.paths, self.source = edge, paths, source
        self.ok = 0
        self.failures: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for path in self.paths:
                conn = http.client.HTTPConnection("127.0.0.1", self.edge.http_port, timeout=10,
                                                  source_address=(self.source, 0))
                try:
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"{path}: {resp.status}")
                except OSError as exc:
                    self.failures.append(f"{path}: {exc!r}")
                finally:
                    conn.close()
            self._halt.wait(0.1)

    def stop(self) -> None:
        self._halt.set()
        self.join(15)


@contextlib.contextmanager
def edged(tmp_path: Path, http: dict[str, object], nofile: int | None = None,
          rtmp: dict[str, object] | None = None) -> Iterator[EdgeProcess]:
    lines = ["[http]"] + [f"{k} = {v!r}" for k, v in http.items()]
    if rtmp:
        lines += ["[rtmp]"] + [f"{k} = {v!r}" for k, v in rtmp.items()]
    conf = tmp_path / "edged.toml"
    conf.write_text("\n".join(lines) + "\n")
    edge = EdgeProcess(tmp_path / "data", {"hostile": KEY}, extra=["--no-srt", "--no-transcode", "--config", str(conf)],
                       nofile=nofile)
    try:
        yield edge.start()
    finally:
        edge.stop()


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


# --- the tests -----------------------------------------------------------------------------------------

def test_slowloris_and_idle_sockets_are_closed_while_a_viewer_watches(tmp_path: Path, sample_flv: Path) -> None:
    """500 idle sockets, 300 slowloris heads and 100 idle keep-alive sockets are all closed by their
    timeouts, while a player keeps getting /healthz and the live playlists."""
    with edged(tmp_path, {"header_timeout": 1.0, "keepalive_timeout": 2.0, "send_timeout": 2.0}) as edge:
        pub = subprocess.Popen([need("ffmpeg"), "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1",
                                "-i", str(sample_flv), "-c", "copy", "-f", "flv", edge.rtmp_url(KEY)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        socks: list[socket.socket] = []
        try:
            wait_for(lambda: http_get(edge.http + "/live/hostile/source/index.m3u8")[0] == 200, 20, "a playlist")
            before = figures(edge)
            viewer = Viewer(edge, ["/healthz", "/live/hostile/master.m3u8", "/live/hostile/source/index.m3u8"])
            viewer.start()
            idle = [connect(edge.http_port) for _ in range(500)]
            loris = [connect(edge.http_port) for _ in range(300)]
            for s in loris:
                s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            keepalive = []
            for _ in range(100):
                s = connect(edge.http_port)
                s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                keepalive.append(s)
            socks = idle + loris + keepalive
            held = len(socks)
            during = figures(edge)
            deadline = time.monotonic() + 20
            open_loris = loris
            while time.monotonic() < deadline and still_open(socks):
                open_loris = still_open(open_loris)
                for s in open_loris:  # a header line every 0.3 s: the head never completes
                    with contextlib.suppress(OSError):
                        s.send(b"X-a: b\r\n")
                time.sleep(0.3)
            left = len(still_open(socks))
            viewer.stop()
            served = viewer.ok
            assert left == 0, f"{left} of {held} attack sockets still open"
            assert served > 0 and not viewer.failures, viewer.failures[:5]
            close_all(socks)
            wait_for(lambda: metric(edge, "edged_http_connections") <= 1, 10, "the connection gauge to drain")
            header = metric(edge, 'edged_http_timeouts_total{kind="header"}')
            keep = metric(edge, 'edged_http_timeouts_total{kind="keepalive"}')
            assert header >= 800 and keep >= 100, (header, keep)
            after = figures(edge)
            assert after["fds"] <= before["fds"] + 10
            report("slowloris", before, after, attack_sockets=held, honest_requests_served=served,
                   fds_during=during["fds"], header_timeouts=int(header), keepalive_timeouts=int(keep))
            assert after["log_bytes"] - before["log_bytes"] < 20_000
        finally:
            close_all(socks)
            pub.kill()
            pub.wait(10)


def test_more_idle_sockets_than_descriptors_cannot_lock_out_a_viewer(tmp_path: Path) -> None:
    """edged under a hard limit of 256 descriptors; 1,100 idle sockets arrive. The cap (128 here) stays
    below the limit, the oldest never-used sockets make room, and the viewer is answered throughout."""
    with edged(tmp_path, {"header_timeout": 60.0}, nofile=256) as edge:
        before = figures(edge)
        assert metric(edge, "edged_http_connection_limit") == 128
        socks: list[socket.socket] = []
        served = 0
        try:
            for i in range(1100):
                socks.append(connect(edge.http_port))
                if i % 100 == 99:  # the honest viewer, between waves of the attack
                    assert http_get(edge.http + "/healthz")[0] == 200
                    assert http_get(edge.http + "/metrics")[0] == 200
                    served += 2
            during = figures(edge)
            wait_for(lambda: len(still_open(socks)) <= 128, 10, "the attack sockets to be cut to the cap")
            held = len(still_open(socks))
            assert during["fds"] < 256
            assert edge.alive()
            evicted = metric(edge, "edged_http_connections_evicted_total")
            assert evicted >= 1100 - 128
            assert metric(edge, "edged_accept_errors_total") == 0
        finally:
            close_all(socks)
        wait_for(lambda: metric(edge, "edged_http_connections") <= 1, 10, "the connection gauge to drain")
        after = figures(edge)
        report("fd-exhaustion", before, after, attack_sockets_opened=len(socks), attack_sockets_held=held,
               honest_requests_served=served, evicted=int(evicted), fds_during=during["fds"])
        assert after["log_bytes"] - before["log_bytes"] < 10_000


def test_one_address_over_its_cap_is_refused_and_others_are_served(tmp_path: Path) -> None:
    with edged(tmp_path, {"max_connections_per_address": 20, "header_timeout": 30.0}) as edge:
        before = figures(edge)
        socks = [connect(edge.http_port) for _ in range(50)]
        try:
            wait_for(lambda: len(still_open(socks)) == 20, 10, "the excess sockets to be refused")
            # a viewer behind another address is served; one more from the capped address gets a 503
            conn = http.client.HTTPConnection("127.0.0.1", edge.http_port, timeout=5, source_address=("127.0.0.2", 0))
            conn.request("GET", "/healthz")
            assert conn.getresponse().status == 200
            conn.close()
            assert refused(edge.http_port)  # one more from the capped address
            assert metric(edge, 'edged_http_connections_refused_total{reason="per_address"}', "127.0.0.2") >= 31
        finally:
            close_all(socks)
        # the address's slots come back when its connections close
        wait_for(lambda: http_get(edge.http + "/healthz")[0] == 200, 10, "127.0.0.1 to be served again")
        after = figures(edge)
        report("per-address", before, after, attack_sockets_opened=50, held=20)
        assert after["log_bytes"] - before["log_bytes"] < 5_000


GARBAGE = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64) + b"\r\n\r\n",  # a TLS ClientHello
    b"\x00\xff\xfe garbage \x01\x02\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",  # request line over the limit
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 20000 + b"\r\n\r\n",  # header over the limit
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # bad chunk size
    b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
]


def test_malformed_requests_are_answered_400_without_tracebacks(tmp_path: Path) -> None:
    with edged(tmp_path, {}) as edge:
        before = figures(edge)
        answers: dict[str, int] = {}
        rounds = 40
        for _ in range(rounds):
            for junk in GARBAGE:
                s = socket.create_connection(("127.0.0.1", edge.http_port), timeout=5)
                try:
                    with contextlib.suppress(OSError):  # the server may answer and close before all is sent
                        s.sendall(junk)
                    reply = b""
                    with contextlib.suppress(OSError):
                        while chunk := s.recv(65536):
                            reply += chunk
                finally:
                    s.close()
                status = reply.split(b"\r\n", 1)[0].decode(errors="replace")
                answers[status] = answers.get(status, 0) + 1
        # on a keep-alive connection after a good request, garbage ends the connection (nothing after it is served)
        s = socket.create_connection(("127.0.0.1", edge.http_port), timeout=5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b"}" not in first:  # the JSON body of /healthz
            first += s.recv(65536)
        s.sendall(b"G@T / HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                reply += chunk
        s.close()
        assert first.startswith(b"HTTP/1.1 200") and reply.startswith(b"HTTP/1.") and b" 400 " in reply
        assert b" 200 " not in reply
        assert http_get(edge.http + "/healthz")[0] == 200
        sent = rounds * len(GARBAGE) + 1
        assert set(answers) <= {"HTTP/1.1 400 Bad Request", "HTTP/1.0 400 Bad Request", ""}, answers
        assert metric(edge, "edged_http_bad_requests_total") >= sent - answers.get("", 0)
        after = figures(edge)
        text = edge.log()
        report("malformed", before, after, bad_requests_sent=sent, answers=answers)
        assert "Traceback" not in text and "Error handling request" not in text
        assert after["log_bytes"] - before["log_bytes"] < 2_000


def test_a_peer_that_stops_reading_is_dropped(tmp_path: Path) -> None:
    """1,000 pipelined /metrics requests from a socket with a tiny receive window that never reads:
    once nothing moves for send_timeout the connection is aborted and its buffers freed."""
    with edged(tmp_path, {"send_timeout": 1.0}) as edge:
        before = figures(edge)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", edge.http_port))
        try:
            s.settimeout(10)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 1000)
            wait_for(lambda: metric(edge, 'edged_http_timeouts_total{kind="send"}') >= 1, 20, "a send timeout")
            received = 0
            with contextlib.suppress(OSError):
                while chunk := s.recv(65536):
                    received += len(chunk)
            assert received > 0
        finally:
            s.close()
        wait_for(lambda: metric(edge, "edged_http_connections") <= 1, 10, "the connection to be gone")
        assert http_get(edge.http + "/healthz")[0] == 200
        after = figures(edge)
        report("stops-reading", before, after, pipelined_requests=1000, bytes_read_before_drop=received)
        assert after["fds"] <= before["fds"] + 2


def test_accept_errors_are_logged_once_per_interval(tmp_path: Path) -> None:
    """Below 512 descriptors the headroom is smaller than the listen backlog, so one accept burst can
    still hit EMFILE. Make the burst happen: stop edged (SIGSTOP), let 120 connections complete in the
    kernel's accept queue, continue it; three times. asyncio reports each failed accept and retries a
    second later: the log gets one line per interval, and the viewer is answered after each burst."""
    with edged(tmp_path, {}, nofile=64) as edge:
        assert edge.proc is not None
        before = figures(edge)
        started = time.monotonic()
        opened = 0
        for _ in range(3):
            edge.proc.send_signal(signal.SIGSTOP)
            try:
                socks = [socket.create_connection(("127.0.0.1", edge.http_port), timeout=5) for _ in range(120)]
            finally:
                edge.proc.send_signal(signal.SIGCONT)
            opened += len(socks)
            try:
                wait_for(lambda: http_get(edge.http + "/healthz")[0] == 200, 20, "HTTP to answer after the burst")
            finally:
                close_all(socks)
        errors = metric(edge, "edged_accept_errors_total")
        assert edge.alive()
        wait_for(lambda: metric(edge, "edged_http_connections") <= 1, 10, "the connection gauge to drain")
        after = figures(edge)
        text = edge.log()
        report("accept-errors", before, after, burst_sockets=opened, accept_errors=int(errors))
        assert errors >= 3
        intervals = int((time.monotonic() - started) // 10) + 1  # QuietLog: one line per kind per 10 s
        assert 1 <= text.count("accept failed") <= intervals and "Traceback" not in text
        assert after["log_bytes"] - before["log_bytes"] < 5_000


@pytest.fixture(autouse=True)
def _loopback_aliases() -> None:
    """127.0.0.2 is loopback on Linux (all of 127/8); say so plainly if this machine differs."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.2", 0))
        except OSError as exc:
            pytest.fail(f"cannot bind 127.0.0.2 (needed as a second client address): {exc}")
