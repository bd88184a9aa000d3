"""Low-Latency HLS (RFC 8216bis, Apple's LL-HLS), pure: metadata in, playlist text out; query in,
typed delivery directives out.

Two halves, no I/O in either:

* `render_llhls_playlist()`: a media playlist with parts, server control, a preload hint, rendition
  reports and, on `_HLS_skip`, a Playlist Delta Update. The text depends only on its inputs, so every
  edge that holds the same metadata renders the same bytes.
* `parse_directives()`, `admit()`, `is_satisfied()`: the `_HLS_msn` / `_HLS_part` / `_HLS_skip`
  directives of a playlist request, checked against a rendition's progress (RFC 8216bis 6.2.5).

Rules chosen where the spec leaves room (each one is also in the tests):

* Parts are listed per segment: all parts of a segment that starts within 3 x target duration of the
  playlist's end (the end of its last part), none of the older ones (6.2.2: parts SHOULD be removed
  once more than 3 target durations from the end). The in-progress segment's parts are always listed.
* A delta update skips the segments that end at least CAN-SKIP-UNTIL seconds before the end of the
  last complete segment (6.2.5.1; Apple's example skips exactly those), with their tags. EXT-X-MAP is
  repeated before the first segment kept, so a client never depends on a skipped MAP.
* CAN-SKIP-UNTIL (6 x target duration, the least 4.4.3.8 allows) is advertised from the channel's
  settings (`skip_advertised()`: the configured window reaches past the skip boundary), not from what
  the window holds right now, so EXT-X-SERVER-CONTROL is the same in every media playlist of a
  channel (6.2.4) and does not change while a window fills.
* CAN-SKIP-DATERANGES is not advertised (edged writes no EXT-X-DATERANGE); a `v2` request is still
  answered, with RECENTLY-REMOVED-DATERANGES="".
* EXT-X-VERSION is 9 for a full playlist and 10 for a delta update (Apple's LL-HLS examples).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from edged.protocols.hls import _attr_quoted, _fmt_duration, _pdt

FULL_VERSION = 9
DELTA_VERSION = 10
PART_WINDOW_TDS = 3  # parts are listed for the last 3 target durations (6.2.2)
SKIP_BOUNDARY_TDS = 6  # CAN-SKIP-UNTIL: at least 6 target durations (4.4.3.8)
HOLD_BACK_TDS = 3  # HOLD-BACK: at least 3 target durations (4.4.3.8)
PART_HOLD_BACK_PARTS = 3  # PART-HOLD-BACK: at least 2 part targets, 3 recommended (4.4.3.8)
BLOCK_TIMEOUT_TDS = 3  # a request blocked past 3 target durations gets 503 (6.2.5.2)
_INT_MAX = 2**64 - 1  # decimal-integer range (4.2)


@dataclass(frozen=True, slots=True)
class Part:
    """One partial segment (EXT-X-PART): its index within the parent segment, counted from 0."""

    index: int
    duration: float  # seconds, at most the part target
    uri: str
    independent: bool = False  # starts with a keyframe (INDEPENDENT=YES)
    gap: bool = False  # an ingest gap: the part is listed but not available (GAP=YES)


@dataclass(frozen=True, slots=True)
class LLSegment:
    """A complete media segment; `parts` may be empty for segments whose parts are not kept."""

    seq: int
    duration: float  # seconds
    uri: str
    init_uri: str  # EXT-X-MAP of this segment
    program_date_time: float  # epoch seconds of its first sample
    discontinuity: bool = False
    disc_seq: int = 0  # discontinuities up to and including this segment
    parts: tuple[Part, ...] = ()


@dataclass(frozen=True, slots=True)
class PendingSegment:
    """The segment being written: its sequence number follows the last complete one's; only its
    committed parts are listed."""

    seq: int
    init_uri: str
    parts: tuple[Part, ...] = ()
    program_date_time: float | None = None
    discontinuity: bool = False
    disc_seq: int = 0


@dataclass(frozen=True, slots=True)
class RenditionReport:
    """EXT-X-RENDITION-REPORT for another rendition of the channel (see `last_position()`)."""

    uri: str
    last_msn: int
    last_part: int | None = None


@dataclass(frozen=True, slots=True)
class ServerControl:
    part_target: float
    target_duration: int
    can_skip_until: float | None = None

    def render(self) -> str:
        attrs = [
            "CAN-BLOCK-RELOAD=YES",
            f"PART-HOLD-BACK={_num(PART_HOLD_BACK_PARTS * self.part_target)}",
            f"HOLD-BACK={_num(HOLD_BACK_TDS * self.target_duration)}",
        ]
        if self.can_skip_until is not None:
            attrs.append(f"CAN-SKIP-UNTIL={_num(self.can_skip_until)}")
        return "#EXT-X-SERVER-CONTROL:" + ",".join(attrs)


class SkipMode(Enum):
    NONE = ""
    YES = "YES"  # skip segments
    V2 = "v2"  # skip segments and date ranges


@dataclass(frozen=True, slots=True)
class LLPlaylist:
    """Everything one media playlist is rendered from."""

    segments: Sequence[LLSegment]  # the window, oldest first, consecutive sequence numbers
    target_duration: int
    part_target: float  # seconds
    preload_hint_uri: str  # URI of the next part (the one after the last listed)
    pending: PendingSegment | None = None
    reports: Sequence[RenditionReport] = ()
    can_skip_until: float | None = None  # from `skip_advertised()`
    ended: bool = False

    @property
    def server_control(self) -> ServerControl:
        return ServerControl(self.part_target, self.target_duration, self.can_skip_until)


def _num(x: float) -> str:
    return f"{x:.3f}"


def skip_boundary(target_duration: int) -> float:
    """CAN-SKIP-UNTIL: the least the spec allows, 6 target durations."""
    return float(SKIP_BOUNDARY_TDS * target_duration)


def skip_advertised(target_duration: int, window_seconds: float) -> float | None:
    """CAN-SKIP-UNTIL for a channel whose playlists keep about `window_seconds` of segments, or None
    when a full window would not reach past the skip boundary by a whole target duration (a delta
    update would then skip nothing). A function of settings only, the same for every rendition."""
    boundary = skip_boundary(target_duration)
    return boundary if window_seconds >= boundary + 2 * target_duration else None


def advance_part_limit(part_target: float) -> int:
    """RFC 8216bis 6.2.5.2: 3 / part target when it is under a second, 3 otherwise."""
    if part_target < 1.0:
        return math.floor(3.0 / part_target + 1e-9)
    return 3


def block_timeout(target_duration: int) -> float:
    """How long a blocked playlist request may wait before it is answered 503 (6.2.5.2)."""
    return float(BLOCK_TIMEOUT_TDS * target_duration)


def last_position(segments: Sequence[LLSegment], pending: PendingSegment | None) -> tuple[int, int | None]:
    """(LAST-MSN, LAST-PART) of a rendition, as EXT-X-RENDITION-REPORT states them: the segment of the
    last part (the in-progress one once it has a part) and that part's index; LAST-PART is None when
    the rendition has no parts."""
    if pending is not None and pending.parts:
        return pending.seq, pending.parts[-1].index
    if segments:
        last = segments[-1]
        return last.seq, (last.parts[-1].index if last.parts else None)
    if pending is not None:
        return pending.seq - 1, None
    return -1, None


def _check(pl: LLPlaylist) -> None:
    if pl.part_target <= 0 or pl.part_target > pl.target_duration:
        raise ValueError(f"part target {pl.part_target} must be in (0, {pl.target_duration}]")
    limit = _num(pl.part_target)
    for i in range(1, len(pl.segments)):
        if pl.segments[i].seq != pl.segments[i - 1].seq + 1:
            raise ValueError(f"segments not consecutive at {pl.segments[i].seq}")
    groups: list[tuple[int, tuple[Part, ...]]] = [(s.seq, s.parts) for s in pl.segments]
    if pl.pending is not None:
        if pl.segments and pl.pending.seq != pl.segments[-1].seq + 1:
            raise ValueError(f"pending segment {pl.pending.seq} does not follow {pl.segments[-1].seq}")
        groups.append((pl.pending.seq, pl.pending.parts))
    for seq, parts in groups:
        for i, part in enumerate(parts):
            if part.index != i:
                raise ValueError(f"segment {seq}: part {i} has index {part.index}")
            if float(_num(part.duration)) > float(limit):
                raise ValueError(f"segment {seq} part {i}: {part.duration} s exceeds part target {limit}")


def _part_line(part: Part) -> str:
    attrs = [f"DURATION={_num(part.duration)}", f"URI={_attr_quoted(part.uri)}"]
    if part.independent:
        attrs.append("INDEPENDENT=YES")
    if part.gap:
        attrs.append("GAP=YES")
    return "#EXT-X-PART:" + ",".join(attrs)


def _skipped_count(segments: Sequence[LLSegment], boundary: float) -> int:
    """How many leading segments end at least `boundary` seconds before the last one ends."""
    ends: list[float] = []
    t = 0.0
    for s in segments:
        t += s.duration
        ends.append(t)
    total = t
    n = 0
    while n < len(segments) and total - ends[n] >= boundary - 1e-9:
        n += 1
    return n


def render_llhls_playlist(pl: LLPlaylist, *, skip: SkipMode = SkipMode.NONE) -> str:
    """The media playlist text; a Playlist Delta Update when `skip` asks for one and the playlist
    advertises CAN-SKIP-UNTIL and has not ended (otherwise `skip` is ignored, 6.2.5.1).
    Raises ValueError on inconsistent input (non-consecutive sequence numbers or part indices, a part
    longer than the part target)."""
    _check(pl)
    segments = list(pl.segments)
    delta = skip is not SkipMode.NONE and pl.can_skip_until is not None and not pl.ended
    skipped = _skipped_count(segments, pl.can_skip_until) if delta and pl.can_skip_until is not None else 0

    first_seq: int
    if segments:
        first_seq = segments[0].seq
        first_disc, first_is_disc = segments[0].disc_seq, segments[0].discontinuity
    elif pl.pending is not None:
        first_seq = pl.pending.seq
        first_disc, first_is_disc = pl.pending.disc_seq, pl.pending.discontinuity
    else:
        first_seq, first_disc, first_is_disc = 0, 0, False

    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{DELTA_VERSION if delta else FULL_VERSION}",
        f"#EXT-X-TARGETDURATION:{max(1, int(pl.target_duration))}",
        pl.server_control.render(),
        f"#EXT-X-PART-INF:PART-TARGET={_num(pl.part_target)}",
        f"#EXT-X-MEDIA-SEQUENCE:{first_seq}",
    ]
    before = first_disc - (1 if first_is_disc else 0)
    if before:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{before}")
    if delta:
        attrs = f"SKIPPED-SEGMENTS={skipped}"
        if skip is SkipMode.V2:
            attrs += ',RECENTLY-REMOVED-DATERANGES=""'
        lines.append(f"#EXT-X-SKIP:{attrs}")

    # Where the playlist ends (its last part), to decide whose parts are listed.
    total = sum(s.duration for s in segments)
    if pl.pending is not None:
        total += sum(p.duration for p in pl.pending.parts)
    part_window = PART_WINDOW_TDS * pl.target_duration

    current_map: str | None = None
    start = 0.0
    for i, seg in enumerate(segments):
        seg_start = start
        start += seg.duration
        if i < skipped:
            continue
        if seg.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        if seg.init_uri != current_map:
            lines.append(f"#EXT-X-MAP:URI={_attr_quoted(seg.init_uri)}")
            current_map = seg.init_uri
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_pdt(seg.program_date_time)}")
        if total - seg_start <= part_window + 1e-9:
            lines.extend(_part_line(p) for p in seg.parts)
        lines.append(f"#EXTINF:{_fmt_duration(seg.duration)},")
        lines.append(seg.uri)

    if not pl.ended:
        pending = pl.pending
        if pending is not None and pending.parts:
            if pending.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            if pending.init_uri != current_map:
                lines.append(f"#EXT-X-MAP:URI={_attr_quoted(pending.init_uri)}")
            if pending.program_date_time is not None:
                lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_pdt(pending.program_date_time)}")
            lines.extend(_part_line(p) for p in pending.parts)
        lines.append(f"#EXT-X-PRELOAD-HINT:TYPE=PART,URI={_attr_quoted(pl.preload_hint_uri)}")

    for r in sorted(pl.reports, key=lambda r: r.uri):
        attrs = f"URI={_attr_quoted(r.uri)},LAST-MSN={r.last_msn}"
        if r.last_part is not None:
            attrs += f",LAST-PART={r.last_part}"
        lines.append(f"#EXT-X-RENDITION-REPORT:{attrs}")
    if pl.ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


# -- delivery directives (RFC 8216bis 6.2.5) -----------------------------------------------------


class DirectiveError(ValueError):
    """A playlist request the server answers 400 Bad Request at once."""

    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Directives:
    msn: int | None = None
    part: int | None = None
    skip: SkipMode = SkipMode.NONE

    @property
    def blocking(self) -> bool:
        return self.msn is not None


def _decimal_integer(name: str, raw: str) -> int:
    if not raw or not raw.isascii() or not raw.isdigit():
        raise DirectiveError(f"{name} must be a decimal integer, not {raw!r}")
    value = int(raw)
    if value > _INT_MAX:
        raise DirectiveError(f"{name} {raw} is out of range")
    return value


def parse_directives(query: Mapping[str, str]) -> Directives:
    """The delivery directives of a playlist request's query. Other parameters are ignored, including
    unknown `_HLS_` ones (reserved, but a newer client's directive must not break playback).
    Raises DirectiveError (400) for a non-integer `_HLS_msn`/`_HLS_part`, an `_HLS_part` without an
    `_HLS_msn` (6.2.5.2), or an `_HLS_skip` other than YES or v2."""
    msn_raw = query.get("_HLS_msn")
    part_raw = query.get("_HLS_part")
    skip_raw = query.get("_HLS_skip")
    msn = None if msn_raw is None else _decimal_integer("_HLS_msn", msn_raw)
    part = None if part_raw is None else _decimal_integer("_HLS_part", part_raw)
    if part is not None and msn is None:
        raise DirectiveError("_HLS_part without _HLS_msn")
    skip = SkipMode.NONE
    if skip_raw is not None:
        if skip_raw == "YES":
            skip = SkipMode.YES
        elif skip_raw == "v2":
            skip = SkipMode.V2
        else:
            raise DirectiveError(f"_HLS_skip must be YES or v2, not {skip_raw!r}")
    return Directives(msn=msn, part=part, skip=skip)


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a rendition stands, as a blocked request sees it.

    `parts` counts the parts of complete segments (a segment missing from it counts as having none,
    so a part request for it waits for the next segment's first part); `pending_parts` is how many
    parts of the in-progress segment (sequence number `last_msn + 1`) are committed."""

    first_msn: int  # first segment in the window
    last_msn: int  # last complete segment; first_msn - 1 when there is none yet
    part_target: float
    target_duration: int
    pending_parts: int = 0
    parts: Mapping[int, int] = field(default_factory=dict)
    ended: bool = False

    @property
    def pending_msn(self) -> int:
        return self.last_msn + 1

    def nominal_parts(self) -> int:
        """Parts a segment is expected to have: the most any listed one has, else TD / part target."""
        known = max(self.parts.values(), default=0)
        return max(known, math.ceil(self.target_duration / self.part_target - 1e-9), 1)


class Verdict(Enum):
    NOW = "now"  # answer the current playlist at once
    BLOCK = "block"  # hold the request until `is_satisfied()` (or 503 after `block_timeout()`)


def _normalize(d: Directives, p: Progress) -> tuple[int, int | None]:
    """(msn, part) with a part index past a complete segment's last part turned into part 0 of the
    next segment (6.2.5.2)."""
    assert d.msn is not None
    msn, part = d.msn, d.part
    if part is not None and msn <= p.last_msn and part >= p.parts.get(msn, 0):
        return msn + 1, 0
    return msn, part


def is_satisfied(d: Directives, p: Progress) -> bool:
    """Whether the playlist now holds what a blocking request waits for: segment `_HLS_msn` complete
    (or a later one), or part `_HLS_part` of segment `_HLS_msn` (or a later part). A request without
    directives, one older than the window, or any request once the playlist ended is satisfied."""
    if d.msn is None or p.ended or d.msn < p.first_msn:
        return True
    msn, part = _normalize(d, p)
    if part is None:
        return msn <= p.last_msn
    if msn <= p.last_msn:
        return True  # the part of a complete segment, or part 0 of a complete one
    if msn == p.pending_msn:
        return part < p.pending_parts
    return False


def _parts_ahead(msn: int, part: int, p: Progress) -> int:
    """How many parts past the rendition's last part the requested one is (≤ 0: it exists)."""
    nominal = p.nominal_parts()
    if p.pending_parts:  # the in-progress segment is expected to grow to `nominal` parts
        cur_msn, cur_part = p.pending_msn, p.pending_parts - 1
        rest_of_current = max(nominal - 1 - cur_part, 0)
    else:  # the last complete segment holds the last part
        cur_msn, cur_part = p.last_msn, p.parts.get(p.last_msn, nominal) - 1
        rest_of_current = 0
    if msn <= cur_msn:
        return part - cur_part if msn == cur_msn else 0
    return rest_of_current + (msn - cur_msn - 1) * nominal + part + 1


def admit(d: Directives, p: Progress) -> Verdict:
    """What to do with a parsed request now: answer at once or block. Raises DirectiveError (400) when
    `_HLS_msn` is more than two past the last complete segment or `_HLS_part` is more than the Advance
    Part Limit past the last part (6.2.5.2). Directives are ignored once the playlist has ended."""
    if d.msn is None or p.ended:
        return Verdict.NOW
    if d.msn > p.last_msn + 2:
        raise DirectiveError(f"_HLS_msn {d.msn} is more than two segments past {p.last_msn}")
    if d.part is not None:
        msn, part = _normalize(d, p)
        assert part is not None
        limit = advance_part_limit(p.part_target)
        if _parts_ahead(msn, part, p) > limit:
            raise DirectiveError(f"_HLS_msn {d.msn} _HLS_part {d.part} is past the Advance Part Limit ({limit})")
    return Verdict.NOW if is_satisfied(d, p) else Verdict.BLOCK
