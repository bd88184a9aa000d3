"""Viewer routing, pure: which edge should serve this viewer this channel, and why.

Every eligible node may be chosen for any channel that is live somewhere in the fleet (issue 10: an
edge that does not carry it yet subscribes to it from its relay parent on the first request); a
channel live nowhere has no route. Eligible: healthy, or degraded as a fallback; not draining; under
its viewer and egress limits. Order of preference (issue 6):
  1. eligible nodes whose served prefixes contain the client address, longest prefix first;
  2. otherwise the nearest eligible node by great-circle distance, when the client's location is known;
  3. otherwise the least loaded eligible node.
Ties break on load, then on whether the node carries the channel already (it needs no new
subscription), then on node id, so the same inputs always give the same answer.

A RoutingTable is an immutable snapshot built from the registry (rebuilt when it changes);
decisions only read it. Lookups are dict probes per prefix length plus a grid search for distance,
so a decision costs microseconds for a 10,000-node fleet. Parsing prefixes is the costly part of a
build, so a rebuild whose nodes have the same prefixes and coordinates as the previous table's
(states, loads and channels changed) shares the previous prefix and geo indexes.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

EARTH_RADIUS_KM = 6371.0
GRID_DEGREES = 5.0  # geo index cell size
ALTERNATES = 2


@dataclass(frozen=True, slots=True)
class RouteNode:
    """What routing needs to know about one edge."""

    id: str
    url: str  # base URL viewers use, e.g. http://edge1.isp.net:8080
    state: str  # "healthy", "degraded", "unhealthy", "draining", "lost"
    draining: bool = False
    prefixes: tuple[str, ...] = ()
    latitude: float | None = None
    longitude: float | None = None
    viewers: int = 0
    viewer_limit: int = 0  # 0 = no limit
    egress_bps: int = 0
    egress_limit_bps: int = 0  # 0 = no limit
    channels: frozenset[str] = frozenset()

    @property
    def load(self) -> float:
        """Fraction of the tighter limit in use; raw viewer count scaled down when no limit is set."""
        parts = []
        if self.viewer_limit:
            parts.append(self.viewers / self.viewer_limit)
        if self.egress_limit_bps:
            parts.append(self.egress_bps / self.egress_limit_bps)
        return max(parts) if parts else self.viewers / 1e6

    def skip_reason(self) -> str | None:
        """Why this node takes no new viewers, or None if it does."""
        if self.draining or self.state == "draining":
            return "draining"
        if self.state not in ("healthy", "degraded"):
            return self.state
        if self.viewer_limit and self.viewers >= self.viewer_limit:
            return "at its viewer limit"
        if self.egress_limit_bps and self.egress_bps >= self.egress_limit_bps:
            return "at its egress limit"
        return None


@dataclass(frozen=True, slots=True)
class Decision:
    channel: str
    node_id: str
    url: str  # the master playlist on the chosen node
    reason: str  # "prefix", "nearest", "least-loaded"
    detail: str  # for people: which prefix, how far, what load
    alternates: tuple[tuple[str, str], ...] = ()  # (node id, url)
    distance_km: float | None = None


class NoRoute(Exception):  # noqa: N818 - a routing outcome, not a failure of the table
    """No node can serve the channel; `reason` says why (for the JSON body and metrics)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dphi = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _cell(lat: float, lon: float) -> tuple[int, int]:
    return int(math.floor((lat + 90) / GRID_DEGREES)), int(math.floor((lon + 180) / GRID_DEGREES)) % int(360 / GRID_DEGREES)


@functools.lru_cache(maxsize=1 << 17)
def _parse_prefix(prefix: str) -> tuple[int, int, int, str] | None:
    """(ip version, prefix length, network bits as an int, canonical text); cached: tables are rebuilt often
    from the same prefixes, and parsing is most of a build's cost."""
    try:
        net = ipaddress.ip_network(prefix, strict=False)
    except ValueError:
        return None
    value = int(net.network_address) >> (net.max_prefixlen - net.prefixlen) if net.prefixlen else 0
    return net.version, net.prefixlen, value, str(net)


