"""LL-HLS media playlists of a CMAF channel, from the store (the HTTP side of edged.protocols.llhls).

One read of a rendition (`read_view`: the channel record, the window's segment metadata, the segment
being written) gives both the `Progress` a blocked request is checked against and what its playlist is
rendered from, so a request woken by a commit is answered from the very state that satisfied it.

Playlist shape comes from the channel record (the ingest edge's, relayed unchanged), the edge's own
[hls] values only where the record has none: window, target duration, part target, reconnect grace;
CAN-SKIP-UNTIL from `llhls.skip_advertised(TD, window x segment duration)` (the record's
`segment_seconds`, else this edge's hls.segment_seconds), so it is the same in every media playlist of
the channel.

URIs, relative to the media playlist: segment `{seq}.m4s`, part `{seq}.{index}.m4s`, init
`init-{id}.mp4`; the preload hint names the next part (`{pending}.{parts}.m4s`, or part 0 of the next
segment when none is in progress); a rendition report per other rendition (`../{name}/index.m3u8`, its
last segment and part). The worker commits a segment's final part in the same transaction as the
segment, so the part the hint names is the one that comes next (never a gap part known yet: a
part is known to be a gap only once committed). Parts that are ingest gaps (the store's `gaps`) are
listed with GAP=YES. Only the run after the last gap in sequence numbers is listed (a shed and
restored rung), as for TS playlists.

`PlaylistMemo` keeps the rendered bytes (and their gzip) per channel, rendition and skip mode, tagged
with the position they were rendered at: a request whose own read shows the same position is answered
from the memo (2,000 requests woken by one part commit cost one render and one gzip); the commit bus
drops a channel's entries on every commit of the channel (the rendition reports of its other
playlists change too), and an entry lives at most `ttl` seconds (an end by reconnect grace is a matter
of time, not of a commit). Each drop bumps the channel's version; an entry keeps the version that was
current before the read it was rendered from, so `current()` can answer a plain reload (no directives)
with no store read at all while nothing was committed since: the entry is then exactly what a read
would give.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from edged.config import HlsConfig
from edged.log import QuietLog
from edged.protocols import hls, llhls
from edged.store.segments import PendingMeta, SegmentMeta, SegmentStore

log = logging.getLogger(__name__)
_quiet = QuietLog(log)

MEMO_TTL = 0.5  # s
MEMO_CHANNELS = 1024  # channels with memoized playlists at once (the oldest go first)


def segment_uri(seq: int) -> str:
    return f"{seq}.m4s"


def part_uri(seq: int, index: int) -> str:
    return f"{seq}.{index}.m4s"


def init_uri(init_id: str) -> str:
    return f"init-{init_id}.mp4"


def _num(info: dict[str, Any], key: str) -> float | None:
    v = info.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and v > 0 else None


def _int(info: dict[str, Any], key: str, default: int) -> int:
    v = info.get(key)
    return v if type(v) is int and v > 0 else default


def is_cmaf(info: dict[str, Any]) -> bool:
    return info.get("format") == "cmaf"


@dataclass(frozen=True, slots=True)
class Shape:
    """What a channel record says about every media playlist of the channel."""

    window: int
    target_duration: int
    part_target: float
    can_skip_until: float | None
    ended: bool
    renditions: tuple[str, ...]
    segment_seconds: float  # the segment target the channel is cut at

    @classmethod
    def of(cls, info: dict[str, Any], hcfg: HlsConfig, now: float) -> Shape:
        window = _int(info, "window", hcfg.window)
        advertised = _int(info, "target_duration", 0)
        target = advertised if advertised > 0 else hls.target_duration(hcfg.effective_max_segment_seconds)
        part_target = _num(info, "part_target") or float(getattr(hcfg, "part_seconds", 0.5))
        seg_seconds = _num(info, "segment_seconds") or hcfg.segment_seconds
        ended_at = info.get("ended")
        grace = info.get("reconnect_grace")
        ended = hls.playlist_ended(live=bool(info.get("live", False)),
                                   ended_at=float(ended_at) if ended_at is not None else None,
                                   deliberate=bool(info.get("ended_deliberately", False)), now=now,
                                   grace=float(grace) if isinstance(grace, int | float) else hcfg.reconnect_grace_seconds)
        names = tuple(str(r["name"]) for r in info.get("renditions", ()) if isinstance(r, dict) and "name" in r)
        return cls(window, target, min(part_target, float(target)),
                   llhls.skip_advertised(target, window * seg_seconds), ended, names, seg_seconds)


@dataclass(frozen=True, slots=True)
class View:
    """One read of a rendition: the listed segments (consecutive), the segment in progress (following
    them, or starting the run when none is listed) and the channel's shape."""

    channel: str
    rendition: str
    shape: Shape
    metas: tuple[SegmentMeta, ...]
    pending: PendingMeta | None
    next_seq: int  # the rendition's next sequence number (where an empty window starts)
    progress: llhls.Progress  # where the rendition stands, for delivery directives (from the above)

    @property
    def first_msn(self) -> int:
        if self.metas:
            return self.metas[0].seq
        return self.pending.seq if self.pending is not None else self.next_seq

    @property
    def last_msn(self) -> int:
        return self.metas[-1].seq if self.metas else self.first_msn - 1

    @property
    def pending_parts(self) -> int:
        return len(self.pending.parts) if self.pending is not None else 0

    @property
    def position(self) -> tuple[int, int, int, bool]:
        """What the playlist text depends on in this rendition (the memo's tag)."""
        return self.first_msn, self.last_msn, self.pending_parts, self.shape.ended

    def origin_ns(self) -> int:
        """A relayed copy: when the ingest edge committed the newest thing listed (0: committed here)."""
        if self.pending is not None and self.pending.parts and self.pending.origin_ns:
            return self.pending.origin_ns
        return self.metas[-1].origin_ns if self.metas else 0

    def part_state(self, seq: int, index: int) -> str:
        """Where part (seq, index) stands: "held" (committed, or in a complete segment that has it),
        "soon" (the next part or one of the two after it), "never" (its segment is complete without
        it, or it is too far ahead or behind to wait for)."""
        last, pending_msn = self.last_msn, self.last_msn + 1
        if seq <= last:
            if seq < self.first_msn:
                return "never"
            meta = self.metas[seq - self.first_msn]
            return "held" if index < len(meta.parts) else "never"
        if self.shape.ended:
            return "never"
        have = self.pending_parts
        if seq == pending_msn:
            if index < have:
                return "held"
            ahead = index - have + 1
        elif seq == pending_msn + 1:
            ahead = max(self.progress.nominal_parts() - have, 0) + index + 1
        else:
            return "never"
        return "soon" if ahead <= PART_BLOCK_AHEAD else "never"


