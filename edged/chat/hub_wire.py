"""chat.proto messages ↔ edged.chat.model dataclasses, for both ends of the hub's chat stream.

The edge's HubBus (edged/chat/hub_bus.py) and the controller's chat service (originctl/server/chat_service.py)
are the only users; nothing else in chat sees protobuf types.
"""

from __future__ import annotations

from edged.chat.model import (
    ROLES,
    ChatLine,
    Chatter,
    EventKind,
    Restriction,
    RoomEvent,
    RoomModes,
    RoomSnapshot,
    Submission,
    Verdict,
)
from edgenet.v1 import chat_pb2

_KINDS = {k.value: k for k in EventKind}


def chatter_to_pb(c: Chatter) -> chat_pb2.Chatter:
    return chat_pb2.Chatter(user_id=c.user_id, login=c.login, display_name=c.display_name,
                            roles=sorted(c.roles), color=c.color)


def chatter_from_pb(m: chat_pb2.Chatter) -> Chatter:
    return Chatter(user_id=m.user_id, login=m.login, display_name=m.display_name,
                   roles=frozenset(r for r in m.roles if r in ROLES), color=m.color)


def submission_to_pb(s: Submission) -> chat_pb2.ChatSubmission:
    return chat_pb2.ChatSubmission(id=s.id, room=s.room, chatter=chatter_to_pb(s.chatter), text=s.text,
                                   sent_unix_ms=s.sent_ms, client_nonce=s.client_nonce, emotes=s.emotes)


def submission_from_pb(m: chat_pb2.ChatSubmission, origin_node: str) -> Submission:
    return Submission(id=m.id, room=m.room, chatter=chatter_from_pb(m.chatter), text=m.text,
                      sent_ms=m.sent_unix_ms, origin_node=origin_node, client_nonce=m.client_nonce,
                      emotes=m.emotes)


def modes_to_pb(m: RoomModes) -> chat_pb2.ChatModes:
    return chat_pb2.ChatModes(slow_seconds=m.slow_seconds, subscribers_only=m.subscribers_only,
                              emote_only=m.emote_only, r9k=m.r9k)


def modes_from_pb(m: chat_pb2.ChatModes) -> RoomModes:
    return RoomModes(slow_seconds=m.slow_seconds, subscribers_only=m.subscribers_only, emote_only=m.emote_only,
                     r9k=m.r9k)


def restriction_to_pb(r: Restriction) -> chat_pb2.ChatRestriction:
    return chat_pb2.ChatRestriction(login=r.login, user_id=r.user_id, until_unix_ms=r.until_ms, reason=r.reason)


def restriction_from_pb(m: chat_pb2.ChatRestriction) -> Restriction:
    return Restriction(login=m.login, user_id=m.user_id, until_ms=m.until_unix_ms, reason=m.reason)


def snapshot_to_pb(s: RoomSnapshot, head_seq: int) -> chat_pb2.ChatSnapshot:
    return chat_pb2.ChatSnapshot(room=s.room, room_id=s.room_id, modes=modes_to_pb(s.modes),
                                 restrictions=[restriction_to_pb(r) for r in s.restrictions], head_seq=head_seq)


def snapshot_from_pb(m: chat_pb2.ChatSnapshot) -> tuple[RoomSnapshot, int]:
    snap = RoomSnapshot(room=m.room, room_id=m.room_id, modes=modes_from_pb(m.modes),
                        restrictions=tuple(restriction_from_pb(r) for r in m.restrictions))
    return snap, m.head_seq


def line_to_pb(ln: ChatLine) -> chat_pb2.ChatLine:
    return chat_pb2.ChatLine(id=ln.id, chatter=chatter_to_pb(ln.chatter), text=ln.text, sent_unix_ms=ln.sent_ms,
                             emotes=ln.emotes, client_nonce=ln.client_nonce, origin_node_id=ln.origin_node,
                             action=ln.action)


def line_from_pb(m: chat_pb2.ChatLine) -> ChatLine:
    return ChatLine(id=m.id, chatter=chatter_from_pb(m.chatter), text=m.text, sent_ms=m.sent_unix_ms,
                    emotes=m.emotes, client_nonce=m.client_nonce, origin_node=m.origin_node_id, action=m.action)


def history_to_pb(room: str, lines: list[ChatLine]) -> chat_pb2.ChatHistory:
    return chat_pb2.ChatHistory(room=room, lines=[line_to_pb(ln) for ln in lines])


def event_to_pb(e: RoomEvent, cause_id: str = "") -> chat_pb2.ChatEvent:
    m = chat_pb2.ChatEvent(room=e.room, seq=e.seq, kind=e.kind.value, time_unix_ms=e.time_ms, room_id=e.room_id,
                           target_login=e.target_login, target_user_id=e.target_user_id,
                           duration_seconds=e.duration_s, cause_id=cause_id)
    if e.line is not None:
        m.line.CopyFrom(line_to_pb(e.line))
    if e.modes is not None:
        m.modes.CopyFrom(modes_to_pb(e.modes))
    return m


def event_from_pb(m: chat_pb2.ChatEvent) -> tuple[RoomEvent, str] | None:
    """(event, the id of the submission it came from); None for a kind this edge does not know."""
    kind = _KINDS.get(m.kind)
    if kind is None:
        return None
    event = RoomEvent(room=m.room, seq=m.seq, kind=kind, time_ms=m.time_unix_ms, room_id=m.room_id,
                      line=line_from_pb(m.line) if m.HasField("line") else None, target_login=m.target_login,
                      target_user_id=m.target_user_id, duration_s=m.duration_seconds,
                      modes=modes_from_pb(m.modes) if m.HasField("modes") else None)
    return event, m.cause_id


def verdict_to_pb(v: Verdict) -> chat_pb2.ChatVerdict:
    return chat_pb2.ChatVerdict(submission_id=v.submission_id, room=v.room, login=v.login, ok=v.ok,
                                notice_id=v.notice_id, text=v.text)


def verdict_from_pb(m: chat_pb2.ChatVerdict) -> Verdict:
    return Verdict(submission_id=m.submission_id, room=m.room, login=m.login, ok=m.ok, notice_id=m.notice_id,
                   text=m.text)
