"""Viewer routing: prefix beats distance beats load; unhealthy and draining nodes are skipped; any eligible
node serves any live channel (carrying it already breaks ties)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from originctl.server.geoip import GeoIp
from originctl.server.routing import NoRoute, RouteNode, RoutingTable, haversine_km

PARIS = (48.86, 2.35)
LYON = (45.76, 4.84)
BERLIN = (52.52, 13.40)
NEW_YORK = (40.71, -74.01)


def node(nid: str, *, state: str = "healthy", prefixes: tuple[str, ...] = (), loc: tuple[float, float] | None = None,
         viewers: int = 0, limit: int = 0, channels: tuple[str, ...] = ("news",), draining: bool = False) -> RouteNode:
    return RouteNode(id=nid, url=f"http://{nid}:8080", state=state, draining=draining, prefixes=prefixes,
                     latitude=loc[0] if loc else None, longitude=loc[1] if loc else None, viewers=viewers,
                     viewer_limit=limit, channels=frozenset(channels))


def test_longest_prefix_wins_over_distance() -> None:
    t = RoutingTable.build([
        node("paris", prefixes=("10.0.0.0/8",), loc=PARIS),
        node("lyon", prefixes=("10.20.0.0/16",), loc=LYON),
        node("berlin", loc=BERLIN),
    ])
    d = t.route("news", "10.20.3.4", client_location=BERLIN)
    assert (d.node_id, d.reason) == ("lyon", "prefix")
    assert d.detail == "10.20.0.0/16 contains 10.20.3.4"
    assert d.url == "http://lyon:8080/live/news/master.m3u8"
    assert t.route("news", "10.99.0.1", client_location=BERLIN).node_id == "paris"
    d = t.route("news", "192.0.2.1", client_location=BERLIN)
    assert (d.node_id, d.reason) == ("berlin", "nearest")
    assert [a for a, _ in d.alternates] and "berlin" not in [a for a, _ in d.alternates]


def test_unhealthy_draining_and_full_nodes_are_skipped() -> None:
    t = RoutingTable.build([
        node("a", prefixes=("10.0.0.0/8",), state="unhealthy"),
        node("b", prefixes=("10.0.0.0/8",), draining=True),
        node("c", prefixes=("10.0.0.0/8",), viewers=100, limit=100),
        node("e", prefixes=("10.0.0.0/8",), state="lost"),
        node("far", loc=NEW_YORK),
    ])
    d = t.route("news", "10.1.1.1", client_location=PARIS)
    assert (d.node_id, d.reason) == ("far", "nearest")
    with pytest.raises(NoRoute) as exc:
        t.route("weather", "10.1.1.1")
    assert exc.value.reason == "offline"


def test_the_viewers_edge_is_chosen_though_it_does_not_carry_the_channel() -> None:
    """Issue 10: any eligible edge relays any live channel; carrying it is only a tie-breaker."""
    t = RoutingTable.build([
        node("ingest", prefixes=("10.1.0.0/16",), loc=PARIS),
        node("isp2", prefixes=("10.2.0.0/16",), loc=BERLIN, channels=()),
        node("idle-a", channels=()), node("idle-z", channels=("news",)),
    ])
    d = t.route("news", "10.2.3.4", client_location=PARIS)
    assert (d.node_id, d.reason) == ("isp2", "prefix")
    assert t.route("news", "192.0.2.1", client_location=BERLIN).node_id == "isp2"  # nearest, not carrying
    # equal state and load: the node that carries the channel already wins over a lower id
    tie = RoutingTable.build([node("a", channels=()), node("z", channels=("news",))])
    assert tie.route("news", "192.0.2.1").node_id == "z"
    assert tie.route("news", "192.0.2.1").alternates[0][0] == "a"
    # but load comes first
    loaded = RoutingTable.build([node("a", channels=()), node("z", viewers=5, limit=10, channels=("news",))])
    assert loaded.route("news", "192.0.2.1").node_id == "a"
    # the controller says which channels are live; a channel live nowhere has no route
    live = RoutingTable.build([node("a", channels=())], live={"news"})
    assert live.route("news", "192.0.2.1").node_id == "a"
    with pytest.raises(NoRoute) as exc:
        live.route("sports", "192.0.2.1")
    assert exc.value.reason == "offline"


def test_degraded_only_as_fallback_and_least_loaded_ties_deterministic() -> None:
    t = RoutingTable.build([
        node("z", viewers=5, limit=100), node("y", viewers=5, limit=100), node("x", state="degraded"),
        node("w", viewers=50, limit=100),
    ])
    d = t.route("news", "not-an-ip")
    assert (d.node_id, d.reason) == ("y", "least-loaded")  # tie on load: lowest id
    assert [a for a, _ in d.alternates] == ["z", "w"]
    assert t.route("news", "203.0.113.9").node_id == "y"  # same inputs, same answer


def test_ipv6_prefixes() -> None:
    t = RoutingTable.build([node("v6", prefixes=("2001:db8:1::/48",)), node("other", viewers=0)])
    assert t.route("news", "2001:db8:1::42").node_id == "v6"
    assert t.route("news", "2001:db8:2::42").reason == "least-loaded"


def test_nearest_matches_brute_force() -> None:
    import random

    rnd = random.Random(7)
    nodes = [node(f"n{i:03d}", loc=(rnd.uniform(-60, 70), rnd.uniform(-180, 180))) for i in range(300)]
    t = RoutingTable.build(nodes)
    for _ in range(200):
        c = (rnd.uniform(-60, 70), rnd.uniform(-180, 180))
        want = min(nodes, key=lambda n: (round(haversine_km(*c, n.latitude, n.longitude), 3), n.id))
        got = t.route("news", "192.0.2.1", client_location=c)
        assert got.node_id == want.id, c


def test_geoip_database_drives_distance(tmp_path: Path) -> None:
    db = tmp_path / "city.mmdb"
    w = MMDBWriter(ip_version=4, database_type="GeoLite2-City")
    w.insert_network(IPSet(["198.51.100.0/24"]), {"location": {"latitude": BERLIN[0], "longitude": BERLIN[1]}})
    w.insert_network(IPSet(["203.0.113.0/24"]), {"location": {"latitude": NEW_YORK[0], "longitude": NEW_YORK[1]}})
    w.to_db_file(str(db))
    geo = GeoIp(db)
    try:
        t = RoutingTable.build([node("berlin", loc=BERLIN), node("nyc", loc=NEW_YORK), node("paris", loc=PARIS)])
        assert t.route("news", "198.51.100.7", geo.locate("198.51.100.7")).node_id == "berlin"
        assert t.route("news", "203.0.113.7", geo.locate("203.0.113.7")).node_id == "nyc"
        assert geo.locate("192.0.2.1") is None
        assert t.route("news", "192.0.2.1", geo.locate("192.0.2.1")).reason == "least-loaded"
    finally:
        geo.close()
    with pytest.raises(ValueError, match="cannot open GeoIP database"):
        GeoIp(tmp_path / "missing.mmdb")
