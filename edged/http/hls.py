"""HLS handlers: playlists rendered from store metadata, segments straight from LMDB.

Playlists: EXT-X-TARGETDURATION is fixed per channel (the channel record's, which the ingest edge's
worker sets from its hls.max_segment_seconds and never lowers); EXT-X-ENDLIST appears once the stream
ended deliberately, or its publisher has been gone for the channel's reconnect grace.

Every edge serving a channel renders the same playlists: the window, the target duration and the
reconnect grace come from the channel record the ingest edge wrote (relayed unchanged to every other
edge), the edge's own [hls] values only where a record has none. On an edge with a relay (`gate`), a
request for a channel with no publisher here first asks the relay manager, which subscribes on the
first request and holds it until the first playlist is ready (up to relay.start_timeout, then 503 with
Retry-After: 1); a channel live nowhere is 404. A relayed segment carries `Age` (seconds since the
ingest edge committed it), so a cache in front counts its freshness from there; a request for a
relayed segment just past the newest held waits for it briefly (a player that switched from an edge
that had it a moment earlier).

Segments answer single byte ranges (RFC 9110 14): `bytes=A-B`, `bytes=A-`, `bytes=-N` get 206 with
Content-Range, an unsatisfiable range 416 with `Content-Range: bytes */SIZE`; several ranges, an
If-Range (we send no validator it could match) or a malformed header get the whole 200. HEAD is
answered on every route (aiohttp adds it to each GET route).

CMAF channels (record "format": "cmaf") get LL-HLS media playlists (edged.http.lowlatency renders
them): init `init-{id}.mp4`, segments `{seq}.m4s`, parts `{seq}.{index}.m4s` (all `video/mp4`, all
immutable: an id or number never names other bytes). Delivery directives (RFC 8216bis 6.2.5): a
malformed or too-far-ahead `_HLS_msn`/`_HLS_part` is 400 with the reason; a request for something not
there yet blocks on the rendition's waiter set (edged.http.blocking: woken by the commit bus, at most
hls.max_blocking_requests per rendition, else 503) for up to 3 x target duration (then 503 with
Retry-After); one older than the window answers at once; `_HLS_skip=YES|v2` answers a delta update. A
stream end wakes every waiter of the channel, and so does the end of a lost publisher's reconnect grace
(a timer: no commit says so). A
GET of a part not committed yet waits the same way when it is the hinted part or one of the two after
it (else 404), then sends it. A relaying edge answers all of it from its own store (its relay applier
tells the same bus), so blocking never crosses the fleet; a part whose segment came whole (a relay
replay keeps no parts) is cut from the segment at its moof boundaries (gap parts have none). A part
that is an ingest gap (GAP=YES in the playlist; stored without bytes) is 404 `part N.I is a gap` at
once, never blocked on.

Cache headers: a playlist that answers `_HLS_msn` is `public, max-age=6 x TD` (the answer to a given
directive never changes; the query string is part of a cache key), any other playlist `max-age=1`;
playlists are gzipped when Accept-Encoding allows (`Vary: Accept-Encoding` always); `Age` on a
playlist or part served from a relayed copy, as on relayed segments. Every playlist carries a strong
`ETag` (a hash of its bytes; the gzip form has its own) and a matching `If-None-Match` is answered 304.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from edged import metrics
from edged.config import Config
from edged.http import lowlatency
from edged.http.blocking import Blocking, Overloaded
from edged.protocols import hls, llhls
from edged.relay.commits import CommitBus
from edged.relay.gate import Availability, Gate
from edged.store.segments import SegmentStore

SERVED = web.RequestKey("served", str)  # how a viewer request was served, for edged_http_requests_total

_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_NAME_RE = re.compile(f"^{_NAME}$")
SEGMENT_CONTENT_TYPE = "video/mp2t"
CMAF_CONTENT_TYPE = "video/mp4"  # init segments, parts and CMAF segments
PLAYLIST_CACHE = "max-age=1"  # a live playlist changes every segment; half a target duration or less
SEGMENT_CACHE = "public, max-age=86400, immutable"  # a sequence number never names other bytes
_RANGE_RE = re.compile(r"^bytes[ \t]*=[ \t]*(\d*)[ \t]*-[ \t]*(\d*)[ \t]*$", re.IGNORECASE)
_RANGE_DIGITS = 19  # longer numbers are refused as malformed (no int() of a megabyte of digits)


class Unsatisfiable(Exception):
    """The Range names no byte of the representation (answered 416)."""


def parse_byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The (first, last) byte positions, inclusive, a Range header asks of `size` bytes; None when
    the whole representation is to be sent (no usable single range). Raises Unsatisfiable."""
    if "," in header:
        return None  # several ranges: the whole body is a valid answer (RFC 9110 14.2)
    m = _RANGE_RE.match(header)
    if m is None:
        return None
    first_s, last_s = m.groups()
    if len(first_s) > _RANGE_DIGITS or len(last_s) > _RANGE_DIGITS:
        return None
    if not first_s:
        if not last_s:
            return None  # "bytes=-": not a range
        suffix = int(last_s)
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - suffix), size - 1
    first = int(first_s)
    if last_s and int(last_s) < first:
        return None  # invalid range-spec: the header is ignored
    if first >= size:
        raise Unsatisfiable
    return first, (min(int(last_s), size - 1) if last_s else size - 1)


