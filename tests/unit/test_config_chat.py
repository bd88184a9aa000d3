"""[chat] config: defaults, TOML with nested limits, flags, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.chat.model import ChatLimits
from edged.cli import _overrides, build_parser
from edged.config import ChatConfig, load
from edged.errors import ConfigError
from tests.unit.protocols.rtmp.certs import make_tls_files


def test_defaults() -> None:
    chat = load(None).chat
    assert chat == ChatConfig()
    assert (chat.irc_listen, chat.server_name, chat.bus) == ("0.0.0.0:6667", "tmi.twitch.tv", "auto")
    assert chat.limits == ChatLimits() and chat.limits.messages_per_window == 20
    assert chat.big_room_members == 1000 and chat.batch_seconds == 0.02 and chat.pong_timeout == 10.0


def test_toml_with_limits_and_keys(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_text("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n")
    f = tmp_path / "e.toml"
    f.write_text(f'[chat]\nirc_listen = ""\nping_interval = 30\njwt_public_keys = ["{key}"]\n'
                 "[chat.limits]\nmessages_per_window = 5\nwindow_seconds = 10\n")
    chat = load(f).chat
    assert chat.irc_listen == "" and chat.ping_interval == 30.0 and chat.jwt_public_keys == (str(key),)
    assert chat.limits.messages_per_window == 5 and chat.limits.window_seconds == 10.0
    assert chat.limits.moderator_messages_per_window == 100


def test_tls_files(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    f = tmp_path / "e.toml"
    f.write_text(f'[chat]\ntls_cert_file = "{tls.cert}"\ntls_key_file = "{tls.key}"\n')
    assert load(f).chat.tls_cert_file == str(tls.cert)
    f.write_text(f'[chat]\ntls_cert_file = "{tls.cert}"\ntls_key_file = "{tls.ca}"\n')
    with pytest.raises(ConfigError) as exc:
        load(f)
    assert exc.value.key == "chat.tls_key_file"


@pytest.mark.parametrize(("toml", "key"), [
    ('[chat]\nirc_listen = "nope"\n', "chat.irc_listen"),
    ('[chat]\nbus = "carrier-pigeon"\n', "chat.bus"),
    ('[chat]\nbus = "nats"\nnats_url = "http://x"\n', "chat.nats_url"),
    ('[chat]\ntls_cert_file = "/x.pem"\n', "chat.tls_key_file"),
    ('[chat]\njwt_public_keys = ["/no/such/key.pem"]\n', "chat.jwt_public_keys[0]"),
    ('[chat]\nserver_name = "bad name"\n', "chat.server_name"),
    ("[chat]\nmax_connections = 0\n", "chat.max_connections"),
    ("[chat]\nmax_queue_bytes = 10\n", "chat.max_queue_bytes"),
    ("[chat]\nbatch_seconds = 5\n", "chat.batch_seconds"),
    ("[chat]\npong_timeout = 0\n", "chat.pong_timeout"),
    ("[chat]\nping_interval = nan\n", "chat.ping_interval"),
    ("[chat.limits]\nmessages_per_window = 0\n", "chat.limits.messages_per_window"),
    ("[chat.limits]\nwindow_seconds = -1\n", "chat.limits.window_seconds"),
    ("[chat.limits]\nbogus = 1\n", "chat.limits.bogus"),
])
def test_errors_name_the_key(tmp_path: Path, toml: str, key: str) -> None:
    f = tmp_path / "e.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as exc:
        load(f)
    assert exc.value.key == key


def test_flags() -> None:
    args = build_parser().parse_args(["run", "--irc", "127.0.0.1:7000", "--ircs", "127.0.0.1:7001",
                                      "--chat-bus", "nats", "--nats-url", "nats://h:4222", "--chat-key", "a.pem",
                                      "--chat-key", "b.pem"])
    assert _overrides(args)["chat"] == {"irc_listen": "127.0.0.1:7000", "irc_tls_listen": "127.0.0.1:7001",
                                        "bus": "nats", "nats_url": "nats://h:4222",
                                        "jwt_public_keys": ["a.pem", "b.pem"]}
    assert _overrides(build_parser().parse_args(["run", "--no-chat"]))["chat"] == {"enabled": False}
