"""The generated package edgenet/ must be what `make proto` makes from proto/ now (it is never committed)."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def generate(out: Path) -> None:
    """What `make proto` runs (relative paths, from the repo root: they end up in the descriptors)."""
    cmd = [sys.executable, "-m", "grpc_tools.protoc", "-Iproto", f"--python_out={out}", f"--grpc_python_out={out}",
           f"--pyi_out={out}", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "proto").rglob("*.proto"))]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"protoc failed on proto/: {done.stderr}"


def test_edgenet_is_fresh(tmp_path: Path) -> None:
    generated = ROOT / "edgenet"
    if not generated.exists():
        pytest.fail("edgenet/ is missing: run `make proto`")
    generate(tmp_path)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert fresh, "protoc generated nothing"
    stale = [str(p) for p in fresh
             if not (ROOT / p).exists() or not filecmp.cmp(tmp_path / p, ROOT / p, shallow=False)]
    assert not stale, f"edgenet/ is stale ({', '.join(stale)}): run `make proto`"


def test_generated_modules_import_as_packaged() -> None:
    from edgenet.v1 import admin_pb2_grpc, common_pb2, edge_pb2_grpc

    assert common_pb2.DESCRIPTOR.package == "edgenet.v1"
    assert hasattr(edge_pb2_grpc, "EdgeServiceStub") and hasattr(admin_pb2_grpc, "AdminServiceStub")
    assert "edgenet.v1.edge_pb2" in sys.modules
