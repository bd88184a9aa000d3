"""Viewer and egress accounting for reports: distinct client addresses seen recently and bytes sent."""

from __future__ import annotations

import time
from collections import deque

VIEWER_WINDOW = 30.0  # s: a client that fetched nothing for this long is no longer counted
EGRESS_WINDOW = 10.0  # s: egress rate averaged over this
MAX_TRACKED = 200_000  # addresses; beyond this the oldest are forgotten (bounds memory)


class ViewerMeter:
    """Loop-only; counts are approximate by design (NAT hides viewers behind one address)."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._bytes: deque[tuple[float, int]] = deque()

    def async_record(self, client: str | None, nbytes: int) -> None:
        now = time.monotonic()
        if client:
            self._seen.pop(client, None)
            self._seen[client] = now  # dict order = last-seen order
            if len(self._seen) > MAX_TRACKED:
                self._seen.pop(next(iter(self._seen)))
        if nbytes:
            if self._bytes and now - self._bytes[-1][0] < 1.0:
                t, b = self._bytes[-1]
                self._bytes[-1] = (t, b + nbytes)
            else:
                self._bytes.append((now, nbytes))

    def viewers(self) -> int:
        cutoff = time.monotonic() - VIEWER_WINDOW
        while self._seen:
            ip, t = next(iter(self._seen.items()))
            if t >= cutoff:
                break
            del self._seen[ip]
        return len(self._seen)

    def egress_bps(self) -> int:
        now = time.monotonic()
        while self._bytes and now - self._bytes[0][0] > EGRESS_WINDOW:
            self._bytes.popleft()
        return int(sum(b for _, b in self._bytes) * 8 / EGRESS_WINDOW)
