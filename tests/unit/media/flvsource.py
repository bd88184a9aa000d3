"""Turn an FLV file into the RTMP message bodies an encoder would send (test helper)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av


def flv_tags(path: Path) -> Iterator[tuple[str, int, bytes]]:
    """(kind, timestamp ms, FLV tag body): the sequence headers first, then the media."""
    with av.open(str(path)) as inp:
        vs, aus = inp.streams.video[0], inp.streams.audio[0]
        yield "video", 0, bytes([0x17, 0, 0, 0, 0]) + bytes(vs.codec_context.extradata)
        yield "audio", 0, bytes([0xAF, 0]) + bytes(aus.codec_context.extradata)
        for p in inp.demux():
            if p.dts is None or p.size == 0:
                continue
            ts = int(p.dts * p.time_base * 1000)
            if p.stream.type == "video":
                cts = int((p.pts - p.dts) * p.time_base * 1000)
                head = bytes([0x17 if p.is_keyframe else 0x27, 1]) + cts.to_bytes(3, "big", signed=True)
                yield "video", ts, head + bytes(p)
            else:
                yield "audio", ts, bytes([0xAF, 1]) + bytes(p)
