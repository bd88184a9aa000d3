"""A controller restart keeps the registry's view: restored nodes get the whole lost rule from the moment the
edge port listens (not from their last report, nor from the registry's load), and only real transitions are
recorded. Real SQLite, fake clocks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from originctl.metrics import ControllerMetrics
from originctl.model import NodeInfo, NodeRecord, NodeState, Report, TokenRecord
from originctl.server.health import HealthPolicy
from originctl.server.registry import Registry, Session
from originctl.server.store import SqliteStore

NOW = 1_800_000_000.0  # s, wall clock
POLICY = HealthPolicy(lost_after_intervals=3, recover_reports=3)


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "origin.db")
    await s.open()
    # the previous run: a node enrolled, attached and reported (healthy); then the controller stopped
    await s.add_tokens([TokenRecord("t", 0, int(NOW * 1000) + 3_600_000)])
    rec = NodeRecord(id="nd-1", info=NodeInfo(name="edge-1", heartbeat_seconds=2.0), cert_serial="01",
                     cert_not_after_unix_ms=0, enrolled_unix_ms=1, state=NodeState.LOST, state_since_unix_ms=1)
    await s.enroll("t", rec, int(NOW * 1000))
    before = Registry(s, ControllerMetrics(), POLICY, clock=Clock(), wall=lambda: NOW)
    await before.start()
    before.async_attach("nd-1", rec.info, Session("nd-1", "peer"))
    before.async_report("nd-1", Report(seq=1))
    assert before.nodes["nd-1"].health.state is NodeState.HEALTHY
    await before.stop()
    yield s
    await s.close()


async def transitions(store: SqliteStore) -> list[tuple[str | None, str | None]]:
    return [(e.from_state.value if e.from_state else None, e.to_state.value if e.to_state else None)
            for e in reversed(await store.list_events("nd-1")) if e.kind == "state"]


async def test_silence_is_not_judged_before_the_edge_port_listens(store: SqliteStore) -> None:
    clock = Clock()
    reg = Registry(store, ControllerMetrics(), POLICY, clock=clock, wall=lambda: NOW + 3600)
    await reg.start(serving=False)
    entry = reg.nodes["nd-1"]
    assert entry.health.state is NodeState.HEALTHY and entry.session is None
    clock.now += 3600  # a slow start (CA, certificates, store): nobody could have re-attached yet
    reg.async_sweep()
    assert entry.health.state is NodeState.HEALTHY
    reg.async_serving()
    clock.now += 5.9  # just under 3 heartbeats of 2 s since the edge port listens
    reg.async_sweep()
    assert entry.health.state is NodeState.HEALTHY
    clock.now += 0.2
    reg.async_sweep()
    assert entry.health.state is NodeState.LOST and entry.health.state_reason.startswith("no report for 6.1 s")
    await reg.stop()
    assert await transitions(store) == [("lost", "healthy"), ("healthy", "lost")]  # one real transition, once


async def test_a_node_that_re_attaches_within_the_grace_keeps_its_state_and_no_transition_is_recorded(
        store: SqliteStore) -> None:
    clock = Clock()
    reg = Registry(store, ControllerMetrics(), POLICY, clock=clock, wall=lambda: NOW + 3600)
    await reg.start(serving=False)
    clock.now += 10.0
    reg.async_serving()
    clock.now += 4.0
    reg.async_sweep()
    reg.async_attach("nd-1", NodeInfo(name="edge-1", heartbeat_seconds=2.0), Session("nd-1", "peer"))
    for seq in range(2, 6):
        clock.now += 2.0
        reg.async_report("nd-1", Report(seq=seq))
        reg.async_sweep()
    assert reg.nodes["nd-1"].health.state is NodeState.HEALTHY  # never lost, never degraded on probation
    await reg.stop()
    assert await transitions(store) == [("lost", "healthy")]  # the previous run's only
