"""The CLI's fleet-distribution output: `relay tree`, `streams -o wide`, `route`'s relay path, `nodes -o wide`."""

from __future__ import annotations

import json

import pytest

from originctl import cli, render
from originctl.model import (
    Node,
    NodeInfo,
    NodeState,
    RelayMember,
    RelayTreeView,
    Route,
    StreamRecord,
    to_jsonable,
)

TREE = RelayTreeView(channel="news", ingest_node_id="nd-a", members=(
    RelayMember(node_id="nd-a", role="ingest", children=2, reported="parent of 2", name="edge-paris"),
    RelayMember(node_id="nd-r1", parent_node_id="nd-a", depth=1, role="relay", children=2, name="relay-1",
                reported="child of nd-a, 2 children", reason="relay node recruited: fan-out beyond relay.max_children (2)"),
    RelayMember(node_id="nd-b", parent_node_id="nd-r1", depth=2, role="edge", name="isp2-b", reason="a relay node"),
    RelayMember(node_id="nd-c", parent_node_id="nd-r1", depth=2, role="edge", name="isp2-c"),
    RelayMember(node_id="nd-d", parent_node_id="nd-a", depth=1, role="edge", name="isp3-d"),
))


def test_relay_tree_is_drawn_from_the_ingest_edge_down() -> None:
    text = render.relay_tree_text(TREE)
    assert text.splitlines()[:6] == [
        "Channel news: ingested on nd-a, relayed by 4 nodes",
        "nd-a (edge-paris)  [ingest, 2 children, reports: parent of 2]",
        "├─ nd-r1 (relay-1)  [relay, 2 children, reports: child of nd-a, 2 children]",
        "│  ├─ nd-b (isp2-b)  [edge]",
        "│  └─ nd-c (isp2-c)  [edge]",
        "└─ nd-d (isp3-d)  [edge]",
    ]
    assert "  nd-r1: relay node recruited" in text
    broken = RelayTreeView(channel="x", ingest_node_id="nd-n", problem="the ingest edge nd-n cannot be dialled",
                           members=(RelayMember(node_id="nd-n", role="ingest"),))
    assert "Problem: the ingest edge nd-n cannot be dialled" in render.relay_tree_text(broken)
    assert json.loads(json.dumps(to_jsonable(TREE)))["members"][1]["parent_node_id"] == "nd-a"


def test_streams_wide_lists_the_edges_relaying_each_channel() -> None:
    s = StreamRecord(id="st-1", channel="news", node_id="nd-a", protocol="rtmp", started_unix_ms=1_000, mode="passthrough")
    names = {"nd-a": "edge-paris", "nd-r1": "relay-1", "nd-b": "isp2-b"}
    wide = render.streams_table([s], 5_000, names, wide=True, trees={"news": TREE})
    head, row = wide.splitlines()
    assert "RELAYED-BY" in head.split()
    assert "4: relay-1 (2), isp2-b, nd-c, nd-d" in row
    assert "RELAYED-BY" not in render.streams_table([s], 5_000, names)


def test_route_explains_the_relay_path() -> None:
    r = Route(routed=True, channel="news", client_ip="10.2.3.4", node_id="nd-b", url="http://b/live/news/master.m3u8",
              reason="prefix", detail="10.2.0.0/16 contains 10.2.3.4", chain=("nd-a", "nd-r1", "nd-b"))
    assert "Relay:       nd-a → nd-r1 → nd-b (subscribes on the viewer's first request)" in render.route_text(r)


def test_nodes_wide_shows_the_relay_listener() -> None:
    info = NodeInfo(name="r1", public_url="http://r1.isp.example:8080", relay_port=50061, relay=True)
    n = Node(id="nd-r1", info=info, state=NodeState.HEALTHY)
    nat = Node(id="nd-n", info=NodeInfo(name="n", reachable=False), state=NodeState.HEALTHY)
    wide = render.nodes_table([n, nat], 0, wide=True)
    assert "r1.isp.example:50061 relay" in wide and "- unreachable" in wide
    assert "Relay:        r1.isp.example:50061; relay node; reachable by other nodes" in render.node_detail(n, 0)


@pytest.mark.parametrize("argv", [["relay"], ["relay", "tree"], ["relay", "tree", "news", "-o", "wide"]])
def test_relay_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2 and "usage:" in capsys.readouterr().err
