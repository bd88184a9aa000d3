"""The keys that verify chatters' tokens, and the controller's own signing key.

`[chat] jwt_public_keys` names PEM files (each may hold several keys) of the platform's auth service: the
controller trusts those and cannot mint tokens. Without any, `originctl serve` makes an Ed25519 key on first
start (DATA_DIR/chat-signing.key, mode 0600, like the CA's), trusts its public half, and signs tokens with
it for `originctl chat token` (tests and small deployments). Either way the public keys go down every edge
stream (EdgeService.Connect, after the key table), and edges verify tokens themselves.

Blocking file and crypto work: call `load_chat_keys` off the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from edged.chat.identity import BadKey, load_public_key, split_pem_bundle
from originctl.errors import ConfigError, StoreError
from originctl.server.enrollment import write_private

SIGNING_KEY_FILE = "chat-signing.key"


@dataclass(frozen=True, slots=True)
class ChatKeys:
    public_pems: tuple[bytes, ...]  # what edges verify with (SubjectPublicKeyInfo PEM, one key each)
    signing_key: ed25519.Ed25519PrivateKey | None = None  # the controller's own; None with configured keys

    @property
    def can_mint(self) -> bool:
        return self.signing_key is not None


def load_chat_keys(jwt_public_keys: tuple[str, ...], data_path: Path) -> ChatKeys:
    """The configured keys (ConfigError naming the file at fault), else the controller's own key, made now
    when it does not exist yet."""
    if jwt_public_keys:
        pems: list[bytes] = []
        for i, path in enumerate(jwt_public_keys):
            key = f"chat.jwt_public_keys[{i}]"
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from None
            blocks = split_pem_bundle(data)
            if not blocks:
                raise ConfigError(key, f"no PEM key in {path}")
            for block in blocks:
                try:
                    pems.append(load_public_key(block).pem)
                except BadKey as exc:
                    raise ConfigError(key, f"{path}: {exc}") from None
        return ChatKeys(public_pems=tuple(dict.fromkeys(pems)))
    signing = own_signing_key(data_path)
    public = signing.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return ChatKeys(public_pems=(public,), signing_key=signing)


def own_signing_key(data_path: Path) -> ed25519.Ed25519PrivateKey:
    """DATA_DIR/chat-signing.key, made (0600) when absent; StoreError when it exists but is not an Ed25519 key."""
    path = data_path / SIGNING_KEY_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        key = ed25519.Ed25519PrivateKey.generate()
        write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        return key
    try:
        loaded = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise StoreError(f"{path} is damaged ({exc}): move it away and restart (tokens it signed stop "
                         "working)") from None
    if not isinstance(loaded, ed25519.Ed25519PrivateKey):
        raise StoreError(f"{path} is not an Ed25519 private key: move it away and restart")
    return loaded
