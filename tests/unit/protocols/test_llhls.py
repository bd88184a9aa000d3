"""Low-Latency HLS playlists and delivery directives against RFC 8216bis (and Apple's LL-HLS)."""

from __future__ import annotations

import m3u8  # type: ignore[import-untyped]
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from edged.protocols import llhls as L

T0 = 1_700_000_000.0


def _parts(seq: int, n: int, d: float = 0.5, gap_at: int | None = None) -> tuple[L.Part, ...]:
    return tuple(L.Part(j, d, f"p{seq}.{j}.mp4", independent=j == 0, gap=j == gap_at) for j in range(n))


def _seg(seq: int, n_parts: int = 4, part: float = 0.5, **kw: object) -> L.LLSegment:
    return L.LLSegment(seq=seq, duration=n_parts * part, uri=f"s{seq}.mp4", init_uri=str(kw.pop("init", "init.mp4")),
                       program_date_time=T0 + seq * n_parts * part, parts=_parts(seq, n_parts, part), **kw)  # type: ignore[arg-type]


def _pl(first: int = 10, n: int = 10, pending_parts: int = 2, **kw: object) -> L.LLPlaylist:
    segs = [_seg(i) for i in range(first, first + n)]
    nxt = first + n
    pending = L.PendingSegment(seq=nxt, init_uri="init.mp4", parts=_parts(nxt, pending_parts),
                               program_date_time=T0 + nxt * 2.0)
    args: dict[str, object] = dict(segments=segs, target_duration=2, part_target=0.5,
                                   preload_hint_uri=f"p{nxt}.{pending_parts}.mp4", pending=pending)
    args.update(kw)
    return L.LLPlaylist(**args)  # type: ignore[arg-type]


def lines_of(pl: L.LLPlaylist, skip: L.SkipMode = L.SkipMode.NONE) -> list[str]:
    return L.render_llhls_playlist(pl, skip=skip).splitlines()


# -- tags -------------------------------------------------------------------------------------------


def test_header_and_tag_order() -> None:
    lines = lines_of(_pl(can_skip_until=12.0))
    assert lines[:7] == [
        "#EXTM3U",
        "#EXT-X-VERSION:9",
        "#EXT-X-TARGETDURATION:2",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500,HOLD-BACK=6.000,CAN-SKIP-UNTIL=12.000",
        "#EXT-X-PART-INF:PART-TARGET=0.500",
        "#EXT-X-MEDIA-SEQUENCE:10",
        '#EXT-X-MAP:URI="init.mp4"',
    ]
    assert "#EXT-X-ENDLIST" not in lines
    assert not any("DISCONTINUITY" in x for x in lines)


def test_server_control_without_skip() -> None:
    assert "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600,HOLD-BACK=12.000" in lines_of(
        _pl(part_target=0.2, target_duration=4, segments=[], pending=None))


def test_program_date_time_on_every_segment_and_pending() -> None:
    lines = lines_of(_pl())
    pdts = [i for i, x in enumerate(lines) if x.startswith("#EXT-X-PROGRAM-DATE-TIME:")]
    assert len(pdts) == 11  # 10 segments + the in-progress one
    assert lines[pdts[0]] == "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:40.000Z"
    assert sum(x.startswith("#EXTINF:") for x in lines) == 10


def test_parts_only_for_the_last_three_target_durations() -> None:
    lines = lines_of(_pl())  # 10 x 2 s + 1 s of pending parts: 21 s; parts window 6 s
    listed = {x.split('"')[1].split(".")[0] for x in lines if x.startswith("#EXT-X-PART:")}
    assert listed == {"p18", "p19", "p20"}  # 18 starts 5 s before the end, 17 starts 7 s before
    assert '#EXT-X-PART:DURATION=0.500,URI="p18.0.mp4",INDEPENDENT=YES' in lines
    assert '#EXT-X-PART:DURATION=0.500,URI="p18.1.mp4"' in lines
    # Parts come after the segment's PDT and before its EXTINF.
    i = lines.index("s18.mp4")
    assert lines[i - 1] == "#EXTINF:2.000,"
    assert lines[i - 2] == '#EXT-X-PART:DURATION=0.500,URI="p18.3.mp4"'
    assert lines[i - 6].startswith("#EXT-X-PROGRAM-DATE-TIME:")


