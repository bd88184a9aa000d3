"""The appliance's systemd unit: verified by systemd-analyze where it exists."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "edged.service"


def _directives() -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            k, v = line.split("=", 1)
            seen.setdefault(k.strip(), []).append(v.strip())
    return seen


def test_unit_is_an_appliance_service() -> None:
    d = _directives()
    assert d["Type"] == ["notify"]
    assert d["Restart"] == ["on-failure"]
    assert "WatchdogSec" in d and "StateDirectory" in d
    assert d["ProtectSystem"] == ["strict"] and d["NoNewPrivileges"] == ["yes"]
    assert any(v.startswith("/dev/nvidiactl") for v in d["DeviceAllow"])
    assert any("nvidia" in v for v in d["DeviceAllow"])
    assert "--data-dir /var/lib/edged" in d["ExecStart"][0]


def test_descriptor_limit_fits_the_http_cap_with_headroom() -> None:
    from edged.config import HttpConfig
    from edged.http.guard import descriptor_cap

    (limit,) = _directives()["LimitNOFILE"]
    soft, _, hard = limit.partition(":")
    assert soft == (hard or soft)  # one figure: nothing left for edged to raise
    assert descriptor_cap(int(soft)) >= HttpConfig().max_connections  # the configured cap, not the fds, binds


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # The unit names the installed path; point it at an executable that exists here.
    unit = tmp_path / "edged.service"
    unit.write_text(UNIT.read_text().replace("/opt/edged/.venv/bin/edged", sys.executable))
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (res.stdout + res.stderr).splitlines() if "edged.service" in line]
    assert res.returncode == 0 and not problems, res.stdout + res.stderr
