"""LL-HLS over the relay (real gRPC with mutual TLS, real LMDB stores): a relaying edge holds the ingest
edge's init segments, parts, segments and pending state, byte for byte, as they commit, one hop and
two hops down, and a segment's bytes cross each hop once."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from edged.relay.gate import Availability
from edged.store.segments import SegmentStore
from tests.integration.relay.harness import CHANNEL, CmafRendition, Node, Peer, StaticDirectory
from tests.integration.relay.test_relay_grpc import ca, metric, nodes, until  # noqa: F401 (fixtures)

log = logging.getLogger(__name__)
INIT_A = b"ftyp+moov: tracks A"
INIT_B = b"ftyp+moov: tracks B (a new encoder config)"


def _copy_of(parent: SegmentStore, child: SegmentStore, rendition: str = "source") -> list[str]:
    """What differs between the child's copy of a rendition and the parent's ([]: nothing): every segment
    the child holds (metadata but this node's write times, bytes, its parts, its init segment) and the
    pending segment (its state but the ingest commit time, and its parts)."""
    diffs: list[str] = []
    for mine in child.metas_from(CHANNEL, rendition, 0, 10_000):
        theirs = parent.meta(CHANNEL, rendition, mine.seq)
        if theirs is None:
            diffs.append(f"segment {mine.seq}: not at the parent")
            continue
        if (dataclasses.replace(mine, written_ns=0, origin_ns=0) != dataclasses.replace(theirs, written_ns=0, origin_ns=0)
                or mine.ingest_ns != theirs.ingest_ns):  # (the ingest edge's commit time, however many hops down)
            diffs.append(f"segment {mine.seq}: metadata {mine} != {theirs}")
        if child.read(CHANNEL, rendition, mine.seq) != parent.read(CHANNEL, rendition, mine.seq):
            diffs.append(f"segment {mine.seq}: bytes")
        for i in range(len(theirs.parts)):
            if child.read_part(CHANNEL, rendition, mine.seq, i) != parent.read_part(CHANNEL, rendition, mine.seq, i):
                diffs.append(f"part {mine.seq}.{i}")
        if child.read_init(CHANNEL, rendition, mine.init) != parent.read_init(CHANNEL, rendition, theirs.init):
            diffs.append(f"segment {mine.seq}: init {mine.init}")
    mine_p, theirs_p = child.pending(CHANNEL, rendition), parent.pending(CHANNEL, rendition)
    if (mine_p is None) != (theirs_p is None):
        diffs.append(f"pending: {mine_p} here, {theirs_p} at the parent")
    elif mine_p is not None and theirs_p is not None:
        if dataclasses.replace(mine_p, origin_ns=0) != dataclasses.replace(theirs_p, origin_ns=0):
            diffs.append(f"pending: {mine_p} != {theirs_p}")
        for i in range(len(theirs_p.parts)):
            if child.read_part(CHANNEL, rendition, mine_p.seq, i) != parent.read_part(CHANNEL, rendition,
                                                                                    theirs_p.seq, i):
                diffs.append(f"pending part {mine_p.seq}.{i}")
        if child.read_init(CHANNEL, rendition, mine_p.init) is None:
            diffs.append(f"pending: init {mine_p.init} not held")
    return diffs


async def _same(parent: Node, child: Node, seqs: list[int], what: str) -> None:
    """Until the child holds `seqs` and its copy equals the parent's (bounded wait; the time it took is logged)."""
    began = time.monotonic()
    try:
        await until(lambda: child.seqs() == seqs and not _copy_of(parent.store, child.store), 5, what)
    except AssertionError:
        raise AssertionError(f"{what}: the child holds {child.seqs()}, differs in "
                             f"{_copy_of(parent.store, child.store)}") from None
    log.info("%s: %.1f ms", what, (time.monotonic() - began) * 1000)
    assert _copy_of(parent.store, child.store) == []


async def test_a_relaying_edge_holds_the_ingest_edges_parts_init_segments_and_pending_state(
        nodes: Callable[..., Node]) -> None:  # noqa: F811
    a = await nodes("edge-a").start()
    a.publish(part_target=0.5)
    src = CmafRendition(a)
    for seq in range(8):  # more than a window (6): the child starts at the live window
        src.whole(seq)
    src.part(8)
    src.part(8)
    r = await nodes("relay-1", directory=StaticDirectory({CHANNEL: [a.peer]})).start()
    c = await nodes("edge-c", directory=StaticDirectory({CHANNEL: [r.peer]})).start()
    assert await c.manager.request(CHANNEL) is Availability.WAITED  # via the relay node, which subscribes up
    await _same(a, r, list(range(2, 8)), "the replay at the relay node")
    await _same(r, c, list(range(2, 8)), "the replay two hops down")
    info = c.store.channel(CHANNEL) or {}
    assert (info.get("format"), info.get("part_target")) == ("cmaf", 0.5)
    held = r.store.pending(CHANNEL, "source")
    assert held is not None and held.seq == 8 and len(held.parts) == 2

    # live: each part as it commits, then the segment; the bytes cross each hop once (the segment is
    # joined from the parts below)
    out_before = metric("edged_relay_bytes_total", direction="out")
    size = 50_000
    for _ in range(2):
        src.part(8, size=size)
        await _same(a, c, list(range(2, 8)), "a live part two hops down")
    src.cut()
    await _same(a, c, list(range(2, 9)), "the segment completed from its parts two hops down")
    assert c.store.pending(CHANNEL, "source") is None and r.store.pending(CHANNEL, "source") is None
    sent = metric("edged_relay_bytes_total", direction="out") - out_before
    assert 2 * 2 * size <= sent < 2 * 2 * size * 1.25, sent  # two 50 kB parts, two hops; not again as a segment

    # a new init segment (the encoder's config changed: a discontinuity), then segments go on
    src.part(9, init=INIT_B, disc_seq=1, discontinuity=True)
    await _same(a, c, list(range(2, 9)), "a part with a new init segment two hops down")
    for seq in range(9, 12):
        while src.pending is None or len(src.pending.parts) < 4:
            src.part(seq, init=INIT_B, disc_seq=1, discontinuity=seq == 9)
        src.cut()
    await _same(a, c, list(range(2, 12)), "segments of the new init segment two hops down")
    last = c.store.meta(CHANNEL, "source", 11)
    assert last is not None and c.store.read_init(CHANNEL, "source", last.init) == INIT_B
    assert _copy_of(a.store, r.store) == []
    # parts of segments older than the window + 2 go here as they went at the ingest edge
    assert [c.store.read_part(CHANNEL, "source", s, 0) is not None for s in (2, 3)] == \
        [a.store.read_part(CHANNEL, "source", s, 0) is not None for s in (2, 3)] == [False, True]


async def test_a_child_that_resubscribes_mid_segment_keeps_its_parts_and_completes_it(
        nodes: Callable[..., Node]) -> None:  # noqa: F811
    """The parent goes away in the middle of a segment: the child holds some of its parts; the parent
    comes back with more; the replay starts at the segment's first part (the order check takes the
    ones the child holds again), and the child ends with the parent's pending state, segment and parts."""
    a = await nodes("edge-a").start()
    a.publish(part_target=0.5)
    src = CmafRendition(a)
    src.whole(0)
    src.part(1)
    b = await nodes("edge-b", directory=StaticDirectory({CHANNEL: [a.peer]})).start()
    assert await b.manager.request(CHANNEL) is Availability.WAITED
    await _same(a, b, [0], "the replay at the child")
    port = a.port
    await a.stop_server()
    src.part(1)  # committed while the child is cut off
    src.part(1)
    await asyncio.sleep(a.cfg.stall_timeout)
    await a.serve(port)
    await _same(a, b, [0], "the pending parts after the parent came back")
    src.part(1)
    src.cut()
    src.part(2)
    await _same(a, b, [0, 1], "the segment and the next part after the parent came back")


async def test_parts_pushed_up_by_an_ingest_edge_nobody_can_dial(nodes: Callable[..., Node]) -> None:  # noqa: F811
    """The dial reversed carries parts too: the ingest edge pushes to its relay node, which serves a child."""
    r = await nodes("relay-1", directory=StaticDirectory({CHANNEL: [Peer("edge-a", "")]})).start()
    directory = StaticDirectory()
    directory.pushes[CHANNEL] = r.peer
    a = await nodes("edge-a", directory=directory).start()
    await a.stop_server()  # nobody can dial it
    a.publish(part_target=0.5)
    src = CmafRendition(a)
    src.whole(0)
    src.part(1)
    a.pusher.reconcile()
    await _same(a, r, [0], "the pushed segment and part at the relay node")
    b = await nodes("edge-b", directory=StaticDirectory({CHANNEL: [r.peer]})).start()
    assert await b.manager.request(CHANNEL) is Availability.WAITED
    src.part(1)
    await _same(a, b, [0], "a live part pushed, then relayed")
    src.part(1)
    src.cut()
    await _same(a, b, [0, 1], "the segment pushed, then relayed")