PART_BLOCK_AHEAD = 3  # a GET of the hinted part, or of one of the two after it, waits for it


def read_view(store: SegmentStore, channel: str, rendition: str, info: dict[str, Any], hcfg: HlsConfig,
              now: float | None = None) -> View:
    """Read a rendition's state (see the module docstring); `info` is the channel record."""
    shape = Shape.of(info, hcfg, time.time() if now is None else now)
    state = store.rendition_state(channel, rendition)
    metas = store.recent(channel, rendition, shape.window)
    for i in range(len(metas) - 1, 0, -1):  # only the run after the last gap
        if metas[i].seq != metas[i - 1].seq + 1:
            metas = metas[i:]
            break
    pending = state.pending
    if pending is not None:
        if metas and pending.seq <= metas[-1].seq:
            pending = None  # completed meanwhile (read after the state)
        elif metas and pending.seq != metas[-1].seq + 1:
            metas = []  # a gap before the segment in progress: the run starts with it
    if metas:
        first, last = metas[0].seq, metas[-1].seq
    else:
        first = pending.seq if pending is not None else state.next_seq
        last = first - 1
    progress = llhls.Progress(first_msn=first, last_msn=last, part_target=shape.part_target,
                              target_duration=shape.target_duration,
                              pending_parts=len(pending.parts) if pending is not None else 0,
                              parts={m.seq: len(m.parts) for m in metas}, ended=shape.ended)
    return View(channel, rendition, shape, tuple(metas), pending, state.next_seq, progress)


