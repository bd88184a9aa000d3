"""Connection guard of the HTTP front: the caps and timeouts aiohttp does not have.

aiohttp waits for a request head as long as its keep-alive timer allows (about an hour by default),
never times out a peer that stops reading a response, and accepts connections until descriptors run
out. The guard tracks every connection of the front and, from one periodic sweep (no per-request
timers), closes

- a connection that has not sent a complete first request head within `http.header_timeout` of the
  accept (idle sockets and slowloris heads dribbled a byte at a time alike);
- a keep-alive connection idle for `http.keepalive_timeout` after its last request, including one
  dribbling its next head (aiohttp's own keep-alive timer stays armed a little later, as a backstop);
- a connection whose write buffer has not moved for `http.send_timeout` (the peer stopped reading),
  dropped at once with what is queued for it.

At accept it refuses a connection beyond `http.max_connections_per_address` from one address (IPv4
address or IPv6 /64) with a bare 503, and enforces a global cap: the smaller of `http.max_connections`
and what the descriptor limit leaves after headroom for the store, ingest and worker pipes. At the cap
the oldest connection that never sent a request (else the oldest idle keep-alive one) is closed to
admit the newcomer, as nginx reuses idle connections; only when every connection is busy is the
newcomer refused. So idle or slow sockets can never lock out a viewer, and descriptors cannot run out.

`ConnectionGuard` is the policy, on plain values (`now` is the caller's monotonic clock), over a
small `Conn` interface; `edged.http.server` adapts aiohttp's protocol to it.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from edged import metrics
from edged.config import HttpConfig
from edged.log import QuietLog

log = logging.getLogger(__name__)

# Descriptors kept back from the HTTP front: the LMDB store, ingest connections, worker pipes, logs,
# and the accept burst asyncio takes before the guard sees it (up to the listen backlog).
MIN_HEADROOM = 256
HEADROOM_FRACTION = 8  # at least 1/8 of the limit
SWEEP_MIN, SWEEP_MAX = 0.05, 1.0  # s between sweeps (a quarter of the shortest timeout, clamped)

_TIMEOUTS = {k: metrics.HTTP_TIMEOUTS.labels(kind=k) for k in ("header", "keepalive", "send")}
_REFUSED = {k: metrics.HTTP_REFUSED.labels(reason=k) for k in ("max_connections", "per_address")}


class Conn(Protocol):
    """What the guard sees of one connection."""

    def waiting(self) -> bool:
        """Waiting for a request head: nothing queued, nothing being handled."""

    def requests(self) -> int:
        """Complete request heads received so far."""

    def backlog(self) -> int:
        """Bytes written to the connection that the kernel has not taken yet."""

    def closing(self) -> bool:
        """Closed or closing (by anyone)."""

    def close(self) -> None:
        """Close gracefully (after what is queued is sent)."""

    def abort(self) -> None:
        """Close at once, dropping what is queued."""


def descriptor_cap(nofile: int) -> int:
    """HTTP connections that fit under a descriptor limit of `nofile`, headroom kept for the rest."""
    headroom = max(min(MIN_HEADROOM, nofile // 2), nofile // HEADROOM_FRACTION)
    return max(1, nofile - headroom)


def address_key(host: str | None) -> str:
    """The per-address bucket of a peer: its IPv4 address, or its IPv6 /64 (one subscriber's prefix)."""
    if not host:
        return "-"
    if ":" not in host:
        return host
    try:
        ip = ipaddress.IPv6Address(host)
    except ValueError:
        return host
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return f"{ipaddress.IPv6Network((int(ip) >> 64 << 64, 64))}"


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int
    per_address: int
    header_timeout: float
    keepalive_timeout: float
    send_timeout: float

    @classmethod
    def from_config(cls, http: HttpConfig, nofile: int) -> Limits:
        """The configured limits, with the connection cap also held under the descriptor limit."""
        return cls(max_connections=min(http.max_connections, descriptor_cap(nofile)),
                   per_address=http.max_connections_per_address, header_timeout=http.header_timeout,
                   keepalive_timeout=http.keepalive_timeout, send_timeout=http.send_timeout)

    @property
    def sweep_interval(self) -> float:
        shortest = min(self.header_timeout, self.keepalive_timeout, self.send_timeout)
        return min(SWEEP_MAX, max(SWEEP_MIN, shortest / 4))


class _Entry:
    __slots__ = ("conn", "key", "peer", "opened", "since", "count", "backlog", "stalled_since", "closed")

    def __init__(self, conn: Conn, key: str, peer: object, now: float) -> None:
        self.conn = conn
        self.key = key
        self.peer = peer  # for log lines only
        self.opened = now
        self.since = now  # last time seen busy or finishing a request
        self.count = 0  # conn.requests() when last seen
        self.backlog = 0  # conn.backlog() when last seen
        self.stalled_since = now  # since when the backlog has not moved
        self.closed = ""  # why the guard closed it (until the connection is lost)


def _peer_text(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class ConnectionGuard:
    """Admission, per-address counts and the periodic timeout sweep; loop-only, no I/O of its own."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._entries: dict[Conn, _Entry] = {}  # insertion order = accept order
        self._per_key: dict[str, int] = {}
        self._fresh: dict[Conn, None] = {}  # admitted and no request head seen yet at the last look, oldest first
        self._idle: deque[Conn] = deque()  # waiting keep-alive connections at the last sweep, oldest first
        self._quiet = QuietLog(log)

    def __len__(self) -> int:
        return len(self._entries)

    def per_address(self, host: str) -> int:
        return self._per_key.get(address_key(host), 0)

    # --- accept and loss ---------------------------------------------------------------------------

    def admit(self, conn: Conn, peer: object, now: float) -> bool:
        """A connection was accepted from `peer` ((host, port, ...) or None): keep it (True) or refuse it."""
        host = peer[0] if isinstance(peer, tuple) and peer else None
        key = address_key(host if isinstance(host, str) else None)
        lim = self.limits
        n = self._per_key.get(key, 0)
        if n >= lim.per_address:
            _REFUSED["per_address"].inc()
            self._quiet.warning("refused_per_address", "http conn=%s refused: %d connections already open from "
                                "this address (http.max_connections_per_address)", _peer_text(peer), n)
            return False
        if len(self._entries) >= lim.max_connections and not self._evict_one():
            _REFUSED["max_connections"].inc()
            self._quiet.warning("refused_max", "http conn=%s refused: %d connections open, all busy (cap %d: "
                                "http.max_connections and the descriptor limit)", _peer_text(peer),
                                len(self._entries), lim.max_connections)
            return False
        self._entries[conn] = _Entry(conn, key, peer, now)
        self._per_key[key] = n + 1
        self._fresh[conn] = None
        metrics.HTTP_CONNECTIONS.inc()
        return True

    def release(self, conn: Conn) -> None:
        """The connection is gone (its descriptor is being closed)."""
        e = self._entries.pop(conn, None)
        if e is None:
            return
        n = self._per_key[e.key] - 1
        if n:
            self._per_key[e.key] = n
        else:
            del self._per_key[e.key]
        self._fresh.pop(conn, None)
        metrics.HTTP_CONNECTIONS.dec()

    def _evict_one(self) -> bool:
        """At the cap: close the oldest connection that never sent a request, else the oldest idle one."""
        while self._fresh:
            conn = next(iter(self._fresh))
            del self._fresh[conn]
            e = self._entries.get(conn)
            if e is not None and not e.closed and conn.requests() == 0 and not conn.closing():
                self._evict(e)
                return True
        while self._idle:
            conn = self._idle.popleft()
            e = self._entries.get(conn)
            if (e is not None and not e.closed and not conn.closing() and conn.waiting()
                    and conn.requests() == e.count):
                self._evict(e)
                return True
        return False

    def _evict(self, e: _Entry) -> None:
        e.closed = "evicted"
        metrics.HTTP_EVICTED.inc()
        self._quiet.info("evicted", "http conn=%s closed: idle at the connection cap (%d), to admit a new "
                         "connection", _peer_text(e.peer), self.limits.max_connections)
        if e.conn.backlog():
            e.conn.abort()  # a close would wait for a peer that may not read
        else:
            e.conn.close()

    # --- the sweep ---------------------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Close what timed out; refresh the idle list that eviction draws from. Call every sweep_interval."""
        lim = self.limits
        idle: deque[Conn] = deque()
        for e in list(self._entries.values()):
            conn = e.conn
            if e.closed == "send":
                continue
            backlog = conn.backlog()
            if backlog == 0 or backlog != e.backlog:
                e.backlog = backlog
                e.stalled_since = now
            elif now - e.stalled_since >= lim.send_timeout:
                e.closed = "send"
                _TIMEOUTS["send"].inc()
                self._quiet.info("send_timeout", "http conn=%s closed: %d bytes unsent and no progress for %gs "
                                 "(http.send_timeout)", _peer_text(e.peer), backlog, lim.send_timeout)
                conn.abort()
                continue
            if e.closed or conn.closing():
                continue
            count = conn.requests()
            if not conn.waiting():  # a request is queued or being handled (a response may be streaming)
                e.since, e.count = now, count
                if count:
                    self._fresh.pop(conn, None)
                continue
            if count == 0:
                if now - e.opened >= lim.header_timeout:
                    self._timeout(e, "header", "no complete request head within %gs (http.header_timeout)",
                                  lim.header_timeout)
                continue
            if count != e.count:
                e.since, e.count = now, count
                self._fresh.pop(conn, None)
            if now - e.since >= lim.keepalive_timeout:
                _TIMEOUTS["keepalive"].inc()
                e.closed = "keepalive"
                log.debug("http conn=%s closed: idle keep-alive for %gs", _peer_text(e.peer), lim.keepalive_timeout)
                conn.close()
            else:
                idle.append(conn)
        self._idle = idle

    def _timeout(self, e: _Entry, kind: str, why: str, value: float) -> None:
        e.closed = kind
        _TIMEOUTS[kind].inc()
        self._quiet.info(f"{kind}_timeout", f"http conn=%s closed: {why}", _peer_text(e.peer), value)
        e.conn.close()
