"""`edged` command line: usage and config errors exit 2 with one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=60)


def test_bad_config_is_one_line_exit_2(tmp_path: Path) -> None:
    f = tmp_path / "e.toml"
    f.write_text("[http]\nlisten = 8080\n")
    res = run("run", "--config", str(f), "--data-dir", str(tmp_path / "d"))
    assert res.returncode == 2
    assert res.stderr.strip() == "edged: config: http.listen: expected a string, got 8080"


def test_bad_flags_exit_2(tmp_path: Path) -> None:
    res = run("run", "--channel", "no-colon")
    assert res.returncode == 2 and "expected NAME:STREAMKEY" in res.stderr
    res = run("run", "--rtmp", "localhost")
    assert res.returncode == 2 and "expected HOST:PORT" in res.stderr
    assert run().returncode == 2


def test_port_in_use_exit_1(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = run("run", "--data-dir", str(tmp_path / "d"), "--http", f"127.0.0.1:{port}", "--rtmp",
                  "127.0.0.1:0", "--no-srt")
    assert res.returncode == 1
    assert "cannot start" in res.stderr


def test_hls_format_and_part_flags(tmp_path: Path) -> None:
    from edged.cli import _overrides, build_parser

    args = build_parser().parse_args(["run", "--hls-format", "ts", "--part-seconds", "0.2"])
    assert _overrides(args)["hls"] == {"format": "ts", "part_seconds": 0.2}
    res = run("run", "--data-dir", str(tmp_path / "d"), "--part-seconds", "3")
    assert res.returncode == 2
    assert res.stderr.strip().startswith("edged: config: hls.part_seconds:"), res.stderr
    assert run("run", "--hls-format", "mp4").returncode == 2