def test_gap_part() -> None:
    pl = _pl()
    pend = L.PendingSegment(seq=20, init_uri="init.mp4", parts=_parts(20, 3, gap_at=1))
    lines = lines_of(L.LLPlaylist(pl.segments, 2, 0.5, "p20.3.mp4", pending=pend))
    assert '#EXT-X-PART:DURATION=0.500,URI="p20.1.mp4",GAP=YES' in lines


def test_exactly_one_preload_hint_after_the_last_part() -> None:
    lines = lines_of(_pl())
    hints = [x for x in lines if x.startswith("#EXT-X-PRELOAD-HINT")]
    assert hints == ['#EXT-X-PRELOAD-HINT:TYPE=PART,URI="p20.2.mp4"']
    assert lines[lines.index(hints[0]) - 1] == '#EXT-X-PART:DURATION=0.500,URI="p20.1.mp4"'


def test_hint_with_no_pending_parts() -> None:
    pl = _pl(pending_parts=0, preload_hint_uri="p20.0.mp4")
    lines = lines_of(pl)
    assert lines[-2:] == ["s19.mp4", '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="p20.0.mp4"']


def test_ended_playlist() -> None:
    lines = lines_of(_pl(ended=True, can_skip_until=12.0))
    assert lines[-1] == "#EXT-X-ENDLIST"
    assert not any(x.startswith("#EXT-X-PRELOAD-HINT") for x in lines)
    assert not any("p20." in x for x in lines)  # the unfinished segment's parts are not listed
    # _HLS_skip is ignored once the playlist ended (6.2.5.1).
    assert lines_of(_pl(ended=True, can_skip_until=12.0), L.SkipMode.YES) == lines


def test_rendition_reports_sorted_and_last_part() -> None:
    reports = [L.RenditionReport("../720p/i.m3u8", 20, 1), L.RenditionReport("../480p/i.m3u8", 19)]
    lines = lines_of(_pl(reports=reports))
    assert lines[-2:] == [
        '#EXT-X-RENDITION-REPORT:URI="../480p/i.m3u8",LAST-MSN=19',
        '#EXT-X-RENDITION-REPORT:URI="../720p/i.m3u8",LAST-MSN=20,LAST-PART=1',
    ]
    assert lines_of(_pl(reports=list(reversed(reports)))) == lines


def test_last_position() -> None:
    pl = _pl()
    assert L.last_position(pl.segments, pl.pending) == (20, 1)
    empty = L.PendingSegment(seq=20, init_uri="i")
    assert L.last_position(pl.segments, empty) == (19, 3)
    assert L.last_position([], empty) == (19, None)
    assert L.last_position([], None) == (-1, None)
    assert L.last_position([L.LLSegment(3, 2.0, "s", "i", T0)], None) == (3, None)


def test_discontinuity_and_map_changes() -> None:
    segs = [_seg(5, disc_seq=1), _seg(6, discontinuity=True, disc_seq=2, init="init2.mp4"), _seg(7, disc_seq=2, init="init2.mp4")]
    pend = L.PendingSegment(seq=8, init_uri="init3.mp4", parts=_parts(8, 1), discontinuity=True, disc_seq=3)
    lines = lines_of(L.LLPlaylist(segs, 2, 0.5, "p8.1.mp4", pending=pend))
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1" in lines
    assert [x for x in lines if x.startswith("#EXT-X-MAP")] == [
        '#EXT-X-MAP:URI="init.mp4"', '#EXT-X-MAP:URI="init2.mp4"', '#EXT-X-MAP:URI="init3.mp4"']
    d = [i for i, x in enumerate(lines) if x == "#EXT-X-DISCONTINUITY"]
    assert len(d) == 2
    assert lines[d[0] + 1] == '#EXT-X-MAP:URI="init2.mp4"' and lines[d[0] - 1] == "s5.mp4"
    assert lines[d[1] + 1] == '#EXT-X-MAP:URI="init3.mp4"' and lines[d[1] - 1] == "s7.mp4"


