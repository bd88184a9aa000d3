"""[http] limits and timeouts: defaults, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.config import load
from edged.errors import ConfigError


def test_defaults() -> None:
    http = load(None).http
    assert (http.max_connections, http.max_connections_per_address) == (16384, 1024)
    assert (http.header_timeout, http.keepalive_timeout, http.send_timeout) == (10.0, 30.0, 30.0)


def test_file_values(tmp_path: Path) -> None:
    f = tmp_path / "e.toml"
    f.write_text("[http]\nmax_connections = 500\nmax_connections_per_address = 50\nheader_timeout = 2\n"
                 "keepalive_timeout = 5.5\nsend_timeout = 60\n")
    http = load(f).http
    assert (http.max_connections, http.max_connections_per_address) == (500, 50)
    assert (http.header_timeout, http.keepalive_timeout, http.send_timeout) == (2.0, 5.5, 60.0)


@pytest.mark.parametrize(("toml", "key"), [
    ("max_connections = 0", "http.max_connections"),
    ("max_connections = 1.5", "http.max_connections"),
    ("max_connections_per_address = 0", "http.max_connections_per_address"),
    ("header_timeout = 0", "http.header_timeout"),
    ("header_timeout = nan", "http.header_timeout"),
    ("keepalive_timeout = -1", "http.keepalive_timeout"),
    ("send_timeout = inf", "http.send_timeout"),
    ('send_timeout = "30s"', "http.send_timeout"),
])
def test_errors_name_the_key(tmp_path: Path, toml: str, key: str) -> None:
    f = tmp_path / "e.toml"
    f.write_text(f"[http]\n{toml}\n")
    with pytest.raises(ConfigError) as exc:
        load(f)
    assert exc.value.key == key
