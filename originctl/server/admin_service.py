"""Servicer shell for the operator's admin API; every call needs "authorization: Bearer ADMIN_TOKEN"."""

from __future__ import annotations

import functools
import hmac
import ipaddress
import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from edged.chat.identity import key_id, mint
from edged.chat.model import ROLES, Moderation, ModerationAction
from edgenet.v1 import admin_pb2, admin_pb2_grpc, common_pb2
from originctl import trust
from originctl.errors import Conflict, NotAuthenticated, OriginctlError, UsageError
from originctl.metrics import ControllerMetrics
from originctl.model import Channel, ChannelRecord, TokenRecord
from originctl.server import convert
from originctl.server.channels import ChannelBook, check_name
from originctl.server.chat_convert import chat_room_to_pb
from originctl.server.chat_hub import ChatHub, check_room
from originctl.server.chat_keys import ChatKeys
from originctl.server.chat_nats import NatsChatFollower
from originctl.server.edge_service import set_draining_command
from originctl.server.numbering import NumberingBook
from originctl.server.registry import Registry
from originctl.server.relays import RelayBook
from originctl.server.router import Router
from originctl.server.store import Store
from originctl.server.streams import StreamBook

DEFAULT_TOKEN_TTL = 3600.0  # s
MAX_TOKEN_TTL = 30 * 86400.0  # s: a bootstrap token is for racking a box, not a standing credential
MAX_TOKENS_PER_CALL = 10_000
MAX_EVENTS_PER_CALL = 10_000
DEFAULT_EVENTS = 100
DEFAULT_STREAMS = 100  # ended streams listed with --all
MAX_STREAMS_PER_CALL = 10_000
DEFAULT_CHAT_TOKEN_TTL = 3600.0  # s
MAX_CHAT_TOKEN_TTL = 365 * 86400.0  # s

log = logging.getLogger("originctl.chat")

R = TypeVar("R")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[R]]