def test_window_starting_on_a_discontinuity() -> None:
    lines = lines_of(L.LLPlaylist([_seg(5, discontinuity=True, disc_seq=3)], 2, 0.5, "p6.0.mp4"))
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:2" in lines
    assert lines.index("#EXT-X-DISCONTINUITY") < lines.index("s5.mp4")


def test_empty_window_with_only_pending_parts() -> None:
    pend = L.PendingSegment(seq=0, init_uri="init.mp4", parts=_parts(0, 2))
    lines = lines_of(L.LLPlaylist([], 2, 0.5, "p0.2.mp4", pending=pend))
    assert "#EXT-X-MEDIA-SEQUENCE:0" in lines
    assert sum(x.startswith("#EXT-X-PART:") for x in lines) == 2


@pytest.mark.parametrize("bad", [
    dict(segments=[_seg(1), _seg(3)]),
    dict(part_target=2.5),
    dict(part_target=0.0),
    dict(segments=[L.LLSegment(1, 1.0, "s", "i", T0, parts=(L.Part(1, 0.5, "p"),))]),
    dict(segments=[L.LLSegment(1, 1.0, "s", "i", T0, parts=(L.Part(0, 0.6, "p"),))]),
    dict(segments=[_seg(1)], pending=L.PendingSegment(seq=5, init_uri="i")),
    dict(segments=[_seg(1)], pending=L.PendingSegment(seq=2, init_uri="i", parts=(L.Part(0, 0.51, "p"),))),
    dict(preload_hint_uri='a"b'),
])
def test_inconsistent_input_is_refused(bad: dict[str, object]) -> None:
    args: dict[str, object] = dict(segments=[], target_duration=2, part_target=0.5, preload_hint_uri="h")
    args.update(bad)
    with pytest.raises(ValueError):
        L.render_llhls_playlist(L.LLPlaylist(**args))  # type: ignore[arg-type]


def test_part_within_a_millisecond_of_the_target_is_accepted() -> None:
    seg = L.LLSegment(1, 0.5, "s", "i", T0, parts=(L.Part(0, 0.5004, "p"),))
    assert '#EXT-X-PART:DURATION=0.500,URI="p"' in lines_of(L.LLPlaylist([seg], 1, 0.5, "h"))


def test_deterministic() -> None:
    assert L.render_llhls_playlist(_pl(can_skip_until=12.0)) == L.render_llhls_playlist(_pl(can_skip_until=12.0))
    assert L.render_llhls_playlist(_pl()).endswith("\n")


# -- CAN-SKIP-UNTIL and delta updates -------------------------------------------------------------


def test_skip_advertised_from_settings() -> None:
    assert L.skip_boundary(2) == 12.0
    assert L.skip_advertised(2, 16.0) == 12.0
    assert L.skip_advertised(2, 15.9) is None
    assert L.skip_advertised(4, 60.0) == 24.0


def test_delta_update_matches_apples_example() -> None:
    # Apple's LL-HLS example: TD 4, segments 264..272 of 4 s, CAN-SKIP-UNTIL=24 → 3 skipped.
    segs = [L.LLSegment(i, 4.0, f"fileSequence{i}.mp4", "init.mp4", T0 + 4 * i) for i in range(264, 273)]
    pl = L.LLPlaylist(segs, 4, 1.0, "h.mp4", can_skip_until=24.0)
    lines = lines_of(pl, L.SkipMode.YES)
    assert "#EXT-X-VERSION:10" in lines
    assert "#EXT-X-MEDIA-SEQUENCE:264" in lines
    i = lines.index("#EXT-X-SKIP:SKIPPED-SEGMENTS=3")
    assert lines[i + 1] == '#EXT-X-MAP:URI="init.mp4"'
    assert "fileSequence266.mp4" not in lines and "fileSequence267.mp4" in lines


def test_delta_v2_and_ignored_without_advertisement() -> None:
    pl = _pl(can_skip_until=12.0)
    assert '#EXT-X-SKIP:SKIPPED-SEGMENTS=4,RECENTLY-REMOVED-DATERANGES=""' in lines_of(pl, L.SkipMode.V2)
    plain = _pl()
    assert lines_of(plain, L.SkipMode.YES) == lines_of(plain)


