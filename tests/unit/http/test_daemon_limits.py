"""Daemon start-up bits the HTTP front relies on: the descriptor limit and the loop's exception handler."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import subprocess
import sys

import pytest

from edged import metrics
from edged.app import install_loop_exception_handler

REPO_ROOT = __file__.rsplit("/tests/", 1)[0]


def test_soft_descriptor_limit_is_raised_to_the_hard_one() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 64:
        pytest.fail(f"hard RLIMIT_NOFILE {hard} leaves nothing to raise")
    # The child lowers its own soft limit first: a preexec_fn would run in a fork of this process, where
    # grpc's fork handlers (grpc is loaded by earlier tests) can abort before the exec.
    code = ("import logging, resource; resource.setrlimit(resource.RLIMIT_NOFILE, (64, "
            f"{hard if hard != resource.RLIM_INFINITY else 'resource.RLIM_INFINITY'})); "
            "logging.basicConfig(level=logging.INFO); from edged.app import "
            "raise_nofile_limit; n = raise_nofile_limit(); print(n, resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert res.returncode == 0, res.stderr
    returned, soft = (int(v) for v in res.stdout.split())
    expected = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    assert returned == soft == expected
    assert f"raised from 64 to {expected}" in res.stderr


async def test_accept_errors_are_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    loop.set_exception_handler(lambda _loop, ctx: seen.append(str(ctx.get("message"))))
    install_loop_exception_handler(loop)
    before = metrics.ACCEPT_ERRORS._value.get()
    with socket.socket() as sock, caplog.at_level(logging.INFO, logger="edged.app"):
        sock.bind(("127.0.0.1", 0))
        for _ in range(300):  # what asyncio reports when accept() fails with EMFILE
            loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                         "exception": OSError(errno.EMFILE, "Too many open files"), "socket": sock})
        for _ in range(300):  # the retries still scheduled when the listener closes
            loop.call_exception_handler({"message": "Exception in callback BaseSelectorEventLoop._start_serving(...)",
                                         "exception": ValueError("Invalid file descriptor: -1")})
        loop.call_exception_handler({"message": "something else", "exception": RuntimeError("x")})
    assert metrics.ACCEPT_ERRORS._value.get() - before == 300
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "accept failed on 127.0.0.1:" in lines[0] and "Too many open files" in lines[0]
    assert seen == ["something else"]  # the handler that was there before still gets the rest
