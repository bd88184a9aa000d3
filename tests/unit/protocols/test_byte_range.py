"""Range header parsing for segments (RFC 9110 14.1.2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.http.hls import Unsatisfiable, parse_byte_range


@pytest.mark.parametrize(("header", "want"), [
    ("bytes=0-187", (0, 187)),
    ("bytes=188-", (188, 999)),
    ("bytes=-100", (900, 999)),
    ("bytes=-5000", (0, 999)),  # a suffix longer than the body: all of it
    ("bytes=900-5000", (900, 999)),  # last clamped to the body
    ("BYTES = 1 - 2", (1, 2)),
    ("bytes=0-0,5-9", None),  # several ranges: the whole 200
    ("bytes=5-1", None),  # invalid: ignored
    ("items=0-1", None),
    ("bytes=", None),
    ("bytes=-", None),
    ("bytes=abc", None),
    ("bytes=" + "9" * 40 + "-", None),
])
def test_ranges(header: str, want: tuple[int, int] | None) -> None:
    assert parse_byte_range(header, 1000) == want


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-2000", "bytes=-0"])
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(Unsatisfiable):
        parse_byte_range(header, 1000)


@given(st.text(max_size=40), st.integers(min_value=1, max_value=10_000))
def test_any_header_gives_a_span_inside_the_body_or_none(header: str, size: int) -> None:
    try:
        span = parse_byte_range(header, size)
    except Unsatisfiable:
        return
    if span is not None:
        first, last = span
        assert 0 <= first <= last < size
