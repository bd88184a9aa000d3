"""When a transcoder falls behind real time, shed rungs from the top; add them back when it catches up.

Pure: the caller measures the backlog (media seconds submitted to the transcoder but not yet encoded
by its slowest active rung) and passes its own monotonic clock. A transcoder that keeps up holds a
backlog of a few frames (decoder delay plus the hand-off queues); one that is slower than real time
grows it without bound, so a threshold on it is a direct test of "behind real time".

- Shed: the backlog is above `shed_backlog`. One rung per decision, the highest still encoded; the
  next one only after `shed_cooldown` and only if the backlog still grew since the last shed (a
  transcoder that is draining gets the chance to finish draining).
- Restore: the backlog has stayed under `restore_backlog` for `restore_hold`. The rung shed last
  (the lowest of those shed) comes back first. A restore that is followed by a shed within
  `flap_window` doubles the hold (up to `max_restore_hold`); a restore that sticks resets it.
The source passthrough is not a rung here: it is never shed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OverloadPolicy:
    shed_backlog: float = 2.0  # s of media behind
    restore_backlog: float = 0.6  # s
    shed_cooldown: float = 2.0  # s between sheds
    restore_hold: float = 6.0  # s the backlog must stay low before a rung comes back
    max_restore_hold: float = 120.0  # s
    flap_window: float = 12.0  # s: a shed this soon after a restore means the restore did not fit

    @classmethod
    def for_segments(cls, segment_seconds: float) -> OverloadPolicy:
        """Thresholds in proportion to the segment length (a rung must fit whole segments)."""
        shed = max(1.5, segment_seconds)
        hold = 3 * segment_seconds
        return cls(shed_backlog=shed, restore_backlog=shed / 3, shed_cooldown=max(1.0, segment_seconds),
                   restore_hold=hold, max_restore_hold=max(60.0, 60 * segment_seconds), flap_window=2 * hold)


@dataclass(frozen=True, slots=True)
class Shed:
    index: int  # position in the ladder, 0 = highest
    backlog: float


@dataclass(frozen=True, slots=True)
class Restore:
    index: int
    backlog: float


class OverloadController:
    """Shed/restore decisions for a ladder of `rungs` renditions, highest first."""

    def __init__(self, rungs: int, policy: OverloadPolicy | None = None) -> None:
        self.policy = policy or OverloadPolicy()
        self.rungs = rungs
        self.shed_count = 0  # rungs [0, shed_count) are shed
        self.hold = self.policy.restore_hold
        self._last_shed: float | None = None
        self._backlog_at_shed = 0.0
        self._last_restore: float | None = None
        self._low_since: float | None = None

    @property
    def active(self) -> range:
        """Indices of the rungs that should be encoded."""
        return range(self.shed_count, self.rungs)

    def observe(self, now: float, backlog: float) -> Shed | Restore | None:
        p = self.policy
        if self._last_restore is not None and now - self._last_restore > p.flap_window:
            self.hold = p.restore_hold  # the last restore stuck
            self._last_restore = None
        if backlog >= p.shed_backlog:
            self._low_since = None
            if self.shed_count >= self.rungs:
                return None
            if self._last_shed is not None and (now - self._last_shed < p.shed_cooldown
                                                or backlog < self._backlog_at_shed):
                return None
            if self._last_restore is not None and now - self._last_restore <= p.flap_window:
                self.hold = min(self.hold * 2, p.max_restore_hold)
                self._last_restore = None
            self.shed_count += 1
            self._last_shed = now
            self._backlog_at_shed = backlog
            return Shed(self.shed_count - 1, backlog)
        if backlog <= p.restore_backlog and self.shed_count > 0:
            if self._low_since is None:
                self._low_since = now
            if now - self._low_since >= self.hold:
                self.shed_count -= 1
                self._low_since = None
                self._last_restore = now
                self._last_shed = None
                return Restore(self.shed_count, backlog)
            return None
        if backlog > p.restore_backlog:
            self._low_since = None
        return None
