"""[node] relay, reachable and relay_host: defaults, validation naming the key, and what the Hello carries."""

from __future__ import annotations

import pytest

from edged.agent import convert
from edged.agent.status import NodeStatus
from edged.config import load
from edged.errors import ConfigError
from originctl.server.convert import node_info_from_pb


def test_defaults() -> None:
    node = load(None).node
    assert (node.relay, node.reachable, node.relay_host) == (False, True, "")


@pytest.mark.parametrize("node, key", [
    ({"relay": True, "reachable": False}, "node.relay"),
    ({"relay_host": "edge-1.isp.example:50061"}, "node.relay_host"),
    ({"relay_host": "http://edge-1"}, "node.relay_host"),
    ({"relay": "yes"}, "node.relay"),
])
def test_bad_values_name_the_key(node: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(None, {"node": node})
    assert exc.value.key == key


@pytest.mark.parametrize("host", ["edge-1.isp.example", "203.0.113.7", "2001:db8::7"])
def test_relay_host_accepts_names_and_addresses(host: str) -> None:
    assert load(None, {"node": {"relay_host": host}}).node.relay_host == host


def test_node_info_carries_the_relay_listener_to_the_controller() -> None:
    status = NodeStatus(http_url="http://203.0.113.7:8080", http_port=8080, relay_port=50061)
    m = convert.node_info_to_pb(name="e", hostname="h", site="", version="1", latitude=None, longitude=None,
                                prefixes=(), public_url="http://edge-1.isp.example:8080", status=status,
                                heartbeat_seconds=2.0, gpu=None, reachable=False)
    info = node_info_from_pb(m)
    assert (info.relay_port, info.relay, info.reachable) == (50061, False, False)
    assert info.relay_address == "edge-1.isp.example:50061"  # the public URL's host, the listener's port
    m.relay_host = "2001:db8::7"
    assert node_info_from_pb(m).relay_address == "[2001:db8::7]:50061"
    m.relay_port = 0
    assert node_info_from_pb(m).relay_address == ""  # no listener, no address
