"""The link's timing rules: retry delays, keepalive interval, and when a silent controller counts as down."""

from __future__ import annotations

import math
import random

from edged.agent.link import (
    BACKOFF_CAP,
    KEEPALIVE_MAX,
    KEEPALIVE_MIN,
    MIN_SILENCE,
    Backoff,
    keepalive_seconds,
    silence_limit,
)


def test_backoff_grows_to_its_cap_and_a_limit_bounds_it_without_stopping_the_growth() -> None:
    random.seed(7)
    b = Backoff(0.5, BACKOFF_CAP)
    delays = [b.next() for _ in range(12)]
    assert 0.25 <= delays[0] <= 0.5 and max(delays) <= BACKOFF_CAP and delays[-1] >= BACKOFF_CAP / 2
    limited = [b.next(2.0) for _ in range(50)]  # re-attaching after a working link: at most a heartbeat apart
    assert all(1.0 <= d <= 2.0 for d in limited) and len(set(limited)) > 40  # jittered, not in lock-step
    assert b.next() >= BACKOFF_CAP / 2  # the limit lifted: back where the growth got to
    b.reset()
    assert b.next() <= 0.5


def test_keepalive_follows_the_heartbeat_within_bounds() -> None:
    assert keepalive_seconds(2.0) == 4.0
    assert keepalive_seconds(0.3) == KEEPALIVE_MIN and keepalive_seconds(60.0) == KEEPALIVE_MAX


def test_silence_limit_is_three_pulses_and_never_without_pulses() -> None:
    assert silence_limit(2.0) == 6.0
    assert silence_limit(0.1) == MIN_SILENCE
    assert math.isinf(silence_limit(0.0))  # an older controller that sends no pulses: only the stream's end tells
