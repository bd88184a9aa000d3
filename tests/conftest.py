"""Shared fixtures: free ports, generated media, and process helpers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

# Tests send traffic only to loopback: every edged/originctl started by a test announces and
# browses mDNS on 127.0.0.1 alone (the daemons read this; subprocesses inherit it).
os.environ.setdefault("EDGENET_MDNS_INTERFACES", "127.0.0.1")


_HANDED_OUT: set[tuple[int, int]] = set()  # (kind, port) given to a test in this process


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port that was free a moment ago on 127.0.0.1 (TCP by default, UDP with SOCK_DGRAM), and not one
    handed out before in this test process (the kernel may offer a just-closed port again: an edge got
    the same number for two of its listeners once)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if (kind, port) not in _HANDED_OUT:
            _HANDED_OUT.add((kind, port))
            return port
    raise RuntimeError("no fresh port on 127.0.0.1 after 100 tries")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is required (make test installs it with apt-get)")
    return path


def make_media(out: Path, *, size: str, rate: int, seconds: int, fmt: str) -> Path:
    """A test pattern with a tone (H.264, GOP 1 s, + 48 kHz AAC) made by Debian's ffmpeg."""
    subprocess.run(
        [need("ffmpeg"), "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds), "-c:v", "libx264",
         "-preset", "ultrafast", "-g", str(rate), "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", fmt, str(out)],
        check=True, timeout=60,
    )
    return out


@pytest.fixture(scope="session")
def sample_flv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s of 640x360 30 fps H.264 (GOP 1 s) + 48 kHz AAC in FLV."""
    return make_media(tmp_path_factory.mktemp("media") / "sample.flv", size="640x360", rate=30, seconds=6, fmt="flv")
