"""Relay trees, pure: for one live channel, which node each edge that carries it subscribes to.

The root is the ingest edge. A child hangs directly below it while the ingest edge has room
(`max_children` subscriptions) and others can dial it; otherwise below a relay node (`[node] relay =
true`, reachable) already in the tree, shallowest and least loaded first; otherwise a relay node is
recruited into the tree (below the root, or below a relay with room) and the child hangs below that.
While relay nodes are left to recruit, a parent keeps its last quarter of `max_children` slots (at
least one) for them, so the tree can grow past one node's fan-out without moving anyone; when no relay
is left, the root takes children over its cap rather than leave them unserved.
An ingest edge others cannot dial (`[node] reachable = false`) pushes the channel up to one relay node
(chosen by rendezvous hashing on the channel, so channels spread over the relays), and every child
hangs below that one or its descendants. Depth is at most `max_depth` hops (3: ingest → relay →
relay → edge). Only eligible nodes (healthy or degraded, not draining, connected) take part.

Deterministic (the same inputs give the same tree) and stable: a child keeps its parent while that
parent is still eligible, reachable, not excluded by the child, within depth, and under its
fan-out (the children already below a parent keep their places first, so a cap that was lowered moves
only the newest). A child that asks again after its parent failed passes `excluded`: that parent is
not used for it. Relay nodes recruited for nobody (their children left) drop out of the tree.

`hint()` answers where a node that does not carry the channel would go if it asked now, without
changing the tree: the pushed map carries these hints, so an edge can subscribe through a controller
outage. Cost: O(nodes in the tree × relay nodes) per plan; hints add O(relay nodes) per asking node.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MAX_DEPTH = 3  # hops from the ingest edge to the deepest edge
DEFAULT_MAX_CHILDREN = 20


@dataclass(frozen=True, slots=True)
class TreeNode:
    """What planning needs to know about one node."""

    id: str
    address: str = ""  # HOST:PORT of its relay listener; "" = none known
    eligible: bool = True  # healthy or degraded, not draining, connected
    relay: bool = False  # [node] relay = true: may relay channels it does not ingest
    reachable: bool = True  # [node] reachable: others can dial its relay port

    @property
    def dialable(self) -> bool:
        return self.reachable and bool(self.address)

    @property
    def can_relay(self) -> bool:
        return self.eligible and self.relay and self.dialable


@dataclass(frozen=True)
class Tree:
    """One channel's relay tree: `parents` maps every member but the ingest edge to its parent."""

    channel: str
    ingest: str
    parents: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # member → why that parent
    push_to: str = ""  # the relay node an unreachable ingest edge pushes the channel up to
    recruited: frozenset[str] = frozenset()  # relay nodes in the tree for others only
    problem: str = ""  # why the tree cannot serve anyone (no eligible ingest edge, no relay to push up to)

    def members(self) -> set[str]:
        return {self.ingest, *self.parents}

    def chain(self, node: str) -> tuple[str, ...]:
        """The nodes from the ingest edge down to `node`'s parent; () for the ingest edge or a non-member."""
        out: list[str] = []
        cur = self.parents.get(node)
        while cur is not None and len(out) <= MAX_DEPTH + 1:
            out.append(cur)
            cur = self.parents.get(cur)
        return tuple(reversed(out))

    def depth(self, node: str) -> int:
        return len(self.chain(node))

    def children(self, node: str) -> list[str]:
        return sorted(c for c, p in self.parents.items() if p == node)

    def fanout(self) -> dict[str, int]:
        """Parent → its number of children."""
        out: dict[str, int] = {}
        for p in self.parents.values():
            out[p] = out.get(p, 0) + 1
        return out


def _hash(channel: str, node: str) -> bytes:
    return hashlib.sha256(f"{channel}\0{node}".encode()).digest()


