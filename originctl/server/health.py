"""Node health: pure rules with hysteresis, fed with reports and silences. No clocks, no I/O.

A node's state is one of healthy, degraded, unhealthy, draining, lost (model.NodeState), derived from
three independent parts of `Health`:

* `level` (healthy < degraded < unhealthy): the verdict on the node's own reports, with hysteresis.
  Per report (`verdict`):
    - NVML failed while a driver is present                         → unhealthy (unfit for transcoding)
    - a GPU throttles for a reason in `policy.throttle_mask`       → degraded
      (hardware slowdown, software or hardware thermal slowdown, power brake; not the software power
      cap, which is a GPU working at its power limit as designed; add it to the mask to count it)
    - a GPU's uncorrected ECC or critical XID counter rose since the previous report → degraded
      (corrected ECC errors are what ECC is for; a counter that went down was reset, not a rise)
    - otherwise, including "no GPU" (no driver: the node serves without one) → healthy
  A worse verdict applies at once. A better one applies only after `policy.recover_reports`
  consecutive better reports, and then to the worst verdict among them, so a flapping GPU stays
  degraded.
* `lost`: set when no report came for `policy.lost_after_intervals` heartbeat intervals, or the edge
  said goodbye; cleared by the next report. A node coming back is degraded until `recover_reports`
  good reports have arrived (a node reporting for the first time is judged by its first report).
* `draining`: set and cleared by an operator.

The state is lost if lost, else draining if draining, else the level.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from originctl.model import GpuStatus, NodeState, Report

# NVML clocks event reasons (nvml.h, nvmlClocksEventReason*; formerly nvmlClocksThrottleReason*).
CLOCKS_EVENT_REASONS: dict[int, str] = {
    0x1: "gpu-idle",
    0x2: "applications-clocks-setting",
    0x4: "sw-power-cap",
    0x8: "hw-slowdown",
    0x10: "sync-boost",
    0x20: "sw-thermal-slowdown",
    0x40: "hw-thermal-slowdown",
    0x80: "hw-power-brake-slowdown",
    0x100: "display-clock-setting",
}
DEFAULT_THROTTLE_MASK = 0x8 | 0x20 | 0x40 | 0x80

_SEVERITY = {NodeState.HEALTHY: 0, NodeState.DEGRADED: 1, NodeState.UNHEALTHY: 2}


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    lost_after_intervals: float = 3.0  # heartbeat intervals without a report before a node is lost
    recover_reports: int = 3  # consecutive better reports before a node's level improves
    throttle_mask: int = DEFAULT_THROTTLE_MASK


@dataclass(frozen=True, slots=True)
class GpuCounters:
    uuid: str
    ecc_uncorrected: int | None
    xid_errors: int | None


@dataclass(frozen=True, slots=True)
class Health:
    level: NodeState = NodeState.HEALTHY
    reason: str = ""
    lost: bool = True
    lost_reason: str = "enrolled; not connected yet"
    draining: bool = False
    reported: bool = False  # has this node ever reported (across restarts of the controller)
    streak: int = 0  # consecutive reports better than `level`
    streak_worst: NodeState = NodeState.HEALTHY
    counters: tuple[GpuCounters, ...] = ()

    @property
    def state(self) -> NodeState:
        if self.lost:
            return NodeState.LOST
        if self.draining:
            return NodeState.DRAINING
        return self.level

    @property
    def state_reason(self) -> str:
        if self.lost:
            return self.lost_reason
        if self.draining:
            return "draining: set by an operator" + (f" (node is {self.level.value}: {self.reason})"
                                                     if self.level is not NodeState.HEALTHY else "")
        return self.reason


def throttle_names(mask: int) -> list[str]:
    return [name for bit, name in CLOCKS_EVENT_REASONS.items() if mask & bit] or [hex(mask)]


def verdict(report: Report, previous: tuple[GpuCounters, ...], policy: HealthPolicy) -> tuple[NodeState, str]:
    """The verdict on one report alone (plus the previous counters), with its reasons."""
    if report.gpu_status is GpuStatus.NVML_ERROR:
        return NodeState.UNHEALTHY, f"NVML failed: {report.gpu_error or 'unknown error'}"
    reasons: list[str] = []
    prev = {c.uuid: c for c in previous}
    for gpu in report.gpus:
        label = f"GPU {gpu.index} ({gpu.name or gpu.uuid})"
        throttling = gpu.clocks_event_reasons & policy.throttle_mask
        if throttling:
            reasons.append(f"{label} throttling: {', '.join(throttle_names(throttling))} at {gpu.temperature_c} C, "
                           f"{gpu.power_w:.0f} W")
        before = prev.get(gpu.uuid)
        if before is None:
            continue
        if _rose(before.ecc_uncorrected, gpu.ecc_uncorrected_volatile):
            reasons.append(f"{label} uncorrected ECC errors rose from {before.ecc_uncorrected} to "
                           f"{gpu.ecc_uncorrected_volatile}")
        if _rose(before.xid_errors, gpu.xid_errors):
            last = f" (last XID {gpu.last_xid})" if gpu.last_xid is not None else ""
            reasons.append(f"{label} critical XID errors rose from {before.xid_errors} to {gpu.xid_errors}{last}")
    if reasons:
        return NodeState.DEGRADED, "; ".join(reasons)
    if report.gpu_status is GpuStatus.NO_GPU:
        return NodeState.HEALTHY, "reporting; no GPU" + (f" ({report.gpu_error})" if report.gpu_error else "")
    return NodeState.HEALTHY, f"reporting; {len(report.gpus)} GPU(s) fine"


def _rose(before: int | None, now: int | None) -> bool:
    return before is not None and now is not None and now > before


def _counters(report: Report) -> tuple[GpuCounters, ...]:
    return tuple(GpuCounters(g.uuid, g.ecc_uncorrected_volatile, g.xid_errors) for g in report.gpus)


def _worse(a: NodeState, b: NodeState) -> NodeState:
    return a if _SEVERITY[a] >= _SEVERITY[b] else b


def observe(h: Health, report: Report, policy: HealthPolicy) -> Health:
    """Fold one report into the node's health."""
    level, why = verdict(report, h.counters, policy)
    counters = _counters(report)
    if not h.reported:  # first report ever: nothing to distrust yet
        return replace(h, level=level, reason=why, lost=False, reported=True, streak=0, counters=counters)
    if h.lost:  # back after a silence: on probation unless this report is already bad
        if _SEVERITY[level] >= _SEVERITY[NodeState.DEGRADED]:
            return replace(h, level=level, reason=why, lost=False, streak=0, counters=counters)
        need = policy.recover_reports
        if need <= 1:
            return replace(h, level=level, reason=why, lost=False, streak=0, counters=counters)
        return replace(h, level=NodeState.DEGRADED, lost=False, streak=1, streak_worst=level, counters=counters,
                       reason=f"reporting again; {need - 1} more good report(s) before healthy")
    if _SEVERITY[level] >= _SEVERITY[h.level]:  # same or worse: takes effect now
        return replace(h, level=level, reason=why, streak=0, counters=counters)
    streak = h.streak + 1
    worst = level if h.streak == 0 else _worse(h.streak_worst, level)
    if streak >= policy.recover_reports:
        return replace(h, level=worst, streak=0, counters=counters,
                       reason=f"{streak} consecutive better reports; {why}" if worst is level else why)
    return replace(h, streak=streak, streak_worst=worst, counters=counters)


def silence(h: Health, silent_for: float, interval: float, policy: HealthPolicy) -> Health:
    """No report for `silent_for` seconds from a node that reports every `interval` seconds."""
    if h.lost or silent_for < policy.lost_after_intervals * interval:
        return h
    return replace(h, lost=True, streak=0,
                   lost_reason=f"no report for {silent_for:.1f} s ({policy.lost_after_intervals:g} intervals "
                               f"of {interval:g} s)")


def goodbye(h: Health, reason: str) -> Health:
    """The edge closed its connection on purpose."""
    return replace(h, lost=True, streak=0, lost_reason=f"edge disconnected: {reason or 'shutting down'}")


def set_draining(h: Health, draining: bool) -> Health:
    return replace(h, draining=draining)


def restored(state: NodeState, reason: str, draining: bool, reported: bool) -> Health:
    """Health as persisted before a controller restart (counters and streaks start afresh)."""
    if state is NodeState.LOST:
        return Health(lost=True, lost_reason=reason, draining=draining, reported=reported)
    level = state if state in _SEVERITY else NodeState.HEALTHY
    return Health(level=level, reason=reason, lost=False, draining=draining, reported=reported)