def _int_field(info: dict[str, Any], key: str, default: int) -> int:
    v = info.get(key)
    return v if type(v) is int and v > 0 else default


def _not_found(what: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=f"{what} not found\n")


def _unavailable() -> web.HTTPServiceUnavailable:
    return web.HTTPServiceUnavailable(text="channel not ready here yet\n", headers={"Retry-After": "1"})


def split_fragments(payload: bytes) -> list[bytes]:
    """A CMAF segment's parts: its top-level boxes cut after each mdat (a part is moof+mdat, possibly
    after a styp). [] when the boxes do not parse."""
    out: list[bytes] = []
    start = pos = 0
    n = len(payload)
    while pos < n:
        if pos + 8 > n:
            return []
        size = int.from_bytes(payload[pos : pos + 4], "big")
        kind = payload[pos + 4 : pos + 8]
        if size == 1:
            if pos + 16 > n:
                return []
            size = int.from_bytes(payload[pos + 8 : pos + 16], "big")
        elif size == 0:
            size = n - pos
        if size < 8 or pos + size > n:
            return []
        pos += size
        if kind == b"mdat":
            out.append(payload[start:pos])
            start = pos
    if start != n:
        return []
    return out


def _age(origin_ns: int) -> str:
    return str(max(0, int(time.time() - origin_ns / 1e9)))


