"""The controller's chat token keys: its own Ed25519 key (made once, 0600) or the configured public keys;
the [chat] config table."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from edged.chat.identity import load_public_key
from originctl.config import load_serve
from originctl.errors import ConfigError, StoreError
from originctl.server.chat_keys import SIGNING_KEY_FILE, load_chat_keys


def pub(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_without_configured_keys_the_controller_makes_its_own_once(tmp_path: Path) -> None:
    first = load_chat_keys((), tmp_path)
    path = tmp_path / SIGNING_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.can_mint and len(first.public_pems) == 1
    assert load_public_key(first.public_pems[0]).algorithm == "EdDSA"
    again = load_chat_keys((), tmp_path)
    assert again.public_pems == first.public_pems  # the same key after a restart: old tokens still verify


def test_a_damaged_own_key_is_refused_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / SIGNING_KEY_FILE).write_bytes(b"garbage")
    with pytest.raises(StoreError, match="move it away"):
        load_chat_keys((), tmp_path)
    other = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / SIGNING_KEY_FILE).write_bytes(other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(StoreError, match="not an Ed25519"):
        load_chat_keys((), tmp_path)


def test_configured_keys_are_trusted_and_nothing_is_made(tmp_path: Path) -> None:
    ed, es = ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1())
    bundle = tmp_path / "auth.pem"
    bundle.write_bytes(pub(ed) + pub(es))
    single = tmp_path / "rsa.pem"
    single.write_bytes(pub(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    keys = load_chat_keys((str(bundle), str(single), str(bundle)), tmp_path / "data")
    assert not keys.can_mint
    assert [load_public_key(p).algorithm for p in keys.public_pems] == ["EdDSA", "ES256", "RS256"]
    assert not (tmp_path / "data" / SIGNING_KEY_FILE).exists()


def test_configured_key_files_that_cannot_be_used_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"chat.jwt_public_keys\[0\]: cannot read"):
        load_chat_keys((str(tmp_path / "missing.pem"),), tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ConfigError, match=r"chat.jwt_public_keys\[0\]: no PEM key"):
        load_chat_keys((str(text),), tmp_path)
    weak = tmp_path / "weak.pem"
    weak.write_bytes(pub(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(ConfigError, match=r"chat.jwt_public_keys\[0\]: .*P-256"):
        load_chat_keys((str(weak),), tmp_path)


def test_chat_config_table(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_bytes(pub(ed25519.Ed25519PrivateKey.generate()))
    cfg_file = tmp_path / "origin.toml"
    cfg_file.write_text(f'[chat]\njwt_public_keys = ["{key}"]\nresume_events = 50\n'
                        '[chat.limits]\nmessages_per_window = 5\nwindow_seconds = 10\n')
    cfg = load_serve(str(cfg_file), {})
    assert cfg.chat.jwt_public_keys == (str(key),) and cfg.chat.resume_events == 50
    assert cfg.chat.limits.messages_per_window == 5 and cfg.chat.limits.window_seconds == 10.0
    assert cfg.chat.limits.max_body_chars == 500  # the rest keep their defaults
    for bad, name in (("[chat]\nresume_events = -1\n", "chat.resume_events"),
                      ("[chat.limits]\nmessages_per_window = 0\n", "chat.limits.messages_per_window"),
                      ('[chat]\njwt_public_keys = ["/nonexistent.pem"]\n', r"chat.jwt_public_keys\[0\]"),
                      ("[chat]\nbogus = 1\n", "chat.bogus")):
        cfg_file.write_text(bad)
        with pytest.raises(ConfigError, match=name):
            load_serve(str(cfg_file), {})
