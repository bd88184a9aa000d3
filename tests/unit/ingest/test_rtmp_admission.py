"""RTMP admission: caps on unauthenticated connections per address and in total, room kept for publishers."""

from __future__ import annotations

from typing import Any

from edged.config import RtmpConfig
from edged.ingest.rtmp_server import Admission, address_key


class FakeConn:
    """What Admission looks at: an address key, its eviction rank, and evict()."""

    def __init__(self, address: str, evictable: bool = True, rank: int = 1) -> None:
        self.address = address
        self.rank = rank if evictable else 0
        self.evicted = ""

    def eviction_rank(self) -> int:
        return 0 if self.evicted else self.rank

    def evict(self, reason: str) -> None:
        self.evicted = reason


def admission(**kwargs: Any) -> Admission:
    base: dict[str, Any] = {"max_connections": 10, "max_unauthenticated": 4, "max_unauthenticated_per_address": 2}
    return Admission(RtmpConfig(**(base | kwargs)))


def test_address_keys() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("") == "-"


def test_per_address_cap_refuses_only_that_address() -> None:
    a = admission()
    conns = [FakeConn("10.0.0.1") for _ in range(2)]
    assert [a.admit(c) for c in conns] == [None, None]
    assert a.admit(FakeConn("10.0.0.1")) == "too_many_from_address"
    assert a.admit(FakeConn("10.0.0.2")) is None
    a.authenticated(conns[0])
    assert a.admit(FakeConn("10.0.0.1")) is None  # a publisher no longer counts against its address
    assert a.open == 4 and a.unauthenticated == 3


def test_total_cap_evicts_the_oldest_stranger_not_waiting_for_a_decision() -> None:
    a = admission()
    deciding = FakeConn("10.0.0.1", evictable=False)  # asked to publish, waiting for the authorizer
    older, newer, last = FakeConn("10.0.0.2"), FakeConn("10.0.0.3"), FakeConn("10.0.0.4")
    for c in (deciding, older, newer, last):
        assert a.admit(c) is None
    newcomer = FakeConn("10.0.0.5")
    assert a.admit(newcomer) is None
    assert older.evicted and not deciding.evicted and not newer.evicted
    assert a.unauthenticated == 4
    a.release(older)  # its task ends
    assert a.open == 4


def test_connections_still_in_the_handshake_go_first() -> None:
    a = admission()
    past = [FakeConn(f"10.0.0.{i}", rank=1) for i in range(3)]
    shaking = FakeConn("10.0.0.9", rank=2)
    for c in (*past, shaking):
        assert a.admit(c) is None
    assert a.admit(FakeConn("10.0.1.1")) is None
    assert shaking.evicted and not any(c.evicted for c in past)


def test_total_cap_refuses_when_nobody_can_be_evicted() -> None:
    a = admission()
    for i in range(4):
        assert a.admit(FakeConn(f"10.0.0.{i}", evictable=False)) is None
    assert a.admit(FakeConn("10.0.0.9")) == "too_many_unauthenticated"


def test_publishers_keep_the_reserved_room() -> None:
    a = admission()
    publishers = [FakeConn(f"10.1.0.{i}") for i in range(6)]
    for p in publishers:
        assert a.admit(p) is None
        a.authenticated(p)
    strangers = [FakeConn(f"10.2.0.{i}") for i in range(4)]
    for s in strangers:
        assert a.admit(s) is None
    assert a.admit(FakeConn("10.3.0.1")) == "too_many_connections"
    assert not any(p.evicted for p in publishers)  # publishers are never evicted
    for p in publishers:
        a.release(p)
    for s in strangers:
        a.release(s)
    assert (a.open, a.unauthenticated) == (0, 0)
    assert a.pending_from("10.2.0.1") == 0
