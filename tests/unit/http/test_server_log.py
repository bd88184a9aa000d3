"""The aiohttp server's logger: rejected requests are counted one-liners, handler failures bounded."""

from __future__ import annotations

import logging

import pytest
from aiohttp.http_exceptions import BadHttpMethod, LineTooLong

from edged import metrics
from edged.http.server import ServerLog


def _raised(exc: Exception) -> Exception:
    try:
        raise exc
    except Exception as caught:
        return caught


def test_bad_requests_are_one_line_each_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    log = ServerLog(logging.getLogger("test.http.server.bad"))
    before = metrics.HTTP_BAD_REQUESTS._value.get()
    with caplog.at_level(logging.DEBUG, logger="test.http.server.bad"):
        for i in range(200):
            log.exception("Error handling request from %s", f"192.0.2.{i}", exc_info=_raised(LineTooLong("x" * 9000, "8190")))
        log.debug("Error handling request from %s", "192.0.2.1", exc_info=_raised(BadHttpMethod("\x16\x03\x01\nX")))
    assert metrics.HTTP_BAD_REQUESTS._value.get() - before == 201
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in caplog.records)
    assert len(caplog.records) == 201  # one line each, at debug but for the first of the interval
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "bad request answered 400: LineTooLong" in warnings[0].getMessage()
    assert all(len(r.getMessage()) < 300 for r in caplog.records)


def test_handler_failures_keep_one_traceback_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    log = ServerLog(logging.getLogger("test.http.server.fail"))
    with caplog.at_level(logging.INFO, logger="test.http.server.fail"):
        for _ in range(50):
            log.exception("Error handling request from %s", "192.0.2.9", exc_info=_raised(KeyError("renditions")))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2  # the line (where it failed) and its traceback, once
    assert "request failed (500): KeyError: 'renditions' at " in errors[0].getMessage()
    assert "test_server_log.py" in errors[0].getMessage()
    assert errors[1].exc_info is not None


def test_other_lines_pass_through(caplog: pytest.LogCaptureFixture) -> None:
    log = ServerLog(logging.getLogger("test.http.server.other"))
    with caplog.at_level(logging.DEBUG, logger="test.http.server.other"):
        log.warning("Failed to create request handler with custom kwargs %r", {"a": 1})
        log.debug("Ignored premature client disconnection")
    assert [r.getMessage() for r in caplog.records] == [
        "Failed to create request handler with custom kwargs {'a': 1}", "Ignored premature client disconnection"]
