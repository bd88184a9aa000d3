"""The edge's view of the controller's relay plan (fleet distribution): who this edge's parent is for a
channel, which of its own channels it must push up, and what it tells the controller it relays.

Two sources, as with the key table (authorizer.py):

  * `parent_for()` asks the controller (GetRelayParent over the agent's mutual-TLS channel) within
    PARENT_DEADLINE: its answer is definitive (None: the channel is not live anywhere, or nobody can
    serve it to this node) and is kept as this channel's entry of the map;
  * the relay map the controller pushes down the edge stream after every Welcome and on every change
    (a route per live channel: the chain of nodes from the ingest edge down to this edge's parent, and
    for a channel ingested here by an unreachable node, the relay node to push it up to). `parent_for()`
    falls back to it when the controller cannot be asked (unreachable, or no answer within the
    deadline): the parent of the last map, or, when that one just failed (`exclude`), the nearest node
    above it in the chain that can be dialled. The map is kept through a controller outage for as long
    as it lasts (running subscriptions never depend on the controller).

`report_relaying()` records what this edge relays now (role "child", "parent" or "push", the parent's
node ID, the number of children); the agent carries it up in every report, so the controller shows the
real tree and counts fan-out from facts.

Loop-only; nothing here imports gRPC or edgenet (link.py and convert.py do the wire).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from edged.agent.errors import ControllerUnavailable
from edged.log import QuietLog

log = logging.getLogger("edged.agent.relay")

PARENT_DEADLINE = 1.0  # s the controller has to name a parent before the pushed map answers (re-parenting: 2 s)
MAX_ROUTES = 100_000  # routes kept from the pushed map (one per live channel)
ROLES = ("child", "parent", "push")


@dataclass(frozen=True, slots=True)
class RelayPeer:
    node_id: str
    address: str  # HOST:PORT of that node's relay listener ([relay] listen, as the node reported it)


@dataclass(frozen=True, slots=True)
class RelayRoute:
    """One channel of the pushed map, for this node."""

    channel: str
    chain: tuple[RelayPeer, ...] = ()  # from the ingest edge down to this node's parent (the last one)
    push_to: RelayPeer | None = None  # this node ingests the channel and must push it up to this relay node

    @property
    def parent(self) -> RelayPeer | None:
        return self.chain[-1] if self.chain else None


@dataclass(frozen=True, slots=True)
class Relaying:
    """What this edge relays for one channel, as the reports carry it."""

    channel: str
    role: str  # "child" | "parent" | "push"
    parent_node_id: str = ""
    children: int = 0


class RelayDirectory(Protocol):
    async def parent_for(self, channel: str, exclude: tuple[str, ...] = ()) -> RelayPeer | None:
        """The parent this edge should subscribe to for `channel` (asks the controller, with a deadline;
        falls back to the last map the controller pushed when it cannot be reached). None: the channel
        is not live anywhere (the HTTP front answers 404). `exclude`: parents that just failed."""
        ...

    def push_targets(self) -> dict[str, RelayPeer]:
        """Channels ingested HERE that this edge must push up to a relay node (this node is
        `[node] reachable = false`, so children cannot dial it), and to which one."""
        ...

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Called (on the loop) whenever the pushed map or the push targets change."""
        ...

    def report_relaying(self, channel: str, role: str, parent_node_id: str, children: int) -> None:
        """What this edge relays now (role "child" | "parent" | "push"), carried up in the next report so
        the controller shows the real tree; report_relaying(channel, role, "", 0) with role "" ends it."""
        ...


class NotServed(Exception):  # noqa: N818 - an answer, not a failure
    """The controller says no parent can serve this channel here (not live, or nobody reachable)."""


# (channel, exclude) → the controller's route for this node; raises NotServed or ControllerUnavailable
AskParent = Callable[[str, tuple[str, ...]], Awaitable[RelayRoute]]


