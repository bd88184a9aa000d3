"""The one segment store: a single LMDB environment in the data dir.

Named databases:
  segments  key(channel, rendition, seq) → segment payload bytes (a CMAF segment: its parts, concatenated)
  parts     key(channel, rendition, seq) + u16 part index → one CMAF part (a complete moof+mdat)
  init      prefix(channel, rendition) + init id → a CMAF init segment (ftyp+moov)
  meta      key(channel, rendition, seq) → JSON SegmentMeta
  seq       prefix(channel, rendition)   → JSON {"next": N, "disc": D, "cc": {PID: C}, "end": T}: the
                                           next sequence number, discontinuity count, each MPEG-TS
                                           PID's last continuity counter and the program date-time
                                           where the last segment ends, persisted in the same
                                           transaction as the segment, so a number is never reused
                                           after kill -9 and a restarted worker continues the rest;
                                           "pending": the CMAF segment being written (PendingMeta),
                                           updated in the same transaction as each of its parts
  age       written_ns + segment key     → b"" (oldest-first index for size-bound eviction)
  channels  channel                      → JSON channel info (renditions, live flag, session, how and
                                           when the last session ended, the target duration)
  stats     b"bytes"                     → total payload bytes held

LL-HLS: a part, its metadata (the pending segment's part list) and the segment's progress commit in
one transaction (`put_part`), so a part is listed only once all its bytes can be sent; the finished
segment (`put_segment`) clears the pending state and carries its part list in its metadata. Parts
are kept for the segments of the playlist window (`part_keep`) and go with their segment when it is
evicted. A part that is an ingest gap (EXT-X-PART GAP=YES: the publisher's media times jump over a
hole) has no bytes: it is stored with an empty payload, so part indices stay dense, and its index is
listed in `gaps` of the pending state and of the segment's metadata (a segment's payload is its other
parts joined). Init segments are content-addressed (`cmaf_init_id`): the same id always names the same bytes.

Writers are pipeline worker processes (one transaction per segment or part) and, on an edge that relays a
channel from another, the relay's one writer thread (`apply_segment`, `apply_channel`: the records
the parent sent, under the same keys and metadata as on the ingest edge; only the age index and
`written_ns` are this node's, and `origin_ns` keeps the ingest edge's commit time). Readers are HTTP
handlers and the relay server in the main process. LMDB makes that safe across processes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lmdb

from edged.errors import StoreError
from edged.store import keys

_DBS = (b"segments", b"meta", b"seq", b"age", b"channels", b"stats", b"parts", b"init")
_BYTES_KEY = b"bytes"
# Room LMDB needs beyond the payload bound: B-tree pages, metadata, free pages awaiting reuse.
_OVERHEAD_FRACTION = 0.5
_MIN_OVERHEAD = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SegmentMeta:
    channel: str
    rendition: str
    seq: int
    duration: float  # seconds
    discontinuity: bool  # first segment after a publisher (re)connect or a worker restart
    disc_seq: int  # discontinuities up to and including this segment
    start_pts: float  # seconds, media time of the first packet
    program_date_time: float  # wall clock (epoch seconds) of the first packet
    size: int  # bytes
    written_ns: int  # wall clock (epoch ns) of the commit; also the age-index key
    first_arrival: float = 0.0  # monotonic arrival of the first packet at the ingest socket (0 on a relayed copy)
    origin_ns: int = 0  # relayed copy: wall clock (epoch ns) of the commit at the ingest edge; 0 = committed here
    fmt: str = "ts"  # container: "ts" | "cmaf"
    init: str = ""  # CMAF: the init segment's id (cmaf_init_id)
    parts: tuple[tuple[float, bool], ...] = ()  # CMAF: (duration s, independent) of each part, in order
    gaps: tuple[int, ...] = ()  # CMAF: indices of the parts that are ingest gaps (GAP=YES; no bytes)

    @property
    def ingest_ns(self) -> int:
        """When the ingest edge committed this segment (epoch ns), on whichever edge the copy is."""
        return self.origin_ns or self.written_ns

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | memoryview) -> SegmentMeta:
        d = json.loads(bytes(raw))
        if "parts" in d:
            d["parts"] = tuple((float(p[0]), bool(p[1])) for p in d["parts"])
        if "gaps" in d:
            d["gaps"] = tuple(int(i) for i in d["gaps"])
        return cls(**d)


@dataclass(frozen=True, slots=True)
class PendingMeta:
    """The CMAF segment being written: its sequence number is the rendition's next one, and only its
    committed parts exist."""

    seq: int
    start_pts: float
    program_date_time: float
    discontinuity: bool
    disc_seq: int
    init: str
    parts: tuple[tuple[float, bool], ...] = ()  # (duration s, independent) of the committed parts
    origin_ns: int = 0  # relayed copy: the ingest edge's commit time (epoch ns) of the last part
    gaps: tuple[int, ...] = ()  # indices of the committed parts that are ingest gaps (stored empty)

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "start_pts": self.start_pts, "pdt": self.program_date_time,
                "disc": self.discontinuity, "disc_seq": self.disc_seq, "init": self.init,
                "parts": [[round(d, 6), i] for d, i in self.parts], "origin_ns": self.origin_ns,
                **({"gaps": list(self.gaps)} if self.gaps else {})}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PendingMeta:
        return cls(seq=int(d["seq"]), start_pts=float(d["start_pts"]), program_date_time=float(d["pdt"]),
                   discontinuity=bool(d["disc"]), disc_seq=int(d["disc_seq"]), init=str(d["init"]),
                   parts=tuple((float(p[0]), bool(p[1])) for p in d.get("parts", ())),
                   origin_ns=int(d.get("origin_ns", 0)), gaps=tuple(int(i) for i in d.get("gaps", ())))


def cmaf_init_id(payload: bytes) -> str:
    """The id (and URI stem) of an init segment: 16 hex digits of its SHA-256."""
    return hashlib.sha256(payload).hexdigest()[:16]


def part_key(channel: str, rendition: str, seq: int, index: int) -> bytes:
    return keys.segment_key(channel, rendition, seq) + index.to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class RenditionState:
    """A rendition's state after its last committed segment."""

    next_seq: int = 0
    disc_seq: int = 0
    continuity: dict[int, int] = field(default_factory=dict)  # MPEG-TS PID → last continuity counter
    date_end: float = 0.0  # program date-time (epoch s) where the last segment ends; 0 = none yet
    pending: PendingMeta | None = None  # the CMAF segment in progress (None: none)


