"""Chat on a real standalone edge process (`edged run`, no controller): IRC over TCP on its IRC port and IRC
over WebSocket at /chat on its HTTP front share a room; /healthz and /metrics report chat; SIGTERM sends
RECONNECT to every chat client before the edge goes."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from edged.chat.identity import mint
from tests.integration.chat.edge_chat_harness import CAPS, IrcClient, WsClient
from tests.integration.procs import EdgeProcess, http_get


def _edge(tmp_path: Path) -> tuple[EdgeProcess, ed25519.Ed25519PrivateKey]:
    key = ed25519.Ed25519PrivateKey.generate()
    pub = tmp_path / "chat-key.pem"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return EdgeProcess(tmp_path / "edge", {}, extra=["--no-srt", "--no-transcode", "--chat-key", str(pub)]), key


async def test_irc_and_websocket_share_a_room_and_sigterm_sends_reconnect(tmp_path: Path,
                                                                          stop_later: list[EdgeProcess]) -> None:
    edge, key = _edge(tmp_path)
    stop_later.append(edge)
    await asyncio.to_thread(edge.start)
    health = edge.health()["chat"]
    assert health["irc_port"] == edge.irc_port and health["bus"] == "LocalBus" and health["token_keys"] == 1

    tcp = await IrcClient.connect(edge.irc_port)
    token = mint(key, user_id="7", login="alice", roles=("subscriber",), now=time.time())
    assert (await tcp.login("alice", token))[-1].command == "376"
    await tcp.join("lobby")
    ws = await WsClient.connect(f"{edge.http}/chat")
    try:
        assert ws.ws.protocol == "irc"
        await ws.send_frame(f"CAP REQ :{CAPS}\r\nNICK justinfan123\r\nJOIN #lobby")
        await ws.until(lambda m: m.command == "ROOMSTATE")
        await tcp.send("PRIVMSG #lobby :hello web")
        got = (await ws.until(lambda m: m.command == "PRIVMSG"))[-1]
        assert got.params == ("#lobby", "hello web") and got.tags["user-id"] == "7"
        assert got.tags["subscriber"] == "1"

        chat = edge.health()["chat"]
        assert chat["connections"] == 2 and chat["rooms"] == 1 and chat["by_transport"] == {"irc": 1, "ws": 1}
        metrics = http_get(edge.http + "/metrics")[2].decode()
        assert 'edged_chat_connections{transport="ws"} 1.0' in metrics
        assert 'edged_chat_messages_total{direction="out",result="delivered"} 1.0' in metrics

        assert edge.proc is not None
        edge.proc.send_signal(signal.SIGTERM)
        for c in (tcp, ws):
            lines = await c.closed(timeout=15)
            assert "RECONNECT" in [m.command for m in lines]
        assert await asyncio.to_thread(edge.proc.wait, 20) == 0
    finally:
        tcp.close()
        await ws.close()


async def test_chat_can_be_off(tmp_path: Path, stop_later: list[EdgeProcess]) -> None:
    edge = EdgeProcess(tmp_path / "edge", {}, extra=["--no-srt", "--no-transcode", "--no-chat"])
    stop_later.append(edge)
    await asyncio.to_thread(edge.start)
    assert "chat" not in edge.health()
    assert (await asyncio.to_thread(http_get, edge.http + "/chat"))[0] == 404
    try:
        await IrcClient.connect(edge.irc_port)
    except ConnectionRefusedError:
        pass
    else:
        raise AssertionError("an IRC listener is up with --no-chat")
