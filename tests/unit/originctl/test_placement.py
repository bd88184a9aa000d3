"""Transcode placement on fleet telemetry samples."""

from __future__ import annotations

import json
from pathlib import Path

from originctl.server.placement import GpuView, PlacementNode, capability, place, rank

DATA = Path(__file__).resolve().parents[2] / "data" / "placement" / "fleet.json"


def fleet() -> list[PlacementNode]:
    out = []
    for n in json.loads(DATA.read_text())["nodes"]:
        gpus = tuple(GpuView(**g) for g in n.pop("gpus"))
        out.append(PlacementNode(gpus=gpus, **n))
    return out


def test_node_without_encoder_capacity_is_not_chosen() -> None:
    nodes = {n.id: n for n in fleet()}
    why = capability(nodes["edge-h100"])
    assert isinstance(why, str) and "no NVENC encoder capacity" in why
    p = place("news", "edge-h100", nodes.values())
    assert p.mode == "passthrough" and p.node_id == ""
    assert "no NVENC encoder capacity" in p.reason and "best able node would be edge-l4-free" in p.reason


def test_throttling_and_busy_nodes_are_avoided() -> None:
    nodes = {n.id: n for n in fleet()}
    assert "throttl" in str(capability(nodes["edge-a10-hot"]))
    assert "busy" in str(capability(nodes["edge-l4-busy"]))
    assert capability(nodes["edge-l4-degraded"]) == "node is degraded"
    able = [n.id for n, _ in rank(nodes.values(), ingest="edge-a10-hot")]
    assert able == ["edge-l4-free"]
    p = place("news", "edge-a10-hot", nodes.values(), allow_remote=True)
    assert (p.mode, p.node_id, p.encoder, p.gpu_index) == ("transcode", "edge-l4-free", "nvenc", 1)


def test_ingest_node_preferred_and_least_busy_gpu() -> None:
    p = place("news", "edge-l4-free", fleet())
    assert (p.mode, p.node_id, p.gpu_index) == ("transcode", "edge-l4-free", 1)
    assert p.reason.startswith("ingest node edge-l4-free: GPU 1 encoder 12% busy")


def test_cpu_fallback_and_draining() -> None:
    cpu = PlacementNode(id="cpu", state="healthy", cpu_count=2, cpu_load1=0.3, transcodes=0, cpu_transcode_capacity=1)
    p = place("news", "cpu", [cpu])
    assert (p.mode, p.encoder) == ("transcode", "x264")
    full = PlacementNode(id="cpu", state="healthy", cpu_count=2, cpu_load1=0.3, transcodes=1, cpu_transcode_capacity=1)
    assert place("news", "cpu", [full]).mode == "passthrough"
    drained = PlacementNode(id="cpu", state="healthy", draining=True, cpu_transcode_capacity=4)
    assert "draining" in place("news", "cpu", [drained]).reason


def test_ties_are_deterministic() -> None:
    twins = [PlacementNode(id=i, state="healthy", gpus=(GpuView(0, "L4", 100, 10, 1, 50, 0),)) for i in ("b", "a", "c")]
    first = place("news", "x", twins, allow_remote=True)
    assert first.node_id == "a"
    assert all(place("news", "x", list(reversed(twins)), allow_remote=True) == first for _ in range(3))
