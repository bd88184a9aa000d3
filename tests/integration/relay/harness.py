"""In-process relay nodes for the relay tests: real SegmentStores (temporary dirs), real gRPC over loopback
with mutual TLS, certificates minted by the controller's own CA code, and a static directory (a plain
class naming each channel's parent, as the controller would). `CmafRendition` commits a CMAF rendition
as the pipeline worker does (init segment, part by part, then the segment)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edged.agent.enroll import new_key_and_csr
from edged.config import RelayConfig
from edged.relay.client import RelayClient
from edged.relay.commits import CommitBus
from edged.relay.manager import Pusher, RelayManager
from edged.relay.server import RelayServer
from edged.relay.storeio import StoreWriter
from edged.relay.tls import FleetIdentity
from edged.store.segments import PendingMeta, SegmentMeta, SegmentStore, cmaf_init_id
from originctl.server.enrollment import CertificateAuthority

MIB = 1024 * 1024
CHANNEL = "news"


def identity(ca: CertificateAuthority, node_id: str) -> FleetIdentity:
    key_pem, csr_pem = new_key_and_csr(node_id)
    return FleetIdentity(node_id, key_pem, ca.sign_node_csr(csr_pem, node_id).cert_pem, ca.cert_pem)


@dataclasses.dataclass(frozen=True)
class Peer:
    node_id: str
    address: str


class StaticDirectory:
    """A RelayDirectory whose plan is a dict: channel → the parents to try, in order."""

    def __init__(self, parents: dict[str, list[Peer]] | None = None) -> None:
        self.parents = parents or {}
        self.pushes: dict[str, Peer] = {}  # channels ingested here that go up to a relay node
        self.asked: list[tuple[str, tuple[str, ...]]] = []
        self.reported: dict[str, tuple[str, str, int]] = {}
        self.listeners: list[Callable[[], None]] = []

    async def parent_for(self, channel: str, exclude: tuple[str, ...] = ()) -> Peer | None:
        self.asked.append((channel, exclude))
        choices = self.parents.get(channel, [])
        fresh = [p for p in choices if p.node_id not in exclude]
        return fresh[0] if fresh else (choices[0] if choices else None)

    def push_targets(self) -> dict[str, Any]:
        return dict(self.pushes)

    def add_listener(self, callback: Callable[[], None]) -> None:
        self.listeners.append(callback)

    def report_relaying(self, channel: str, role: str, parent_node_id: str, children: int) -> None:
        if role:
            self.reported[channel] = (role, parent_node_id, children)
        else:
            self.reported.pop(channel, None)


class Node:
    """One edge's relay parts: store, bus, writer, server (parent side) and manager (child side)."""

    def __init__(self, root: Path, ca: CertificateAuthority, node_id: str, cfg: RelayConfig,
                 directory: StaticDirectory | None = None, window: int = 6) -> None:
        self.node_id = node_id
        self.cfg = cfg
        self.store = SegmentStore(root / node_id, 64 * MIB)
        self.bus = CommitBus()
        self.writer = StoreWriter(self.store, 100)
        self.ident = identity(ca, node_id)
        self.window = window
        self.live: set[str] = set()  # channels "published" here
        self.directory = directory or StaticDirectory()
        self.manager = RelayManager(cfg, self.store, self.bus, self.writer, self.directory, self.client,
                                    node_id=lambda: node_id, is_local=self.here,
                                    children=lambda ch: self.server.children(ch) if self.server else 0)
        self.pusher = Pusher(cfg, self.store, self.bus, self.directory, self.client, window=window,
                             is_local=lambda ch: ch in self.live, node_id=lambda: node_id)
        self.server: RelayServer | None = None
        self.port = 0

    def here(self, channel: str) -> bool:
        """Published here, or pushed here by an ingest edge that cannot be dialled (as edged/app.py says)."""
        return channel in self.live or (self.server is not None and self.server.pushed(channel))

    def client(self) -> RelayClient:
        return RelayClient(self.ident, max_record_bytes=self.cfg.max_record_bytes, stall_timeout=self.cfg.stall_timeout)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def peer(self) -> Peer:
        return Peer(self.node_id, self.address)

    async def start(self, port: int = 0) -> Node:
        await self.manager.start()
        await self.pusher.start()
        await self.serve(port)
        return self

    async def serve(self, port: int = 0) -> None:
        cfg = dataclasses.replace(self.cfg, listen=f"127.0.0.1:{port or self.port}")
        self.server = RelayServer(cfg, self.store, self.bus, self.ident, window=self.window,
                                  has_channel=lambda ch: self.here(ch) or self.manager.active(ch),
                                  ensure=self._ensure, writer=self.writer,
                                  on_children=self.manager.children_changed)
        await self.server.start()
        self.port = self.server.port

    async def _ensure(self, channel: str, path: tuple[str, ...]) -> bool:
        got = await self.manager.request(channel, path)
        return got.value in ("local", "ready", "relay_wait")

    async def stop_server(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def stop(self) -> None:
        await self.stop_server()
        await self.pusher.stop()
        await self.manager.stop()
        self.writer.close()
        self.store.close()

    # --- an ingest edge's pipeline, as the worker commits ---------------------------------------------

    def publish(self, channel: str = CHANNEL, renditions: tuple[str, ...] = ("source",), session: int = 1,
                part_target: float = 0.0) -> None:
        """Publish `channel` (CMAF with LL-HLS parts when `part_target` > 0, else MPEG-TS)."""
        self.live.add(channel)
        if part_target:
            self.store.update_channel(channel, format="cmaf", part_target=part_target)
        self.store.update_channel(channel, live=True, session=session, started=time.time(), target_duration=6,
                                  window=self.window, reconnect_grace=10.0, independent=True,
                                  renditions=[{"name": r, "width": 640, "height": 360, "codecs": "avc1.64001e,mp4a.40.2",
                                               "bandwidth": 800_000, "average_bandwidth": 700_000, "frame_rate": 30.0}
                                              for r in renditions])
        self.bus.channel_changed(channel)

    def commit(self, seq: int, channel: str = CHANNEL, rendition: str = "source", size: int = 2000,
               disc_seq: int = 0, discontinuity: bool = False) -> bytes:
        pattern = f"{rendition}:{seq}:".encode()
        payload = (pattern * (size // len(pattern) + 1))[:size]
        meta = SegmentMeta(channel=channel, rendition=rendition, seq=seq, duration=2.0, discontinuity=discontinuity,
                           disc_seq=disc_seq, start_pts=seq * 2.0, program_date_time=1.7e9 + 2 * seq, size=size,
                           written_ns=time.time_ns())
        self.store.put_segment(meta, payload, keep=100)
        self.bus.segment(channel, rendition, seq)
        self.bus.channel_changed(channel)
        return payload

    def end(self, channel: str = CHANNEL, deliberate: bool = True) -> None:
        self.live.discard(channel)
        self.store.update_channel(channel, live=False, ended=time.time(), ended_deliberately=deliberate)
        self.bus.channel_changed(channel)

    def seqs(self, channel: str = CHANNEL, rendition: str = "source") -> list[int]:
        return [m.seq for m in self.store.metas_from(channel, rendition, 0, 10_000)]


class CmafRendition:
    """One CMAF rendition of an ingest edge's pipeline: `part()` commits the init segment when new and a
    part with the pending segment's state, then tells the bus (the worker's "part" report); `cut()`
    commits the segment (its parts joined, part_keep = window + 2), as edged's worker does."""

    def __init__(self, node: Node, rendition: str = "source", channel: str = CHANNEL) -> None:
        self.node, self.rendition, self.channel = node, rendition, channel
        self.pending: PendingMeta | None = None
        self.chunks: list[bytes] = []

    def part(self, seq: int, init: bytes = b"ftyp+moov: tracks A", disc_seq: int = 0, discontinuity: bool = False,
             size: int = 3000, duration: float = 0.5) -> bytes:
        init_id = cmaf_init_id(init)
        self.node.store.put_init(self.channel, self.rendition, init_id, init)
        p = self.pending
        if p is None or p.seq != seq:
            p = PendingMeta(seq, seq * 2.0, 1.7e9 + 2 * seq, discontinuity, disc_seq, init_id)
            self.chunks = []
        index = len(p.parts)
        pattern = f"moof+mdat {self.rendition} {seq}.{index} ".encode()
        data = (pattern * (size // len(pattern) + 1))[:size]
        self.pending = p = dataclasses.replace(p, parts=(*p.parts, (duration, index == 0)))
        self.node.store.put_part(self.channel, self.rendition, p, data)
        self.chunks.append(data)
        self.node.bus.part(self.channel, self.rendition, seq, index)
        return data

    def cut(self) -> bytes:
        p = self.pending
        assert p is not None
        payload = b"".join(self.chunks)
        meta = SegmentMeta(channel=self.channel, rendition=self.rendition, seq=p.seq,
                           duration=sum(d for d, _ in p.parts), discontinuity=p.discontinuity, disc_seq=p.disc_seq,
                           start_pts=p.start_pts, program_date_time=p.program_date_time, size=len(payload),
                           written_ns=time.time_ns(), fmt="cmaf", init=p.init, parts=p.parts)
        self.node.store.put_segment(meta, payload, keep=100, part_keep=self.node.window + 2)
        self.pending, self.chunks = None, []
        self.node.bus.segment(self.channel, self.rendition, p.seq)
        return payload

    def whole(self, seq: int, parts: int = 4, **kw: Any) -> bytes:
        for _ in range(parts):
            self.part(seq, **kw)
        return self.cut()
