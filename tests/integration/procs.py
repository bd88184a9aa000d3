"""Real daemon processes for integration tests: started with free ports, stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


def http_get(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, ValueError):
            last = None
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class EdgeProcess:
    """`python -m edged run` on 127.0.0.1 with its own ports and data dir."""

    def __init__(self, data_dir: Path, channels: dict[str, str], extra: list[str] | None = None,
                 nofile: int | None = None, hls_format: str | None = None) -> None:
        self.data_dir = data_dir
        self.nofile = nofile  # RLIMIT_NOFILE (soft = hard) to start edged with; None = inherit ours
        self.rtmp_port = free_port()
        self.http_port = free_port()
        self.relay_port = free_port()  # the relay listener (it runs once the edge is enrolled)
        self.irc_port = free_port()  # chat over IRC/TCP
        self.channels = channels
        self.extra = extra or ["--no-srt", "--no-transcode"]  # passthrough unless a test asks
        if hls_format is not None:  # "ts": a test of MPEG-TS output (the default is CMAF with LL-HLS parts)
            self.extra = [*self.extra, "--hls-format", hls_format]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-edged.log"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def rtmp_url(self, key: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{key}"

    def start(self) -> EdgeProcess:
        args = [sys.executable, "-m", "edged", "run", "--data-dir", str(self.data_dir),
                "--rtmp", f"127.0.0.1:{self.rtmp_port}", "--http", f"127.0.0.1:{self.http_port}",
                "--relay", f"127.0.0.1:{self.relay_port}", "--irc", f"127.0.0.1:{self.irc_port}", *self.extra]
        for name, key in self.channels.items():
            args += ["--channel", f"{name}:{key}"]
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.nofile is not None:
            # the limit is set by a small exec wrapper, not a preexec_fn: that would run in a fork of the test
            # process, where grpc's fork handlers (grpc is loaded by other tests) can abort before the exec
            n = int(self.nofile)
            wrap = (f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({n}, {n})); "
                    "os.execv(sys.argv[1], sys.argv[1:])")
            args = [sys.executable, "-c", wrap, *args]
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        wait_for(lambda: self.alive() and http_get(self.http + "/healthz", 1)[0] == 200, 30, "edged /healthz")
        return self

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"edged exited early; log:\n{self.log()}")
        return True

    def health(self) -> dict[str, Any]:
        return json.loads(http_get(self.http + "/healthz")[2])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return None


def ffmpeg_publish(url: str, seconds: float, size: str = "640x360", rate: int = 30, fmt: str = "flv",
                   extra: list[str] | None = None) -> subprocess.Popen[bytes]:
    """Debian's ffmpeg publishing a test pattern with a tone in real time, as OBS would."""
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
            "-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
            "-g", str(rate), "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", *(extra or []), "-f", fmt, url]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