def test_delta_that_skips_nothing_is_still_a_delta() -> None:
    lines = lines_of(_pl(n=3, can_skip_until=12.0), L.SkipMode.YES)
    assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=0" in lines
    assert "s10.mp4" in lines


# -- cross-check with the m3u8 library -----------------------------------------------------------


def test_m3u8_library_reads_everything() -> None:
    text = L.render_llhls_playlist(_pl(can_skip_until=12.0, reports=[L.RenditionReport("../a.m3u8", 20, 1)]))
    m = m3u8.loads(text)
    assert m.version == 9 and m.target_duration == 2 and m.media_sequence == 10
    assert m.server_control.can_block_reload == "YES"
    assert (m.server_control.part_hold_back, m.server_control.hold_back, m.server_control.can_skip_until) == (1.5, 6.0, 12.0)
    assert m.part_inf.part_target == 0.5
    assert m.preload_hint.hint_type == "PART" and m.preload_hint.uri == "p20.2.mp4"
    assert [(r.uri, r.last_msn, r.last_part) for r in m.rendition_reports] == [("../a.m3u8", 20, 1)]
    complete = [s for s in m.segments if s.uri]
    assert [s.uri for s in complete] == [f"s{i}.mp4" for i in range(10, 20)]
    assert all(s.program_date_time is not None and s.init_section.uri == "init.mp4" for s in complete)
    assert [len(s.parts) for s in m.segments] == [0] * 8 + [4, 4, 2]
    assert m.segments[-1].parts[0].independent == "YES"
    delta = m3u8.loads(L.render_llhls_playlist(_pl(can_skip_until=12.0), skip=L.SkipMode.YES))
    assert delta.skip.skipped_segments == 4
    assert [s.uri for s in delta.segments if s.uri][0] == "s14.mp4"


def _segment_view(m: m3u8.M3U8) -> list[tuple[object, ...]]:
    """What a client keeps of each complete segment: number, URI, duration, date, discontinuity, map."""
    first = m.media_sequence + (m.skip.skipped_segments if m.skip else 0)
    return [(first + i, s.uri, s.duration, s.program_date_time, s.discontinuity, s.init_section.uri)
            for i, s in enumerate(x for x in m.segments if x.uri)]


def merge(previous_full: str, delta: str) -> list[tuple[object, ...]]:
    """A client's reconstruction: the skipped segments from the previous playlist, the rest from the delta."""
    old = {v[0]: v for v in _segment_view(m3u8.loads(previous_full))}
    d = m3u8.loads(delta)
    assert d.skip is not None
    skipped = [old[d.media_sequence + i] for i in range(d.skip.skipped_segments)]
    return skipped + _segment_view(d)


def _tail(text: str) -> list[str]:
    """Lines after the segments a delta may skip: parts, hint, reports."""
    lines = text.splitlines()
    header = ("#EXTM3U", "#EXT-X-VERSION", "#EXT-X-TARGETDURATION", "#EXT-X-SERVER-CONTROL", "#EXT-X-PART-INF",
              "#EXT-X-MEDIA-SEQUENCE", "#EXT-X-DISCONTINUITY-SEQUENCE", "#EXT-X-SKIP")
    ends = [i + 2 for i, x in enumerate(lines) if x.startswith("#EXTINF")]
    ends += [i + 1 for i, x in enumerate(lines) if x.startswith(header)]
    return lines[max(ends):]


def test_delta_merged_with_previous_full_equals_full() -> None:
    prev = L.render_llhls_playlist(_pl(first=8, n=9, can_skip_until=12.0))
    cur = _pl(can_skip_until=12.0)
    delta = L.render_llhls_playlist(cur, skip=L.SkipMode.YES)
    full = L.render_llhls_playlist(cur)
    assert merge(prev, delta) == _segment_view(m3u8.loads(full))
    assert _tail(delta) == _tail(full)


# -- random histories -----------------------------------------------------------------------------


