"""Real processes on 127.0.0.1: `originctl serve`, three edges, and the `originctl` CLI.

Edges run either as `python -m edged.agent` (the agent alone) or as the real `edged run --origin ...`;
the latter is skipped until edged/app.py runs the agent. mDNS is confined to 127.0.0.1 with
$EDGENET_MDNS_INTERFACES. Heartbeats are 0.3 s; assertions are about states, never about speed.
Every process is stopped by PID at the end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.procs import ffmpeg_publish

ROOT = Path(__file__).resolve().parents[3]
APP = ROOT / "edged" / "app.py"
EDGED_RUNS_AGENT = APP.exists() and "edged.agent" in APP.read_text()
HEARTBEAT = 0.3  # s
WAIT = 30.0  # s: generous bound for a state to be reached on a loaded 2-core machine
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,}\.[0-9a-f]{32}$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Procs:
    """Processes started by one test, with their logs; stopped by PID."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: list[Path] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "wb") as fh:
            p = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=fh, stderr=subprocess.STDOUT)
        self.procs[name] = p
        return p

    def signal(self, name: str, sig: int) -> int:
        p = self.procs[name]
        p.send_signal(sig)
        return p.wait(timeout=20)

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)

    def dump(self) -> str:
        return "\n".join(f"----- {log.name}\n" + log.read_text(errors="replace")[-4000:] for log in self.logs)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORIGINCTL_")}
    env.update(EDGENET_MDNS_INTERFACES="127.0.0.1", PYTHONUNBUFFERED="1", XDG_CONFIG_HOME=str(tmp_path / "xdg"),
               GRPC_VERBOSITY="ERROR")
    p = Procs(tmp_path, env)
    try:
        yield p
    finally:
        p.stop_all()


def wait_until(check: Callable[[], Any], what: str, procs: Procs, within: float = WAIT) -> Any:
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n{procs.dump()}")


