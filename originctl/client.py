"""A typed, blocking client for the admin API: dataclasses in, dataclasses out, originctl errors only.

Trust comes from the admin token: its fingerprint picks the controller's CA out of the chain the
controller presents (originctl/trust.py), and that CA is the only root the channel accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from edged.common.hostport import join_hostport
from edgenet.v1 import admin_pb2, admin_pb2_grpc
from originctl import errors, trust
from originctl.config import parse_hostport
from originctl.model import (
    Channel,
    ChatModeration,
    ChatRoomView,
    Event,
    Node,
    NodeState,
    RelayTreeView,
    Route,
    StreamRecord,
)
from originctl.server import chat_convert, convert

DEFAULT_TIMEOUT = 10.0  # s per call


def map_rpc_error(exc: grpc.RpcError, origin: str) -> errors.OriginctlError:
    call: Any = exc  # what gRPC raises is both an RpcError and a Call; the stubs cannot say so
    code = call.code() if isinstance(call, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (call.details() if isinstance(call, grpc.Call) else "") or ""
    if code is grpc.StatusCode.UNAVAILABLE:
        return errors.ControllerUnavailable(
            f"cannot reach the controller at {origin} ({details.splitlines()[0] if details else 'unavailable'}): "
            "is `originctl serve` running there? point at it with --origin HOST:PORT")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.ControllerUnavailable(f"the controller at {origin} did not answer in time; try again")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return errors.NotAuthenticated(details)
    if code is grpc.StatusCode.NOT_FOUND:
        return errors.NotFound(details)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return errors.UsageError(details)
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return errors.Conflict(details)
    return errors.OriginctlError(f"the controller at {origin} answered {code.name}: {details}")


class AdminClient:
    def __init__(self, origin: str, token: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        _, fingerprint = trust.split_token(token)
        host, port = parse_hostport(origin, "--origin")
        self.origin = origin
        self.timeout = timeout
        ca_pem = trust.fetch_ca(host, port, fingerprint, timeout=min(timeout, 5.0))
        target = join_hostport(host, port)
        self._channel = grpc.secure_channel(
            target, grpc.ssl_channel_credentials(ca_pem),
            options=[("grpc.ssl_target_name_override", trust.CONTROLLER_TLS_NAME)])
        self._stub = admin_pb2_grpc.AdminServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token.strip()}"),)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return method(request, metadata=self._metadata, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, self.origin) from None

    def nodes(self, state: NodeState | None = None) -> list[Node]:
        req = admin_pb2.ListNodesRequest(state=convert.STATE_TO_PB[state] if state else None)
        return [convert.node_from_pb(n) for n in self._call(self._stub.ListNodes, req).nodes]

    def node(self, ref: str) -> Node:
        return convert.node_from_pb(self._call(self._stub.GetNode, admin_pb2.GetNodeRequest(id=ref)))

    def events(self, node: str = "", limit: int = 0) -> list[Event]:
        resp = self._call(self._stub.ListEvents, admin_pb2.ListEventsRequest(node_id=node, limit=limit))
        return [convert.event_from_pb(e) for e in resp.events]

    def create_tokens(self, ttl_seconds: float = 0, site: str = "", count: int = 1) -> tuple[list[str], int]:
        resp = self._call(self._stub.CreateToken,
                          admin_pb2.CreateTokenRequest(ttl_seconds=ttl_seconds, site=site, count=count))
        return list(resp.tokens), resp.expires_unix_ms

    def set_draining(self, ref: str, draining: bool) -> Node:
        return convert.node_from_pb(
            self._call(self._stub.SetDraining, admin_pb2.SetDrainingRequest(id=ref, draining=draining)))

    def create_channel(self, name: str) -> tuple[Channel, str]:
        resp = self._call(self._stub.CreateChannel, admin_pb2.ChannelRequest(name=name))
        return convert.channel_from_pb(resp.channel), resp.stream_key

    def rotate_channel_key(self, name: str) -> tuple[Channel, str]:
        resp = self._call(self._stub.RotateChannelKey, admin_pb2.ChannelRequest(name=name))
        return convert.channel_from_pb(resp.channel), resp.stream_key

    def delete_channel(self, name: str) -> Channel:
        return convert.channel_from_pb(self._call(self._stub.DeleteChannel, admin_pb2.ChannelRequest(name=name)))

    def channels(self) -> list[Channel]:
        resp = self._call(self._stub.ListChannels, admin_pb2.ListChannelsRequest())
        return [convert.channel_from_pb(c) for c in resp.channels]

    def streams(self, include_ended: bool = False, limit: int = 0) -> list[StreamRecord]:
        resp = self._call(self._stub.ListStreams, admin_pb2.ListStreamsRequest(include_ended=include_ended,
                                                                                limit=limit))
        return [convert.stream_from_pb(s) for s in resp.streams]

    def route(self, channel: str, client_ip: str, location: tuple[float, float] | None = None) -> Route:
        req = admin_pb2.RouteRequest(channel=channel, client_ip=client_ip)
        if location is not None:
            req.latitude, req.longitude = location
        return convert.route_from_pb(self._call(self._stub.Route, req))

    def relay_trees(self, channel: str = "") -> list[RelayTreeView]:
        resp = self._call(self._stub.ListRelayTrees, admin_pb2.ListRelayTreesRequest(channel=channel))
        return [convert.relay_tree_from_pb(t) for t in resp.trees]

    # --- chat -------------------------------------------------------------------------------------

    def chat_moderate(self, room: str, action: str, *, target_login: str = "", target_msg_id: str = "",
                      seconds: int = 0, reason: str = "") -> ChatModeration:
        req = admin_pb2.ChatModerateRequest(room=room, action=action, target_login=target_login,
                                            target_msg_id=target_msg_id, seconds=seconds, reason=reason)
        return chat_convert.moderation_from_pb(self._call(self._stub.ChatModerate, req))

    def chat_room(self, room: str) -> ChatRoomView:
        return chat_convert.chat_room_from_pb(self._call(self._stub.GetChatRoom, admin_pb2.GetChatRoomRequest(room=room)))

    def chat_token(self, user_id: str, login: str, *, display_name: str = "", roles: tuple[str, ...] = (),
                   ttl_seconds: float = 0, color: str = "") -> tuple[str, int]:
        """(token, expiry in unix ms)."""
        resp = self._call(self._stub.CreateChatToken, admin_pb2.CreateChatTokenRequest(
            user_id=user_id, login=login, display_name=display_name, roles=list(roles), ttl_seconds=ttl_seconds,
            color=color))
        return resp.token, resp.expires_unix_ms
