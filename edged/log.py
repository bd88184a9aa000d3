"""Logging set-up: one line per record, key=value context (channel=, conn=, node=) in messages.

`QuietLog` bounds what hostile load can make us write: the first occurrence of each kind of event
in an interval is logged at its level, the rest only counted, and one summary line per interval
says how many were suppressed (python-zeroconf's QuietLogger has the same aim).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable


def setup(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # aiohttp's access log is off (viewers are counted in metrics, not logged one by one)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


DEFAULT_INTERVAL = 10.0  # s between lines of one kind


class QuietLog:
    """Rate-limited logging per kind: at most one line per `interval` for each kind, plus a count.

    `log(kind, level, msg, *args)` writes the line when the kind's interval has passed, prefixed by
    how many lines of that kind were suppressed since the last one; otherwise it only counts (and
    writes the line at DEBUG, so a debug log still shows everything). Kinds are a small fixed set
    chosen by the caller (a reason, never a peer address), so the table stays bounded.
    """

    __slots__ = ("_logger", "_interval", "_clock", "_next", "_suppressed")

    def __init__(self, logger: logging.Logger, interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._next: dict[str, float] = {}  # kind -> monotonic time before which lines are suppressed
        self._suppressed: dict[str, int] = {}

    def log(self, kind: str, level: int, msg: str, *args: object) -> bool:
        """Log or count one event of `kind`; True when the line was written at `level`."""
        now = self._clock()
        if now < self._next.get(kind, float("-inf")):
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            if self._logger.isEnabledFor(logging.DEBUG):
                self._logger.debug(msg, *args)
            return False
        self._next[kind] = now + self._interval
        skipped = self._suppressed.pop(kind, 0)
        if skipped:
            msg = f"{msg} (and {skipped} more like it in the last {self._interval:g}s)"
        self._logger.log(level, msg, *args)
        return True

    def warning(self, kind: str, msg: str, *args: object) -> bool:
        return self.log(kind, logging.WARNING, msg, *args)

    def info(self, kind: str, msg: str, *args: object) -> bool:
        return self.log(kind, logging.INFO, msg, *args)

    def suppressed(self, kind: str) -> int:
        """Events of `kind` counted but not written since its last line."""
        return self._suppressed.get(kind, 0)