class ControllerDirectory:
    """The RelayDirectory of an edge with a controller (`Agent.relay_directory`)."""

    def __init__(self, ask: AskParent, *, deadline: float = PARENT_DEADLINE) -> None:
        self._ask = ask
        self.deadline = deadline
        self._routes: dict[str, RelayRoute] = {}
        self._partial: dict[str, RelayRoute] | None = None  # a full map arriving in several messages
        self._relaying: dict[str, Relaying] = {}
        self._listeners: list[Callable[[], None]] = []
        self._quiet = QuietLog(log)

    # --- RelayDirectory ---------------------------------------------------------------------------

    async def parent_for(self, channel: str, exclude: tuple[str, ...] = ()) -> RelayPeer | None:
        try:
            async with asyncio.timeout(self.deadline):
                route = await self._ask(channel, tuple(exclude))
        except NotServed as exc:
            log.info("channel=%s: no relay parent: %s", channel, exc)
            return None
        except (ControllerUnavailable, TimeoutError) as exc:
            peer = self._from_map(channel, exclude)
            self._quiet.warning("parent_fallback", "channel=%s: the controller cannot name a relay parent now (%s); "
                                "from the last map it pushed: %s", channel, exc or "no answer within "
                                f"{self.deadline:g} s", f"{peer.node_id} at {peer.address}" if peer else "none")
            return peer
        self._set_route(route)
        parent = route.parent
        if parent is not None and parent.node_id in exclude:  # an older controller that ignores `exclude`
            return self._from_map(channel, exclude)
        if parent is not None and not parent.address:
            # this node is the relay an unreachable ingest edge pushes the channel up to: it is not dialled
            log.info("channel=%s: %s pushes this channel here; nothing to dial", channel, parent.node_id)
            return None
        return parent

    def push_targets(self) -> dict[str, RelayPeer]:
        return {ch: r.push_to for ch, r in self._routes.items() if r.push_to is not None}

    def add_listener(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def report_relaying(self, channel: str, role: str, parent_node_id: str, children: int) -> None:
        if not role:
            self._relaying.pop(channel, None)
            return
        if role not in ROLES:
            raise ValueError(f"relay role must be one of {', '.join(ROLES)} (or '' to end it), not {role!r}")
        self._relaying[channel] = Relaying(channel, role, parent_node_id, max(0, children))

    # --- for the agent --------------------------------------------------------------------------------

    def relaying(self) -> list[Relaying]:
        """What this edge relays now, for the next report."""
        return list(self._relaying.values())

    def route(self, channel: str) -> RelayRoute | None:
        return self._routes.get(channel)

    def async_map(self, routes: Iterable[RelayRoute], removed: Iterable[str] = (), *, full: bool,
                  more: bool = False) -> None:
        """A RelayMap from the controller: full (possibly over several messages, the last with more=False)
        replaces the map; otherwise upserts `routes` and drops `removed`."""
        before = dict(self._routes)
        if full or self._partial is not None:
            if full and self._partial is None:
                self._partial = {}
            assert self._partial is not None
            for r in routes:
                if len(self._partial) < MAX_ROUTES:
                    self._partial[r.channel] = r
            if more:
                return
            self._routes, self._partial = self._partial, None
        else:
            for r in routes:
                if r.channel in self._routes or len(self._routes) < MAX_ROUTES:
                    self._routes[r.channel] = r
            for ch in removed:
                self._routes.pop(ch, None)
        if self._routes != before:
            self._notify()

    # --- internals ------------------------------------------------------------------------------------

    def _set_route(self, route: RelayRoute) -> None:
        if self._routes.get(route.channel) != route:
            self._routes[route.channel] = route
            self._notify()

    def _from_map(self, channel: str, exclude: tuple[str, ...]) -> RelayPeer | None:
        """The parent of the last map, or the nearest node above it that did not just fail."""
        route = self._routes.get(channel)
        if route is None:
            return None
        for peer in reversed(route.chain):
            if peer.node_id not in exclude and peer.address:
                return peer
        return None

    def _notify(self) -> None:
        for cb in list(self._listeners):
            try:
                cb()
            except Exception:  # a listener's bug must not break the link
                log.exception("relay map listener failed")
