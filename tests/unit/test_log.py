import logging

from edged.log import QuietLog


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_quiet_log_writes_one_line_per_interval_and_counts_the_rest(caplog):
    clock = _Clock()
    q = QuietLog(logging.getLogger("test.quiet"), interval=10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.quiet"):
        assert q.warning("refused", "refused %s", "a")
        for _ in range(500):
            assert not q.warning("refused", "refused %s", "b")
        assert q.warning("other", "other kind")  # kinds are limited separately
        assert q.suppressed("refused") == 500
        clock.t = 10.0
        assert q.warning("refused", "refused %s", "c")
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert lines == ["refused a", "other kind", "refused c (and 500 more like it in the last 10s)"]
    assert q.suppressed("refused") == 0


def test_quiet_log_keeps_suppressed_lines_at_debug(caplog):
    q = QuietLog(logging.getLogger("test.quiet2"), interval=60.0)
    with caplog.at_level(logging.DEBUG, logger="test.quiet2"):
        q.warning("k", "first")
        q.warning("k", "second")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "first"), (logging.DEBUG, "second")]