def _report(store: SegmentStore, channel: str, rendition: str) -> llhls.RenditionReport | None:
    state = store.rendition_state(channel, rendition)
    last = store.recent(channel, rendition, 1)
    pending = state.pending
    if pending is not None and pending.parts and (not last or pending.seq > last[-1].seq):
        return llhls.RenditionReport(f"../{rendition}/index.m3u8", pending.seq, len(pending.parts) - 1)
    if last:
        parts = len(last[-1].parts)
        return llhls.RenditionReport(f"../{rendition}/index.m3u8", last[-1].seq, parts - 1 if parts else None)
    return None


def build_playlist(store: SegmentStore, view: View) -> llhls.LLPlaylist:
    """The LLPlaylist of a view (reads the other renditions' last positions for the reports)."""
    shape = view.shape
    longest = 0.0
    segments = []
    for m in view.metas:
        parts = tuple(llhls.Part(i, d, part_uri(m.seq, i), independent=ind, gap=i in m.gaps)
                      for i, (d, ind) in enumerate(m.parts))
        longest = max([longest, *(p.duration for p in parts)])
        segments.append(llhls.LLSegment(seq=m.seq, duration=m.duration, uri=segment_uri(m.seq),
                                        init_uri=init_uri(m.init), program_date_time=m.program_date_time,
                                        discontinuity=m.discontinuity, disc_seq=m.disc_seq, parts=parts))
    pending = None
    p = view.pending
    if p is not None:
        parts = tuple(llhls.Part(i, d, part_uri(p.seq, i), independent=ind, gap=i in p.gaps)
                      for i, (d, ind) in enumerate(p.parts))
        longest = max([longest, *(x.duration for x in parts)])
        pending = llhls.PendingSegment(seq=p.seq, init_uri=init_uri(p.init), parts=parts,
                                       program_date_time=p.program_date_time, discontinuity=p.discontinuity,
                                       disc_seq=p.disc_seq)
        # A segment's final part commits with the segment (one store transaction), so while a segment is
        # in progress its next part is always one more of its own.
        hint = part_uri(p.seq, len(p.parts))
    else:
        hint = part_uri(view.last_msn + 1, 0)
    part_target = shape.part_target
    if float(f"{longest:.3f}") > float(f"{part_target:.3f}"):
        # A part longer than the target breaks the playlist's promise; serve it (with the target raised
        # to it) rather than fail the request, and say so.
        _quiet.log("part_over_target", logging.WARNING, "channel=%s rendition=%s: a part of %.3f s exceeds the "
                   "part target %.3f s", view.channel, view.rendition, longest, part_target)
        part_target = min(math.ceil(longest * 1000) / 1000, float(shape.target_duration))
    reports = [r for name in shape.renditions if name != view.rendition
               if (r := _report(store, view.channel, name)) is not None]
    return llhls.LLPlaylist(segments=segments, target_duration=shape.target_duration, part_target=part_target,
                            preload_hint_uri=hint, pending=pending, reports=reports,
                            can_skip_until=shape.can_skip_until, ended=shape.ended)


