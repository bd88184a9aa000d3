"""The controller-backed authorizer: the controller's answer first, the pushed key table within its bound."""

from __future__ import annotations

import pytest

from edged.agent.authorizer import ControllerAuthorizer, Grant, PlacementOrder, key_sha256
from edged.agent.errors import ControllerUnavailable
from edged.errors import AuthError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Controller:
    """Answers like the controller would from its channel table; `down` makes it unreachable."""

    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys
        self.down = False
        self.asked = 0

    async def __call__(self, key: str, protocol: str, remote: str) -> Grant:
        self.asked += 1
        if self.down:
            raise ControllerUnavailable("connection refused")
        channel = self.keys.get(key)
        if channel is None:
            return Grant(False, reason="unknown stream key")
        return Grant(True, channel, placement=PlacementOrder("passthrough", reason="transcoding is off on the node"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


def table(keys: dict[str, str]) -> list[tuple[str, str]]:
    return [(ch, key_sha256(k)) for k, ch in keys.items()]


async def test_controller_answer_wins_and_carries_placement(clock: Clock) -> None:
    ctl = Controller({"k1": "news"})
    a = ControllerAuthorizer(5.0, ctl, clock=clock)
    a.async_table(table({"k1": "news"}), full=True)
    assert await a.authorize("k1", protocol="rtmp", remote="peer") == "news"
    assert a.placement_for("news") == ("passthrough", "transcoding is off on the node")
    assert a.placement_for("news") is None  # once: the next stream asks again
    with pytest.raises(AuthError, match="unknown stream key"):
        await a.authorize("nope", protocol="rtmp", remote="peer")
    # the table lags a rotation by a few ms: the controller's refusal is what counts
    ctl.keys = {"k2": "news"}
    with pytest.raises(AuthError):
        await a.authorize("k1", protocol="srt", remote="peer")


async def test_lookup_answers_from_the_pushed_table_and_follows_changes(clock: Clock) -> None:
    a = ControllerAuthorizer(5.0, clock=clock)
    assert a.lookup("k1") is None  # no table yet
    a.async_table(table({"k1": "news"}), full=True, more=True)
    assert a.lookup("k1") is None  # a full table counts once complete
    a.async_table(table({"k9": "sports"}), full=False, more=False)
    assert (a.lookup("k1"), a.lookup("k9")) == ("news", "sports")
    a.async_table(table({"k2": "news"}), full=False)  # rotated
    assert (a.lookup("k1"), a.lookup("k2")) == (None, "news")
    a.async_invalidate("sports")  # deleted
    assert a.lookup("k9") is None
    a.async_table(table({"k3": "weather"}), full=True)  # a new full table replaces everything
    assert (a.lookup("k2"), a.lookup("k3")) == (None, "weather")


async def test_outage_is_bridged_for_cache_seconds_then_refused(clock: Clock) -> None:
    ctl = Controller({"k1": "news"})
    a = ControllerAuthorizer(5.0, ctl, clock=clock)
    a.async_link_up(silence_limit=6.0)  # a controller that pulses every 2 s
    a.async_table(table({"k1": "news"}), full=True)
    for _ in range(1800):  # while it is heard from, the table never ages
        clock.now += 2.0
        a.async_heard()
    assert a.fresh()
    clock.now += 2.0
    ctl.down = True
    a.async_link_down()  # seen 2 s after it was last heard from: the bound counts from the last message
    clock.now += 2.9
    assert await a.authorize("k1", protocol="rtmp", remote="peer") == "news"
    assert a.placement_for("news") is None  # no order from the controller: the node decides
    assert a.lookup("k1") == "news"
    with pytest.raises(AuthError, match="not in the key table"):
        await a.authorize("other", protocol="rtmp", remote="peer")
    clock.now += 0.2
    assert not a.fresh() and a.lookup("k1") is None
    with pytest.raises(AuthError, match=r"expired \(nothing heard from the controller for 5\.1 s; "
                                         r"origin.auth_cache_seconds is 5\)"):
        await a.authorize("k1", protocol="rtmp", remote="peer")
    # the link is back: a fresh table restores service at once
    ctl.down = False
    a.async_table(table({"k1": "news"}), full=True)
    assert a.lookup("k1") == "news"
    assert await a.authorize("k1", protocol="rtmp", remote="peer") == "news"


async def test_a_partial_table_is_never_served_and_zero_cache_means_no_bridging(clock: Clock) -> None:
    ctl = Controller({})
    ctl.down = True
    a = ControllerAuthorizer(0.0, ctl, clock=clock)
    with pytest.raises(AuthError, match="no key table from it yet"):
        await a.authorize("k1", protocol="rtmp", remote="peer")
    a.async_table(table({"k1": "news"}), full=True)
    a.async_link_down()
    clock.now += 0.001
    assert a.lookup("k1") is None
    a.async_table(table({"k1": "news"}), full=True, more=True)  # reconnect interrupted mid-table
    a.async_link_down()
    assert a.lookup("k1") is None


async def test_a_failing_controller_call_falls_back_to_the_table(clock: Clock) -> None:
    async def broken(key: str, protocol: str, remote: str) -> Grant:
        raise RuntimeError("bug")

    a = ControllerAuthorizer(5.0, broken, clock=clock)
    a.async_table(table({"k1": "news"}), full=True)
    assert await a.authorize("k1", protocol="rtmp", remote="peer") == "news"


async def test_a_silent_link_counts_from_the_last_message_even_while_it_looks_up(clock: Clock) -> None:
    """A hung controller: its connection stays open, its messages stop. The bound holds without the link's end."""
    a = ControllerAuthorizer(5.0, clock=clock)
    a.async_link_up(silence_limit=6.0)  # Welcome: pulses every 2 s, down after 3 silent ones
    a.async_table(table({"k1": "news"}), full=True)
    for _ in range(100):  # pulses keep a quiet link current
        clock.now += 2.0
        a.async_heard()
    assert a.fresh() and a.lookup("k1") == "news"
    clock.now += 5.0  # the controller hangs; the link still looks up
    assert a.fresh() and a.silence() == 5.0
    clock.now += 0.1
    assert a.fresh()  # within the silence limit a live link still answers ...
    clock.now += 1.0
    assert not a.fresh() and a.lookup("k1") is None  # ... never past max(cache, limit) after the last message
    a.async_heard()  # it wakes up (SIGCONT): heard again, the table answers again
    assert a.lookup("k1") == "news"


async def test_zero_cache_answers_only_while_the_link_is_heard_from(clock: Clock) -> None:
    a = ControllerAuthorizer(0.0, clock=clock)
    a.async_link_up(silence_limit=1.0)
    a.async_table(table({"k1": "news"}), full=True)
    clock.now += 0.9
    assert a.lookup("k1") == "news"  # SRT's handshake callback answers from the table while the link is live
    clock.now += 0.2
    assert a.lookup("k1") is None
    a.async_heard()
    a.async_link_down()
    clock.now += 0.001
    assert a.lookup("k1") is None


async def test_an_answer_from_the_controller_counts_as_heard(clock: Clock) -> None:
    ctl = Controller({"k1": "news"})
    a = ControllerAuthorizer(5.0, ctl, clock=clock)
    a.async_table(table({"k1": "news"}), full=True)
    a.async_link_down()
    clock.now += 4.0
    assert await a.authorize("k1", protocol="rtmp", remote="peer") == "news"  # answered: alive just now
    clock.now += 4.0
    assert a.fresh()


async def test_an_older_controller_without_pulses_ages_the_table_from_the_links_end(clock: Clock) -> None:
    a = ControllerAuthorizer(5.0, clock=clock)
    a.async_link_up()  # Welcome.pulse_seconds == 0: quiet while well
    a.async_table(table({"k1": "news"}), full=True)
    clock.now += 3600
    assert a.fresh()
    a.async_link_down()  # its last sign of life
    clock.now += 5.0
    assert a.lookup("k1") == "news"
    clock.now += 0.1
    assert a.lookup("k1") is None