class Origin:
    def __init__(self, procs: Procs, tmp: Path) -> None:
        self.procs = procs
        self.grpc, self.edge, self.http = free_port(), free_port(), free_port()
        self.config = tmp / "originctl.toml"
        self.config.write_text(
            f'data_dir = "{tmp / "origin"}"\ngrpc = "127.0.0.1:{self.grpc}"\nedge_grpc = "127.0.0.1:{self.edge}"\n'
            f'http = "127.0.0.1:{self.http}"\n[health]\nlost_after_intervals = 3\nrecover_reports = 3\n')
        self.token_file = tmp / "origin" / "admin.token"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    def start(self) -> None:
        self.procs.start("originctl", [sys.executable, "-m", "originctl", "serve", "--config", str(self.config)])
        wait_until(self.healthy, "the controller's /healthz", self.procs)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/metrics", timeout=5) as r:
            return r.read().decode()

    def cli(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        tok = token if token is not None else self.token_file.read_text().strip()
        return subprocess.run([sys.executable, "-m", "originctl", "--origin", self.address, "--token", tok, *args],
                              cwd=ROOT, env=self.procs.env, capture_output=True, text=True, timeout=60)

    def json(self, *args: str) -> Any:
        done = self.cli(*args, "-o", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def states(self) -> dict[str, str]:
        return {n["id"]: n["state"] for n in self.json("nodes")}


class Edge:
    def __init__(self, procs: Procs, tmp: Path, name: str, launcher: str) -> None:
        self.procs, self.name, self.launcher = procs, name, launcher
        self.data = tmp / name
        self.data.mkdir()
        self.http, self.rtmp = free_port(), free_port()
        self.config = tmp / f"{name}.toml"
        self.config.write_text(f'[origin]\nheartbeat_seconds = {HEARTBEAT}\n[node]\nname = "{name}"\nsite = "lab"\n')

    def argv(self, origin: str, token: str) -> list[str]:
        if self.launcher == "agent":
            head = [sys.executable, "-m", "edged.agent", "--config", str(self.config), "--data-dir", str(self.data),
                    "--http", f"127.0.0.1:{self.http}"]
        else:
            head = [sys.executable, "-m", "edged", "run", "--config", str(self.config), "--data-dir", str(self.data),
                    "--rtmp", f"127.0.0.1:{self.rtmp}", "--http", f"127.0.0.1:{self.http}", "--no-srt",
                    "--relay", f"127.0.0.1:{free_port()}", "--irc", f"127.0.0.1:{free_port()}"]
        return [*head, "--origin", origin, "--enroll-token", token]

    def start(self, origin: str, token: str) -> subprocess.Popen[bytes]:
        return self.procs.start(self.name, self.argv(origin, token))

    def node_id(self) -> str:
        meta = self.data / "agent" / "identity.json"
        return str(json.loads(meta.read_text())["node_id"]) if meta.exists() else ""


LAUNCHERS = [
    pytest.param("agent", id="python-m-edged.agent"),
    pytest.param("edged", id="edged-run", marks=pytest.mark.skipif(
        not EDGED_RUNS_AGENT, reason="edged/app.py does not run edged.agent yet")),
]


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_fleet_lifecycle(procs: Procs, tmp_path: Path, launcher: str) -> None:
    origin = Origin(procs, tmp_path)
    origin.start()

    # tokens: only tokens on stdout
    done = origin.cli("token", "create", "--ttl", "10m", "--site", "lab")
    assert done.returncode == 0, done.stderr
    assert TOKEN_RE.match(done.stdout.strip()) and done.stdout.count("\n") == 1
    done = origin.cli("token", "create", "--count", "3")
    tokens = done.stdout.split()
    assert len(tokens) == 3 and all(TOKEN_RE.match(t) for t in tokens)

    # three edges enroll (the third finds the controller by mDNS) and turn healthy
    edges = [Edge(procs, tmp_path, f"edge-{i}", launcher) for i in range(3)]
    for edge, token, address in zip(edges, tokens, [origin.address, origin.address, "auto"], strict=True):
        edge.start(address, token)
    ids = wait_until(lambda: all(e.node_id() for e in edges) and [e.node_id() for e in edges], "enrollment", procs)
    wait_until(lambda: origin.states() == dict.fromkeys(ids, "healthy"), "three healthy nodes", procs)
    table = origin.cli("nodes")
    assert table.returncode == 0 and all(i in table.stdout for i in ids)
    shown = origin.json("node", "show", ids[0])
    assert shown["connected"] and shown["info"]["name"] == "edge-0" and shown["last_report"]["gpu_status"]

    # a used token is refused with a clear message, and that edge exits 1
    reuse = Edge(procs, tmp_path, "edge-reuse", launcher)
    p = reuse.start(origin.address, tokens[0])
    assert p.wait(timeout=60) == 1, procs.dump()
    assert "already used" in procs.logs[-1].read_text()

    # the LAN view lists every edge by node ID
    def discovered() -> bool:
        done = origin.cli("discover", "--timeout", "2", "-o", "json")
        return done.returncode == 0 and set(ids) <= {f["properties"].get("id") for f in json.loads(done.stdout)}
    wait_until(discovered, "the edges on mDNS", procs)

    # SIGKILL: lost within three intervals (plus the sweep), back to healthy when restarted
    procs.signal(edges[1].name, signal.SIGKILL)
    wait_until(lambda: origin.states()[ids[1]] == "lost", "the killed node lost", procs)
    reason = origin.json("node", "show", ids[1])["state_reason"]
    assert reason.startswith("no report for") and f"3 intervals of {HEARTBEAT:g} s" in reason
    edges[1].start(origin.address, tokens[1])  # identity on disk: the used token is ignored
    wait_until(lambda: origin.states()[ids[1]] == "healthy", "the restarted node healthy", procs)
    assert edges[1].node_id() == ids[1]

    # a live stream (edged run only: it ingests), to follow through the controller's restart
    publisher = None
    if launcher == "edged":
        key = origin.cli("channel", "create", "live").stdout.strip()
        publisher = ffmpeg_publish(f"rtmp://127.0.0.1:{edges[0].rtmp}/live/{key}", 120, size="320x180", rate=15)
        live = wait_until(lambda: [s for s in origin.json("streams") if s["channel"] == "live"
                                   and s["protocol"] == "rtmp" and s["renditions"]], "the stream live", procs)[0]

    # the controller restarts; edges re-attach with their certificates, nobody enrolls again, and none of them is
    # shown lost in between (their silence counts from the controller's start, long enough for them to re-attach)
    assert procs.signal("originctl", signal.SIGTERM) == 0
    restarted_ms = int(time.time() * 1000)
    origin.start()
    seen: set[str] = set()

    def reattached() -> bool:
        nodes = origin.json("nodes")
        seen.update(n["state"] for n in nodes)
        return all(n["connected"] and n["state"] == "healthy" for n in nodes)
    wait_until(reattached, "edges re-attached and healthy", procs)
    assert "lost" not in seen, seen
    assert sorted(origin.states()) == sorted(ids)
    events = origin.json("events", "--limit", "1000")
    assert sum(e["kind"] == "enrolled" for e in events) == 3
    assert any(e["node_id"] == ids[1] and e["to_state"] == "lost" for e in events)
    after = [e for e in events if e["time_unix_ms"] >= restarted_ms]
    assert not [e for e in after if e["to_state"] == "lost"], after
    if publisher is not None:
        # the stream keeps its real start (its age), protocol and placement; no end or new start is recorded
        again = [s for s in origin.json("streams") if s["channel"] == "live"]
        assert len(again) == 1 and again[0]["id"] == live["id"], (live, again)
        for field in ("node_id", "protocol", "started_unix_ms", "mode", "reason", "decided_by_controller"):
            assert again[0][field] == live[field], (field, live, again[0])
        assert not [e for e in after if e["kind"] == "stream"], after
        publisher.kill()
        publisher.communicate()

    metrics = origin.metrics()
    assert 'originctl_nodes{state="healthy"} 3.0' in metrics and "originctl_nodes_connected 3.0" in metrics
    top = origin.cli("top", "--count", "1")
    assert top.returncode == 0 and "nodes 3: 3 healthy" in top.stdout

    # a clean stop says goodbye: lost at once, with that reason
    assert procs.signal(edges[2].name, signal.SIGTERM) == 0
    wait_until(lambda: origin.json("node", "show", ids[2])["state_reason"] == "edge disconnected: edged stopping",
               "goodbye recorded", procs)


def test_cli_errors_against_a_live_controller(procs: Procs, tmp_path: Path) -> None:
    origin = Origin(procs, tmp_path)
    origin.start()
    fp = origin.token_file.read_text().strip().rsplit(".", 1)[1]
    bad = origin.cli("nodes", token="wrongsecret." + fp)
    assert bad.returncode == 1 and bad.stderr.startswith("originctl: wrong admin token")
    assert str(origin.token_file.resolve()) in bad.stderr and bad.stderr.count("\n") == 1
    missing = origin.cli("node", "show", "nd-nope")
    assert missing.returncode == 1 and "no node 'nd-nope'" in missing.stderr
    usage = origin.cli("token", "create", "--ttl", "90d")
    assert usage.returncode == 2 and "--ttl must be between" in usage.stderr
    assert origin.cli("events").returncode == 0
