"""What the NATS chat bus writes on JetStream: room records (submissions, operators' moderation) and room
checkpoints, as JSON. Pure: bytes in, model dataclasses out, or a `WireError` that names what is wrong.

A room's subject carries every input of that room in order; every edge decodes each record the same way
and feeds it to the room's rules (`edged.chat.room.Room`), so what a record decodes to must depend on its
bytes alone. Anything else on the subject - garbage, another version, a record for another room - is a
`WireError`: every edge skips it the same way.

Records (one JSON object, UTF-8):
    {"v": 1, "type": "submission", "submission": {"id", "room", "chatter": {"user_id", "login",
     "display_name", "roles": [...], "color"}, "text", "sent_ms", "origin_node", "client_nonce", "emotes"}}
    {"v": 1, "type": "moderation", "moderation": {"room", "action", "target_login", "target_msg_id",
     "seconds", "reason", "actor"}}
Checkpoint (a value in the rooms' KV bucket): the room's durable state (modes, live bans and timeouts)
right after the input at stream sequence `sseq`, whose JetStream time was `time_ms`:
    {"v": 1, "sseq": N, "time_ms": T, "snapshot": {"room", "room_id", "modes": {...}, "restrictions": [...]}}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from edged.chat.model import (
    ROLES,
    Chatter,
    Moderation,
    ModerationAction,
    Restriction,
    RoomModes,
    RoomSnapshot,
    Submission,
)

VERSION = 1
MAX_RECORD_BYTES = 64 * 1024  # a record is one chat line; anything bigger is not ours
MAX_TEXT_CHARS = 4_096  # the room refuses bodies over its own limit (500); this only bounds decoding
MAX_FIELD_CHARS = 256  # ids, logins, names, colours, reasons
MAX_RESTRICTIONS = 1_000_000

_TOKEN = re.compile(r"[a-z0-9_]{1,64}")


class WireError(ValueError):
    """A record or checkpoint that is not one this version writes; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def room_token(room: str) -> str:
    """The room's name as one NATS subject token and KV key: itself when it is a plain TMI channel name
    ([a-z0-9_], at most 64), else '=' and the hex of its UTF-8 (no '.', '*', '>' or blanks can reach a
    subject, and two rooms never share a token)."""
    if _TOKEN.fullmatch(room):
        return room
    return "=" + room.encode().hex()


def room_from_token(token: str) -> str | None:
    """The room whose `room_token` is `token`; None for a token `room_token` never writes (a subject some
    other publisher made up: a follower of every room skips it)."""
    if not token.startswith("="):
        return token if _TOKEN.fullmatch(token) else None
    try:
        room = bytes.fromhex(token[1:]).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return room if room and room_token(room) == token else None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    sseq: int  # the stream sequence of the last input this state includes
    time_ms: int  # that input's JetStream time
    snapshot: RoomSnapshot


# --- encoding --------------------------------------------------------------------------------------


def _chatter(c: Chatter) -> dict[str, Any]:
    return {"user_id": c.user_id, "login": c.login, "display_name": c.display_name,
            "roles": sorted(c.roles), "color": c.color}


def encode_submission(s: Submission) -> bytes:
    body = {"id": s.id, "room": s.room, "chatter": _chatter(s.chatter), "text": s.text, "sent_ms": s.sent_ms,
            "origin_node": s.origin_node, "client_nonce": s.client_nonce, "emotes": s.emotes}
    return _dump({"v": VERSION, "type": "submission", "submission": body})


def encode_moderation(m: Moderation) -> bytes:
    body = {"room": m.room, "action": ModerationAction(m.action).value, "target_login": m.target_login,
            "target_msg_id": m.target_msg_id, "seconds": m.seconds, "reason": m.reason, "actor": m.actor}
    return _dump({"v": VERSION, "type": "moderation", "moderation": body})


def _snapshot(s: RoomSnapshot) -> dict[str, Any]:
    return {
        "room": s.room,
        "room_id": s.room_id,
        "modes": {"slow_seconds": s.modes.slow_seconds, "subscribers_only": s.modes.subscribers_only,
                  "emote_only": s.modes.emote_only, "r9k": s.modes.r9k},
        "restrictions": [{"login": r.login, "user_id": r.user_id, "until_ms": r.until_ms, "reason": r.reason}
                         for r in s.restrictions],
    }


def encode_checkpoint(c: Checkpoint) -> bytes:
    return _dump({"v": VERSION, "sseq": c.sseq, "time_ms": c.time_ms, "snapshot": _snapshot(c.snapshot)})


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


# --- decoding --------------------------------------------------------------------------------------


def decode_record(data: bytes, room: str) -> Submission | Moderation:
    """A record read from `room`'s subject; WireError when it is not a well-formed record for that room."""
    obj = _load(data, MAX_RECORD_BYTES)
    if obj.get("v") != VERSION:
        raise WireError(f"unknown version {obj.get('v')!r}")
    kind = obj.get("type")
    if kind == "submission":
        rec: Submission | Moderation = _decode_submission(_obj(obj, "submission"))
    elif kind == "moderation":
        rec = _decode_moderation(_obj(obj, "moderation"))
    else:
        raise WireError(f"unknown record type {kind!r}")
    if rec.room != room:
        raise WireError(f"record for room {rec.room!r} on the subject of room {room!r}")
    return rec