def admin_rpc(fn: Handler[R]) -> Handler[R]:
    """Check the bearer token, count the call, and map domain errors to status codes."""

    @functools.wraps(fn)
    async def wrapper(self: AdminServicer, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> R:
        code = "OK"
        try:
            self._authenticate(context)
            return await fn(self, request, context)
        except OriginctlError as exc:
            code = convert.status_code(exc).name
            await convert.abort(context, exc)
        finally:
            self.metrics.admin_calls.labels(fn.__name__, code).inc()

    return wrapper


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, registry: Registry, store: Store, admin_token: str, token_path: Path,
                 ca_fingerprint: str, metrics: ControllerMetrics, channels: ChannelBook | None = None,
                 streams: StreamBook | None = None, router: Router | None = None, *,
                 relays: RelayBook | None = None, numbering: NumberingBook | None = None,
                 chat: ChatHub | None = None, chat_keys: ChatKeys | None = None,
                 chat_nats: NatsChatFollower | None = None) -> None:
        self.registry = registry
        self.chat = chat
        self.chat_nats = chat_nats  # [chat] bus = "nats": the chat RPCs speak to the fleet on NATS
        self.chat_keys = chat_keys
        self.store = store
        self.channels = channels if channels is not None else ChannelBook(store)
        self.streams = streams if streams is not None else StreamBook(store)
        self.router = router
        self.relays = relays if relays is not None else (router.relays if router is not None else None)
        self.numbering = numbering
        self._expected = f"Bearer {admin_token}".encode()
        self._token_path = token_path
        self._ca_fingerprint = ca_fingerprint
        self.metrics = metrics
        self._command_ids = itertools.count(1)

    def _authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        given = b""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                break
        if not hmac.compare_digest(given, self._expected):
            what = "wrong" if given else "missing"
            raise NotAuthenticated(
                f"{what} admin token: pass --token, set ORIGINCTL_TOKEN, or put `token = \"...\"` in the originctl "
                f"config file; the controller keeps it in {self._token_path}"
            )

    @admin_rpc
    async def ListNodes(self, request: admin_pb2.ListNodesRequest,
                        context: grpc.aio.ServicerContext[Any, Any]) -> admin_pb2.ListNodesResponse:
        want = convert.STATE_FROM_PB.get(request.state)
        nodes = [n for n in self.registry.views() if want is None or n.state is want]
        nodes.sort(key=lambda n: (n.info.name, n.id))
        return admin_pb2.ListNodesResponse(nodes=[convert.node_to_pb(n) for n in nodes])

    @admin_rpc
    async def GetNode(self, request: admin_pb2.GetNodeRequest, context: grpc.aio.ServicerContext[Any, Any]) -> common_pb2.Node:
        return convert.node_to_pb(self.registry.view(self.registry.find(request.id)))

    @admin_rpc
    async def ListEvents(self, request: admin_pb2.ListEventsRequest,
                         context: grpc.aio.ServicerContext[Any, Any]) -> admin_pb2.ListEventsResponse:
        node_id = self.registry.find(request.node_id).id if request.node_id else None
        limit = min(request.limit or DEFAULT_EVENTS, MAX_EVENTS_PER_CALL)
        await self.registry.drain()  # events recorded so far are visible
        events = await self.store.list_events(node_id, limit)
        return admin_pb2.ListEventsResponse(events=[convert.event_to_pb(e) for e in events])

    @admin_rpc
    async def CreateToken(self, request: admin_pb2.CreateTokenRequest,
                          context: grpc.aio.ServicerContext[Any, Any]) -> admin_pb2.CreateTokenResponse:
        ttl = request.ttl_seconds or DEFAULT_TOKEN_TTL
        if not 0 < ttl <= MAX_TOKEN_TTL:
            raise UsageError(f"--ttl must be between 1s and {MAX_TOKEN_TTL / 86400:g}d")
        count = request.count or 1
        if count > MAX_TOKENS_PER_CALL:
            raise UsageError(f"at most {MAX_TOKENS_PER_CALL} tokens per call")
        now_ms = int(time.time() * 1000)
        expires = now_ms + int(ttl * 1000)
        secrets_ = [trust.new_secret() for _ in range(count)]
        await self.store.add_tokens([
            TokenRecord(secret_sha256=trust.secret_sha256(s), created_unix_ms=now_ms, expires_unix_ms=expires,
                        site=request.site)
            for s in secrets_
        ])
        return admin_pb2.CreateTokenResponse(
            tokens=[trust.make_token(s, self._ca_fingerprint) for s in secrets_], expires_unix_ms=expires)

    @admin_rpc
    async def SetDraining(self, request: admin_pb2.SetDrainingRequest,
                          context: grpc.aio.ServicerContext[Any, Any]) -> common_pb2.Node:
        entry = self.registry.async_set_draining(request.id, request.draining)
        if entry.session is not None:
            entry.session.async_send(set_draining_command(next(self._command_ids), request.draining))
        return convert.node_to_pb(self.registry.view(entry))

    # --- channels, streams, routing ------------------------------------------------------------------

    def _channel_view(self, rec: ChannelRecord) -> Channel:
        next_seq, disc_seq = self.numbering.get(rec.name) if self.numbering is not None else (0, 0)
        return Channel(name=rec.name, created_unix_ms=rec.created_unix_ms, key_rotated_unix_ms=rec.key_rotated_unix_ms,
                       live_nodes=tuple(sorted(self.streams.carriers(rec.name))), next_seq=next_seq,
                       disc_seq=disc_seq)

    @admin_rpc
    async def CreateChannel(self, request: admin_pb2.ChannelRequest,
                            context: grpc.aio.ServicerContext[Any, Any]) -> admin_pb2.ChannelKey:
        rec, key = await self.channels.create(request.name)
        return admin_pb2.ChannelKey(channel=convert.channel_to_pb(self._channel_view(rec)), stream_key=key)

    @admin_rpc
    async def RotateChannelKey(self, request: admin_pb2.ChannelRequest,
                               context: grpc.aio.ServicerContext[Any, Any]) -> admin_pb2.ChannelKey:
        rec, key = await self.channels.rotate(check_name(request.name))
        return admin_pb2.ChannelKey(channel=convert.channel_to_pb(self._channel_view(rec)), stream_key=key)

    @admin_rpc
    async def DeleteChannel(self, request: admin_pb2.ChannelRequest,
                            context: grpc.aio.ServicerContext[Any, Any]) -> admin_pb2.Channel:
        rec = await self.channels.delete(check_name(request.name))
        return convert.channel_to_pb(self._channel_view(rec))

    @admin_rpc
    async def ListChannels(self, request: admin_pb2.ListChannelsRequest,
                           context: grpc.aio.ServicerContext[Any, Any]) -> admin_pb2.ListChannelsResponse:
        return admin_pb2.ListChannelsResponse(
            channels=[convert.channel_to_pb(self._channel_view(c)) for c in self.channels.all()])

    @admin_rpc
    async def ListStreams(self, request: admin_pb2.ListStreamsRequest,
                          context: grpc.aio.ServicerContext[Any, Any]) -> admin_pb2.ListStreamsResponse:
        live = self.streams.live()
        if not request.include_ended:
            return admin_pb2.ListStreamsResponse(streams=[convert.stream_to_pb(s) for s in live])
        limit = min(request.limit or DEFAULT_STREAMS, MAX_STREAMS_PER_CALL)
        await self.streams.drain()  # what was recorded so far is visible
        ended = [s for s in await self.store.list_streams(live_only=False, limit=limit + len(live)) if not s.live]
        return admin_pb2.ListStreamsResponse(streams=[convert.stream_to_pb(s) for s in [*live, *ended[:limit]]])

    @admin_rpc
    async def Route(self, request: admin_pb2.RouteRequest,
                    context: grpc.aio.ServicerContext[Any, Any]) -> admin_pb2.RouteDecision:
        if self.router is None:
            raise UsageError("viewer routing is not running on this controller")
        if not request.client_ip:
            raise UsageError("--client-ip is required: the viewer address to route")
        try:
            ipaddress.ip_address(request.client_ip)
        except ValueError:
            raise UsageError(f"--client-ip: not an IP address: {request.client_ip!r}") from None
        loc = None
        if request.HasField("latitude") and request.HasField("longitude"):
            loc = (request.latitude, request.longitude)
        return convert.route_to_pb(self.router.decide(request.channel, request.client_ip, loc, explain=True))

    @admin_rpc
    async def ListRelayTrees(self, request: admin_pb2.ListRelayTreesRequest,
                             context: grpc.aio.ServicerContext[Any, Any]) -> admin_pb2.ListRelayTreesResponse:
        if self.relays is None:
            raise UsageError("fleet distribution is not running on this controller")
        if request.channel:
            check_name(request.channel)
            views = [self.relays.view(request.channel)]
        else:
            views = self.relays.views()
        return admin_pb2.ListRelayTreesResponse(trees=[convert.relay_tree_to_pb(v) for v in views])

    # --- chat ----------------------------------------------------------------------------------------

    def _hub(self) -> ChatHub:
        if self.chat is None:
            raise UsageError("chat is not running on this controller")
        return self.chat

    @admin_rpc
    async def ChatModerate(self, request: admin_pb2.ChatModerateRequest,
                           context: grpc.aio.ServicerContext[Any, Any]) -> admin_pb2.ChatModerateResponse:
        hub = self._hub()
        room = chat_room_name(request.room)
        try:
            action = ModerationAction(request.action)
        except ValueError:
            raise UsageError(f"unknown moderation action {request.action!r}: expected one of "
                             f"{', '.join(a.value for a in ModerationAction)}") from None
        mod = Moderation(room=room, action=action, target_login=request.target_login,
                         target_msg_id=request.target_msg_id, seconds=request.seconds, reason=request.reason)
        if self.chat_nats is not None:
            return await self._moderate_on_nats(self.chat_nats, hub, mod)
        outcome = await hub.moderate(mod)
        v = outcome.verdict
        ok = v.ok if v is not None else outcome.accepted
        return admin_pb2.ChatModerateResponse(ok=ok, notice_id=v.notice_id if v is not None else "",
                                              text=v.text if v is not None else "", room=chat_room_to_pb(hub.view(room)))

    async def _moderate_on_nats(self, nats: NatsChatFollower, hub: ChatHub,
                                mod: Moderation) -> admin_pb2.ChatModerateResponse:
        """Published on the room's NATS subject and answered with what the room's rules decided there; the
        hub's room gets it too, for edges still on the hub bus (a mixed fleet), its answer only logged."""
        done = await nats.moderate(mod)
        try:
            await hub.moderate(mod)
        except OriginctlError as exc:
            log.warning("chat: room %s: operator %s not applied on the hub: %s", mod.room, mod.action, exc)
        view = chat_room_to_pb(nats.view(mod.room))
        if done.outcome is None:
            return admin_pb2.ChatModerateResponse(
                ok=True, notice_id="published", room=view,
                text=f"published at NATS stream sequence {done.sseq}; the controller has not applied it yet "
                     "(it is catching up with the chat stream): `originctl chat bans|mode` will show it")
        v = done.outcome.verdict
        return admin_pb2.ChatModerateResponse(ok=v.ok if v is not None else done.outcome.accepted,
                                              notice_id=v.notice_id if v is not None else "",
                                              text=v.text if v is not None else "", room=view)

    @admin_rpc
    async def GetChatRoom(self, request: admin_pb2.GetChatRoomRequest,
                          context: grpc.aio.ServicerContext[Any, Any]) -> admin_pb2.ChatRoomInfo:
        room = chat_room_name(request.room)
        if self.chat_nats is not None:
            return chat_room_to_pb(self.chat_nats.view(room))
        return chat_room_to_pb(self._hub().view(room))

    @admin_rpc
    async def CreateChatToken(self, request: admin_pb2.CreateChatTokenRequest,
                              context: grpc.aio.ServicerContext[Any, Any]) -> admin_pb2.CreateChatTokenResponse:
        keys = self.chat_keys
        if keys is None or keys.signing_key is None:
            raise Conflict("this controller trusts the keys in [chat] jwt_public_keys and holds no signing key: "
                           "tokens come from the auth service that signs with them")
        if not request.user_id:
            raise UsageError("--user is required: the chatter's stable user ID (the token's sub)")
        login = request.login.lower()
        if not LOGIN_RE.fullmatch(login):
            raise UsageError(f"--login {request.login!r}: expected 1-25 characters of a-z 0-9 _")
        unknown = sorted(set(request.roles) - set(ROLES))
        if unknown:
            raise UsageError(f"unknown role {unknown[0]!r}: expected {', '.join(ROLES)}")
        ttl = request.ttl_seconds or DEFAULT_CHAT_TOKEN_TTL
        if not 0 < ttl <= MAX_CHAT_TOKEN_TTL:
            raise UsageError(f"--ttl must be between 1s and {MAX_CHAT_TOKEN_TTL / 86400:g}d")
        now = time.time()
        token = mint(keys.signing_key, user_id=request.user_id, login=login, display_name=request.display_name,
                     roles=request.roles, ttl_seconds=ttl, now=now, color=request.color)
        return admin_pb2.CreateChatTokenResponse(token=token, expires_unix_ms=int((now + ttl) * 1000),
                                                 key_id=key_id(keys.signing_key.public_key()))


LOGIN_RE = re.compile(r"[a-z0-9_]{1,25}")


def chat_room_name(raw: str) -> str:
    """A room as operators name it: the channel name, with or without IRC's '#', in any case (TMI's are
    lower-case)."""
    return check_room(raw.removeprefix("#").lower())
