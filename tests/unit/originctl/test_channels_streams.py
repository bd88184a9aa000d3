"""Channel book (hashed keys, SQLite, listeners) and stream book (events, report reconciliation, lost nodes)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from originctl import render
from originctl.errors import Conflict, NotFound, UsageError
from originctl.model import NodeInfo, NodeRecord, NodeState, NodeStats, Report, StreamRecord
from originctl.server.channels import ChannelBook, key_sha256
from originctl.server.health import Health
from originctl.server.registry import NodeEntry
from originctl.server.store import SqliteStore
from originctl.server.streams import REPORT_SLACK_MS, StreamBook

NOW = 1_800_000_000.0  # s


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "origin.db")
    await s.open()
    yield s
    await s.close()


async def test_channels_keep_only_key_digests_and_survive_a_restart(store: SqliteStore, tmp_path: Path) -> None:
    book = ChannelBook(store, wall=lambda: NOW)
    heard: list[tuple[str, str, str]] = []
    book.listeners.append(lambda kind, rec: heard.append((kind, rec.name, rec.key_sha256)))
    rec, key = await book.create("news")
    assert rec.key_sha256 == hashlib.sha256(key.encode()).hexdigest() and key not in rec.key_sha256
    assert len(key) >= 32 and not key.startswith("-")
    assert book.by_key(key) == rec and book.by_key("guess") is None
    with pytest.raises(Conflict, match="rotate-key"):
        await book.create("news")
    with pytest.raises(UsageError, match="invalid channel name"):
        await book.create("../etc")
    rotated, key2 = await book.rotate("news")
    assert key2 != key and book.by_key(key) is None and book.by_key(key2) == rotated
    assert rotated.key_rotated_unix_ms == int(NOW * 1000)
    await book.create("sports")
    await book.delete("sports")
    with pytest.raises(NotFound):
        await book.delete("sports")
    with pytest.raises(NotFound):
        await book.rotate("sports")
    assert [h[:2] for h in heard] == [("upsert", "news"), ("upsert", "news"), ("upsert", "sports"),
                                      ("delete", "sports")]
    assert heard[1][2] == key_sha256(key2)
    # the store has digests only, and a new controller process sees the same channels
    raw = await asyncio.to_thread(lambda: b"".join(p.read_bytes() for p in tmp_path.glob("origin.db*")))  # + WAL
    assert rotated.key_sha256.encode() in raw
    assert key.encode() not in raw and key2.encode() not in raw
    again = ChannelBook(store)
    await again.load()
    assert [c.name for c in again.all()] == ["news"] and again.by_key(key2) is not None


def entry(node_id: str, health: Health) -> NodeEntry:
    rec = NodeRecord(id=node_id, info=NodeInfo(name=node_id), cert_serial="x", cert_not_after_unix_ms=0,
                     enrolled_unix_ms=0)
    return NodeEntry(rec, health, 0)


def report(at_ms: int, *channels: str) -> Report:
    return Report(sent_unix_us=at_ms * 1000, node=NodeStats(live_channels=channels))


async def test_streams_from_events_reports_and_lost_nodes(store: SqliteStore) -> None:
    book = StreamBook(store, wall=lambda: NOW)
    changes: list[int] = []
    book.listeners.append(lambda: changes.append(1))
    t0 = int(NOW * 1000)
    book.async_started(StreamRecord(id="st-1", channel="news", node_id="nd-a", protocol="rtmp", started_unix_ms=t0,
                                    mode="transcode", encoder="nvenc", reason="ingest node nd-a: GPU 0",
                                    decided_by_controller=True))
    # a report built just before the start (sent after it) does not end the stream
    book.async_report("nd-a", report(t0 - 5))
    assert [s.channel for s in book.live()] == ["news"]
    # the same session again, with the renditions the edge chose once it probed the source
    book.async_started(StreamRecord(id="st-2", channel="news", node_id="nd-a", protocol="rtmp", started_unix_ms=t0,
                                    mode="transcode", encoder="nvenc", renditions=("source", "720p30"),
                                    reason="ingest node nd-a: GPU 0", decided_by_controller=True))
    (live,) = book.live()
    assert (live.id, live.renditions) == ("st-1", ("source", "720p30"))
    assert book.transcodes_on("nd-a") == 1 and book.carriers("news") == {"nd-a"}
    # a channel only a report knows of is added, with the placement unknown
    book.async_report("nd-a", report(t0 + 10, "news", "talk"))
    assert {s.channel: s.mode for s in book.live()} == {"news": "transcode", "talk": "unknown"}
    # a report built well after the start that lacks the stream ends it
    book.async_report("nd-a", report(t0 + REPORT_SLACK_MS + 10, "talk"))
    assert [s.channel for s in book.live()] == ["talk"]
    # the node is lost: its streams end
    book.async_started(StreamRecord(id="st-3", channel="news", node_id="nd-b", protocol="srt",
                                    started_unix_ms=t0, mode="passthrough"))
    book.async_node_changed(entry("nd-a", Health(lost=False)), NodeState.HEALTHY)  # not lost: nothing ends
    assert len(book.live()) == 2
    book.async_node_changed(entry("nd-a", Health(lost=True, lost_reason="no report for 3 intervals")),
                            NodeState.HEALTHY)
    assert [(s.channel, s.node_id) for s in book.live()] == [("news", "nd-b")]
    book.async_ended("nd-b", "news", t0 + 5000, "the publisher stopped")
    assert not book.live() and not book.channels_by_node() and changes
    await book.drain()
    history = await store.list_streams(live_only=False)
    assert {(s.channel, s.node_id, s.end_reason.split(":")[0]) for s in history} == {
        ("news", "nd-a", "no longer live in the edge's report"), ("talk", "nd-a", "node lost"),
        ("news", "nd-b", "the publisher stopped")}
    assert all(s.ended_unix_ms for s in history)
    # a restarted controller starts from the streams left live
    book.async_started(StreamRecord(id="st-4", channel="late", node_id="nd-c", protocol="rtmp", started_unix_ms=t0))
    await book.drain()
    again = StreamBook(store)
    await again.load()
    assert [s.id for s in again.live()] == ["st-4"]
    text = render.streams_table(again.live(), t0 + 65_000, {"nd-c": "edge-c"})
    assert "late" in text and "edge-c" in text and "1m" in text