@st.composite
def histories(draw: st.DrawFn, td: int = 0, pt: float = 0.0) -> tuple[list[L.LLSegment], L.PendingSegment, int, float]:
    td = td or draw(st.sampled_from([1, 2, 4]))
    pt = pt or draw(st.sampled_from([x for x in (0.2, 0.25, 0.333, 0.5, 1.0) if x <= td]))
    n = draw(st.integers(0, 40))
    first = draw(st.integers(0, 1000))
    max_parts = int(td / pt + 1e-9)
    segs: list[L.LLSegment] = []
    t = T0
    disc = draw(st.integers(0, 3))
    for seq in range(first, first + n):
        k = draw(st.integers(1, max_parts))
        durs = [draw(st.floats(0.5 * pt, pt)) for _ in range(k)]
        d = draw(st.booleans()) and draw(st.booleans())
        disc += d
        parts = tuple(L.Part(j, durs[j], f"p{seq}.{j}.m4s", independent=j == 0, gap=draw(st.booleans()) and j > 0)
                      for j in range(k))
        segs.append(L.LLSegment(seq, sum(durs), f"s{seq}.m4s", f"init{disc}.mp4", t, d, disc, parts))
        t += sum(durs)
    k = draw(st.integers(0, max_parts - 1))
    pend = L.PendingSegment(first + n, f"init{disc}.mp4", tuple(L.Part(j, pt, f"p{first + n}.{j}.m4s", j == 0) for j in range(k)),
                            t, False, disc)
    return segs, pend, td, pt


def _build(h: tuple[list[L.LLSegment], L.PendingSegment, int, float], start: int = 0, window: float = 30.0) -> L.LLPlaylist:
    segs, pend, td, pt = h
    return L.LLPlaylist(segs[start:], td, pt, f"p{pend.seq}.{len(pend.parts)}.m4s", pending=pend,
                        can_skip_until=L.skip_advertised(td, window))


@settings(max_examples=200, deadline=None)
@given(histories(), st.data())
def test_invariants_over_random_histories(h: tuple[list[L.LLSegment], L.PendingSegment, int, float], data: st.DataObject) -> None:
    segs, pend, td, pt = h
    start = data.draw(st.integers(0, len(segs)))
    pl = _build(h, start)
    text = L.render_llhls_playlist(pl)
    lines = text.splitlines()
    m = m3u8.loads(text)
    # Monotonic MSN: the complete segments are the window, in order.
    assert [s.uri for s in m.segments if s.uri] == [s.uri for s in segs[start:]]
    assert m.media_sequence == (segs[start].seq if start < len(segs) else pend.seq)
    # Exactly one preload hint, for the part after the last one listed.
    assert sum(x.startswith("#EXT-X-PRELOAD-HINT") for x in lines) == 1
    # Part durations within the part target, parts only within the last 3 target durations.
    end = sum(s.duration for s in segs[start:]) + sum(p.duration for p in pend.parts)
    t = 0.0
    for s in segs[start:]:
        listed = [x for x in lines if x.startswith("#EXT-X-PART:") and f'"p{s.seq}.' in x]
        assert len(listed) == (len(s.parts) if end - t <= 3 * td + 1e-9 else 0)
        t += s.duration
    for p in m.segments[-1].parts if m.segments else []:
        assert p.duration <= m.part_inf.part_target
    for s in m.segments:
        for p in s.parts:
            assert p.duration <= m.part_inf.part_target
    # PDT on every complete segment.
    assert sum(x.startswith("#EXT-X-PROGRAM-DATE-TIME") for x in lines) == len(segs) - start + (1 if pend.parts else 0)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([(1, 0.2), (2, 0.5), (2, 0.333), (4, 1.0)]), st.data())
def test_server_control_identical_across_renditions(settings_: tuple[int, float], data: st.DataObject) -> None:
    """Two renditions of one channel (same settings, different histories and windows) state the same
    EXT-X-SERVER-CONTROL (RFC 8216bis 6.2.4)."""
    td, pt = settings_
    a, b = data.draw(histories(td, pt)), data.draw(histories(td, pt))
    ctl_a = [x for x in lines_of(_build(a, data.draw(st.integers(0, len(a[0]))))) if x.startswith("#EXT-X-SERVER-CONTROL")]
    ctl_b = [x for x in lines_of(_build(b, data.draw(st.integers(0, len(b[0]))))) if x.startswith("#EXT-X-SERVER-CONTROL")]
    assert ctl_a == ctl_b and len(ctl_a) == 1