def decode_checkpoint(data: bytes) -> Checkpoint:
    obj = _load(data, None)
    if obj.get("v") != VERSION:
        raise WireError(f"unknown checkpoint version {obj.get('v')!r}")
    sseq, time_ms = _int(obj, "sseq"), _int(obj, "time_ms")
    if sseq < 1:
        raise WireError("checkpoint sseq < 1")
    return Checkpoint(sseq=sseq, time_ms=time_ms, snapshot=_decode_snapshot(_obj(obj, "snapshot")))


def _load(data: bytes, limit: int | None) -> dict[str, Any]:
    if limit is not None and len(data) > limit:
        raise WireError(f"record of {len(data)} bytes (limit {limit})")
    try:
        obj = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise WireError("not UTF-8") from exc
    except ValueError as exc:
        raise WireError(f"not JSON ({exc.args[0] if exc.args else exc})") from exc
    if not isinstance(obj, dict):
        raise WireError("not a JSON object")
    return obj


def _obj(obj: dict[str, Any], key: str) -> dict[str, Any]:
    v = obj.get(key)
    if not isinstance(v, dict):
        raise WireError(f"{key}: not an object")
    return v


def _str(obj: dict[str, Any], key: str, limit: int = MAX_FIELD_CHARS, *, required: bool = False) -> str:
    v = obj.get(key, "")
    if not isinstance(v, str):
        raise WireError(f"{key}: not a string")
    if len(v) > limit:
        raise WireError(f"{key}: longer than {limit}")
    if required and not v:
        raise WireError(f"{key}: empty")
    return v


def _int(obj: dict[str, Any], key: str) -> int:
    v = obj.get(key, 0)
    if not isinstance(v, int) or isinstance(v, bool):
        raise WireError(f"{key}: not an integer")
    if not -(2**63) <= v < 2**63:
        raise WireError(f"{key}: out of range")
    return v


def _bool(obj: dict[str, Any], key: str) -> bool:
    v = obj.get(key, False)
    if not isinstance(v, bool):
        raise WireError(f"{key}: not a boolean")
    return v


def _decode_chatter(obj: dict[str, Any]) -> Chatter:
    roles = obj.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise WireError("chatter.roles: not a list of strings")
    return Chatter(user_id=_str(obj, "user_id"), login=_str(obj, "login", required=True),
                   display_name=_str(obj, "display_name"), roles=frozenset(r for r in roles if r in ROLES),
                   color=_str(obj, "color"))


def _decode_submission(obj: dict[str, Any]) -> Submission:
    return Submission(
        id=_str(obj, "id", required=True),
        room=_str(obj, "room", required=True),
        chatter=_decode_chatter(_obj(obj, "chatter")),
        text=_str(obj, "text", MAX_TEXT_CHARS),
        sent_ms=_int(obj, "sent_ms"),
        origin_node=_str(obj, "origin_node"),
        client_nonce=_str(obj, "client_nonce"),
        emotes=_str(obj, "emotes", MAX_TEXT_CHARS),
    )


def _decode_moderation(obj: dict[str, Any]) -> Moderation:
    action = _str(obj, "action", required=True)
    try:
        act = ModerationAction(action)
    except ValueError as exc:
        raise WireError(f"moderation.action: unknown {action!r}") from exc
    return Moderation(room=_str(obj, "room", required=True), action=act, target_login=_str(obj, "target_login"),
                      target_msg_id=_str(obj, "target_msg_id"), seconds=_int(obj, "seconds"),
                      reason=_str(obj, "reason", MAX_TEXT_CHARS), actor=_str(obj, "actor", required=True))


def _decode_snapshot(obj: dict[str, Any]) -> RoomSnapshot:
    modes = _obj(obj, "modes")
    raw = obj.get("restrictions", [])
    if not isinstance(raw, list) or len(raw) > MAX_RESTRICTIONS:
        raise WireError("snapshot.restrictions: not a list")
    restrictions = []
    for r in raw:
        if not isinstance(r, dict):
            raise WireError("snapshot.restrictions: not a list of objects")
        restrictions.append(Restriction(login=_str(r, "login", required=True), user_id=_str(r, "user_id"),
                                        until_ms=_int(r, "until_ms"), reason=_str(r, "reason", MAX_TEXT_CHARS)))
    return RoomSnapshot(
        room=_str(obj, "room", required=True),
        room_id=_str(obj, "room_id"),
        modes=RoomModes(slow_seconds=_int(modes, "slow_seconds"), subscribers_only=_bool(modes, "subscribers_only"),
                        emote_only=_bool(modes, "emote_only"), r9k=_bool(modes, "r9k")),
        restrictions=tuple(restrictions),
    )