def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding value allows gzip (RFC 9110 12.5.3: a q of 0 refuses it; `*` stands for
    any coding not named)."""
    if not header:
        return False
    named: dict[str, float] = {}
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            k, _, v = param.strip().partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v.strip())
                except ValueError:
                    q = 0.0
        named[coding.strip().lower()] = q
    for coding in ("gzip", "x-gzip"):
        if coding in named:
            return named[coding] > 0
    return named.get("*", 0.0) > 0


def etag_of(body: bytes, *, gzipped: bool = False) -> str:
    """A strong ETag for a playlist body: its hash, and a distinct one for its gzip form (RFC 9110 8.8.3)."""
    tag = hashlib.blake2b(body, digest_size=12).hexdigest()
    return f'"{tag}-gz"' if gzipped else f'"{tag}"'


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header matches `etag` (weak comparison, RFC 9110 13.1.2)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    for item in if_none_match.split(","):
        candidate = item.strip()
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False


class Rendered:
    """A playlist's bytes, their gzip (made on first use) and the relayed origin time of its newest item."""

    __slots__ = ("position", "body", "_gz", "origin_ns", "made", "_etag", "version", "target_duration")

    def __init__(self, position: tuple[int, int, int, bool], body: bytes, origin_ns: int, made: float,
                 version: int = -1, target_duration: int = 1) -> None:
        self.position = position
        self.version = version  # the channel's memo version before the read this was rendered from
        self.target_duration = target_duration
        self.body = body
        self._gz: bytes | None = None
        self.origin_ns = origin_ns
        self.made = made
        self._etag: str | None = None

    @property
    def etag(self) -> str:
        """The strong validator of the identity body (the gzip form's is `etag_of(body, gzip=True)`)."""
        if self._etag is None:
            self._etag = etag_of(self.body)
        return self._etag

    def gzipped(self) -> bytes:
        if self._gz is None:
            self._gz = gzip.compress(self.body, compresslevel=6, mtime=0)
        return self._gz


class PlaylistMemo:
    """channel → (rendition, skip mode) → Rendered (see the module docstring)."""

    def __init__(self, ttl: float = MEMO_TTL, max_channels: int = MEMO_CHANNELS) -> None:
        self.ttl = ttl
        self.max_channels = max_channels
        self._entries: dict[str, dict[tuple[str, llhls.SkipMode], Rendered]] = {}
        self._versions: dict[str, int] = {}  # channel → bumped by every drop (only channels with entries)
        self.renders = 0  # playlists rendered (tests compare it with the requests answered)

    def invalidate(self, channel: str, rendition: str = "") -> None:
        """The commit bus's rendition listener: every playlist of the channel may have changed."""
        if self._entries.pop(channel, None) is not None or channel in self._versions:
            self._versions[channel] = self._versions.get(channel, 0) + 1

    def version(self, channel: str) -> int:
        """Take it before reading the store for a render (`get(..., version=)`)."""
        return self._versions.get(channel, 0)

    def current(self, channel: str, rendition: str, skip: llhls.SkipMode) -> Rendered | None:
        """The entry rendered from a read that no commit has followed since (within `ttl`), or None."""
        per = self._entries.get(channel)
        hit = per.get((rendition, skip)) if per is not None else None
        if hit is None or hit.version != self._versions.get(channel, 0) or time.monotonic() - hit.made > self.ttl:
            return None
        return hit

    def get(self, store: SegmentStore, view: View, skip: llhls.SkipMode, version: int = -1) -> Rendered:
        """`version`: `version(channel)` taken before `view` was read (-1: unknown; never `current()`)."""
        now = time.monotonic()
        per = self._entries.get(view.channel)
        key = (view.rendition, skip)
        hit = per.get(key) if per is not None else None
        if hit is not None and hit.position == view.position and now - hit.made <= self.ttl:
            # a read (after `version`) found the same position: the entry is what that read renders
            hit.version, hit.made = max(hit.version, version), now
            return hit
        text = llhls.render_llhls_playlist(build_playlist(store, view), skip=skip)
        self.renders += 1
        made = Rendered(view.position, text.encode(), view.origin_ns(), now, version,
                        view.shape.target_duration)
        if per is None:
            while len(self._entries) >= self.max_channels:
                oldest = next(iter(self._entries))
                del self._entries[oldest]
                self._versions.pop(oldest, None)
            self._versions.setdefault(view.channel, 0)
            per = self._entries[view.channel] = {}
        per[key] = made
        return made
