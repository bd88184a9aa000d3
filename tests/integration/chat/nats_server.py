"""Debian's nats-server with JetStream for chat tests: a free port, a temporary store, stopped by PID."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from tests.conftest import free_port, need
from tests.integration.procs import wait_for


class NatsServer:
    """`nats-server -js -p PORT -sd DIR` on 127.0.0.1. `stop()` then `start()` is a restart on the same port
    with the same store (JetStream's streams and dedup state survive it)."""

    def __init__(self, store: Path, port: int | None = None) -> None:
        self.store = store
        self.port = port or free_port()
        self.log_path = store.parent / f"{store.name}-nats-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        self.store.mkdir(parents=True, exist_ok=True)
        mark = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [need("nats-server"), "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(lambda: self._alive() and b"Server is ready" in self.log_path.read_bytes()[mark:], 20,
                 "nats-server ready")
        return self

    def _alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"nats-server exited early; log:\n{self.log()}")
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