@settings(max_examples=200, deadline=None)
@given(histories(), st.data())
def test_random_delta_merged_equals_full(h: tuple[list[L.LLSegment], L.PendingSegment, int, float], data: st.DataObject) -> None:
    segs, pend, td, pt = h
    start = data.draw(st.integers(0, len(segs)))
    cur = _build(h, start, window=1e9)
    delta = L.render_llhls_playlist(cur, skip=L.SkipMode.YES)
    full = L.render_llhls_playlist(cur)
    skipped = m3u8.loads(delta).skip.skipped_segments
    event(f"skipped > 0: {skipped > 0}")
    # An earlier full playlist that held the skipped segments: a window starting no later, ending earlier.
    prev_start = data.draw(st.integers(0, start))
    prev_end = data.draw(st.integers(min(start + skipped, len(segs)), len(segs)))
    prev_pend = L.PendingSegment(segs[prev_end].seq if prev_end < len(segs) else pend.seq, "i")
    prev = L.render_llhls_playlist(L.LLPlaylist(segs[prev_start:prev_end], td, pt, "h", pending=prev_pend))
    assert merge(prev, delta) == _segment_view(m3u8.loads(full))
    assert _tail(delta) == _tail(full)


# -- delivery directives --------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "expected"), [
    ({}, L.Directives()),
    ({"_HLS_msn": "12"}, L.Directives(msn=12)),
    ({"_HLS_msn": "012", "_HLS_part": "3"}, L.Directives(msn=12, part=3)),
    ({"_HLS_msn": "12", "_HLS_part": "0", "_HLS_skip": "YES"}, L.Directives(12, 0, L.SkipMode.YES)),
    ({"_HLS_skip": "v2"}, L.Directives(skip=L.SkipMode.V2)),
    ({"_HLS_msn": "5", "_HLS_report": "x", "other": "y"}, L.Directives(msn=5)),
])
def test_parse_directives(query: dict[str, str], expected: L.Directives) -> None:
    assert L.parse_directives(query) == expected
    assert L.parse_directives(query).blocking == (expected.msn is not None)


@pytest.mark.parametrize("query", [
    {"_HLS_part": "1"},
    {"_HLS_msn": ""}, {"_HLS_msn": "-1"}, {"_HLS_msn": "+1"}, {"_HLS_msn": "1.0"}, {"_HLS_msn": " 1"},
    {"_HLS_msn": "0x10"}, {"_HLS_msn": "١٢"}, {"_HLS_msn": str(2**64)},
    {"_HLS_msn": "1", "_HLS_part": "a"}, {"_HLS_msn": "1", "_HLS_part": "-2"},
    {"_HLS_skip": "yes"}, {"_HLS_skip": "NO"}, {"_HLS_skip": ""},
])
def test_bad_directives_are_400(query: dict[str, str]) -> None:
    with pytest.raises(L.DirectiveError) as exc:
        L.parse_directives(query)
    assert exc.value.status == 400 and exc.value.reason


def test_largest_decimal_integer() -> None:
    assert L.parse_directives({"_HLS_msn": str(2**64 - 1)}).msn == 2**64 - 1


@pytest.mark.parametrize(("pt", "limit"), [(0.2, 15), (0.25, 12), (0.333, 9), (0.5, 6), (1.0, 3), (2.0, 3)])
def test_advance_part_limit(pt: float, limit: int) -> None:
    assert L.advance_part_limit(pt) == limit


def test_block_timeout() -> None:
    assert L.block_timeout(2) == 6.0


# Segments 10..19 complete with 4 parts each; segment 20 in progress with 2 parts (0, 1).
P = L.Progress(first_msn=10, last_msn=19, part_target=0.5, target_duration=2, pending_parts=2,
               parts={i: 4 for i in range(10, 20)})


def _ask(msn: int | None, part: int | None = None, p: L.Progress = P) -> L.Verdict:
    return L.admit(L.Directives(msn, part), p)


