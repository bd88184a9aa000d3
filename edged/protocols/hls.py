"""HLS playlist rendering (RFC 8216), pure: metadata in, playlist text out."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

PLAYLIST_CONTENT_TYPE = "application/vnd.apple.mpegurl"


@dataclass(frozen=True, slots=True)
class MediaSegment:
    seq: int
    duration: float  # seconds
    uri: str
    discontinuity: bool = False
    disc_seq: int = 0  # discontinuities up to and including this segment
    program_date_time: float | None = None  # epoch seconds


@dataclass(frozen=True, slots=True)
class Variant:
    uri: str
    bandwidth: int  # peak bits per second (RFC 8216 4.3.4.2)
    average_bandwidth: int | None = None
    codecs: str = ""
    width: int = 0
    height: int = 0
    frame_rate: float | None = None
    name: str = ""  # rendition name, for logs (not an EXT-X-STREAM-INF attribute)


def _fmt_duration(d: float) -> str:
    return f"{d:.3f}"


def _pdt(ts: float) -> str:
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def rounded_duration(duration: float) -> int:
    """A segment's duration rounded to the nearest integer, as RFC 8216 4.3.3.1 compares it with
    EXT-X-TARGETDURATION."""
    return int(duration + 0.5)


def target_duration(max_segment_seconds: float, advertised: int = 0) -> int:
    """EXT-X-TARGETDURATION of a live playlist. It must not change (RFC 8216 6.2.1), so it does not
    follow the segments in the window: it comes from the longest a segment may grow (segments are
    cut at `max_segment_seconds` at the latest), and never drops below what the playlist already
    `advertised`."""
    return max(1, math.ceil(max_segment_seconds - 1e-9), advertised)


def playlist_ended(*, live: bool, ended_at: float | None, deliberate: bool, now: float, grace: float) -> bool:
    """Whether a media playlist carries EXT-X-ENDLIST: its stream ended deliberately, or its
    publisher has been gone for longer than `grace` (it may come back and continue before that;
    players that saw ENDLIST stop for good). A record with no end time is an ended one."""
    if live:
        return False
    if deliberate or ended_at is None:
        return True
    return now - ended_at >= grace


def render_media_playlist(segments: list[MediaSegment], *, target_duration: int, ended: bool = False) -> str:
    """A live (sliding window) or ended media playlist. `target_duration` is fixed for the life of the
    playlist (see `target_duration()`), whatever the window holds."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{max(1, int(target_duration))}"]
    first = segments[0] if segments else None
    lines.append(f"#EXT-X-MEDIA-SEQUENCE:{first.seq if first else 0}")
    if first is not None:
        # Discontinuities before the first listed segment (RFC 8216 4.3.3.3).
        before = first.disc_seq - (1 if first.discontinuity else 0)
        if before:
            lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{before}")
    for seg in segments:
        if seg.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        if seg.program_date_time is not None:
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_pdt(seg.program_date_time)}")
        lines.append(f"#EXTINF:{_fmt_duration(seg.duration)},")
        lines.append(seg.uri)
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _attr_quoted(value: str) -> str:
    if '"' in value or "\n" in value or "\r" in value:
        raise ValueError(f"quoted-string attribute cannot contain {value!r}")
    return f'"{value}"'


def render_master_playlist(variants: list[Variant], *, independent: bool = True) -> str:
    """A multivariant playlist; variants are listed in the order given. `independent`: every segment
    of every variant starts with a keyframe (EXT-X-INDEPENDENT-SEGMENTS, RFC 8216 4.3.5.1)."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3"]
    if independent:
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    for v in variants:
        attrs = [f"BANDWIDTH={max(1, int(v.bandwidth))}"]
        if v.average_bandwidth:
            attrs.append(f"AVERAGE-BANDWIDTH={int(v.average_bandwidth)}")
        if v.codecs:
            attrs.append(f"CODECS={_attr_quoted(v.codecs)}")
        if v.width and v.height:
            attrs.append(f"RESOLUTION={v.width}x{v.height}")
        if v.frame_rate:
            attrs.append(f"FRAME-RATE={v.frame_rate:.3f}")
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        lines.append(v.uri)
    return "\n".join(lines) + "\n"
