"""HOST:PORT parsing shared by edged and originctl, and each daemon's error around it."""

from __future__ import annotations

import pytest

from edged import config as edged_config
from edged.common.hostport import HostPortError, join_hostport, split_hostport
from edged.errors import ConfigError as EdgedConfigError
from originctl import config as originctl_config
from originctl.errors import ConfigError as OriginctlConfigError


@pytest.mark.parametrize(("value", "expected"), [
    ("127.0.0.1:1935", ("127.0.0.1", 1935)),
    (":8080", ("0.0.0.0", 8080)),
    ("[::1]:50051", ("::1", 50051)),
    ("edge.example.net:0", ("edge.example.net", 0)),
])
def test_split(value: str, expected: tuple[str, int]) -> None:
    assert split_hostport(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("8080", "expected HOST:PORT, got '8080'"),
    (8080, "expected HOST:PORT, got 8080"),
    ("host:http", "port is not a number in 'host:http'"),
    ("host:65536", "port out of range in 'host:65536'"),
])
def test_split_refuses(value: object, message: str) -> None:
    with pytest.raises(HostPortError) as exc:
        split_hostport(value)
    assert str(exc.value) == message


def test_join_brackets_ipv6_only() -> None:
    assert join_hostport("::1", 5) == "[::1]:5" and join_hostport("10.0.0.1", 5) == "10.0.0.1:5"
    assert split_hostport(join_hostport("::1", 5)) == ("::1", 5)


def test_each_daemon_names_the_key_in_its_own_error() -> None:
    with pytest.raises(EdgedConfigError) as e1:
        edged_config.parse_hostport("nope", "rtmp.listen")
    with pytest.raises(OriginctlConfigError) as e2:
        originctl_config.parse_hostport("nope", "grpc")
    assert str(e1.value) == "config: rtmp.listen: expected HOST:PORT, got 'nope'"
    assert str(e2.value) == "config: grpc: expected HOST:PORT, got 'nope'"