@pytest.mark.parametrize(("msn", "part", "verdict"), [
    (None, None, L.Verdict.NOW),
    (19, None, L.Verdict.NOW),  # complete
    (20, None, L.Verdict.BLOCK),  # in progress: waits for the whole segment
    (21, None, L.Verdict.BLOCK),  # last + 2
    (3, None, L.Verdict.NOW),  # older than the window
    (3, 7, L.Verdict.NOW),
    (20, 1, L.Verdict.NOW),
    (20, 2, L.Verdict.BLOCK),  # the hinted part
    (19, 3, L.Verdict.NOW),
    (19, 4, L.Verdict.NOW),  # past 19's last part: part 0 of 20, which exists
    (19, 99, L.Verdict.NOW),
    (20, 7, L.Verdict.BLOCK),  # six parts ahead: the Advance Part Limit at 0.5 s
    (21, 3, L.Verdict.BLOCK),  # 2 + 4 = six ahead (nominal four parts a segment)
])
def test_admit(msn: int | None, part: int | None, verdict: L.Verdict) -> None:
    assert _ask(msn, part) is verdict


@pytest.mark.parametrize(("msn", "part"), [(22, None), (22, 0), (100, None), (20, 8), (21, 4)])
def test_too_far_ahead_is_400(msn: int, part: int | None) -> None:
    with pytest.raises(L.DirectiveError):
        _ask(msn, part)


def test_ended_playlist_ignores_directives() -> None:
    ended = L.Progress(10, 19, 0.5, 2, ended=True)
    assert _ask(100, 5, ended) is L.Verdict.NOW
    assert L.is_satisfied(L.Directives(100, 5), ended)


def test_part_past_the_last_means_next_segments_first() -> None:
    # Segment 19 finished with 3 parts; nothing of 20 yet: (19, 3) waits for (20, 0).
    p = L.Progress(10, 19, 0.5, 2, pending_parts=0, parts={19: 3})
    assert _ask(19, 2, p) is L.Verdict.NOW
    assert _ask(19, 3, p) is L.Verdict.BLOCK
    assert _ask(20, 0, p) is L.Verdict.BLOCK
    later = L.Progress(10, 19, 0.5, 2, pending_parts=1, parts={19: 3})
    assert L.is_satisfied(L.Directives(19, 3), later)
    # While 20 is in progress, (20, 5) waits; once 20 completes with 4 parts it means (21, 0).
    done = L.Progress(10, 20, 0.5, 2, pending_parts=0, parts={19: 3, 20: 4})
    assert not L.is_satisfied(L.Directives(20, 5), done)
    assert L.is_satisfied(L.Directives(20, 5), L.Progress(10, 20, 0.5, 2, pending_parts=1, parts={20: 4}))


def test_segment_request_is_satisfied_when_complete() -> None:
    d = L.Directives(20)
    assert not L.is_satisfied(d, P)
    assert L.is_satisfied(d, L.Progress(10, 20, 0.5, 2))


def test_fresh_rendition() -> None:
    p = L.Progress(first_msn=0, last_msn=-1, part_target=0.5, target_duration=2)
    assert _ask(0, 0, p) is L.Verdict.BLOCK
    assert _ask(1, None, p) is L.Verdict.BLOCK
    with pytest.raises(L.DirectiveError):
        _ask(2, None, p)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 50), st.integers(0, 8), st.integers(0, 60), st.one_of(st.none(), st.integers(0, 12)))
def test_blocked_requests_are_eventually_satisfied(last: int, pending: int, msn: int, part: int | None) -> None:
    """A request admitted to block becomes satisfied as parts keep arriving, and never un-satisfies."""
    state = L.Progress(0, last, 0.5, 2, pending_parts=min(pending, 3), parts={i: 4 for i in range(last + 1)})
    d = L.Directives(msn, part)
    try:
        verdict = L.admit(d, state)
    except L.DirectiveError:
        return
    seen = verdict is L.Verdict.NOW
    for _ in range(40):
        if state.pending_parts == 3:
            state = L.Progress(0, state.last_msn + 1, 0.5, 2, 0, {**state.parts, state.last_msn + 1: 4})
        else:
            state = L.Progress(0, state.last_msn, 0.5, 2, state.pending_parts + 1, state.parts)
        now = L.is_satisfied(d, state)
        assert now or not seen
        seen = now
    assert seen
