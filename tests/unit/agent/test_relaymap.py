"""The edge's relay directory: the controller's answer first, the pushed map when it cannot be asked."""

from __future__ import annotations

import asyncio

import pytest

from edged.agent.errors import ControllerUnavailable
from edged.agent.relaymap import ControllerDirectory, NotServed, RelayPeer, RelayRoute

A = RelayPeer("nd-a", "10.0.0.1:50061")
R1 = RelayPeer("nd-r1", "10.0.0.2:50061")
R2 = RelayPeer("nd-r2", "10.0.0.3:50061")


class Controller:
    """Answers GetRelayParent from a dict; `down` makes it unreachable, `hang` makes it never answer."""

    def __init__(self) -> None:
        self.routes: dict[str, RelayRoute] = {}
        self.down = False
        self.hang = False
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    async def ask(self, channel: str, exclude: tuple[str, ...]) -> RelayRoute:
        self.asked.append((channel, exclude))
        if self.hang:
            await asyncio.Future()
        if self.down:
            raise ControllerUnavailable("not connected to the controller")
        if channel not in self.routes:
            raise NotServed(f"channel {channel!r} is not live on any node")
        return self.routes[channel]


async def test_the_controller_answers_first_and_its_answer_is_kept() -> None:
    ctl = Controller()
    d = ControllerDirectory(ctl.ask)
    changes: list[int] = []
    d.add_listener(lambda: changes.append(1))
    ctl.routes["news"] = RelayRoute("news", (A, R1))
    assert await d.parent_for("news") == R1
    assert d.route("news") == RelayRoute("news", (A, R1)) and changes == [1]
    assert await d.parent_for("nope") is None  # not live anywhere: the HTTP front answers 404
    ctl.down = True
    assert await d.parent_for("news") == R1  # from what it answered last
    assert await d.parent_for("news", exclude=("nd-r1",)) == A  # the failed parent's parent


async def test_pushed_map_answers_through_an_outage_and_a_hung_controller() -> None:
    ctl = Controller()
    d = ControllerDirectory(ctl.ask, deadline=0.05)
    changes: list[int] = []
    d.add_listener(lambda: changes.append(1))
    d.async_map([RelayRoute("news", (A, R1))], full=True, more=True)
    assert changes == [] and d.route("news") is None  # a full map in parts applies at its last part
    d.async_map([RelayRoute("sport", (A,)), RelayRoute("mine", push_to=R2)], full=True)
    assert changes == [1]
    ctl.hang = True
    assert await d.parent_for("news") == R1
    assert await d.parent_for("sport", exclude=("nd-a",)) is None  # nobody else above it
    assert d.push_targets() == {"mine": R2}
    d.async_map([RelayRoute("news", (A, R2))], ["sport"], full=False)
    assert await d.parent_for("news") == R2 and d.route("sport") is None and changes == [1, 1]
    d.async_map([RelayRoute("news", (A, R2))], full=False)
    assert changes == [1, 1]  # nothing changed: nobody is woken
    d.async_map([], full=True)
    assert d.push_targets() == {} and await d.parent_for("news") is None


async def test_the_push_target_of_an_unreachable_ingest_edge_dials_nobody() -> None:
    ctl = Controller()
    ctl.routes["news"] = RelayRoute("news", (RelayPeer("nd-nat", ""),))  # the relay node it pushes up to asks
    d = ControllerDirectory(ctl.ask)
    assert await d.parent_for("news") is None
    assert d.route("news") == ctl.routes["news"]


async def test_an_unreachable_hop_is_never_dialled() -> None:
    ctl = Controller()
    ctl.down = True
    d = ControllerDirectory(ctl.ask)
    d.async_map([RelayRoute("news", (RelayPeer("nd-a", ""), R1))], full=True)  # the ingest edge cannot be dialled
    assert await d.parent_for("news", exclude=("nd-r1",)) is None


def test_report_relaying() -> None:
    d = ControllerDirectory(Controller().ask)
    d.report_relaying("news", "child", "nd-a", 3)
    d.report_relaying("sport", "parent", "", 2)
    d.report_relaying("news", "child", "nd-r1", 4)
    assert [(r.channel, r.role, r.parent_node_id, r.children) for r in d.relaying()] == [
        ("news", "child", "nd-r1", 4), ("sport", "parent", "", 2)]
    d.report_relaying("news", "", "", 0)
    assert [r.channel for r in d.relaying()] == ["sport"]
    with pytest.raises(ValueError, match="relay role"):
        d.report_relaying("x", "grandparent", "", 0)
