"""The direct fleet writer says what the prometheus_client collector says, and parses as Prometheus text."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from originctl.fleet_metrics import fleet_exposition
from originctl.metrics import FleetCollector
from originctl.model import Node, NodeInfo, NodeState, report_from_dict

DATA = Path(__file__).resolve().parents[2] / "data" / "nvml"


def fleet() -> list[Node]:
    out = []
    for i, (sample, state) in enumerate([("t4_transcoding.json", NodeState.HEALTHY),
                                         ("2xt4_one_slowdown.json", NodeState.DEGRADED),
                                         ("a100_xid.json", NodeState.DRAINING), ("no_gpu.json", NodeState.LOST)]):
        report = report_from_dict(json.loads((DATA / sample).read_text())["reports"][-1])
        out.append(Node(id=f"nd-{i}", info=NodeInfo(name=f'edge "{i}"\\x', site="ams\nnorth"), state=state,
                        last_report=report, connected=state is not NodeState.LOST, last_report_unix_ms=1_700_000_000_123))
    return out


def samples(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    return {(s.name, tuple(sorted(s.labels.items())), s.value)
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def reference(nodes: list[Node]) -> str:
    collector = FleetCollector()
    collector.snapshot = nodes
    reg = CollectorRegistry(auto_describe=True)
    reg.register(collector)
    return generate_latest(reg).decode()


def test_same_series_as_the_collector() -> None:
    nodes = fleet()
    ours = samples(fleet_exposition(nodes).decode())
    theirs = samples(reference(nodes))
    assert ours == theirs
    assert ("DCGM_FI_DEV_XID_ERRORS", (("Hostname", 'edge "2"\\x'), ("UUID", "GPU-1f8e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"),
                                        ("gpu", "0"), ("modelName", "NVIDIA A100-SXM4-40GB"), ("node", "nd-2")),
            31.0) in ours


def test_controller_render_uses_the_writer_once() -> None:
    from originctl.metrics import ControllerMetrics

    text = ControllerMetrics().render(fleet(), {"originctl_extra": ("an extra gauge", 3.0)}).decode()
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(names) == len(set(names)), "every family once"
    got = samples(text)
    assert samples(fleet_exposition(fleet()).decode()) <= got
    assert ("originctl_extra", (), 3.0) in got
