"""originctl_* and dcgm-exporter-named gauges rendered from a fleet snapshot."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from originctl.metrics import ControllerMetrics
from originctl.model import Node, NodeInfo, NodeState, report_from_dict

DATA = Path(__file__).resolve().parents[2] / "data" / "nvml"


def node(node_id: str, sample: str, state: NodeState) -> Node:
    report = report_from_dict(json.loads((DATA / sample).read_text())["reports"][0])
    return Node(id=node_id, info=NodeInfo(name=f"edge-{node_id}", site="ams"), state=state, last_report=report,
                connected=state is not NodeState.LOST, last_report_unix_ms=1_700_000_000_000)


def samples(text: bytes) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_fleet_gauges() -> None:
    m = ControllerMetrics()
    m.reports.inc(3)
    m.report_delay.observe(0.004)
    fleet = [node("a", "t4_transcoding.json", NodeState.HEALTHY), node("b", "2xt4_one_slowdown.json",
                                                                          NodeState.DEGRADED),
             node("c", "no_gpu.json", NodeState.LOST)]
    s = samples(m.render(fleet))
    by_state = {labels["state"]: v for labels, v in s["originctl_nodes"]}
    assert by_state == {"healthy": 1, "degraded": 1, "unhealthy": 0, "draining": 0, "lost": 1}
    assert s["originctl_nodes_connected"] == [({}, 2.0)]
    assert s["originctl_reports_received_total"] == [({}, 3.0)]
    util = {(labels["node"], labels["gpu"]): v for labels, v in s["DCGM_FI_DEV_GPU_UTIL"]}
    assert util == {("a", "0"): 38, ("b", "0"): 38, ("b", "1"): 38}  # the lost node has no GPU series
    labels, value = s["DCGM_FI_DEV_FB_USED"][0]
    assert labels["modelName"] == "Tesla T4" and labels["UUID"].startswith("GPU-") and labels["Hostname"] == "edge-a"
    assert value == 2_361_393_152 / 1024 / 1024
    assert ({"node": "a", "gpu": "0", "UUID": labels["UUID"], "modelName": "Tesla T4", "Hostname": "edge-a",
             "codec": "h264"}, 0.29) in s["originctl_gpu_encoder_capacity_ratio"]
    assert any(v == 1 and lab["state"] == "degraded" and lab["node"] == "b" for lab, v in s["originctl_node_state"])
    assert ({"node": "a", "Hostname": "edge-a", "site": "ams"}, 412) in s["originctl_node_viewers"]
    assert s["originctl_report_delay_seconds_count"] == [({}, 1.0)]


def test_each_controller_has_its_own_registry() -> None:
    a, b = ControllerMetrics(), ControllerMetrics()
    a.reports.inc()
    assert samples(b.render([]))["originctl_reports_received_total"] == [({}, 0.0)]
