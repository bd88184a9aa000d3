"""Blocked LL-HLS requests (playlist reloads with `_HLS_msn`, GETs of a hinted part): one waiter set per
(channel, rendition), woken by the commit bus; no thread, no polling.

A request that must wait calls `Blocking.wait(channel, rendition, done, seconds)` with a predicate over
the rendition's state (`read(channel, rendition)`: whatever the caller's snapshot type is). The
commit bus's rendition listener (`Blocking.committed`, registered with
`CommitBus.add_rendition_listener`) marks the rendition's set; once per loop iteration the set reads
the state once and resolves every waiter whose predicate holds with that same state, so a burst of
commits, or 2,000 waiters on one part, costs one store read. A channel change (rendition "": a stream
start or end) wakes every set of the channel. The state a waiter is resolved with was read after the
commit that woke it, so the caller can answer from it directly.

A set holds at most `cap` waiters (`Overloaded` past it: the caller answers 503); a waiter not
satisfied within `seconds` gets `TimeoutError` (503 with Retry-After). A read that finds the
rendition gone (None) resolves every waiter with None (the caller answers 404).

Registration and the caller's own first read happen with no await between them, so a commit cannot
fall between "not yet" and "waiting": its bus notification comes later on the same loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

from edged import metrics

S = TypeVar("S")


class Overloaded(Exception):
    """The rendition already holds `cap` blocked requests."""


class _WaiterSet(Generic[S]):
    __slots__ = ("channel", "rendition", "waiters", "scheduled")

    def __init__(self, channel: str, rendition: str) -> None:
        self.channel = channel
        self.rendition = rendition
        self.waiters: dict[asyncio.Future[S | None], Callable[[S], bool]] = {}  # insertion order: FIFO
        self.scheduled = False


class Blocking(Generic[S]):
    """The waiter sets of one HTTP front."""

    def __init__(self, read: Callable[[str, str], S | None], cap: int) -> None:
        self._read = read
        self.cap = cap
        self._sets: dict[str, dict[str, _WaiterSet[S]]] = {}  # channel → rendition → set
        self._blocked = 0
        self.reads = 0  # state reads done on wakes (tests check one per wake)

    def blocked(self, channel: str | None = None, rendition: str | None = None) -> int:
        """Requests blocked now: all of them, a channel's, or one rendition's."""
        if channel is None:
            return self._blocked
        sets = self._sets.get(channel, {})
        if rendition is not None:
            ws = sets.get(rendition)
            return len(ws.waiters) if ws is not None else 0
        return sum(len(ws.waiters) for ws in sets.values())

    async def wait(self, channel: str, rendition: str, done: Callable[[S], bool], seconds: float,
                   kind: str = "playlist") -> S | None:
        """Until `done(state)` holds for a state read after a commit (returns it), the rendition is gone
        (None), or `seconds` pass (TimeoutError). Raises Overloaded when the set is full."""
        sets = self._sets.setdefault(channel, {})
        ws = sets.get(rendition)
        if ws is None:
            ws = sets[rendition] = _WaiterSet(channel, rendition)
        if len(ws.waiters) >= self.cap:
            if not ws.waiters:
                self._drop(ws)
            raise Overloaded(f"{len(ws.waiters)} requests blocked on {channel}/{rendition}")
        fut: asyncio.Future[S | None] = asyncio.get_running_loop().create_future()
        ws.waiters[fut] = done
        self._blocked += 1
        gauge = metrics.HLS_BLOCKED.labels(kind=kind)
        gauge.inc()
        try:
            async with asyncio.timeout(seconds):
                return await fut
        finally:
            gauge.dec()
            self._blocked -= 1
            ws.waiters.pop(fut, None)
            if not ws.waiters:
                self._drop(ws)

    def _drop(self, ws: _WaiterSet[S]) -> None:
        sets = self._sets.get(ws.channel)
        if sets is not None and sets.get(ws.rendition) is ws and not ws.waiters:
            del sets[ws.rendition]
            if not sets:
                del self._sets[ws.channel]

    def committed(self, channel: str, rendition: str) -> None:
        """The commit bus's rendition listener: something of (channel, rendition) was committed, or
        (rendition "") the channel record changed."""
        sets = self._sets.get(channel)
        if not sets:
            return
        targets = list(sets.values()) if rendition == "" else [sets[rendition]] if rendition in sets else []
        for ws in targets:
            if not ws.scheduled:
                ws.scheduled = True
                asyncio.get_running_loop().call_soon(self._check, ws)

    def _check(self, ws: _WaiterSet[S]) -> None:
        ws.scheduled = False
        if not ws.waiters:
            return
        self.reads += 1
        state = self._read(ws.channel, ws.rendition)
        for fut, done in list(ws.waiters.items()):
            if fut.done():
                continue
            if state is None:
                fut.set_result(None)
                continue
            try:
                ok = done(state)
            except Exception as exc:  # a bug in one predicate fails its request, not the others
                fut.set_exception(exc)
                continue
            if ok:
                fut.set_result(state)
