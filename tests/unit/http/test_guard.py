"""The HTTP connection guard's policy on plain values: caps, per-address buckets, eviction, timeouts."""

from __future__ import annotations

import pytest

from edged.config import HttpConfig
from edged.http.guard import ConnectionGuard, Limits, address_key, descriptor_cap


class FakeConn:
    """A connection as the guard sees it; the test moves it between states by hand."""

    def __init__(self) -> None:
        self.is_waiting = True
        self.count = 0
        self.queued = 0
        self.closed = ""

    def waiting(self) -> bool:
        return self.is_waiting and not self.closed

    def requests(self) -> int:
        return self.count

    def backlog(self) -> int:
        return self.queued

    def closing(self) -> bool:
        return bool(self.closed)

    def close(self) -> None:
        self.closed = "close"

    def abort(self) -> None:
        self.closed = "abort"
        self.queued = 0

    def served(self) -> None:
        """One request arrived and its response went out; back to waiting."""
        self.count += 1


def limits(**kw: float) -> Limits:
    base = {"max_connections": 100, "per_address": 10, "header_timeout": 10.0, "keepalive_timeout": 30.0,
            "send_timeout": 20.0}
    base.update(kw)
    return Limits(**base)  # type: ignore[arg-type]


def peer(host: str = "10.0.0.1", port: int = 40000) -> tuple[str, int]:
    return (host, port)


def test_descriptor_cap_keeps_headroom() -> None:
    assert descriptor_cap(65536) == 65536 - 8192
    assert descriptor_cap(1024) == 1024 - 256
    assert descriptor_cap(256) == 128
    assert descriptor_cap(2) == 1
    for n in (64, 300, 1024, 4096, 1 << 20):
        assert 0 < descriptor_cap(n) <= n - min(256, n // 2)


def test_cap_is_the_smaller_of_config_and_descriptors() -> None:
    assert Limits.from_config(HttpConfig(max_connections=16384), 1024).max_connections == 768
    assert Limits.from_config(HttpConfig(max_connections=500), 65536).max_connections == 500


def test_address_buckets() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key(None) == "-"


def test_per_address_cap_refuses_only_that_address() -> None:
    g = ConnectionGuard(limits(per_address=3))
    conns = [FakeConn() for _ in range(4)]
    assert [g.admit(c, peer(port=i), 0.0) for i, c in enumerate(conns)] == [True, True, True, False]
    assert g.admit(FakeConn(), peer("10.0.0.2"), 0.0)
    assert g.per_address("10.0.0.1") == 3
    g.release(conns[0])
    assert g.per_address("10.0.0.1") == 2
    assert g.admit(FakeConn(), peer(), 0.0)
    g.release(conns[3])  # never admitted: nothing changes
    assert g.per_address("10.0.0.1") == 3 and len(g) == 4


def test_at_the_cap_a_never_used_connection_makes_room() -> None:
    g = ConnectionGuard(limits(max_connections=3, per_address=100))
    viewer, idle1, idle2 = FakeConn(), FakeConn(), FakeConn()
    viewer.served()
    for i, c in enumerate((viewer, idle1, idle2)):
        assert g.admit(c, peer(port=i), 0.0)
    newcomer = FakeConn()
    assert g.admit(newcomer, peer(port=9), 1.0)
    assert idle1.closed == "close" and not viewer.closed and not idle2.closed  # the oldest unused one
    assert len(g) == 4  # idle1 still holds its descriptor until the loss is reported
    g.release(idle1)
    assert g.admit(FakeConn(), peer(port=10), 1.0)
    assert idle2.closed


def test_at_the_cap_with_every_connection_busy_the_newcomer_is_refused() -> None:
    g = ConnectionGuard(limits(max_connections=2, per_address=100))
    a, b = FakeConn(), FakeConn()
    for c in (a, b):
        assert g.admit(c, peer(), 0.0)
        c.served()
        c.is_waiting = False  # a request is being handled
    g.sweep(0.5)
    assert not g.admit(FakeConn(), peer(), 1.0)
    assert not a.closed and not b.closed


def test_at_the_cap_idle_keepalive_goes_after_unused_ones() -> None:
    g = ConnectionGuard(limits(max_connections=2, per_address=100))
    a, b = FakeConn(), FakeConn()
    for c in (a, b):
        assert g.admit(c, peer(), 0.0)
        c.served()
    g.sweep(1.0)  # both idle after a request: the eviction list
    b.served()  # b was active since
    assert g.admit(FakeConn(), peer(), 2.0)
    assert a.closed and not b.closed


def test_header_timeout_counts_from_the_accept() -> None:
    g = ConnectionGuard(limits(header_timeout=10.0))
    slow, fine = FakeConn(), FakeConn()
    g.admit(slow, peer(), 0.0)
    g.admit(fine, peer(), 0.0)
    fine.served()
    g.sweep(9.0)
    assert not slow.closed
    g.sweep(10.0)
    assert slow.closed == "close" and not fine.closed


def test_keepalive_counts_from_the_last_request() -> None:
    g = ConnectionGuard(limits(keepalive_timeout=30.0))
    c = FakeConn()
    g.admit(c, peer(), 0.0)
    c.served()
    g.sweep(1.0)
    c.served()
    g.sweep(25.0)  # last seen active now
    g.sweep(54.0)
    assert not c.closed
    g.sweep(55.0)
    assert c.closed == "close"


def test_a_long_request_is_not_idle() -> None:
    g = ConnectionGuard(limits(header_timeout=1.0, keepalive_timeout=2.0))
    c = FakeConn()
    g.admit(c, peer(), 0.0)
    c.served()
    c.is_waiting = False  # e.g. a blocking playlist request, or a response streaming out
    for t in range(1, 100):
        g.sweep(float(t))
    assert not c.closed


def test_send_timeout_needs_a_backlog_that_does_not_move() -> None:
    g = ConnectionGuard(limits(send_timeout=20.0))
    slow, stuck = FakeConn(), FakeConn()
    for c in (slow, stuck):
        g.admit(c, peer(), 0.0)
        c.served()
        c.is_waiting = False
        c.queued = 100_000
    for t in range(0, 40, 5):
        slow.queued -= 1000  # a slow reader, but reading
        g.sweep(float(t))
    assert not slow.closed
    assert stuck.closed == "abort"


def test_a_closing_connection_that_stops_flushing_is_aborted() -> None:
    g = ConnectionGuard(limits(keepalive_timeout=5.0, send_timeout=20.0))
    c = FakeConn()
    g.admit(c, peer(), 0.0)
    c.served()
    c.queued = 5000  # the last response, unread by the peer
    g.sweep(1.0)
    g.sweep(6.0)
    assert c.closed == "close"  # keep-alive expired; the close waits for the flush
    g.sweep(30.0)
    assert c.closed == "abort"


@pytest.mark.parametrize(("timeouts", "interval"), [((10.0, 30.0, 30.0), 1.0), ((1.0, 2.0, 2.0), 0.25),
                                                   ((0.1, 0.1, 0.1), 0.05)])
def test_sweep_interval_is_a_quarter_of_the_shortest_timeout(timeouts: tuple[float, float, float],
                                                             interval: float) -> None:
    lim = limits(header_timeout=timeouts[0], keepalive_timeout=timeouts[1], send_timeout=timeouts[2])
    assert lim.sweep_interval == interval
