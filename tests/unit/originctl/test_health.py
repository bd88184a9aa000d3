"""Health rules on recorded telemetry (tests/data/nvml/*.json) and on the silence/drain rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from originctl.model import GpuStatus, NodeState, Report, report_from_dict
from originctl.server import health
from originctl.server.health import Health, HealthPolicy

DATA = Path(__file__).resolve().parents[2] / "data" / "nvml"
POLICY = HealthPolicy()


def load(name: str) -> tuple[list[Report], list[str]]:
    d = json.loads((DATA / name).read_text())
    return [report_from_dict(r) for r in d["reports"]], d["expect"]


def run(reports: list[Report], h: Health | None = None, policy: HealthPolicy = POLICY) -> list[Health]:
    h = h or Health()
    out = []
    for r in reports:
        h = health.observe(h, r, policy)
        out.append(h)
    return out


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.json")))
def test_recorded_sequences_follow_the_rules(name: str) -> None:
    reports, expect = load(name)
    states = [h.state.value for h in run(reports)]
    assert states == expect


def test_sw_power_cap_counts_only_when_the_policy_says_so() -> None:
    reports, _ = load("t4_transcoding.json")
    strict = HealthPolicy(throttle_mask=health.DEFAULT_THROTTLE_MASK | 0x4)
    states = [h.state for h in run(reports, policy=strict)]
    assert states[0] is NodeState.DEGRADED  # report 1 has 0x4 set
    assert "sw-power-cap" in run(reports, policy=strict)[0].reason


def test_reasons_name_the_gpu_and_the_cause() -> None:
    reports, _ = load("2xt4_one_slowdown.json")
    (h,) = run(reports)
    assert "GPU 1 (Tesla T4) throttling: sw-power-cap" not in h.reason  # 0x4 is not in the default mask
    assert "GPU 1 (Tesla T4) throttling: hw-slowdown" in h.reason
    assert "GPU 0" not in h.reason


def test_rising_counters_are_named_with_values() -> None:
    reports, _ = load("a10_ecc_rising.json")
    assert "uncorrected ECC errors rose from 0 to 2" in run(reports)[2].reason
    reports, _ = load("a100_xid.json")
    assert "XID errors rose from 0 to 1 (last XID 13)" in run(reports)[2].reason


def test_nvml_failure_is_unhealthy_with_the_error() -> None:
    reports, _ = load("nvml_failure.json")
    h = run(reports)[1]
    assert h.state is NodeState.UNHEALTHY
    assert "GPU is lost" in h.state_reason


def test_silence_for_three_intervals_is_lost() -> None:
    reports, _ = load("no_gpu.json")
    h = run(reports[:1])[-1]
    assert health.silence(h, 5.9, 2.0, POLICY).state is NodeState.HEALTHY
    lost = health.silence(h, 6.0, 2.0, POLICY)
    assert lost.state is NodeState.LOST
    assert lost.state_reason == "no report for 6.0 s (3 intervals of 2 s)"
    assert health.silence(lost, 60.0, 2.0, POLICY) is lost  # no repeated transition


def test_back_from_lost_needs_good_reports_in_a_row() -> None:
    reports, _ = load("no_gpu.json")
    h = run(reports[:1])[-1]
    h = health.silence(h, 10.0, 2.0, POLICY)
    states = [x.state for x in run(reports * 2, h)]
    assert states[:3] == [NodeState.DEGRADED, NodeState.DEGRADED, NodeState.HEALTHY]
    assert "2 more good report(s)" in run(reports[:1], h)[0].reason


def test_back_from_lost_with_a_bad_report_takes_the_bad_verdict() -> None:
    bad = Report(gpu_status=GpuStatus.NVML_ERROR, gpu_error="boom")
    h = health.silence(run([Report()])[-1], 10.0, 2.0, POLICY)
    assert health.observe(h, bad, POLICY).state is NodeState.UNHEALTHY


def test_first_report_ever_is_taken_at_face_value() -> None:
    assert Health().state is NodeState.LOST
    assert run([Report()])[0].state is NodeState.HEALTHY


def test_goodbye_is_lost_with_the_reason() -> None:
    h = health.goodbye(run([Report()])[-1], "edged stopping")
    assert h.state is NodeState.LOST
    assert h.state_reason == "edge disconnected: edged stopping"


def test_draining_overrides_health_but_not_lost() -> None:
    h = health.set_draining(run([Report()])[-1], True)
    assert h.state is NodeState.DRAINING
    assert health.silence(h, 100.0, 1.0, POLICY).state is NodeState.LOST
    assert health.set_draining(h, False).state is NodeState.HEALTHY


def test_recover_reports_of_one_means_no_hysteresis() -> None:
    reports, _ = load("t4_flapping_slowdown.json")
    states = [h.state.value for h in run(reports, policy=HealthPolicy(recover_reports=1))]
    assert states == ["healthy", "degraded", "healthy", "degraded", "healthy", "healthy", "healthy"]


def test_restored_state_keeps_draining_and_lost() -> None:
    assert health.restored(NodeState.LOST, "x", False, True).state is NodeState.LOST
    assert health.restored(NodeState.DEGRADED, "hot", True, True).state is NodeState.DRAINING
    r = health.restored(NodeState.DRAINING, "drain", True, True)
    assert r.state is NodeState.DRAINING and health.set_draining(r, False).state is NodeState.HEALTHY
