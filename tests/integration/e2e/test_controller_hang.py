"""A hung controller (SIGSTOP: its process frozen, its kernel still ACKing TCP) counts as down as fast as a
stopped one, and the edge's cached key table is believed only `auth_cache_seconds` after the controller was
last heard from. Real processes on 127.0.0.1: `originctl serve`, one `edged run --origin`, Debian ffmpeg
publishing over RTMP. States are waited for up to a deadline; nothing here asserts how long anything took.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.e2e.test_controller_e2e import Origin, Procs, wait_until
from tests.integration.e2e.test_origin_e2e import EdgeNode, get, publish_ok, refused_within

AUTH_CACHE = 3.0  # s: origin.auth_cache_seconds on the edge (heartbeats are 0.3 s: it hears a pulse every 0.3 s)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORIGINCTL_")}
    env.update(PYTHONUNBUFFERED="1", XDG_CONFIG_HOME=str(tmp_path / "xdg"), GRPC_VERBOSITY="ERROR",
               EDGENET_MDNS_INTERFACES="127.0.0.1")
    p = Procs(tmp_path, env)
    try:
        yield p
    finally:
        controller = p.procs.get("originctl")
        if controller is not None and controller.poll() is None:
            os.kill(controller.pid, signal.SIGCONT)  # a frozen process would not hear SIGTERM
        p.stop_all()


def edge_metric(edge: EdgeNode, name: str) -> float | None:
    _, _, body = get(edge.http, "/metrics")
    m = re.search(rf"^{re.escape(name)} (\S+)$", body.decode(), re.M)
    return float(m.group(1)) if m else None


def test_a_frozen_controller_counts_as_down_and_the_key_table_expires(procs: Procs, tmp_path: Path) -> None:
    origin = Origin(procs, tmp_path)
    origin.start()
    token = origin.cli("token", "create").stdout.strip()
    edge = EdgeNode(procs, tmp_path, "edge-h", ["10.9.0.0/16"], (48.86, 2.35), auth_cache=AUTH_CACHE)
    edge.start(origin.address, token)
    node = wait_until(edge.node_id, "enrollment", procs)
    wait_until(lambda: origin.states().get(node) == "healthy", "the edge healthy", procs)
    key = origin.cli("channel", "create", "hang").stdout.strip()
    wait_until(lambda: edge_metric(edge, "edged_key_table_channels") == 1.0, "the key table on the edge", procs)
    assert publish_ok(edge.rtmp_url(key), 1.0), procs.dump()
    assert edge_metric(edge, "edged_controller_link_up") == 1.0
    _, _, body = get(edge.http, "/metrics")
    # the controller accepts the edge's frequent keepalive pings: no link was lost (no GOAWAY too_many_pings)
    assert "edged_controller_link_lost_total{" not in body.decode(), procs.dump()

    os.kill(procs.procs["originctl"].pid, signal.SIGSTOP)
    # the link counts as down although its TCP connection stays open ...
    wait_until(lambda: edge_metric(edge, "edged_controller_link_up") == 0.0, "the edge to count the link down",
               procs)
    assert (edge_metric(edge, 'edged_controller_link_lost_total{reason="silent"}') or 0) >= 1
    _, _, health = get(edge.http, "/healthz")
    link = json.loads(health)["origin"]
    assert link["connected"] is False and link["node_id"] == node and link["silence_seconds"] > 0
    # ... and once auth_cache_seconds have passed since the controller was last heard from, the cached table no
    # longer answers: ffmpeg's publish is refused
    wait_until(lambda: edge_metric(edge, "edged_key_table_fresh") == 0.0, "the key table to expire", procs)
    silence = edge_metric(edge, "edged_controller_silence_seconds")
    assert silence is not None and silence > AUTH_CACHE
    assert refused_within(edge.rtmp_url(key), 10.0), procs.dump()
    log = next(p for p in procs.logs if p.name.startswith("edge-h")).read_text(errors="replace")
    assert "nothing heard from the controller for" in log and "it counts as down" in log
    refusal = re.search(r"the key table it pushed expired \(nothing heard from the controller for ([0-9.]+) s", log)
    assert refusal is not None and float(refusal.group(1)) > AUTH_CACHE, log[-3000:]

    # the controller thaws: the edge reconnects, gets a fresh table, and publishes are authorized again
    os.kill(procs.procs["originctl"].pid, signal.SIGCONT)
    wait_until(lambda: edge_metric(edge, "edged_controller_link_up") == 1.0, "the link back up", procs)
    wait_until(lambda: edge_metric(edge, "edged_key_table_fresh") == 1.0, "a fresh key table", procs)
    wait_until(lambda: origin.states().get(node) == "healthy", "the edge healthy again", procs)
    assert publish_ok(edge.rtmp_url(key), 1.0), procs.dump()
