"""Admin API chat messages (admin.proto) ↔ originctl.model's chat views, for the servicer and the CLI client."""

from __future__ import annotations

from edged.chat import hub_wire
from edgenet.v1 import admin_pb2
from originctl.model import ChatModeration, ChatRoomView


def chat_room_to_pb(v: ChatRoomView) -> admin_pb2.ChatRoomInfo:
    return admin_pb2.ChatRoomInfo(room=v.room, room_id=v.room_id, modes=hub_wire.modes_to_pb(v.modes),
                                  restrictions=[hub_wire.restriction_to_pb(r) for r in v.restrictions],
                                  head_seq=v.head_seq, watching_nodes=list(v.watching_nodes))


def chat_room_from_pb(m: admin_pb2.ChatRoomInfo) -> ChatRoomView:
    return ChatRoomView(room=m.room, room_id=m.room_id, modes=hub_wire.modes_from_pb(m.modes),
                        restrictions=tuple(hub_wire.restriction_from_pb(r) for r in m.restrictions),
                        head_seq=m.head_seq, watching_nodes=tuple(m.watching_nodes))


def moderation_from_pb(m: admin_pb2.ChatModerateResponse) -> ChatModeration:
    return ChatModeration(ok=m.ok, notice_id=m.notice_id, text=m.text, room=chat_room_from_pb(m.room))
