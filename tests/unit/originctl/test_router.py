"""The router's pieces that need no network: client address behind proxies, table reuse, inputs, rate."""

from __future__ import annotations

import ipaddress

import pytest

from originctl import render
from originctl.metrics import RateMeter
from originctl.model import GpuSample, GpuStatus, NodeInfo, NodeRecord, NodeState, NodeStats, Report, Route
from originctl.server.health import Health
from originctl.server.inputs import placement_node, route_node
from originctl.server.placement import capability, place
from originctl.server.registry import NodeEntry
from originctl.server.router import client_address
from originctl.server.routing import NoRoute, RouteNode, RoutingTable

TRUSTED = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.9.0.0/16")]


@pytest.mark.parametrize(("peer", "xff", "want"), [
    ("198.51.100.7", None, "198.51.100.7"),
    ("198.51.100.7", "10.1.2.3", "198.51.100.7"),  # an untrusted peer cannot claim another address
    ("127.0.0.1", None, "127.0.0.1"),
    ("127.0.0.1", "10.1.2.3", "10.1.2.3"),
    ("127.0.0.1", "6.6.6.6, 10.1.2.3, 10.9.0.5", "10.1.2.3"),  # rightmost entry not a trusted proxy
    ("127.0.0.1", "10.9.0.7, 10.9.0.5", "10.9.0.7"),  # all trusted: the first
    ("127.0.0.1", "not-an-ip", "127.0.0.1"),
    ("127.0.0.1", "2001:db8::1", "2001:db8::1"),
])
def test_client_address_believes_forwarded_for_only_from_trusted_proxies(peer: str, xff: str | None,
                                                                          want: str) -> None:
    assert client_address(peer, xff, TRUSTED) == want
    assert client_address(peer, xff, []) == peer


def rn(nid: str, state: str = "healthy", channels: tuple[str, ...] = ("news",), **kw: object) -> RouteNode:
    return RouteNode(id=nid, url=f"http://{nid}:8080", state=state, prefixes=("10.0.0.0/8",),
                     channels=frozenset(channels), **kw)  # type: ignore[arg-type]


def test_rebuild_reuses_indexes_when_only_states_and_loads_change() -> None:
    first = RoutingTable.build([rn("a"), rn("b")])
    second = RoutingTable.build([rn("a", viewers=10), rn("b", state="draining")], previous=first)
    assert second.reused_indexes and second.route("news", "10.1.1.1").node_id == "a"
    moved = RoutingTable.build([RouteNode(id="a", url="http://a", state="healthy", prefixes=("192.0.2.0/24",),
                                          channels=frozenset({"news"}))], previous=second)
    assert not moved.reused_indexes and moved.route("news", "192.0.2.9").reason == "prefix"


def test_live_but_no_node_takes_viewers_is_unavailable_not_offline() -> None:
    t = RoutingTable.build([rn("a", state="lost"), rn("b", draining=True), rn("c", channels=("sports",))])
    assert t.route("news", "10.1.1.1").node_id == "c"  # live on nodes that take no viewers: c relays it
    blocked = RoutingTable.build([rn("a", state="lost"), rn("b", draining=True)])
    with pytest.raises(NoRoute) as exc:
        blocked.route("news", "10.1.1.1")
    assert exc.value.reason == "unavailable" and "a (lost)" in exc.value.detail and "b (draining)" in exc.value.detail
    with pytest.raises(NoRoute) as exc:
        t.route("weather", "10.1.1.1")
    assert exc.value.reason == "offline"


def node_entry(stats: NodeStats, gpus: tuple[GpuSample, ...] = (), *, draining: bool = False,
               info: NodeInfo | None = None) -> NodeEntry:
    rec = NodeRecord(id="nd-1", info=info or NodeInfo(name="e1"), cert_serial="x", cert_not_after_unix_ms=0,
                     enrolled_unix_ms=0)
    e = NodeEntry(rec, Health(level=NodeState.HEALTHY, lost=False, draining=draining), 0)
    e.last_report = Report(node=stats, gpu_status=GpuStatus.OK if gpus else GpuStatus.NO_GPU, gpus=gpus)
    return e


def test_placement_inputs_follow_what_the_edge_says_about_its_transcoding() -> None:
    l4 = GpuSample(index=0, name="NVIDIA L4", encoder_capacity_h264_pct=100, encoder_utilization_pct=20)
    off = placement_node(node_entry(NodeStats(cpu_count=16), (l4,)))
    assert capability(off) == "transcoding is off on the node"  # NVENC is there, but edged runs with it off
    nvenc = placement_node(node_entry(NodeStats(cpu_count=16, transcode_capacity=8, transcode_encoder="nvenc"),
                                      (l4,)))
    assert place("news", "nd-1", [nvenc]).encoder == "nvenc"
    full = placement_node(node_entry(NodeStats(transcodes=8, transcode_capacity=8, transcode_encoder="nvenc"), (l4,)))
    assert "transcode limit" in str(capability(full))
    # the controller counts the ladders it placed that the last report does not show yet
    x264 = node_entry(NodeStats(cpu_count=4, cpu_load1=0.5, transcode_capacity=2, transcode_encoder="x264"))
    assert place("news", "nd-1", [placement_node(x264, placed_transcodes=1)]).encoder == "x264"
    assert place("news", "nd-1", [placement_node(x264, placed_transcodes=2)]).mode == "passthrough"
    drained = placement_node(node_entry(NodeStats(transcode_capacity=8, transcode_encoder="nvenc"), (l4,),
                                        draining=True))
    assert place("news", "nd-1", [drained]).mode == "passthrough"


def test_route_inputs_carry_limits_and_skip_nodes_without_a_url() -> None:
    info = NodeInfo(name="e1", public_url="http://e1:8080", prefixes=("10.0.0.0/8",), viewer_limit=100,
                    latitude=1.0, longitude=2.0)
    n = route_node(node_entry(NodeStats(viewers=100), info=info), frozenset({"news"}))
    assert n is not None and n.skip_reason() == "at its viewer limit" and (n.latitude, n.longitude) == (1.0, 2.0)
    assert route_node(node_entry(NodeStats()), frozenset()) is None


def test_rate_meter_counts_whole_seconds() -> None:
    now = [100.2]
    m = RateMeter(window=10, clock=lambda: now[0])
    for _ in range(30):
        m.hit()
    assert m.rate() == 0  # the current second is not over
    now[0] = 101.0
    assert m.rate() == 3.0
    now[0] = 111.5
    assert m.rate() == 0  # out of the window


def test_route_text_for_people() -> None:
    ok = Route(routed=True, channel="news", client_ip="10.1.2.3", node_id="nd-1", url="http://e1/live/news/master.m3u8",
               reason="prefix", detail="10.0.0.0/8 contains 10.1.2.3", alternates=(("nd-2", "http://e2/x"),),
               client_location=(52.52, 13.4))
    text = render.route_text(ok)
    assert "Reason:      prefix: 10.0.0.0/8 contains 10.1.2.3" in text and "nd-2 http://e2/x" in text
    none = Route(routed=False, channel="news", client_ip="10.1.2.3", reason="offline", detail="not live")
    assert render.route_text(none).endswith("No route:    offline: not live")
