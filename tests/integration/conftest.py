"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.procs import EdgeProcess


@pytest.fixture
def stop_later() -> Iterator[list[EdgeProcess]]:
    """Edges appended here are stopped (by PID) when the test ends, whatever its outcome."""
    started: list[EdgeProcess] = []
    yield started
    for e in started:
        e.stop()
