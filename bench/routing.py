"""Viewer routing decisions per second for a large fleet (p50/p99 decision time).

A fleet of N edges (default 10,000), each with 1-4 ISP prefixes (IPv4 /16-/24, IPv6 /32-/48) and a
location; the channel is carried by every node (the worst case for the search). Clients: one third
inside some node's prefix, one third outside every prefix but with a GeoIP location, one third
with neither. Reference, same run: a straightforward linear scan over all nodes (ipaddress
containment and haversine per node) on a sample of the same clients.

    .venv/bin/python bench/routing.py [--nodes 10000] [--decisions 20000]
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import statistics
import time
from dataclasses import replace

import _common  # noqa: F401 - puts the repo on sys.path

from originctl.server.routing import RouteNode, RoutingTable, haversine_km


def fleet(n: int, rnd: random.Random) -> list[RouteNode]:
    nodes = []
    for i in range(n):
        prefixes = []
        for _ in range(rnd.randint(1, 4)):
            if rnd.random() < 0.8:
                plen = rnd.choice((16, 18, 20, 22, 24))
                net = ipaddress.ip_network((rnd.getrandbits(32) & ~((1 << (32 - plen)) - 1), plen))
            else:
                plen = rnd.choice((32, 36, 40, 44, 48))
                net = ipaddress.ip_network(((0x2001 << 112 | rnd.getrandbits(112)) & ~((1 << (128 - plen)) - 1), plen))
            prefixes.append(str(net))
        nodes.append(RouteNode(
            id=f"edge-{i:05d}", url=f"http://edge-{i:05d}.isp.example:8080", state=rnd.choice(("healthy",) * 9 + ("degraded",)),
            prefixes=tuple(prefixes), latitude=rnd.uniform(-50, 65), longitude=rnd.uniform(-170, 175),
            viewers=rnd.randint(0, 900), viewer_limit=1000, channels=frozenset({"news"}),
        ))
    return nodes


def clients(nodes: list[RouteNode], k: int, rnd: random.Random) -> list[tuple[str, tuple[float, float] | None]]:
    out: list[tuple[str, tuple[float, float] | None]] = []
    for i in range(k):
        if i % 3 == 0:
            net = ipaddress.ip_network(rnd.choice(rnd.choice(nodes).prefixes))
            ip = str(net.network_address + rnd.randrange(min(net.num_addresses, 1 << 16)))
            out.append((ip, None))
        elif i % 3 == 1:
            out.append((str(ipaddress.ip_address(rnd.getrandbits(32))), (rnd.uniform(-50, 65), rnd.uniform(-170, 175))))
        else:
            out.append((str(ipaddress.ip_address(rnd.getrandbits(32))), None))
    return out


def linear(nodes: list[RouteNode], nets: list[list[ipaddress._BaseNetwork]], ip: str, loc: tuple[float, float] | None) -> str:
    addr = ipaddress.ip_address(ip)
    best = None
    for n, ns in zip(nodes, nets, strict=True):
        for net in ns:
            if addr.version == net.version and addr in net and (best is None or net.prefixlen > best[0]):
                best = (net.prefixlen, n.id)
    if best:
        return best[1]
    if loc:
        return min(nodes, key=lambda n: haversine_km(*loc, n.latitude, n.longitude)).id  # type: ignore[arg-type]
    return min(nodes, key=lambda n: n.load).id


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--decisions", type=int, default=20_000)
    args = ap.parse_args()
    rnd = random.Random(2026)
    nodes = fleet(args.nodes, rnd)
    t0 = time.perf_counter()
    table = RoutingTable.build(nodes)
    build_ms = (time.perf_counter() - t0) * 1000
    cs = clients(nodes, args.decisions, rnd)
    times: list[float] = []
    reasons: dict[str, int] = {}
    for ip, loc in cs:
        t = time.perf_counter_ns()
        d = table.route("news", ip, loc)
        times.append((time.perf_counter_ns() - t) / 1000)
        reasons[d.reason] = reasons.get(d.reason, 0) + 1
    q = statistics.quantiles(times, n=100)
    p50, p99 = statistics.median(times), q[98]
    # what the controller's router does every few seconds: same prefixes and coordinates, new loads
    reloaded = [replace(n, viewers=rnd.randint(0, 900)) for n in nodes]
    t0 = time.perf_counter()
    RoutingTable.build(reloaded, previous=table)
    rebuild_ms = (time.perf_counter() - t0) * 1000
    # a channel ended on one node: the set of carriers changed, the indexes are rebuilt from cached prefixes
    t0 = time.perf_counter()
    RoutingTable.build(reloaded[1:], previous=table)
    reindex_ms = (time.perf_counter() - t0) * 1000
    print(f"fleet {args.nodes} nodes, {sum(len(n.prefixes) for n in nodes)} prefixes; table built in {build_ms:.0f} ms; "
          f"rebuilt with new loads (indexes reused) in {rebuild_ms:.0f} ms, with one carrier less (prefixes "
          f"parsed before) in {reindex_ms:.0f} ms")
    print(f"edged routing: {len(times)} decisions, p50 {p50:.1f} us, p99 {p99:.1f} us, max {max(times):.0f} us, "
          f"{1e6 / statistics.mean(times):,.0f} decisions/s; outcomes {reasons}")
    nets = [[ipaddress.ip_network(p) for p in n.prefixes] for n in nodes]
    sample = cs[:60]
    lt = []
    for ip, loc in sample:
        t = time.perf_counter_ns()
        linear(nodes, nets, ip, loc)
        lt.append((time.perf_counter_ns() - t) / 1000)
    lp50 = statistics.median(lt)
    print(f"linear scan reference: p50 {lp50:.0f} us on {len(sample)} decisions")
    print(f"ratio p50 linear/table: {lp50 / p50:.0f}x; goal p99 < 1000 us: {'met' if p99 < 1000 else 'NOT met'}")


if __name__ == "__main__":
    main()
