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
    text = hls.render_media_playlist(_segs(3, start=10), min_target=2.0)
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
    full = hls.render_media_playlist(segs, min_target=2.0, ended=True).splitlines()
    assert full.index("#EXT-X-DISCONTINUITY") < full.index("3.ts")
    assert full[-1] == "#EXT-X-ENDLIST"
    # Window starting after the discontinuity: it is counted in DISCONTINUITY-SEQUENCE.
    tail = hls.render_media_playlist(segs[4:], min_target=2.0).splitlines()
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1" in tail
    assert "#EXT-X-DISCONTINUITY" not in tail
    # Window starting exactly at it: the tag is kept and not yet counted.
    at = hls.render_media_playlist(segs[3:], min_target=2.0).splitlines()
    assert "#EXT-X-DISCONTINUITY" in at
    assert not any(line.startswith("#EXT-X-DISCONTINUITY-SEQUENCE") for line in at)


@given(st.lists(st.floats(min_value=0.01, max_value=30), min_size=1, max_size=20))
def test_target_duration_bounds_every_segment(durations: list[float]) -> None:
    segs = [hls.MediaSegment(seq=i, duration=d, uri=f"{i}.ts") for i, d in enumerate(durations)]
    text = hls.render_media_playlist(segs, min_target=2.0)
    target = int(next(line for line in text.splitlines() if line.startswith("#EXT-X-TARGETDURATION:")).split(":")[1])
    assert all(int(d + 0.5) <= target for d in durations)


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
