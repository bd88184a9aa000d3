"""Fleet distribution, the controller's I/O side: keeps a relay tree per live channel (relaytree.py),
answers GetRelayParent, and pushes each edge its routes (the relay map) down its stream.

Inputs, all on the loop:
  * where each channel is ingested (the stream book; the newest publish when two edges claim it);
  * which nodes may take part (the registry: connected, healthy or degraded, not draining; their relay
    address, `relay` and `reachable` flags);
  * which edges want the channel: those whose reports say they relay it as a child, and those that asked
    GetRelayParent in the last ASK_TTL seconds (before their first report says so);
  * exclusions: a child that asks again naming parents that just failed it does not get them back for
    EXCLUDE_TTL seconds.

Every change re-plans (coalesced, REPLAN_DELAY), except GetRelayParent, which re-plans its channel at
once to answer. After each plan, every connected edge whose route changed is told (RelayMap, full =
false); after each Welcome an edge gets its whole map (full = true, queued behind the key table, so
changes made meanwhile follow it). An edge's route for a channel is its chain in the tree when it is a
member, else the hint (where it would go if it asked now), so an edge can subscribe from the map
through a controller outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from edgenet.v1 import edge_pb2
from originctl.errors import Conflict, NotFound
from originctl.metrics import ControllerMetrics
from originctl.model import NodeState, RelayMember, RelayTreeView, Report
from originctl.server.registry import NodeEntry, Registry, Session
from originctl.server.relaytree import MAX_DEPTH, Tree, TreeNode, hints, plan
from originctl.server.streams import StreamBook

log = logging.getLogger("originctl.relay")

REPLAN_DELAY = 0.05  # s: a burst of changes (a lost node, a report round) costs one re-plan
ASK_TTL = 30.0  # s an edge that asked for a parent counts as wanting the channel before its reports say so
EXCLUDE_TTL = 30.0  # s a parent that failed a child is not given back to it
ROUTES_PER_MESSAGE = 2000  # routes per RelayMap message (each well under 1 KiB)
MAX_EXCLUDE = 8  # parents one request may exclude


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    max_children: int = 20
    max_depth: int = MAX_DEPTH


def tree_node(entry: NodeEntry) -> TreeNode:
    h = entry.health
    eligible = entry.session is not None and not h.draining and h.state in (NodeState.HEALTHY, NodeState.DEGRADED)
    info = entry.info
    return TreeNode(id=entry.id, address=info.relay_address, eligible=eligible, relay=info.relay,
                    reachable=info.reachable)


class RelayBook:
    def __init__(self, registry: Registry, streams: StreamBook, metrics: ControllerMetrics,
                 policy: RelayPolicy | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.streams = streams
        self.metrics = metrics
        self.policy = policy or RelayPolicy()
        self._clock = clock
        self.trees: dict[str, Tree] = {}
        self._reported: dict[str, dict[str, tuple[str, str, int]]] = {}  # node → channel → (role, parent, children)
        self._asked: dict[str, dict[str, float]] = {}  # channel → node → until (monotonic)
        self._excluded: dict[tuple[str, str], tuple[frozenset[str], float]] = {}  # (channel, node) → (ids, until)
        self._sent: dict[str, dict[str, edge_pb2.RelayRoute]] = {}  # node → channel → route last pushed
        self._scheduled: asyncio.TimerHandle | None = None
        self._pending_reason = ""
        self._dirty: set[str] | None = set()  # channels to re-plan at the next scheduled run; None = all
        self._pushed: dict[str, object] = {}  # channel → what its routes were last pushed from (skip if unchanged)
        registry.listeners.append(self._node_changed)
        streams.listeners.append(lambda: self.async_changed("stream"))

    # --- inputs -------------------------------------------------------------------------------------

    def _node_changed(self, entry: NodeEntry, previous: NodeState | None) -> None:
        self.async_changed("node")

    def async_changed(self, reason: str, channels: Iterable[str] | None = None) -> None:
        """Something planning depends on changed (for `channels`, or all): re-plan soon (coalesced)."""
        self._pending_reason = self._pending_reason or reason
        if channels is None or self._dirty is None:
            self._dirty = None
        else:
            self._dirty.update(channels)
        if self._scheduled is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._scheduled = loop.call_later(REPLAN_DELAY, self._scheduled_replan)

    def _scheduled_replan(self) -> None:
        self._scheduled = None
        reason, self._pending_reason = self._pending_reason or "change", ""
        dirty, self._dirty = self._dirty, set()
        try:
            self.replan_all(reason, dirty)
        except Exception:  # keep the previous trees
            log.exception("relay re-plan failed")

    def async_report(self, node_id: str, report: Report) -> None:
        """The channels a node says it relays (cheap when nothing changed)."""
        now = {r.channel: (r.role, r.parent_node_id, r.children) for r in report.relaying}
        before = self._reported.get(node_id, {})
        if now == before:
            return
        if now:
            self._reported[node_id] = now
        else:
            self._reported.pop(node_id, None)
        self.async_changed("report", {ch for ch in now.keys() | before.keys() if now.get(ch) != before.get(ch)})

    def async_session_opened(self, node_id: str, session: Session) -> None:
        """After the node's Welcome (and key table): its whole map, queued in its outbox."""
        nodes = self._nodes()
        routes: dict[str, edge_pb2.RelayRoute] = {}
        for ch, t in sorted(self.trees.items()):
            r = self._route(node_id, t, nodes)
            if r is not None:
                routes[ch] = r
        self._sent[node_id] = routes
        items = list(routes.values())
        for i in range(0, max(1, len(items)), ROUTES_PER_MESSAGE):
            chunk = items[i:i + ROUTES_PER_MESSAGE]
            session.async_send(edge_pb2.ControllerMessage(relay_map=edge_pb2.RelayMap(
                full=i == 0, more=i + ROUTES_PER_MESSAGE < len(items), routes=chunk)))

    def async_session_closed(self, node_id: str) -> None:
        self._sent.pop(node_id, None)

    # --- GetRelayParent -----------------------------------------------------------------------------

    def parent_for(self, node_id: str, channel: str, exclude: Iterable[str] = ()) -> edge_pb2.RelayRoute:
        """The route of `node_id` for `channel`, re-planned now; NotFound when the channel is not live anywhere,
        Conflict when it is but nobody can serve it to this node."""
        ingest = self._ingest(channel)
        if ingest is None:
            self.metrics.relay_parent_requests.labels("not_live").inc()
            raise NotFound(f"channel {channel!r} is not live on any node")
        if ingest == node_id:
            self.metrics.relay_parent_requests.labels("refused").inc()
            raise Conflict(f"channel {channel!r} is ingested on this node ({node_id}): it has no parent")
        now = self._clock()
        self._asked.setdefault(channel, {})[node_id] = now + ASK_TTL
        ex = frozenset(list(exclude)[:MAX_EXCLUDE]) - {node_id}
        if ex:
            self._excluded[(channel, node_id)] = (ex, now + EXCLUDE_TTL)
            self.metrics.relay_replans.labels("reparent").inc()
        tree = self._replan(channel, "request")
        route = self._route(node_id, tree, self._nodes()) if tree is not None else None
        if route is None or not route.chain:
            self.metrics.relay_parent_requests.labels("unserved").inc()
            why = tree.problem if tree is not None and tree.problem else "no eligible parent can take this node"
            raise Conflict(f"channel {channel!r} cannot be relayed to {node_id} now: {why}")
        self.metrics.relay_parent_requests.labels("ok").inc()
        self._push({channel})  # its siblings may have moved too
        return route

    # --- planning -----------------------------------------------------------------------------------

    def _ingest(self, channel: str) -> str | None:
        carriers = self.streams.carriers(channel)
        if not carriers:
            return None
        return max(carriers, key=lambda n: (self.streams.on_node(n)[channel].started_unix_ms, n))

    def _nodes(self) -> dict[str, TreeNode]:
        return {e.id: tree_node(e) for e in self.registry.nodes.values()}

    def _wanted(self, channel: str) -> set[str]:
        now = self._clock()
        asked = self._asked.get(channel, {})
        for n in [n for n, until in asked.items() if until <= now]:
            del asked[n]
        if not asked:
            self._asked.pop(channel, None)
        want = set(asked)
        for node, rel in self._reported.items():
            r = rel.get(channel)
            if r is not None and r[0] == "child":
                want.add(node)
        return want

    def _exclusions(self, channel: str) -> dict[str, frozenset[str]]:
        now = self._clock()
        out = {}
        for key in [k for k, (_, until) in self._excluded.items() if until <= now]:
            del self._excluded[key]
        for (ch, node), (ids, _) in self._excluded.items():
            if ch == channel:
                out[node] = ids
        return out

    def _replan(self, channel: str, reason: str, nodes: dict[str, TreeNode] | None = None) -> Tree | None:
        ingest = self._ingest(channel)
        if ingest is None:
            self.trees.pop(channel, None)
            return None
        nodes = nodes if nodes is not None else self._nodes()
        previous = self.trees.get(channel)
        tree = plan(channel, ingest, nodes, self._wanted(channel), previous=previous,
                    excluded=self._exclusions(channel), max_children=self.policy.max_children,
                    max_depth=self.policy.max_depth)
        self.trees[channel] = tree
        if previous is None or previous.parents != tree.parents or previous.push_to != tree.push_to:
            self.metrics.relay_replans.labels(reason).inc()
            if previous is not None:
                moved = [c for c, p in previous.parents.items() if c in tree.parents and tree.parents[c] != p]
                if moved:
                    log.info("channel=%s re-planned (%s): %s", channel, reason,
                             ", ".join(f"{c} → {tree.parents[c]}" for c in sorted(moved)[:10]))
            if tree.problem:
                log.warning("channel=%s cannot be relayed: %s", channel, tree.problem)
        return tree

    def replan_all(self, reason: str = "change", channels: set[str] | None = None) -> None:
        """Re-plan every live channel (or only `channels`, when nothing else changed) and push what changed."""
        nodes = self._nodes()
        if channels is not None:
            for ch in sorted(channels):
                self._replan(ch, reason, nodes)
            self._push(channels, nodes)
            return
        live = {r.channel for r in self.streams.live()}
        for ch in list(self.trees):
            if ch not in live:
                del self.trees[ch]
        for ch in [c for c in self._asked if c not in live]:
            del self._asked[ch]
        for ch in sorted(live):
            self._replan(ch, reason, nodes)
        self._push(None, nodes)

    # --- the routes pushed to edges ------------------------------------------------------------------

    def _hop(self, node_id: str, nodes: dict[str, TreeNode]) -> edge_pb2.RelayHop:
        n = nodes.get(node_id)
        return edge_pb2.RelayHop(node_id=node_id, address=n.address if n is not None and n.reachable else "")

    def _route(self, node_id: str, tree: Tree, nodes: dict[str, TreeNode],
               hinted: dict[str, tuple[str, ...]] | None = None) -> edge_pb2.RelayRoute | None:
        """`node_id`'s route for the tree's channel; None when it has none to follow."""
        if node_id == tree.ingest:
            if tree.push_to:
                return edge_pb2.RelayRoute(channel=tree.channel, push_to=self._hop(tree.push_to, nodes),
                                           reason=tree.reasons.get(tree.push_to, ""))
            return None
        if node_id in tree.parents:
            chain = tree.chain(node_id)
            reason = tree.reasons.get(node_id, "")
        else:
            if hinted is None:
                hinted = hints(tree, nodes, [node_id], max_children=self.policy.max_children,
                               max_depth=self.policy.max_depth)
            chain = hinted.get(node_id, ())
            reason = "where this node would go if it asked now"
        if not chain:
            return None
        return edge_pb2.RelayRoute(channel=tree.channel, chain=[self._hop(n, nodes) for n in chain], reason=reason)

    def _push(self, channels: set[str] | None, nodes: dict[str, TreeNode] | None = None) -> None:
        """Tell every connected edge whose route changed (for `channels`, or all)."""
        nodes = nodes if nodes is not None else self._nodes()
        connected = [e for e in self.registry.nodes.values() if e.session is not None and e.id in self._sent]
        if not connected:
            return
        ids = [e.id for e in connected]
        todo = sorted(self.trees) if channels is None else sorted(channels)
        updates: dict[str, list[edge_pb2.RelayRoute]] = {}
        removed: dict[str, list[str]] = {}
        fleet = hash((tuple(sorted(nodes.items())), tuple(ids)))
        for ch in todo:
            tree = self.trees.get(ch)
            sig = (fleet, tuple(sorted(tree.parents.items())), tree.push_to, tree.recruited) if tree else None
            if sig is not None and self._pushed.get(ch) == sig:
                continue  # the same tree over the same fleet: every edge has its route already
            if sig is None:
                self._pushed.pop(ch, None)
            else:
                self._pushed[ch] = sig
            hinted = hints(tree, nodes, ids, max_children=self.policy.max_children,
                           max_depth=self.policy.max_depth) if tree is not None else {}
            for e in connected:
                sent = self._sent[e.id]
                route = self._route(e.id, tree, nodes, hinted) if tree is not None else None
                if route is None:
                    if ch in sent:
                        del sent[ch]
                        removed.setdefault(e.id, []).append(ch)
                elif sent.get(ch) != route:
                    sent[ch] = route
                    updates.setdefault(e.id, []).append(route)
        if channels is None:  # channels that ended: drop them everywhere
            for ch in [c for c in self._pushed if c not in self.trees]:
                del self._pushed[ch]
            for e in connected:
                sent = self._sent[e.id]
                for ch in [c for c in sent if c not in self.trees]:
                    del sent[ch]
                    removed.setdefault(e.id, []).append(ch)
        for e in connected:
            ups, rm = updates.get(e.id, []), removed.get(e.id, [])
            if (ups or rm) and e.session is not None:
                for i in range(0, max(len(ups), 1), ROUTES_PER_MESSAGE):
                    e.session.async_send(edge_pb2.ControllerMessage(relay_map=edge_pb2.RelayMap(
                        full=False, routes=ups[i:i + ROUTES_PER_MESSAGE], removed=rm if i == 0 else [])))

    # --- views ----------------------------------------------------------------------------------------

    def chain_for(self, channel: str, node_id: str) -> tuple[str, ...]:
        """The relay path a viewer on `node_id` would be served through: (ingest, relays..., node_id); () when
        the channel has no tree or nothing could serve that node."""
        tree = self.trees.get(channel)
        if tree is None:
            return ()
        if node_id == tree.ingest:
            return (node_id,)
        if node_id in tree.parents:
            return (*tree.chain(node_id), node_id)
        h = hints(tree, self._nodes(), [node_id], max_children=self.policy.max_children,
                  max_depth=self.policy.max_depth)
        return (*h[node_id], node_id) if node_id in h else ()

    def relaying_edges(self, channel: str) -> int:
        """Nodes that relay the channel now (the tree's members but the ingest edge)."""
        tree = self.trees.get(channel)
        return len(tree.parents) if tree is not None else 0

    def view(self, channel: str) -> RelayTreeView:
        tree = self.trees.get(channel)
        if tree is None:
            raise NotFound(f"channel {channel!r} is not live on any node")
        names = {e.id: e.info.name for e in self.registry.nodes.values()}
        fan = tree.fanout()

        def reported(node: str) -> str:
            r = self._reported.get(node, {}).get(channel)
            if r is None:
                return ""
            role, parent, children = r
            if role == "child":
                return f"child of {parent}" + (f", {children} children" if children else "")
            if role == "push":
                return f"pushing to {parent}"
            return f"parent of {children}"

        members = [RelayMember(node_id=tree.ingest, role="ingest", children=fan.get(tree.ingest, 0),
                               reported=reported(tree.ingest), reason="the channel is ingested here",
                               name=names.get(tree.ingest, ""))]
        for node in sorted(tree.parents, key=lambda n: (tree.depth(n), tree.parents[n], n)):
            role = "push" if node == tree.push_to else "relay" if node in tree.recruited or fan.get(node) else "edge"
            members.append(RelayMember(node_id=node, parent_node_id=tree.parents[node], depth=tree.depth(node),
                                       role=role, children=fan.get(node, 0), reported=reported(node),
                                       reason=tree.reasons.get(node, ""), name=names.get(node, "")))
        return RelayTreeView(channel=channel, ingest_node_id=tree.ingest, members=tuple(members), problem=tree.problem)

    def views(self) -> list[RelayTreeView]:
        return [self.view(ch) for ch in sorted(self.trees)]

    def gauges(self) -> tuple[dict[str, int], int, int]:
        """(channel → edges relaying it, the largest fan-out of one parent, parents serving children)."""
        per_channel = {ch: len(t.parents) for ch, t in self.trees.items()}
        fans = [n for t in self.trees.values() for n in t.fanout().values()]
        return per_channel, max(fans, default=0), len(fans)

    async def stop(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
