"""Ladder selection: never upscale, never raise the frame rate, drop what the source already is."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.config import DEFAULT_LADDER, Rung
from edged.media.transcode.ladder import (
    SOURCE,
    decimation,
    fit,
    format_ladder,
    parse_ladder,
    parse_rung,
    select,
    snap_fps,
)


def names(src_w: int, src_h: int, fps: float, ladder: tuple[Rung, ...] = DEFAULT_LADDER) -> list[str]:
    return [r.name for r in select(ladder, src_w, src_h, fps)]


def test_default_ladder_for_common_sources() -> None:
    # 1080p60: the 1080p60 rung is the source itself; everything below it is encoded.
    assert names(1920, 1080, 60) == ["720p60", "720p30", "480p30", "360p30", "160p30"]
    # 1080p30: 720p60 cannot raise the rate; it would be 720p30 twice, the native 3000k rung stays.
    assert names(1920, 1080, 30) == ["720p30", "480p30", "360p30", "160p30"]
    assert next(r for r in select(DEFAULT_LADDER, 1920, 1080, 30) if r.name == "720p30").bitrate_kbps == 3000
    assert names(1280, 720, 60) == ["720p30", "480p30", "360p30", "160p30"]
    assert names(1280, 720, 30) == ["480p30", "360p30", "160p30"]
    assert names(640, 360, 30) == ["160p30"]
    assert names(256, 144, 30) == []  # nothing fits below: passthrough only
    # 4K: nothing above 1080p is configured, nothing is upscaled, all rungs are below.
    assert names(3840, 2160, 60)[0] == "1080p60"


def test_sizes_rates_and_decimation() -> None:
    r720 = {r.name: r for r in select(DEFAULT_LADDER, 1280, 720, 30)}
    assert (r720["480p30"].width, r720["480p30"].height) == (854, 480)
    assert (r720["160p30"].width, r720["160p30"].height) == (284, 160)
    pal = {r.name: r for r in select(DEFAULT_LADDER, 1920, 1080, 50)}
    assert set(pal) == {"720p50", "720p25", "480p25", "360p25", "160p25"}  # 50/2, never 50→30 judder
    assert pal["720p25"].decimation == 2 and pal["720p50"].decimation == 1
    ntsc = {r.name: r for r in select(DEFAULT_LADDER, 1920, 1080, 59.94)}
    assert ntsc["480p30"].fps == pytest.approx(29.97) and ntsc["480p30"].decimation == 2
    assert decimation(29.97, 30) == 1 and decimation(60, 30) == 2 and decimation(120, 30) == 4


def test_aspect_ratio_and_portrait() -> None:
    assert fit(1440, 1080, 1280, 720) == (960, 720)  # 4:3 inside a 16:9 box
    assert fit(2560, 1080, 1280, 720) == (1280, 540)  # ultra-wide: the width limits
    assert fit(720, 1280, 854, 480) == (480, 854)  # portrait phone video: the box turns
    portrait = select(DEFAULT_LADDER, 1080, 1920, 30)
    assert [(r.width, r.height) for r in portrait][:2] == [(720, 1280), (480, 854)]


@given(w=st.integers(32, 4096), h=st.integers(32, 4096), fps=st.floats(5, 120))
def test_rules_hold_for_any_source(w: int, h: int, fps: float) -> None:
    w, h = w // 2 * 2, h // 2 * 2
    out = select(DEFAULT_LADDER, w, h, fps)
    for r in out:
        assert r.width <= w and r.height <= h, "never upscale"
        assert r.fps <= fps + 1e-6, "never raise the frame rate"
        assert r.width % 2 == 0 and r.height % 2 == 0
        assert (r.width, r.height, r.decimation) != (w, h, 1), "the source passthrough covers it"
    assert len({r.name for r in out}) == len(out) and SOURCE not in {r.name for r in out}
    keys = [(r.pixels, r.fps) for r in out]
    assert keys == sorted(keys, reverse=True), "highest first"


def test_parse_ladder() -> None:
    assert parse_ladder("default") == DEFAULT_LADDER and parse_ladder("none") == ()
    assert parse_rung("854x480@30:1500") == Rung("480p30", 854, 480, 30.0, 1500)
    assert parse_rung("low=284x160:160k") == Rung("low", 284, 160, 30.0, 160)
    assert parse_ladder(format_ladder(DEFAULT_LADDER)) == DEFAULT_LADDER
    for bad in ("720p", "1280x720@30", "x=1280x720:", "a b=10x10:1", "1280x720@:100"):
        with pytest.raises(ValueError, match="expected"):
            parse_ladder(bad)


def test_snap_fps() -> None:
    assert snap_fps(29.96) == 29.97 and snap_fps(30.2) == 30.0 and snap_fps(59.9) == 59.94
    assert snap_fps(12.5) == 12.5 and snap_fps(0) == 0.0
