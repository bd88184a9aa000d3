"""SqliteStore against a real SQLite file: tokens, enrollment, transitions, events, restarts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from originctl.errors import TokenExpired, TokenInvalid, TokenUsed
from originctl.model import NodeInfo, NodeRecord, NodeState, TokenRecord
from originctl.server.store import SqliteStore

NOW = 1_800_000_000_000


def node(node_id: str, name: str = "edge") -> NodeRecord:
    return NodeRecord(id=node_id, info=NodeInfo(name=name, hostname="host", prefixes=("10.0.0.0/8",), latitude=1.5),
                      cert_serial="abc", cert_not_after_unix_ms=NOW + 1000, enrolled_unix_ms=NOW,
                      state_since_unix_ms=NOW)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "origin.db")
    await s.open()
    yield s
    await s.close()


async def test_token_lifecycle(store: SqliteStore) -> None:
    await store.add_tokens([TokenRecord("h1", NOW, NOW + 60_000, site="ams"), TokenRecord("h2", NOW, NOW + 10)])
    assert (await store.check_token("h1", NOW)).site == "ams"
    with pytest.raises(TokenInvalid, match="originctl token create"):
        await store.check_token("nope", NOW)
    with pytest.raises(TokenExpired, match="expired"):
        await store.check_token("h2", NOW + 10)
    await store.enroll("h1", node("nd-1"), NOW + 1)
    with pytest.raises(TokenUsed, match="already used"):
        await store.check_token("h1", NOW + 2)
    with pytest.raises(TokenUsed):
        await store.enroll("h1", node("nd-2"), NOW + 2)
    assert [n.id for n in await store.list_nodes()] == ["nd-1"]  # the refused enrollment left nothing


async def test_concurrent_enrollments_with_one_token_only_one_wins(store: SqliteStore) -> None:
    await store.add_tokens([TokenRecord("h", NOW, NOW + 60_000)])
    results = await asyncio.gather(*(store.enroll("h", node(f"nd-{i}"), NOW) for i in range(10)),
                                   return_exceptions=True)
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, TokenUsed) for r in results if isinstance(r, Exception))


async def test_nodes_transitions_and_events_survive_a_restart(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "origin.db")
    await s.open()
    await s.add_tokens([TokenRecord("h", NOW, NOW + 60_000)])
    await s.enroll("h", node("nd-1", "edge-a"), NOW)
    await s.record_transition("nd-1", NodeState.LOST, NodeState.HEALTHY, "first report", NOW + 5)
    await s.record_transition("nd-1", NodeState.HEALTHY, NodeState.DEGRADED, "GPU 0 hot", NOW + 6)
    await s.set_draining("nd-1", True)
    await s.touch_nodes([("nd-1", NOW + 7)])
    await s.update_node_info("nd-1", NodeInfo(name="edge-a", version="9.9", prefixes=("192.0.2.0/24",)))
    await s.close()

    s = SqliteStore(tmp_path / "origin.db")
    await s.open()
    try:
        (rec,) = await s.list_nodes()
        assert (rec.state, rec.state_reason, rec.state_since_unix_ms) == (NodeState.DEGRADED, "GPU 0 hot", NOW + 6)
        assert rec.draining and rec.last_report_unix_ms == NOW + 7
        assert rec.info.version == "9.9" and rec.info.prefixes == ("192.0.2.0/24",)
        events = await s.list_events("nd-1")
        assert [(e.kind, e.to_state) for e in events] == [
            ("state", NodeState.DEGRADED), ("state", NodeState.HEALTHY), ("enrolled", None)]
        assert events[0].from_state is NodeState.HEALTHY and events[0].reason == "GPU 0 hot"
        assert await s.list_events("other") == []
        assert len(await s.list_events(limit=2)) == 2
    finally:
        await s.close()


async def test_many_writers_are_group_committed_off_the_loop(store: SqliteStore) -> None:
    loop_thread = threading.get_ident()
    seen: set[int] = set()
    original = store._run_batch

    def spy(conn, batch):  # type: ignore[no-untyped-def]
        seen.add(threading.get_ident())
        spy.batches.append(len(batch))  # type: ignore[attr-defined]
        return original(conn, batch)

    spy.batches = []  # type: ignore[attr-defined]
    store._run_batch = spy  # type: ignore[method-assign]
    events = await asyncio.gather(*(store.add_event(f"nd-{i % 7}", "test", str(i), NOW + i) for i in range(500)))
    assert len({e.id for e in events}) == 500
    assert loop_thread not in seen and len(seen) == 1
    assert max(spy.batches) > 1  # queued jobs went out together  # type: ignore[attr-defined]


async def test_a_failing_job_does_not_undo_its_neighbours(store: SqliteStore) -> None:
    await store.add_tokens([TokenRecord("h", NOW, NOW + 60_000)])
    results = await asyncio.gather(
        store.add_event("nd-1", "a", "", NOW), store.enroll("missing", node("nd-x"), NOW),
        store.add_event("nd-1", "b", "", NOW), return_exceptions=True)
    assert isinstance(results[1], TokenInvalid)
    assert [e.kind for e in await store.list_events("nd-1")] == ["b", "a"]
