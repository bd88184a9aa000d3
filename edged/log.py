"""Logging set-up: one line per record, key=value context (channel=, conn=, node=) in messages."""

from __future__ import annotations

import logging
import sys


def setup(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # aiohttp's access log is off (viewers are counted in metrics, not logged one by one)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
