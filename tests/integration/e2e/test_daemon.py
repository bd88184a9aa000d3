"""Daemon lifecycle: sd_notify READY/WATCHDOG as systemd sees them, clean stop on SIGTERM."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from tests.integration.procs import EdgeProcess, http_get


def test_notify_ready_watchdog_and_clean_stop(tmp_path: Path) -> None:
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(20)
    os.environ["NOTIFY_SOCKET"] = sock_path
    os.environ["WATCHDOG_USEC"] = "1000000"  # 1 s: pings every 0.5 s
    try:
        edge = EdgeProcess(tmp_path / "edge", {"demo": "k"})
        edge.start()
    finally:
        del os.environ["NOTIFY_SOCKET"], os.environ["WATCHDOG_USEC"]
    try:
        messages = []
        while sum("WATCHDOG=1" in m for m in messages) < 2:
            messages.append(sock.recv(4096).decode())
        ready = next(i for i, m in enumerate(messages) if "READY=1" in m)
        assert ready < next(i for i, m in enumerate(messages) if "WATCHDOG=1" in m)
        # READY=1 came only once the listeners were up: both answer now.
        assert http_get(edge.http + "/healthz")[0] == 200
        socket.create_connection(("127.0.0.1", edge.rtmp_port), timeout=5).close()
        assert edge.stop() == 0
        sock.settimeout(0.5)
        rest = []
        try:
            while True:
                rest.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
        assert any("STOPPING=1" in m for m in rest), rest
    finally:
        edge.stop()
        sock.close()
