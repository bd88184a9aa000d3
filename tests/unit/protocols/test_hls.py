"""Playlist rendering against RFC 8216."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edged.protocols import hls


def _segs(n: int, start: int = 0, disc_at: int | None = None) -> list[hls.MediaSegment]:
    out = []
    disc_seq = 0
    for i in range(start, start + n):
        d = i == disc_at
        disc_seq += d
        out.append(hls.MediaSegment(seq=i, duration=2.0, uri=f"{i}.ts", discontinuity=d, disc_seq=disc_seq,
                                    program_date_time=1_700_000_000.0 + 2 * i))
    return out


def test_live_media_playlist() -> None:
    text = hls.render_media_playlist(_segs(3, start=10), target_duration=2)
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U"
    assert "#EXT-X-TARGETDURATION:2" in lines
    assert "#EXT-X-MEDIA-SEQUENCE:10" in lines
    assert "#EXT-X-ENDLIST" not in lines
    assert lines.count("#EXTINF:2.000,") == 3
    assert lines[-1] == "12.ts"
    assert "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:40.000Z" in lines
    assert not any("DISCONTINUITY" in line for line in lines)


def test_discontinuity_and_sequence() -> None:
    segs = _segs(6, start=0, disc_at=3)
    full = hls.render_media_playlist(segs, target_duration=2, ended=True).splitlines()
    assert full.index("#EXT-X-DISCONTINUITY") < full.index("3.ts")
    assert full[-1] == "#EXT-X-ENDLIST"
    # Window starting after the discontinuity: it is counted in DISCONTINUITY-SEQUENCE.
    tail = hls.render_media_playlist(segs[4:], target_duration=2).splitlines()
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1" in tail
    assert "#EXT-X-DISCONTINUITY" not in tail
    # Window starting exactly at it: the tag is kept and not yet counted.
    at = hls.render_media_playlist(segs[3:], target_duration=2).splitlines()
    assert "#EXT-X-DISCONTINUITY" in at
    assert not any(line.startswith("#EXT-X-DISCONTINUITY-SEQUENCE") for line in at)


def test_target_duration_is_fixed_whatever_the_window_holds() -> None:
    short = [hls.MediaSegment(seq=i, duration=1.0, uri=f"{i}.ts") for i in range(3)]
    long = [hls.MediaSegment(seq=i, duration=5.9, uri=f"{i}.ts") for i in range(3)]
    target = hls.target_duration(6.0)
    for segs in (short, long, []):
        text = hls.render_media_playlist(segs, target_duration=target)
        assert "#EXT-X-TARGETDURATION:6" in text.splitlines()
    # ceil of max_segment_seconds, and never below what the playlist already advertised
    assert hls.target_duration(6.0) == 6 and hls.target_duration(6.2) == 7 and hls.target_duration(0.5) == 1
    assert hls.target_duration(6.0, advertised=9) == 9 and hls.target_duration(12.0, advertised=9) == 12


@given(st.floats(min_value=0.5, max_value=120), st.floats(min_value=0, max_value=1 / 24))
def test_a_segment_cut_at_the_maximum_fits_the_target(max_seconds: float, overshoot: float) -> None:
    """A forced cut happens at the first frame at or past max_segment_seconds: at most one frame
    (1/24 s here) longer, which still rounds to within the target."""
    assert hls.rounded_duration(max_seconds + overshoot) <= hls.target_duration(max_seconds)


def test_endlist_is_held_for_the_reconnect_grace() -> None:
    def ended(**kw: object) -> bool:
        args: dict[str, object] = {"live": False, "ended_at": 1000.0, "deliberate": False, "now": 1005.0,
                                   "grace": 10.0}
        args.update(kw)
        return hls.playlist_ended(**args)  # type: ignore[arg-type]

    assert not ended()  # lost 5 s ago: it may come back
    assert ended(now=1010.0)  # gone longer than the grace
    assert ended(deliberate=True)  # unpublished: at once
    assert not ended(live=True, deliberate=True)
    assert ended(ended_at=None)  # a record that never said when: ended
    assert ended(grace=0.0)


def test_master_playlist_attributes() -> None:
    text = hls.render_master_playlist([
        hls.Variant(uri="source/index.m3u8", bandwidth=3_000_000, average_bandwidth=2_500_000,
                    codecs="avc1.64001F,mp4a.40.2", width=1280, height=720, frame_rate=30),
    ])
    lines = text.splitlines()
    assert lines[:3] == ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    assert lines[3] == ('#EXT-X-STREAM-INF:BANDWIDTH=3000000,AVERAGE-BANDWIDTH=2500000,'
                        'CODECS="avc1.64001F,mp4a.40.2",RESOLUTION=1280x720,FRAME-RATE=30.000')
    assert lines[4] == "source/index.m3u8"


def test_master_playlist_without_independent_segments() -> None:
    v = [hls.Variant(uri="source/index.m3u8", bandwidth=1)]
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in hls.render_master_playlist(v).splitlines()
    assert "#EXT-X-INDEPENDENT-SEGMENTS" not in hls.render_master_playlist(v, independent=False).splitlines()
