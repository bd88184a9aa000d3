"""The controller's composition root: start in order, stop in reverse.

    store → CA + server certificate + admin token → registry → channels, streams, numbering, relay trees
          → router (+ GeoIP) → chat keys + chat hub (+ the NATS chat stream's follower, [chat] bus = "nats")
          → edge port (mutual TLS) → main port (enrollment + admin, TLS) → HTTP (/healthz, /metrics,
          /play) → mDNS announcement
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from edged.common.hostport import join_hostport
from edgenet.v1 import admin_pb2_grpc, chat_pb2_grpc, edge_pb2_grpc
from originctl import __version__
from originctl.config import ServeConfig, parse_hostport
from originctl.errors import ConfigError, OriginctlError
from originctl.metrics import ControllerMetrics
from originctl.model import NodeState
from originctl.server.admin_service import AdminServicer
from originctl.server.channels import ChannelBook
from originctl.server.chat_hub import ChatHub
from originctl.server.chat_keys import ChatKeys, load_chat_keys
from originctl.server.chat_nats import NatsChatFollower
from originctl.server.chat_service import ChatServicer
from originctl.server.edge_service import EdgeServicer, EnrollmentServicer
from originctl.server.enrollment import CertificateAuthority, ensure_admin_token, write_private
from originctl.server.geoip import GeoIp
from originctl.server.health import HealthPolicy
from originctl.server.http import make_app
from originctl.server.numbering import NumberingBook
from originctl.server.registry import Registry
from originctl.server.relays import RelayBook, RelayPolicy
from originctl.server.router import Router
from originctl.server.store import SqliteStore, Store
from originctl.server.streams import StreamBook

log = logging.getLogger("originctl")

GRACE = 2.0  # s for in-flight RPCs when stopping

_COMMON_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.so_reuseport", 0),  # a second controller on the same port must fail, not share it
]
_EDGE_OPTIONS: list[tuple[str, Any]] = [
    *_COMMON_OPTIONS,
    # Edges ping on their long-lived stream (keepalive every 2 heartbeats, at least 1 s apart: that is how
    # they tell a hung controller, and it keeps NAT bindings open). Allow pings down to every 0.5 s; faster
    # ones are strikes, and after 2 the connection gets GOAWAY "too_many_pings" (a peer abusing pings).
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 500),
    ("grpc.http2.max_ping_strikes", 2),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
]


class Controller:
    def __init__(self, cfg: ServeConfig, store: Store | None = None) -> None:
        self.cfg = cfg
        self.data_path = cfg.data_path
        self.store: Store = store or SqliteStore(self.data_path / "origin.db")
        self.metrics = ControllerMetrics()
        self.registry = Registry(self.store, self.metrics, HealthPolicy(
            lost_after_intervals=cfg.health.lost_after_intervals, recover_reports=cfg.health.recover_reports,
            throttle_mask=cfg.health.throttle_mask))
        self.channels = ChannelBook(self.store)
        self.streams = StreamBook(self.store)
        self.registry.listeners.append(self.streams.async_node_changed)
        self.numbering = NumberingBook(self.store)
        self.relays = RelayBook(self.registry, self.streams, self.metrics,
                                RelayPolicy(max_children=cfg.relay.max_children, max_depth=cfg.relay.max_depth))
        self.router = Router(self.registry, self.channels, self.streams, self.metrics,
                             trusted_proxies=cfg.trusted_proxies, relays=self.relays)
        self.chat = ChatHub(self.store, self.metrics, cfg.chat.limits, resume_events=cfg.chat.resume_events)
        # with [chat] bus = "nats" the fleet's chat is on NATS: operators' actions go there and the store follows
        # it; the hub still serves edges on the hub bus
        self.chat_nats = (NatsChatFollower(cfg.chat.nats_url, self.store, self.metrics, cfg.chat.limits)
                          if cfg.chat.bus == "nats" else None)
        self.chat_keys = ChatKeys(public_pems=())
        self.http_app: web.Application = make_app(self.registry, self.metrics, self.router,
                                                  chat_health=self._chat_health)
        self.ca: CertificateAuthority | None = None
        self.admin_token = ""
        self.admin_token_path: Path = self.data_path / "admin.token"
        self.grpc_port = 0
        self.edge_port = 0
        self.http_port = 0
        self._main: grpc.aio.Server | None = None
        self._edge: grpc.aio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._advertiser: Any = None
        self._store_open = False
        self._registry_started = False
        self._router_started = False
        self._chat_started = False
        self._chat_nats_started = False

    def _chat_health(self) -> dict[str, Any]:
        if self.chat_nats is not None:
            return {**self.chat_nats.health(), "hub_rooms": self.chat.room_count}
        return {"bus": "hub", "hub_rooms": self.chat.room_count}

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        cfg = self.cfg
        self.data_path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_path, 0o700)
        await self.store.open()
        self._store_open = True
        self.ca = await asyncio.to_thread(CertificateAuthority.load_or_create, self.data_path)
        grpc_host, grpc_port = parse_hostport(cfg.grpc, "grpc")
        edge_host, edge_port = parse_hostport(cfg.edge_address, "edge_grpc")
        names = [*cfg.tls_names, grpc_host, edge_host]
        key_pem, chain_pem = await asyncio.to_thread(self.ca.issue_server, names)
        await asyncio.to_thread(self._write_server_files, key_pem, chain_pem)
        self.admin_token, self.admin_token_path = await asyncio.to_thread(
            ensure_admin_token, self.data_path, self.ca.fingerprint)
        await self.registry.start(serving=False)  # nobody is judged silent before the edge port listens
        self._registry_started = True
        await self.channels.load()
        await self.streams.load()
        await self.numbering.load()
        for entry in self.registry.nodes.values():  # lost while the controller was away: streams over
            if entry.health.state is NodeState.LOST:
                self.streams.async_node_lost(entry.id, entry.health.state_reason)
        if cfg.geoip_database:
            try:
                self.router.geoip = await asyncio.to_thread(GeoIp, cfg.geoip_database)
            except ValueError as exc:
                raise ConfigError("geoip_database", str(exc)) from None
        await self.router.start()
        self._router_started = True
        self.chat_keys = await asyncio.to_thread(load_chat_keys, cfg.chat.jwt_public_keys, self.data_path)
        await self.chat.load()
        self.chat.start()
        self._chat_started = True
        if self.chat_nats is not None:
            await self.chat_nats.load()
            await self.chat_nats.start()  # in the background: the controller serves whether NATS is up or not
            self._chat_nats_started = True

        self._edge = grpc.aio.server(options=_EDGE_OPTIONS)
        edge_pb2_grpc.add_EdgeServiceServicer_to_server(
            EdgeServicer(self.registry, self.channels, self.streams, self.metrics, relays=self.relays,
                         numbering=self.numbering, ca=self.ca, chat_keys=self.chat_keys.public_pems), self._edge)
        chat_pb2_grpc.add_ChatServiceServicer_to_server(ChatServicer(self.chat, self.registry), self._edge)
        self.edge_port = self._bind(self._edge, edge_host, edge_port, "edge_grpc", grpc.ssl_server_credentials(
            [(key_pem, chain_pem)], root_certificates=self.ca.cert_pem, require_client_auth=True))

        self._main = grpc.aio.server(options=_COMMON_OPTIONS)
        edge_pb2_grpc.add_EnrollmentServiceServicer_to_server(
            EnrollmentServicer(self.store, self.registry, self.ca, self.edge_port, self.metrics), self._main)
        admin_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminServicer(self.registry, self.store, self.admin_token, self.admin_token_path.resolve(),
                          self.ca.fingerprint, self.metrics, self.channels, self.streams, self.router,
                          relays=self.relays, numbering=self.numbering, chat=self.chat, chat_keys=self.chat_keys,
                          chat_nats=self.chat_nats),
            self._main)
        self.grpc_port = self._bind(self._main, grpc_host, grpc_port, "grpc",
                                    grpc.ssl_server_credentials([(key_pem, chain_pem)], require_client_auth=False))
        await self._edge.start()
        self.registry.async_serving()
        await self._main.start()

        http_host, http_port = parse_hostport(cfg.http, "http")
        self._runner = web.AppRunner(self.http_app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, http_host, http_port)
        try:
            await site.start()
        except OSError as exc:
            raise OriginctlError(f"cannot listen on {cfg.http} (http): {exc.strerror}; choose another with "
                                 "--http HOST:PORT") from None
        sockets = self._runner.addresses
        self.http_port = sockets[0][1] if sockets else http_port

        if cfg.advertise:
            from originctl.discovery import ControllerAdvertiser  # zeroconf only when announcing

            self._advertiser = ControllerAdvertiser(grpc_host, self.grpc_port, self.edge_port, self.http_port,
                                                    __version__, self.ca.fingerprint)
            try:
                await self._advertiser.start()
            except OSError as exc:  # no multicast route: keep serving, discovery is a convenience
                log.warning("not announcing on mDNS: %s", exc)
                self._advertiser = None
        log.info("originctl %s serving: grpc %s:%d (enroll, admin), edge %s:%d (mTLS), http %s:%d; data %s",
                 __version__, grpc_host, self.grpc_port, edge_host, self.edge_port, http_host, self.http_port,
                 self.data_path.resolve())

    def _write_server_files(self, key_pem: bytes, chain_pem: bytes) -> None:
        write_private(self.data_path / "server.key", key_pem)
        (self.data_path / "server.crt").write_bytes(chain_pem)

    @staticmethod
    def _bind(server: grpc.aio.Server, host: str, port: int, key: str, creds: grpc.ServerCredentials) -> int:
        address = join_hostport(host, port)
        try:
            bound = int(server.add_secure_port(address, creds))
        except RuntimeError:
            bound = 0
        if not bound:
            raise OriginctlError(f"cannot listen on {address} ({key}): address in use? choose another with "
                                 f"--{key.replace('_', '-')} HOST:PORT")
        return bound

    async def stop(self) -> None:
        if self._advertiser is not None:
            with contextlib.suppress(Exception):
                await self._advertiser.stop()
            self._advertiser = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for entry in self.registry.nodes.values():  # end edge streams first, so stop() need not wait
            if entry.session is not None:
                entry.session.closed.set()
        if self._chat_started:  # chat streams end too; each room's exact head is stored
            self._chat_started = False
            await self.chat.stop()
        if self._chat_nats_started:  # what was applied of the NATS chat stream is stored
            self._chat_nats_started = False
            assert self.chat_nats is not None
            await self.chat_nats.stop()
        servers = [s for s in (self._main, self._edge) if s is not None]
        self._main = self._edge = None
        await asyncio.gather(*(s.stop(GRACE) for s in servers))
        if self._registry_started:
            self._registry_started = False
            await self.registry.stop()
            await self.streams.drain()
            await self.numbering.drain()
            await self.relays.stop()
        if self._router_started:
            self._router_started = False
            await self.router.stop()
        if self._store_open:
            self._store_open = False
            await self.store.close()
