"""HLS handlers: playlists rendered from store metadata, segments straight from LMDB."""

from __future__ import annotations

import re

from aiohttp import web

from edged.config import Config
from edged.protocols import hls
from edged.store.segments import SegmentStore

_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_NAME_RE = re.compile(f"^{_NAME}$")
SEGMENT_CONTENT_TYPE = "video/mp2t"
PLAYLIST_CACHE = "max-age=1"  # a live playlist changes every segment; half a target duration or less
SEGMENT_CACHE = "public, max-age=86400, immutable"  # a sequence number never names other bytes


def _not_found(what: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=f"{what} not found\n")


class HlsHandlers:
    def __init__(self, cfg: Config, store: SegmentStore) -> None:
        self.cfg = cfg
        self.store = store

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(f"/live/{{channel:{_NAME}}}/master.m3u8", self.master)
        app.router.add_get(f"/live/{{channel:{_NAME}}}/{{rendition:{_NAME}}}/index.m3u8", self.media)
        app.router.add_get(f"/live/{{channel:{_NAME}}}/{{rendition:{_NAME}}}/{{seq:[0-9]{{1,19}}}}.ts", self.segment)

    def _channel(self, name: str) -> dict:
        info = self.store.channel(name)
        if info is None or not info.get("renditions"):
            raise _not_found("channel")
        return info

    async def master(self, request: web.Request) -> web.StreamResponse:
        info = self._channel(request.match_info["channel"])
        variants = [
            hls.Variant(
                uri=f"{r['name']}/index.m3u8", bandwidth=r.get("bandwidth") or 1,
                average_bandwidth=r.get("average_bandwidth") or None, codecs=r.get("codecs", ""),
                width=r.get("width", 0), height=r.get("height", 0), frame_rate=r.get("frame_rate"), name=r["name"],
            )
            for r in info["renditions"]
        ]
        return self._playlist(hls.render_master_playlist(variants))

    async def media(self, request: web.Request) -> web.StreamResponse:
        channel = request.match_info["channel"]
        rendition = request.match_info["rendition"]
        info = self._channel(channel)
        if rendition not in {r["name"] for r in info["renditions"]}:
            raise _not_found("rendition")
        metas = self.store.recent(channel, rendition, self.cfg.hls.window)
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
        text = hls.render_media_playlist(segments, min_target=self.cfg.hls.segment_seconds,
                                         ended=not info.get("live", False))
        return self._playlist(text)

    def _playlist(self, text: str) -> web.Response:
        return web.Response(body=text.encode(), content_type=hls.PLAYLIST_CONTENT_TYPE,
                            headers={"Cache-Control": PLAYLIST_CACHE})

    async def segment(self, request: web.Request) -> web.StreamResponse:
        channel = request.match_info["channel"]
        rendition = request.match_info["rendition"]
        seq = int(request.match_info["seq"])
        if seq >= 1 << 63:
            raise _not_found("segment")
        payload = self.store.read(channel, rendition, seq)
        if payload is None:
            raise _not_found("segment")
        return web.Response(body=payload, content_type=SEGMENT_CONTENT_TYPE,
                            headers={"Cache-Control": SEGMENT_CACHE})