class HlsHandlers:
    def __init__(self, cfg: Config, store: SegmentStore, gate: Gate | None = None,
                 bus: CommitBus | None = None) -> None:
        """`bus`: the commit bus that wakes blocked LL-HLS requests (without one they wait until their
        time-out)."""
        self.cfg = cfg
        self.store = store
        self.gate = gate
        cap = int(getattr(cfg.hls, "max_blocking_requests", 4096))
        self.blocking: Blocking[lowlatency.View] = Blocking(self._read_view, cap)
        self.memo = lowlatency.PlaylistMemo()
        self._bus = bus is not None  # commits reach the memo: a plain reload may skip the store read
        self._grace_timers: dict[str, asyncio.TimerHandle] = {}  # channel → its reconnect grace's end
        if bus is not None:
            bus.add_rendition_listener(self._committed)

    def _committed(self, channel: str, rendition: str) -> None:
        self.memo.invalidate(channel, rendition)  # first: a woken request renders what woke it
        self.blocking.committed(channel, rendition)
        if rendition == "":
            self._watch_grace(channel)

    def _watch_grace(self, channel: str, blocking: bool = False) -> None:
        """A lost publisher's playlist ends when its reconnect grace runs out, with no commit to say so:
        wake the channel's blocked requests then (they are answered with the ended playlist)."""
        old = self._grace_timers.pop(channel, None)
        if old is not None:
            old.cancel()
        info = self.store.channel(channel)
        if not info or info.get("live") or info.get("ended_deliberately"):
            return
        if not blocking and not self.blocking.blocked(channel):
            return
        ended_at, grace = info.get("ended"), info.get("reconnect_grace")
        if not isinstance(ended_at, int | float):
            return
        if not isinstance(grace, int | float) or isinstance(grace, bool):
            grace = self.cfg.hls.reconnect_grace_seconds
        left = float(ended_at) + float(grace) - time.time()
        if left > 0:
            self._grace_timers[channel] = asyncio.get_running_loop().call_later(
                left + 0.01, self._grace_over, channel)

    def _grace_over(self, channel: str) -> None:
        self._grace_timers.pop(channel, None)
        self.memo.invalidate(channel)
        self.blocking.committed(channel, "")

    def _read_view(self, channel: str, rendition: str) -> lowlatency.View | None:
        info = self.store.channel(channel)
        if info is None or rendition not in _names(info) or not lowlatency.is_cmaf(info):
            return None
        return lowlatency.read_view(self.store, channel, rendition, info, self.cfg.hls)

    async def _through_gate(self, request: web.Request, channel: str) -> None:
        """With a relay: make sure the channel is here (or refuse with 404/503) before serving it."""
        if self.gate is None:
            return
        how = await self.gate.request(channel)
        if how is Availability.ABSENT:
            if self.store.channel(channel) is None:
                raise _not_found("channel")
            # an ended stream this edge still holds: served as it is
        elif how is Availability.UNAVAILABLE:
            raise _unavailable()
        request[SERVED] = "relay_wait" if how is Availability.WAITED else "local"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(f"/live/{{channel:{_NAME}}}/master.m3u8", self.master)
        app.router.add_get(f"/live/{{channel:{_NAME}}}/{{rendition:{_NAME}}}/index.m3u8", self.media)
        app.router.add_get(f"/live/{{channel:{_NAME}}}/{{rendition:{_NAME}}}/{{seq:[0-9]{{1,19}}}}.ts", self.segment)
        app.router.add_get(f"/live/{{channel:{_NAME}}}/{{rendition:{_NAME}}}/{{seq:[0-9]{{1,19}}}}.m4s",
                           self.cmaf_segment)
        app.router.add_get(
            f"/live/{{channel:{_NAME}}}/{{rendition:{_NAME}}}/{{seq:[0-9]{{1,19}}}}.{{index:[0-9]{{1,5}}}}.m4s",
            self.part)
        app.router.add_get(f"/live/{{channel:{_NAME}}}/{{rendition:{_NAME}}}/init-{{init:[0-9a-f]{{16}}}}.mp4",
                           self.init)

    def _channel(self, name: str) -> dict[str, Any]:
        info = self.store.channel(name)
        if info is None or not info.get("renditions"):
            raise _not_found("channel")
        return info

    async def master(self, request: web.Request) -> web.StreamResponse:
        await self._through_gate(request, request.match_info["channel"])
        info = self._channel(request.match_info["channel"])
        variants = [
            hls.Variant(
                uri=f"{r['name']}/index.m3u8", bandwidth=r.get("bandwidth") or 1,
                average_bandwidth=r.get("average_bandwidth") or None, codecs=r.get("codecs", ""),
                width=r.get("width", 0), height=r.get("height", 0), frame_rate=r.get("frame_rate"), name=r["name"],
            )
            for r in info["renditions"]
        ]
        # A source cut without a keyframe (hls.max_segment_seconds) this session: its segments are not all
        # independent any more
        return self._playlist(hls.render_master_playlist(variants, independent=info.get("independent", True)
                                                         is not False), request)

    async def media(self, request: web.Request) -> web.StreamResponse:
        channel = request.match_info["channel"]
        rendition = request.match_info["rendition"]
        await self._through_gate(request, channel)
        if self._bus and not request.query_string:
            # a plain reload with nothing committed since the last render: the rendered bytes, no store read
            hit = self.memo.current(channel, rendition, llhls.SkipMode.NONE)
            if hit is not None:
                return self._ll_response(request, hit, blocking=False)
        version = self.memo.version(channel)
        info = self._channel(channel)
        if rendition not in _names(info):
            raise _not_found("rendition")
        if lowlatency.is_cmaf(info):
            return await self._ll_media(request, channel, rendition, info, version)
        hcfg = self.cfg.hls
        window = _int_field(info, "window", hcfg.window)
        metas = self.store.recent(channel, rendition, window)
        # A playlist numbers its segments by position (RFC 8216 3, 4.3.3.2): after a gap (an encoded rung
        # shed under overload and restored keeps the source's numbers) only the run after it is listed.
        for i in range(len(metas) - 1, 0, -1):
            if metas[i].seq != metas[i - 1].seq + 1:
                metas = metas[i:]
                break
        segments = [
            hls.MediaSegment(seq=m.seq, duration=m.duration, uri=f"{m.seq}.ts", discontinuity=m.discontinuity,
                             disc_seq=m.disc_seq, program_date_time=m.program_date_time)
            for m in metas
        ]
        advertised = _int_field(info, "target_duration", 0)
        # the ingest edge's target duration when its record has one: never this edge's own [hls] setting
        target = advertised if advertised > 0 else hls.target_duration(hcfg.effective_max_segment_seconds)
        ended_at = info.get("ended")
        grace = info.get("reconnect_grace")
        ended = hls.playlist_ended(live=bool(info.get("live", False)),
                                   ended_at=float(ended_at) if ended_at is not None else None,
                                   deliberate=bool(info.get("ended_deliberately", False)), now=time.time(),
                                   grace=float(grace) if isinstance(grace, int | float) else hcfg.reconnect_grace_seconds)
        text = hls.render_media_playlist(segments, target_duration=target, ended=ended)
        return self._playlist(text, request)

    def _playlist(self, text: str, request: web.Request) -> web.Response:
        body = text.encode()
        return _conditional(request, body, lowlatency.etag_of(body), {"Cache-Control": PLAYLIST_CACHE})

    async def _ll_media(self, request: web.Request, channel: str, rendition: str,
                        info: dict[str, Any], version: int) -> web.StreamResponse:
        try:
            d = llhls.parse_directives(request.query)
            view = lowlatency.read_view(self.store, channel, rendition, info, self.cfg.hls)
            verdict = llhls.admit(d, view.progress)
        except llhls.DirectiveError as exc:
            raise web.HTTPBadRequest(text=f"{exc.reason}\n") from None
        td = view.shape.target_duration
        if verdict is llhls.Verdict.BLOCK:
            woke = await self._block(channel, rendition, lambda v: llhls.is_satisfied(d, v.progress), td, "playlist")
            if woke is None:
                raise _not_found("rendition")
            view = woke
            version = -1  # read on a wake, after commits this request did not see the version of
        rendered = self.memo.get(self.store, view, d.skip, version)
        return self._ll_response(request, rendered, blocking=d.blocking)

    def _ll_response(self, request: web.Request, rendered: lowlatency.Rendered, *, blocking: bool) -> web.Response:
        td = rendered.target_duration
        headers = {"Cache-Control": f"public, max-age={6 * td}" if blocking else PLAYLIST_CACHE,
                   "Vary": "Accept-Encoding"}
        if rendered.origin_ns:
            headers["Age"] = _age(rendered.origin_ns)
        body, etag = rendered.body, rendered.etag
        if lowlatency.accepts_gzip(request.headers.get("Accept-Encoding")):
            body, etag = rendered.gzipped(), rendered.etag[:-1] + '-gz"'
            headers["Content-Encoding"] = "gzip"
        return _conditional(request, body, etag, headers)

    async def _block(self, channel: str, rendition: str, done: Callable[[lowlatency.View], bool], td: int,
                     kind: str) -> lowlatency.View | None:
        """Wait on the rendition's waiter set; 503 when it is full or the wait times out."""
        if channel not in self._grace_timers:
            self._watch_grace(channel, blocking=True)  # a lost publisher: wake it when the grace ends
        try:
            return await self.blocking.wait(channel, rendition, done, llhls.block_timeout(td), kind)
        except Overloaded:
            metrics.HLS_BLOCK_REFUSED.labels(reason="max_blocking_requests").inc()
            raise web.HTTPServiceUnavailable(text="too many blocked requests on this rendition\n",
                                             headers={"Retry-After": "1"}) from None
        except TimeoutError:
            metrics.HLS_BLOCK_REFUSED.labels(reason="timeout").inc()
            raise web.HTTPServiceUnavailable(text="not available within 3 target durations\n",
                                             headers={"Retry-After": "1"}) from None

    def _part_bytes(self, channel: str, rendition: str, seq: int, index: int) -> bytes | None:
        """A part's bytes; b"" for a gap part (stored empty); None when it is not held."""
        payload = self.store.read_part(channel, rendition, seq, index)
        if payload is not None:
            return payload
        meta = self.store.meta(channel, rendition, seq)  # a complete segment whose parts are not kept here
        if meta is None or meta.fmt != "cmaf" or index >= len(meta.parts):
            return None
        if index in meta.gaps:
            return b""
        whole = self.store.read(channel, rendition, seq)
        parts = split_fragments(whole) if whole is not None else []
        media = [i for i in range(len(meta.parts)) if i not in meta.gaps]  # a gap has no moof+mdat
        return parts[media.index(index)] if len(parts) == len(media) else None

    async def part(self, request: web.Request) -> web.StreamResponse:
        channel = request.match_info["channel"]
        rendition = request.match_info["rendition"]
        seq, index = int(request.match_info["seq"]), int(request.match_info["index"])
        if seq >= 1 << 63 or index >= 1 << 16:
            raise _not_found("part")
        payload = self._part_bytes(channel, rendition, seq, index)
        if payload is None:
            await self._through_gate(request, channel)
            info = self._channel(channel)
            if rendition not in _names(info) or not lowlatency.is_cmaf(info):
                raise _not_found("part")
            view = lowlatency.read_view(self.store, channel, rendition, info, self.cfg.hls)
            if view.part_state(seq, index) == "soon":  # the hinted part (or close): sent once committed
                await self._block(channel, rendition, lambda v: v.part_state(seq, index) != "soon",
                                  view.shape.target_duration, "part")
            payload = self._part_bytes(channel, rendition, seq, index)
            if payload is None:
                raise _not_found("part")
        elif self.gate is not None:
            self.gate.touch(channel)
        if not payload:  # an ingest gap (GAP=YES): listed, never to have bytes
            raise web.HTTPNotFound(text=f"part {seq}.{index} is a gap\n")
        headers = {"Cache-Control": SEGMENT_CACHE, "Accept-Ranges": "bytes"}
        if self.gate is not None:
            meta = self.store.meta(channel, rendition, seq)
            pending = self.store.pending(channel, rendition) if meta is None else None
            origin = meta.origin_ns if meta is not None else pending.origin_ns if pending is not None else 0
            if origin:
                headers["Age"] = _age(origin)
        return _send(request, payload, CMAF_CONTENT_TYPE, headers)

    async def init(self, request: web.Request) -> web.StreamResponse:
        channel = request.match_info["channel"]
        rendition = request.match_info["rendition"]
        init_id = request.match_info["init"]
        payload = self.store.read_init(channel, rendition, init_id)
        if payload is None:
            await self._through_gate(request, channel)
            payload = self.store.read_init(channel, rendition, init_id)
            if payload is None:
                raise _not_found("init segment")
        elif self.gate is not None:
            self.gate.touch(channel)
        return _send(request, payload, CMAF_CONTENT_TYPE, {"Cache-Control": SEGMENT_CACHE, "Accept-Ranges": "bytes"})

    async def cmaf_segment(self, request: web.Request) -> web.StreamResponse:
        return await self._segment(request, "cmaf")

    async def segment(self, request: web.Request) -> web.StreamResponse:
        return await self._segment(request, "ts")

    async def _segment(self, request: web.Request, fmt: str) -> web.StreamResponse:
        channel = request.match_info["channel"]
        rendition = request.match_info["rendition"]
        seq = int(request.match_info["seq"])
        if seq >= 1 << 63:
            raise _not_found("segment")
        payload = self.store.read(channel, rendition, seq)
        if payload is None:
            await self._through_gate(request, channel)  # a channel not here yet: a player's first segment
            payload = self.store.read(channel, rendition, seq)
            if payload is None and self.gate is not None and await self.gate.segment_soon(channel, rendition, seq):
                payload = self.store.read(channel, rendition, seq)  # listed by the edge the player came from
            if payload is None:
                raise _not_found("segment")
        elif self.gate is not None:
            self.gate.touch(channel)  # a use of a relayed channel (its linger starts over)
        headers = {"Cache-Control": SEGMENT_CACHE, "Accept-Ranges": "bytes"}
        meta = self.store.meta(channel, rendition, seq) if self.gate is not None or fmt == "cmaf" else None
        if fmt == "cmaf" and (meta is None or meta.fmt != "cmaf"):
            raise _not_found("segment")  # a TS segment is not served as .m4s
        if meta is not None and meta.origin_ns:
            headers["Age"] = _age(meta.origin_ns)
        return _send(request, payload, CMAF_CONTENT_TYPE if fmt == "cmaf" else SEGMENT_CONTENT_TYPE, headers)