class _Builder:
    def __init__(self, channel: str, ingest: TreeNode, nodes: Mapping[str, TreeNode], max_children: int,
                 max_depth: int) -> None:
        self.channel = channel
        self.ingest = ingest
        self.nodes = nodes
        self.max_children = max_children
        self.max_depth = max_depth
        self.parents: dict[str, str] = {}
        self.reasons: dict[str, str] = {}
        self.depth: dict[str, int] = {ingest.id: 0}
        self.count: dict[str, int] = {}
        self.recruited: set[str] = set()
        self.push_to = ""
        self._serving: set[str] = {ingest.id}  # members that may have children: the root and relay nodes
        # relay nodes in rendezvous order for this channel (recruits are taken from here)
        self._relay_order = sorted((n.id for n in nodes.values() if n.can_relay), key=lambda n: _hash(channel, n))

    # --- the tree as built so far ------------------------------------------------------------------

    def root(self) -> str:
        """The node children hang below first: the ingest edge, or the relay it pushes up to."""
        return self.ingest.id if self.ingest.dialable else self.push_to

    def attach(self, child: str, parent: str, reason: str) -> None:
        self.parents[child] = parent
        self.reasons[child] = reason
        self.depth[child] = self.depth[parent] + 1
        self.count[parent] = self.count.get(parent, 0) + 1
        n = self.nodes.get(child)
        if child == self.push_to or (n is not None and n.can_relay):
            self._serving.add(child)

    def detach(self, child: str) -> None:
        parent = self.parents.pop(child)
        self.reasons.pop(child, None)
        self.depth.pop(child, None)
        self.count[parent] -= 1
        self._serving.discard(child)

    def _descends_from(self, node: str, ancestor: str) -> bool:
        cur: str | None = node
        while cur is not None:
            if cur == ancestor:
                return True
            cur = self.parents.get(cur)
        return False

    def can_parent(self, parent: str, child: str, excluded: frozenset[str], *, over_cap: bool = False) -> bool:
        """Whether `child` may hang below `parent` (a member of the tree) now."""
        if parent == child or parent in excluded or parent not in self.depth:
            return False
        p = self.nodes.get(parent)
        if p is None or not p.eligible or not p.dialable:
            return False
        if parent != self.ingest.id and not p.relay:
            return False  # only the ingest edge and relay nodes serve others
        if self.depth[parent] + 1 > self.max_depth:
            return False
        if not over_cap and self.count.get(parent, 0) >= self.max_children:
            return False
        return not self._descends_from(parent, child)

    def servers(self) -> list[str]:
        """Members that may serve children, best first: shallowest, least loaded, then by id."""
        root = self.root()
        out = [n for n in self._serving if n in self.depth and (n == root or self.nodes[n].can_relay)]
        return sorted(out, key=lambda n: (n != root, self.depth[n], self.count.get(n, 0), n))

    def recruits(self, channel: str, child: str, excluded: frozenset[str]) -> list[str]:
        """Relay nodes not in the tree yet, in rendezvous order for this channel."""
        return [n for n in self._relay_order if n not in self.depth and n != child and n not in excluded]

    # --- placing one child -------------------------------------------------------------------------

    def reserve(self, server: str, recruitable: int) -> int:
        """Slots of `server` kept for relay nodes (so that the tree can grow past one node's fan-out) while
        relays are left to recruit: a quarter of max_children (at least 1), where a relay below it could
        still have children within max_depth."""
        if not recruitable or self.depth[server] + 2 > self.max_depth:
            return 0
        return min(recruitable, max(1, self.max_children // 4))

    def place(self, child: str, excluded: frozenset[str]) -> bool:
        """Hang `child` somewhere (recruiting a relay node if needed); False when nowhere can take it."""
        recruits = self.recruits(self.channel, child, excluded)
        for s in self.servers():
            room = self.max_children - self.reserve(s, len(recruits)) - self.count.get(s, 0)
            if room > 0 and self.can_parent(s, child, excluded):
                why = "the ingest edge" if s == self.ingest.id else (
                    "the relay node the ingest edge pushes to" if s == self.push_to else "a relay node in the tree")
                self.attach(child, s, f"{why}, child {self.count.get(s, 0) + 1} of at most {self.max_children}")
                return True
        for r in recruits:
            for s in self.servers():
                if self.depth[s] + 2 <= self.max_depth and self.can_parent(s, r, frozenset()):
                    self.attach(r, s, f"relay node recruited: fan-out beyond relay.max_children ({self.max_children})"
                                      f"{'' if self.ingest.dialable else ' below an ingest edge that cannot be dialled'}")
                    self.recruited.add(r)
                    self.attach(child, r, f"a relay node recruited for fan-out, child 1 of at most {self.max_children}")
                    return True
        root = self.root()
        if root and self.can_parent(root, child, excluded, over_cap=True):
            self.attach(child, root, f"over relay.max_children ({self.max_children}): no relay node has room")
            return True
        return False


def _push_target(channel: str, ingest: TreeNode, nodes: Mapping[str, TreeNode], previous: Tree | None,
                 excluded: frozenset[str]) -> str:
    if previous is not None and previous.push_to:
        p = nodes.get(previous.push_to)
        if p is not None and p.can_relay and p.id not in excluded:
            return p.id
    candidates = [n.id for n in nodes.values() if n.can_relay and n.id != ingest.id and n.id not in excluded]
    return min(candidates, key=lambda n: _hash(channel, n)) if candidates else ""


def plan(channel: str, ingest_id: str, nodes: Mapping[str, TreeNode], wanted: Iterable[str], *,
         previous: Tree | None = None, excluded: Mapping[str, frozenset[str]] | None = None,
         max_children: int = DEFAULT_MAX_CHILDREN, max_depth: int = MAX_DEPTH) -> Tree:
    """The tree for `channel`, ingested on `ingest_id`, for the nodes in `wanted` (those that carry it or
    asked to); `excluded`: per child, parents it must not get (they just failed it)."""
    excluded = excluded or {}
    ingest = nodes.get(ingest_id)
    if ingest is None or not ingest.eligible:
        return Tree(channel, ingest_id, problem=f"the ingest edge {ingest_id} is not serving")
    b = _Builder(channel, ingest, nodes, max(1, max_children), max(1, min(max_depth, MAX_DEPTH)))
    if not ingest.dialable:
        b.push_to = _push_target(channel, ingest, nodes, previous, excluded.get(ingest_id, frozenset()))
        if not b.push_to:
            return Tree(channel, ingest_id, problem=f"the ingest edge {ingest_id} cannot be dialled "
                                                    "([node] reachable = false) and no relay node is up to push to")
        b.parents[b.push_to] = ingest_id
        b.reasons[b.push_to] = "the ingest edge cannot be dialled: it pushes the channel up to this relay node"
        b.depth[b.push_to] = 1
        b._serving.add(b.push_to)
    want = {w for w in wanted if w != ingest_id and w != b.push_to and w in nodes and nodes[w].eligible}
    # previous members first (parents before their children), so they keep their places; relays recruited
    # before stay while someone is below them
    old: list[str] = []
    if previous is not None and previous.ingest == ingest_id:
        keep = want | {r for r in previous.recruited if r in nodes and nodes[r].can_relay}
        serving = set(previous.parents.values())  # relays first at each depth: they carry subtrees
        old = sorted((n for n in previous.parents if n in keep),
                     key=lambda n: (previous.depth(n), n not in serving, n))
    placed: set[str] = set()
    for n in old:
        p = previous.parents[n] if previous is not None else ""
        if b.can_parent(p, n, excluded.get(n, frozenset())):
            b.attach(n, p, previous.reasons.get(n, "") if previous is not None else "")
            if previous is not None and n in previous.recruited and n not in want:
                b.recruited.add(n)
            placed.add(n)
    for n in sorted(want - placed):
        b.place(n, excluded.get(n, frozenset()))
    # recruited relays with nobody below them leave (repeat: leaving can empty their own parent)
    while True:
        idle = [r for r in b.recruited if b.count.get(r, 0) == 0]
        if not idle:
            break
        for r in idle:
            b.recruited.discard(r)
            b.detach(r)
    return Tree(channel, ingest_id, b.parents, b.reasons, b.push_to, frozenset(b.recruited))


HINT_SLOTS = 32  # next places in the tree simulated per channel; nodes outside the tree spread over them


def hints(tree: Tree, nodes: Mapping[str, TreeNode], askers: Iterable[str], *,
          max_children: int = DEFAULT_MAX_CHILDREN, max_depth: int = MAX_DEPTH,
          slots: int = HINT_SLOTS) -> dict[str, tuple[str, ...]]:
    """For nodes outside the tree: the chain (ingest edge … parent) each would get if it asked now. The next
    `slots` places a child would take are simulated once (as if that many asked, one after the other), and
    each node gets one of them by rendezvous hashing, so hints spread over the relays as requests would
    (cost O(slots) per channel, whatever the fleet's size). The tree itself is not changed; a node that
    nothing could serve gets no entry."""
    ingest = nodes.get(tree.ingest)
    if ingest is None or tree.problem:
        return {}
    b = _Builder(tree.channel, ingest, nodes, max(1, max_children), max(1, min(max_depth, MAX_DEPTH)))
    b.push_to = tree.push_to
    if tree.push_to:
        b._serving.add(tree.push_to)
    for n in sorted(tree.parents, key=lambda n: (tree.depth(n), n)):
        p = tree.parents[n]
        if p in b.depth:
            b.attach(n, p, tree.reasons.get(n, ""))
    b.recruited = set(tree.recruited)
    chains: list[tuple[str, ...]] = []
    for i in range(max(1, slots)):
        pseudo = f"\0slot-{i}"  # never a node ID
        if not b.place(pseudo, frozenset()):
            break
        chains.append(_chain(b.parents, pseudo))
    if not chains:
        return {}
    out: dict[str, tuple[str, ...]] = {}
    members = tree.members()
    for n in askers:
        if n in members or n not in nodes or not nodes[n].eligible:
            continue
        start = int.from_bytes(_hash(tree.channel, n)[:4], "big") % len(chains)
        for k in range(len(chains)):
            chain = chains[(start + k) % len(chains)]
            if n not in chain:  # a relay node the simulation recruited cannot be its own parent
                out[n] = chain
                break
    return out


def _chain(parents: Mapping[str, str], node: str) -> tuple[str, ...]:
    out: list[str] = []
    cur = parents.get(node)
    while cur is not None and len(out) <= MAX_DEPTH + 1:
        out.append(cur)
        cur = parents.get(cur)
    return tuple(reversed(out))
