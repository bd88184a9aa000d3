"""Viewer routing, the I/O side: keeps a RoutingTable (routing.py) current and answers decisions.

The table holds every node that said how viewers reach it (any of them can serve any live channel,
relayed from its parent: issue 10), with the channels each carries already (ingested, or in its relay
tree) as a tie-breaker. It is rebuilt when the registry or the stream book says something that matters
changed (a state, a drain, node info, where a channel is live), coalesced and at most every
MIN_REBUILD_INTERVAL, and every LOAD_REFRESH for the viewer and egress figures (and relay trees) that
reports change; never per request. A rebuild with unchanged
prefixes and coordinates reuses the table's indexes, and parsed prefixes are cached (routing.py).

Loop-only: `decide` reads the current table, the channel book and the GeoIP database (an mmap'd
file: a lookup is a few page reads) and never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Iterable

from originctl.metrics import ControllerMetrics
from originctl.model import NodeState, Route
from originctl.server.channels import ChannelBook
from originctl.server.geoip import GeoIp
from originctl.server.inputs import route_node
from originctl.server.registry import NodeEntry, Registry
from originctl.server.relays import RelayBook
from originctl.server.routing import NoRoute, RoutingTable
from originctl.server.streams import StreamBook

log = logging.getLogger("originctl.router")

REBUILD_DELAY = 0.05  # s: a burst of changes (a node turning lost ends all its streams) costs one rebuild
# s between rebuilds: with a channel live on each of 10,000 nodes a rebuild costs tens of ms of the loop
# (bench/routing.py), so a fleet where something changes all the time spends a few % of it here
MIN_REBUILD_INTERVAL = 1.0
LOAD_REFRESH = 5.0  # s: viewers and egress change with every report; they only break ties and apply limits
MAX_FORWARDED_HOPS = 16  # X-Forwarded-For entries looked at


def client_address(peer: str, forwarded_for: str | None, trusted: Iterable[ipaddress.IPv4Network |
                                                                               ipaddress.IPv6Network]) -> str:
    """The viewer's address: the TCP peer, unless the peer is a trusted proxy; then the nearest
    X-Forwarded-For entry (right to left) that is not itself a trusted proxy."""
    nets = tuple(trusted)

    def is_trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip.version == n.version and ip in n for n in nets)

    if not forwarded_for or not nets or not is_trusted(peer):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",")][-MAX_FORWARDED_HOPS:]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a malformed header from a trusted proxy: believe only the peer
        if not is_trusted(hop):
            return hop
    return hops[0] if hops else peer


class Router:
    def __init__(self, registry: Registry, channels: ChannelBook, streams: StreamBook, metrics: ControllerMetrics,
                 geoip: GeoIp | None = None, trusted_proxies: Iterable[str] = (),
                 relays: RelayBook | None = None) -> None:
        self.registry = registry
        self.relays = relays
        self.channels = channels
        self.streams = streams
        self.metrics = metrics
        self.geoip = geoip or GeoIp(None)
        self.trusted = tuple(ipaddress.ip_network(c, strict=False) for c in trusted_proxies)
        self._table = RoutingTable.build([])
        self._built_at = -MIN_REBUILD_INTERVAL
        self._scheduled: asyncio.TimerHandle | None = None
        self._refresher: asyncio.Task[None] | None = None
        registry.listeners.append(self._node_changed)
        streams.listeners.append(self.async_changed)

    async def start(self) -> None:
        self.rebuild()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="originctl-route-refresh")

    async def stop(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        self.geoip.close()

    # --- the table --------------------------------------------------------------------------------

    def _node_changed(self, entry: NodeEntry, previous: NodeState | None) -> None:
        self.async_changed()

    def async_changed(self) -> None:
        """Something routing depends on changed: rebuild soon (coalesced)."""
        if self._scheduled is not None:
            return
        loop = asyncio.get_running_loop()
        delay = max(REBUILD_DELAY, self._built_at + MIN_REBUILD_INTERVAL - time.monotonic())
        self._scheduled = loop.call_later(delay, self._scheduled_rebuild)

    def _scheduled_rebuild(self) -> None:
        self._scheduled = None
        try:
            self.rebuild()
        except Exception:  # keep serving the previous table
            log.exception("routing table rebuild failed")

    def rebuild(self) -> RoutingTable:
        started = time.perf_counter()
        nodes = []
        carrying: dict[str, set[str]] = {n: set(chs) for n, chs in self.streams.channels_by_node().items()}
        if self.relays is not None:
            for ch, tree in self.relays.trees.items():
                for member in tree.parents:
                    carrying.setdefault(member, set()).add(ch)
        # every node can be chosen (it relays what it does not carry): the table's cost follows the fleet
        for entry in self.registry.nodes.values():
            n = route_node(entry, frozenset(carrying.get(entry.id, ())))
            if n is not None:
                nodes.append(n)
        live = {r.channel for r in self.streams.live()}
        self._table = RoutingTable.build(nodes, previous=self._table, live=live)
        self._built_at = time.monotonic()
        self.metrics.route_builds.inc()
        self.metrics.route_build_seconds.observe(time.perf_counter() - started)
        return self._table

    @property
    def table(self) -> RoutingTable:
        return self._table

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(LOAD_REFRESH)
            self.async_changed()

    # --- decisions --------------------------------------------------------------------------------

    def decide(self, channel: str, client_ip: str, location: tuple[float, float] | None = None, *,
               explain: bool = False) -> Route:
        """Where this viewer should watch `channel`, or why nowhere; counted in /metrics. `explain` (for
        `originctl route`, not /play) adds the relay path from the ingest edge to the chosen node."""
        started = time.perf_counter()
        if self.channels.get(channel) is None:
            route = Route(routed=False, channel=channel, client_ip=client_ip, reason="unknown-channel",
                          detail=f"no channel {channel!r} on this controller")
        else:
            loc = location if location is not None else self.geoip.locate(client_ip)
            try:
                d = self._table.route(channel, client_ip, loc)
            except NoRoute as exc:
                route = Route(routed=False, channel=channel, client_ip=client_ip, reason=exc.reason,
                              detail=exc.detail, client_location=loc)
            else:
                chosen = self._table.nodes.get(d.node_id)
                chain = self.relays.chain_for(channel, d.node_id) if explain and self.relays is not None else ()
                route = Route(routed=True, channel=channel, client_ip=client_ip, node_id=d.node_id, url=d.url,
                              reason=d.reason, detail=d.detail, alternates=d.alternates, distance_km=d.distance_km,
                              client_location=loc, chain=chain,
                              carrying=chosen is not None and channel in chosen.channels)
        self.metrics.route_decisions.labels(route.reason).inc()
        self.metrics.route_rate.hit()
        self.metrics.route_seconds.observe(time.perf_counter() - started)
        return route
