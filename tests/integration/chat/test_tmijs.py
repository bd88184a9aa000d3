"""tmi.js, unmodified from npm and run with Debian's node, against one standalone edge process (`edged run`
with a chat token key): it connects over IRC-over-WebSocket, joins, gets ROOMSTATE, says, and its
deletemessage/timeout/ban calls take effect; it stays connected through its own ping cycle (tmi.js PINGs
every 60 s, a fixed interval the library has no option for, so the test runs the full 75 s) and through
the edge's PINGs (every 5 s here)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from edged.chat.identity import case_safe_token, mint
from tests.conftest import need
from tests.integration.procs import REPO, EdgeProcess, http_get

TMI = REPO / "build" / "chat" / "node_modules" / "tmi.js"
SCRIPT = Path(__file__).with_name("tmijs_chat.js")
STAY_SECONDS = 75  # > tmi.js's 60 s PING interval, with time for its PONG


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_tmijs_connects_joins_says_moderates_and_survives_its_ping_cycle(tmp_path: Path,
                                                                        stop_later: list[EdgeProcess]) -> None:
    node = need("node")
    if not (TMI / "package.json").exists():
        pytest.fail(f"tmi.js is missing at {TMI}: run `make build/chat/node_modules/tmi.js/package.json`")
    key = ed25519.Ed25519PrivateKey.generate()
    pub = tmp_path / "chat-key.pem"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    conf = tmp_path / "edged.toml"
    conf.write_text("[chat]\nping_interval = 5.0\n")
    edge = EdgeProcess(tmp_path / "edge", {}, extra=["--no-srt", "--no-transcode", "--config", str(conf),
                                                     "--chat-key", str(pub)])
    stop_later.append(edge)
    edge.start()
    now = time.time()
    env = dict(os.environ, TMI_PATH=str(TMI), EDGE_PORT=str(edge.http_port), ROOM="demo",
               STAY_SECONDS=str(STAY_SECONDS),
               # tmi.js lower-cases its password: the JWTs go in their case-safe (base32) form
               STREAMER_TOKEN=case_safe_token(mint(key, user_id="1001", login="streamer", roles=("broadcaster",),
                                                   now=now)),
               TROLL_TOKEN=case_safe_token(mint(key, user_id="1002", login="troll", display_name="Troll", now=now)))
    proc = subprocess.run([node, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=STAY_SECONDS + 60)
    assert proc.stdout.strip(), f"no output from node; stderr:\n{proc.stderr}\nedge log:\n{edge.log()}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0 and not out["errors"], f"{out}\nstderr:\n{proc.stderr}\nedge log:\n{edge.log()}"
    assert out["steps"] == ["joined", "deleted", "timed out", "banned", "said"]
    assert out["roomstate"]["slow"] in ("0", False) and out["roomstate"]["room-id"]
    assert out["message"]["user"] == "troll" and out["message"]["user-id"] == "1002"
    assert out["message"]["display-name"] == "Troll" and out["message"]["id"]
    assert out["timeout_duration"] == 30
    assert out["stayed_seconds"] >= STAY_SECONDS
    assert out["ready_state"] == {"streamer": "OPEN", "troll": "OPEN"}
    for who in ("streamer", "troll"):
        ev = out["events_before_end"][who]
        assert ev.get("connected") == 1 and not ev.get("disconnected"), ev
        assert ev.get("pong", 0) >= 1, f"{who}: tmi.js's own PING was never answered: {ev}"
        assert ev.get("ping", 0) >= 10, f"{who}: the edge's PINGs (every 5 s) were not seen: {ev}"
    notices = out["events"]["streamer"]["notices"]
    assert {"delete_message_success", "timeout_success", "ban_success"} <= set(notices)
    assert out["events"]["troll"]["notices"] == ["msg_timedout", "msg_banned"]
    health = json.loads(http_get(edge.http + "/healthz")[2])
    assert health["chat"]["bus"] == "LocalBus" and health["chat"]["irc_port"] == edge.irc_port