def _names(info: dict[str, Any]) -> set[str]:
    return {r["name"] for r in info.get("renditions", ()) if isinstance(r, dict) and "name" in r}


def _send(request: web.Request, payload: bytes, content_type: str, headers: dict[str, str]) -> web.Response:
    """The whole payload, or the single byte range the request asks for (see the module docstring)."""
    spec = request.headers.get("Range")
    if spec is None or "If-Range" in request.headers:
        return web.Response(body=payload, content_type=content_type, headers=headers)
    size = len(payload)
    try:
        span = parse_byte_range(spec, size)
    except Unsatisfiable:
        raise web.HTTPRequestRangeNotSatisfiable(
            headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"}) from None
    if span is None:
        return web.Response(body=payload, content_type=content_type, headers=headers)
    first, last = span
    headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return web.Response(status=206, body=payload[first : last + 1], content_type=content_type, headers=headers)


def _conditional(request: web.Request | None, body: bytes, etag: str, headers: dict[str, str]) -> web.Response:
    """A playlist answer with its ETag: 304 (no body; the same validator and caching headers) when the
    request's If-None-Match has it."""
    headers["ETag"] = etag
    if request is not None and lowlatency.not_modified(request.headers.get("If-None-Match"), etag):
        headers.pop("Content-Encoding", None)
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=hls.PLAYLIST_CONTENT_TYPE, headers=headers)