def map_size_for(max_bytes: int) -> int:
    return int(max_bytes + max(_MIN_OVERHEAD, max_bytes * _OVERHEAD_FRACTION))


class SegmentStore:
    """Opens the environment; sync methods (call writers off the event loop)."""

    def __init__(self, path: str | Path, max_bytes: int, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.env = lmdb.open(
                str(self.path), map_size=map_size_for(max_bytes), max_dbs=len(_DBS), subdir=True,
                readonly=False, lock=True, metasync=True, sync=True, readahead=False, max_readers=512,
            )
            self._db = {name.decode(): self.env.open_db(name) for name in _DBS}
        except lmdb.Error as exc:
            raise StoreError(f"cannot open segment store at {self.path}: {exc}") from exc
        self._readonly = readonly

    def close(self) -> None:
        self.env.close()

    # -- writes (pipeline worker processes) -------------------------------------------------
    def sequence_state(self, channel: str, rendition: str) -> tuple[int, int]:
        """(next sequence number, discontinuity count) for a rendition."""
        state = self.rendition_state(channel, rendition)
        return state.next_seq, state.disc_seq

    def rendition_state(self, channel: str, rendition: str) -> RenditionState:
        """What a worker continues from: numbering, TS continuity counters, where the dates end."""
        with self.env.begin(db=self._db["seq"]) as txn:
            raw = txn.get(keys.prefix(channel, rendition))
        if raw is None:
            return RenditionState()
        d = json.loads(raw)
        cc = {int(pid): int(v) for pid, v in d.get("cc", {}).items()}
        return RenditionState(int(d.get("next", 0)), int(d.get("disc", 0)), cc, float(d.get("end", 0.0)),
                              _pending_of(d))

    def put_segment(self, meta: SegmentMeta, payload: bytes, keep: int,
                    continuity: Mapping[int, int] | None = None, part_keep: int = 0,
                    last_part: tuple[int, bytes] | None = None) -> int:
        """Store one segment, its metadata and the rendition's state after it (next sequence number,
        discontinuity count, TS continuity counters `continuity`; no pending CMAF segment) in one
        transaction, then evict beyond `keep` segments for this rendition and beyond max_bytes overall.
        `part_keep` > 0: the parts of segments older than `meta.seq - part_keep` are deleted (their
        segments stay). `last_part` (index, bytes): the segment's final CMAF part, committed in the same
        transaction, so no reader ever sees all of a segment's parts and the segment still in progress.
        Returns the number of segments evicted."""
        for attempt in range(3):
            try:
                return self._put(meta, payload, keep, continuity, part_keep, last_part)
            except lmdb.MapFullError:
                # Free pages are reused only after readers move on; evict harder and retry.
                self._evict_oldest(max(1, 4 << attempt))
            except lmdb.Error as exc:
                raise StoreError(f"segment write failed: {exc}") from exc
        raise StoreError("segment store full even after eviction; raise store.max_bytes")

    def _put(self, meta: SegmentMeta, payload: bytes, keep: int, continuity: Mapping[int, int] | None,
             part_keep: int, last_part: tuple[int, bytes] | None = None) -> int:
        key = keys.segment_key(meta.channel, meta.rendition, meta.seq)
        evicted = 0
        with self.env.begin(write=True) as txn:
            total = int(txn.get(_BYTES_KEY, b"0", db=self._db["stats"]))
            old = txn.get(key, db=self._db["segments"])
            if old is not None:  # never expected (numbers are not reused), but keep the total right
                total -= len(old)
            txn.put(key, payload, db=self._db["segments"])
            txn.put(key, meta.to_json(), db=self._db["meta"])
            txn.put(keys.age_key(meta.written_ns, key), b"", db=self._db["age"])
            state: dict[str, Any] = {"next": meta.seq + 1, "disc": meta.disc_seq,
                                     "end": round(meta.program_date_time + meta.duration, 6)}
            if continuity:
                state["cc"] = {str(pid): cc for pid, cc in sorted(continuity.items())}
            seq_state = json.dumps(state, separators=(",", ":")).encode()
            txn.put(keys.prefix(meta.channel, meta.rendition), seq_state, db=self._db["seq"])
            total += len(payload)
            if last_part is not None:
                pkey = part_key(meta.channel, meta.rendition, meta.seq, last_part[0])
                held = txn.get(pkey, db=self._db["parts"])
                total += len(last_part[1]) - (len(held) if held is not None else 0)
                txn.put(pkey, last_part[1], db=self._db["parts"])
            if part_keep > 0:
                total -= self._drop_parts(txn, meta.channel, meta.rendition, meta.seq - part_keep)
            # Per-rendition retention: drop sequence numbers older than seq - keep.
            pre = keys.prefix(meta.channel, meta.rendition)
            cur = txn.cursor(db=self._db["meta"])
            if cur.set_range(pre):
                while cur.key().startswith(pre):
                    seq = int.from_bytes(cur.key()[-8:], "big")
                    if seq > meta.seq - keep:
                        break
                    k = bytes(cur.key())
                    total -= self._delete(txn, k)
                    evicted += 1
                    if not cur.set_range(k):
                        break
            evicted += self._evict(txn, total, max_bytes=self.max_bytes)
        return evicted

    def _drop_parts(self, txn: lmdb.Transaction, channel: str, rendition: str, before_seq: int) -> int:
        """Delete the parts of a rendition's segments numbered below `before_seq`. Returns their bytes."""
        if before_seq <= 0:
            return 0
        pre = keys.prefix(channel, rendition)
        end = keys.segment_key(channel, rendition, before_seq)
        freed = 0
        cur = txn.cursor(db=self._db["parts"])
        ok = cur.set_range(pre)
        while ok and bytes(cur.key()) < end:
            freed += len(cur.value())
            ok = cur.delete()  # moves to the next entry
        return freed

    def _delete_parts_of(self, txn: lmdb.Transaction, seg_key: bytes) -> int:
        freed = 0
        cur = txn.cursor(db=self._db["parts"])
        ok = cur.set_range(seg_key)
        while ok and len(cur.key()) == len(seg_key) + 2 and bytes(cur.key()).startswith(seg_key):
            freed += len(cur.value())
            ok = cur.delete()
        return freed

    def _delete(self, txn: lmdb.Transaction, seg_key: bytes) -> int:
        """Delete a segment's payload, metadata, age entry and parts. Returns their size."""
        payload = txn.get(seg_key, db=self._db["segments"])
        size = len(payload) if payload is not None else 0
        size += self._delete_parts_of(txn, seg_key)
        raw = txn.get(seg_key, db=self._db["meta"])
        if raw is not None:
            txn.delete(keys.age_key(SegmentMeta.from_json(raw).written_ns, seg_key), db=self._db["age"])
        txn.delete(seg_key, db=self._db["segments"])
        txn.delete(seg_key, db=self._db["meta"])
        return size

    def _evict(self, txn: lmdb.Transaction, total: int, *, max_bytes: int | None = None,
               count: int | None = None) -> int:
        """Evict oldest-first while `total` exceeds `max_bytes` (or until `count` are gone); store the new
        total. Returns the number evicted."""
        evicted = 0
        cur = txn.cursor(db=self._db["age"])
        while (max_bytes is None or total > max_bytes) and (count is None or evicted < count) and cur.first():
            seg_key = keys.seg_key_of_age_key(bytes(cur.key()))
            cur.delete()
            if txn.get(seg_key, db=self._db["segments"]) is not None:
                total -= self._delete(txn, seg_key)
                evicted += 1
        txn.put(_BYTES_KEY, str(max(total, 0)).encode(), db=self._db["stats"])
        return evicted

    def _evict_oldest(self, n: int) -> None:
        with self.env.begin(write=True) as txn:
            self._evict(txn, int(txn.get(_BYTES_KEY, b"0", db=self._db["stats"])), count=n)

    def update_channel(self, channel: str, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into the channel's info record."""
        with self.env.begin(write=True, db=self._db["channels"]) as txn:
            raw = txn.get(channel.encode())
            info: dict[str, Any] = json.loads(raw) if raw else {}
            info.update(fields)
            txn.put(channel.encode(), json.dumps(info, separators=(",", ":")).encode())
        return info

    def apply_segment(self, meta: SegmentMeta, payload: bytes, keep: int, part_keep: int = 0) -> tuple[bool, int]:
        """Store a relayed segment (its metadata as the ingest edge committed it, `origin_ns` set, this
        node's `written_ns`) and the rendition's numbering after it, in one transaction; evict as
        `put_segment` does. A sequence number already held is left as it is (a number never names other
        bytes). Returns (stored, evicted)."""
        for attempt in range(3):
            try:
                return self._apply(meta, payload, keep, part_keep)
            except lmdb.MapFullError:
                self._evict_oldest(max(1, 4 << attempt))
            except lmdb.Error as exc:
                raise StoreError(f"relayed segment write failed: {exc}") from exc
        raise StoreError("segment store full even after eviction; raise store.max_bytes")

    def _apply(self, meta: SegmentMeta, payload: bytes, keep: int, part_keep: int) -> tuple[bool, int]:
        key = keys.segment_key(meta.channel, meta.rendition, meta.seq)
        pre = keys.prefix(meta.channel, meta.rendition)
        with self.env.begin(write=True) as txn:
            if txn.get(key, db=self._db["meta"]) is not None:
                return False, 0
            total = int(txn.get(_BYTES_KEY, b"0", db=self._db["stats"])) + len(payload)
            txn.put(key, payload, db=self._db["segments"])
            txn.put(key, meta.to_json(), db=self._db["meta"])
            txn.put(keys.age_key(meta.written_ns, key), b"", db=self._db["age"])
            raw = txn.get(pre, db=self._db["seq"])
            state: dict[str, Any] = json.loads(raw) if raw else {}
            if meta.seq + 1 >= int(state.get("next", 0)):
                state.update(next=meta.seq + 1, disc=max(meta.disc_seq, int(state.get("disc", 0))),
                             end=round(meta.program_date_time + meta.duration, 6))
                pending = state.get("pending")
                if isinstance(pending, dict) and int(pending.get("seq", -1)) <= meta.seq:
                    del state["pending"]
                txn.put(pre, json.dumps(state, separators=(",", ":")).encode(), db=self._db["seq"])
            if part_keep > 0:
                total -= self._drop_parts(txn, meta.channel, meta.rendition, meta.seq - part_keep)
            evicted = 0
            cur = txn.cursor(db=self._db["meta"])
            if cur.set_range(pre):
                while cur.key().startswith(pre):
                    if int.from_bytes(cur.key()[-8:], "big") > meta.seq - keep:
                        break
                    k = bytes(cur.key())
                    total -= self._delete(txn, k)
                    evicted += 1
                    if not cur.set_range(k):
                        break
            evicted += self._evict(txn, total, max_bytes=self.max_bytes)
        return True, evicted

    # -- CMAF parts and init segments ------------------------------------------------------
    def put_init(self, channel: str, rendition: str, init_id: str, payload: bytes) -> None:
        """Store an init segment under its id (idempotent: an id always names the same bytes)."""
        key = keys.prefix(channel, rendition) + init_id.encode()
        try:
            with self.env.begin(write=True, db=self._db["init"]) as txn:
                txn.put(key, payload, overwrite=False)
        except lmdb.Error as exc:
            raise StoreError(f"init segment write failed: {exc}") from exc

    def put_part(self, channel: str, rendition: str, pending: PendingMeta, payload: bytes) -> None:
        """Commit one part of the segment in progress: its bytes (index = the last entry of
        `pending.parts`) and the pending state, in one transaction."""
        self._write_part(channel, rendition, pending, payload, relayed=False)

    def apply_part(self, channel: str, rendition: str, pending: PendingMeta, payload: bytes) -> bool:
        """Store a relayed part; False (nothing written) when it is held already, or its segment is
        complete here or older than the one in progress."""
        return self._write_part(channel, rendition, pending, payload, relayed=True)

    def _write_part(self, channel: str, rendition: str, pending: PendingMeta, payload: bytes, *,
                    relayed: bool) -> bool:
        if not pending.parts:
            raise ValueError("a pending segment with no part to commit")
        index = len(pending.parts) - 1
        key = part_key(channel, rendition, pending.seq, index)
        pre = keys.prefix(channel, rendition)
        for attempt in range(3):
            try:
                with self.env.begin(write=True) as txn:
                    raw = txn.get(pre, db=self._db["seq"])
                    state: dict[str, Any] = json.loads(raw) if raw else {}
                    old = txn.get(key, db=self._db["parts"])
                    if relayed:
                        held = state.get("pending")
                        if pending.seq < int(state.get("next", 0)) or old is not None:
                            return False
                        if isinstance(held, dict) and int(held.get("seq", -1)) > pending.seq:
                            return False
                    total = int(txn.get(_BYTES_KEY, b"0", db=self._db["stats"])) + len(payload)
                    if old is not None:
                        total -= len(old)
                    txn.put(key, payload, db=self._db["parts"])
                    state["pending"] = pending.to_dict()
                    txn.put(pre, json.dumps(state, separators=(",", ":")).encode(), db=self._db["seq"])
                    self._evict(txn, total, max_bytes=self.max_bytes)
                return True
            except lmdb.MapFullError:
                self._evict_oldest(max(1, 4 << attempt))
            except lmdb.Error as exc:
                raise StoreError(f"part write failed: {exc}") from exc
        raise StoreError("segment store full even after eviction; raise store.max_bytes")

    def pending(self, channel: str, rendition: str) -> PendingMeta | None:
        """The CMAF segment in progress, with its committed parts; None when there is none."""
        with self.env.begin(db=self._db["seq"]) as txn:
            raw = txn.get(keys.prefix(channel, rendition))
        return _pending_of(json.loads(raw)) if raw is not None else None

    def read_part(self, channel: str, rendition: str, seq: int, index: int) -> bytes | None:
        if not 0 <= index < 1 << 16:
            return None
        with self.env.begin(db=self._db["parts"], buffers=True) as txn:
            buf = txn.get(part_key(channel, rendition, seq, index))
            return bytes(buf) if buf is not None else None

    def read_init(self, channel: str, rendition: str, init_id: str) -> bytes | None:
        with self.env.begin(db=self._db["init"], buffers=True) as txn:
            buf = txn.get(keys.prefix(channel, rendition) + init_id.encode())
            return bytes(buf) if buf is not None else None

    def apply_channel(self, channel: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Merge a relayed channel record (or a stream start/end) into this node's copy."""
        return self.update_channel(channel, **fields)

    def mark_all_offline(self, now: float | None = None) -> list[str]:
        """At daemon start no publisher is connected: every channel is offline. A channel its worker
        left live (the daemon was killed with it) ended now, not deliberately: its playlist ends once
        the reconnect grace has passed, unless a publisher is back by then."""
        now = time.time() if now is None else now
        changed = []
        with self.env.begin(write=True, db=self._db["channels"]) as txn:
            for k, v in list(txn.cursor()):
                info = json.loads(v)
                if info.get("live"):
                    info.update(live=False, ended=now, ended_deliberately=False)
                    txn.put(k, json.dumps(info, separators=(",", ":")).encode())
                    changed.append(bytes(k).decode())
        return changed

    # -- reads (HTTP handlers; cheap, never block on writers) -------------------------------
    def channel(self, channel: str) -> dict[str, Any] | None:
        with self.env.begin(db=self._db["channels"]) as txn:
            raw = txn.get(channel.encode())
        return json.loads(raw) if raw else None

    def channels(self) -> dict[str, dict[str, Any]]:
        with self.env.begin(db=self._db["channels"]) as txn:
            return {bytes(k).decode(): json.loads(v) for k, v in txn.cursor()}

    def recent(self, channel: str, rendition: str, limit: int) -> list[SegmentMeta]:
        """The last `limit` segments of a rendition, oldest first."""
        pre = keys.prefix(channel, rendition)
        out: list[SegmentMeta] = []
        with self.env.begin(db=self._db["meta"], buffers=True) as txn:
            cur = txn.cursor()
            # Position on the last key of this prefix: the first key past it, then step back.
            end = pre[:-1] + bytes([pre[-1] + 1])
            ok = cur.set_range(end)
            ok = cur.prev() if ok else cur.last()
            while ok and bytes(cur.key()).startswith(pre) and len(out) < limit:
                out.append(SegmentMeta.from_json(cur.value()))
                ok = cur.prev()
        out.reverse()
        return out

    def metas_from(self, channel: str, rendition: str, seq: int, limit: int) -> list[SegmentMeta]:
        """Up to `limit` segments of a rendition from sequence number `seq` on, oldest first (a relay
        subscription's replay)."""
        pre = keys.prefix(channel, rendition)
        out: list[SegmentMeta] = []
        with self.env.begin(db=self._db["meta"], buffers=True) as txn:
            cur = txn.cursor()
            ok = cur.set_range(keys.segment_key(channel, rendition, seq))
            while ok and bytes(cur.key()).startswith(pre) and len(out) < limit:
                out.append(SegmentMeta.from_json(cur.value()))
                ok = cur.next()
        return out

    def meta(self, channel: str, rendition: str, seq: int) -> SegmentMeta | None:
        with self.env.begin(db=self._db["meta"], buffers=True) as txn:
            raw = txn.get(keys.segment_key(channel, rendition, seq))
            return SegmentMeta.from_json(raw) if raw is not None else None

    def read(self, channel: str, rendition: str, seq: int) -> bytes | None:
        """A segment's payload: one copy out of the memory map, none before."""
        with self.env.begin(db=self._db["segments"], buffers=True) as txn:
            buf = txn.get(keys.segment_key(channel, rendition, seq))
            return bytes(buf) if buf is not None else None

    def iter_segment_keys(self) -> Iterator[tuple[str, str, int]]:
        with self.env.begin(db=self._db["meta"]) as txn:
            for k in txn.cursor().iternext(keys=True, values=False):
                yield keys.split_segment_key(bytes(k))

    def total_bytes(self) -> int:
        with self.env.begin(db=self._db["stats"]) as txn:
            return int(txn.get(_BYTES_KEY, b"0"))


def _pending_of(state: Mapping[str, Any]) -> PendingMeta | None:
    """The pending segment of a rendition's state record, when it is the next one to complete."""
    d = state.get("pending")
    if not isinstance(d, dict):
        return None
    pending = PendingMeta.from_dict(d)
    return pending if pending.seq >= int(state.get("next", 0)) else None