def _rank(n: RouteNode, channel: str = "") -> tuple[int, float, bool, str]:
    return (0 if n.state == "healthy" else 1, n.load, channel not in n.channels, n.id)


@dataclass
class RoutingTable:
    nodes: dict[str, RouteNode]
    # (ip version, prefix length) → network address as int → node ids; lengths longest first
    _prefix: dict[tuple[int, int], dict[int, list[str]]] = field(default_factory=dict)
    _lengths: dict[int, list[int]] = field(default_factory=dict)
    _networks: dict[tuple[int, int, int], str] = field(default_factory=dict)
    _grid: dict[tuple[int, int], list[str]] = field(default_factory=dict)
    _eligible: list[str] = field(default_factory=list)  # nodes that take viewers, best rank first (no channel)
    _eligible_set: frozenset[str] = frozenset()
    _by_channel: dict[str, list[str]] = field(default_factory=dict)  # eligible carriers, best rank first
    _blocked: list[tuple[str, str]] = field(default_factory=list)  # (node, why it takes no viewers)
    live: frozenset[str] = frozenset()  # channels live somewhere in the fleet
    _geometry: dict[str, tuple[tuple[str, ...], float | None, float | None]] = field(default_factory=dict)
    reused_indexes: bool = False

    @classmethod
    def build(cls, nodes: Iterable[RouteNode], previous: RoutingTable | None = None,
              live: Iterable[str] | None = None) -> RoutingTable:
        """A table for `nodes`; pass the table it replaces to reuse its indexes when the geometry is unchanged.
        `live`: the channels live somewhere (default: those some node carries)."""
        t = cls({n.id: n for n in nodes})
        t._geometry = {n.id: (n.prefixes, n.latitude, n.longitude) for n in t.nodes.values()}
        if previous is not None and previous._geometry == t._geometry:
            t._prefix, t._lengths, t._networks, t._grid = (previous._prefix, previous._lengths, previous._networks,
                                                           previous._grid)
            t.reused_indexes = True
        else:
            t._index_geometry()
        for n in sorted(t.nodes.values(), key=lambda n: n.id):
            why_not = n.skip_reason()
            if why_not is None:
                t._eligible.append(n.id)
                for ch in n.channels:
                    t._by_channel.setdefault(ch, []).append(n.id)
            else:
                t._blocked.append((n.id, why_not))
        t._eligible.sort(key=lambda i: _rank(t.nodes[i]))
        for ids in t._by_channel.values():
            ids.sort(key=lambda i: _rank(t.nodes[i]))
        t._eligible_set = frozenset(t._eligible)
        t.live = frozenset(live) if live is not None else frozenset(ch for n in t.nodes.values() for ch in n.channels)
        return t

    def _index_geometry(self) -> None:
        for n in sorted(self.nodes.values(), key=lambda n: n.id):
            for p in n.prefixes:
                parsed = _parse_prefix(p)
                if parsed is None:
                    continue  # validated at registration; a bad one never matches
                version, plen, value, text = parsed
                self._prefix.setdefault((version, plen), {}).setdefault(value, []).append(n.id)
                self._networks[(version, plen, value)] = text
            if n.latitude is not None and n.longitude is not None:
                self._grid.setdefault(_cell(n.latitude, n.longitude), []).append(n.id)
        for version in (4, 6):
            self._lengths[version] = sorted((plen for v, plen in self._prefix if v == version), reverse=True)

    def carriers(self, channel: str) -> list[str]:
        """Eligible nodes that carry `channel` already, best rank first."""
        return self._by_channel.get(channel, [])

    def _best(self, channel: str) -> list[str]:
        """The best eligible nodes for `channel`, best first (a few: the head of the ranking): the best carrier
        comes first when it ties with the best node overall on state and load."""
        ids = self._eligible[:ALTERNATES + 1]
        carriers = self._by_channel.get(channel, [])[:ALTERNATES + 1]
        return sorted(dict.fromkeys([*ids, *carriers]), key=lambda i: _rank(self.nodes[i], channel))

    def route(self, channel: str, client_ip: str, client_location: tuple[float, float] | None = None) -> Decision:
        """The best node for this viewer, or NoRoute."""
        if channel not in self.live:
            raise NoRoute("offline", f"channel {channel!r} is not live on any node")
        if not self._eligible:
            why = ", ".join(f"{nid} ({reason})" for nid, reason in self._blocked[:5]) or "no node has a viewer URL"
            raise NoRoute("unavailable", f"channel {channel!r} is live, but no node takes new viewers now: {why}")
        eligible = self._eligible_set
        best_first = self._best(channel)
        try:
            ip = ipaddress.ip_address(client_ip)
        except ValueError:
            ip = None
        if ip is not None:
            bits = ip.max_prefixlen
            value = int(ip)
            for plen in self._lengths.get(ip.version, ()):
                ids = self._prefix[(ip.version, plen)].get(value >> (bits - plen) if plen else 0)
                if not ids:
                    continue
                hits = sorted((i for i in ids if i in eligible), key=lambda i: _rank(self.nodes[i], channel))
                if hits:
                    net = self._networks[(ip.version, plen, value >> (bits - plen) if plen else 0)]
                    best = self.nodes[hits[0]]
                    return self._decision(channel, best, "prefix", f"{net} contains {client_ip}",
                                          [h for h in hits[1:]] + best_first)
        if client_location is not None:
            found = self._nearest(client_location, eligible, channel)
            if found is not None:
                dist, best = found
                return self._decision(channel, best, "nearest", f"{dist:.0f} km from the client", best_first,
                                      distance_km=dist)
        best = self.nodes[best_first[0]]
        return self._decision(channel, best, "least-loaded", f"load {best.load:.2f}", best_first)

    def _nearest(self, loc: tuple[float, float], eligible: frozenset[str],
                 channel: str = "") -> tuple[float, RouteNode] | None:
        """Grid search in growing rings until a ring cannot hold anything closer than the best so far."""
        lat, lon = loc
        ci, cj = _cell(lat, lon)
        rows = int(180 / GRID_DEGREES)
        cols = int(360 / GRID_DEGREES)
        best: tuple[float, tuple[int, float, bool, str], RouteNode] | None = None
        for ring in range(max(rows, cols)):
            # Anything in ring r is at least (r - 1) cells away in latitude or longitude.
            min_km = max(0.0, (ring - 1) * GRID_DEGREES * 111.0 * max(0.05, math.cos(math.radians(min(89.0, abs(lat) + ring * GRID_DEGREES)))))
            if best is not None and min_km > best[0]:
                break
            for i in range(ci - ring, ci + ring + 1):
                if i < 0 or i >= rows:
                    continue
                for j in range(cj - ring, cj + ring + 1):
                    if ring and i not in (ci - ring, ci + ring) and j not in (cj - ring, cj + ring):
                        continue  # inside the ring: done earlier
                    for nid in self._grid.get((i, j % cols), ()):
                        if nid not in eligible:
                            continue
                        n = self.nodes[nid]
                        assert n.latitude is not None and n.longitude is not None
                        d = haversine_km(lat, lon, n.latitude, n.longitude)
                        key = (round(d, 3), _rank(n, channel))
                        if best is None or key < (round(best[0], 3), best[1]):
                            best = (d, _rank(n), n)
            if ring * GRID_DEGREES > 180:
                break
        return (best[0], best[2]) if best else None

    def _decision(self, channel: str, best: RouteNode, reason: str, detail: str, others: list[str],
                  distance_km: float | None = None) -> Decision:
        alts: list[tuple[str, str]] = []
        for nid in others:
            if nid != best.id and all(nid != a for a, _ in alts):
                alts.append((nid, self._url(self.nodes[nid], channel)))
            if len(alts) >= ALTERNATES:
                break
        return Decision(channel=channel, node_id=best.id, url=self._url(best, channel), reason=reason,
                        detail=detail, alternates=tuple(alts), distance_km=distance_km)

    @staticmethod
    def _url(node: RouteNode, channel: str) -> str:
        return f"{node.url.rstrip('/')}/live/{channel}/master.m3u8"
