"""The [relay] keys: defaults, the --relay flag, and errors that name the key."""

from __future__ import annotations

import pytest

from edged.cli import _overrides, build_parser
from edged.config import load
from edged.errors import ConfigError


def test_defaults_and_flag() -> None:
    cfg = load(None)
    assert cfg.relay.listen == "0.0.0.0:50061"
    assert (cfg.relay.start_timeout, cfg.relay.linger_seconds, cfg.relay.stall_timeout) == (5.0, 30.0, 2.0)
    args = build_parser().parse_args(["run", "--relay", "127.0.0.1:7001"])
    assert load(None, _overrides(args)).relay.listen == "127.0.0.1:7001"


@pytest.mark.parametrize(("overrides", "key"), [
    ({"listen": "nowhere"}, "relay.listen"),
    ({"start_timeout": 0}, "relay.start_timeout"),
    ({"linger_seconds": float("nan")}, "relay.linger_seconds"),
    ({"stall_timeout": 100}, "relay.stall_timeout"),
    ({"keepalive_seconds": 2.0}, "relay.keepalive_seconds"),  # not below the stall timeout
    ({"send_timeout": -1}, "relay.send_timeout"),
    ({"max_backlog_segments": 1}, "relay.max_backlog_segments"),
    ({"max_record_bytes": 1000}, "relay.max_record_bytes"),
    ({"max_subscriptions": 0}, "relay.max_subscriptions"),
    ({"max_streams": 0}, "relay.max_streams"),
    ({"linger_seconds": "soon"}, "relay.linger_seconds"),
])
def test_bad_values_name_their_key(overrides: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load(None, {"relay": overrides})
