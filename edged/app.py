"""Composition root of the edged daemon: start parts in order, stop them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import signal
import time
from typing import Any, Protocol

from edged import __version__, metrics, sdnotify
from edged.agent.status import NodeStatus
from edged.config import Config, parse_hostport
from edged.errors import DependencyMissing
from edged.http.app import HttpFront
from edged.ingest.auth import StaticAuthorizer, StreamKeyAuthorizer
from edged.ingest.rtmp_server import RtmpServer
from edged.log import QuietLog
from edged.media.hub import StreamHub
from edged.media.stream import Stream
from edged.media.transcode.supervisor import Admission, PipelineSupervisor
from edged.relay.commits import CommitBus
from edged.store.segments import SegmentStore

log = logging.getLogger(__name__)


class Component(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


STOP_GRACE = 10.0  # s for each component to stop
DRAIN_POLL = 0.5  # s between looks at the controller's drain flag (chat clients get RECONNECT when it is set)
NOFILE_UNLIMITED = 1 << 20  # descriptors asked for when the hard limit is "unlimited" (the kernel's nr_open default)
_ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _read_file(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (systemd's LimitNOFILE=); returns the soft limit now.

    The HTTP front sizes its connection cap from this figure, so it is logged at start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE_UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("descriptor limit (RLIMIT_NOFILE) stays at %d: raising it to %d failed: %s", soft, target, exc)
            return soft
        log.info("descriptor limit (RLIMIT_NOFILE) raised from %d to %d (the hard limit)", soft, target)
        return target
    log.info("descriptor limit (RLIMIT_NOFILE) is %d", soft)
    return soft


def install_loop_exception_handler(loop: asyncio.AbstractEventLoop) -> None:
    """asyncio reports every failed accept() (out of descriptors or buffers) with a traceback, up to a
    listen backlog's worth per attempt (Python 3.11 keeps calling accept() after EMFILE), and schedules a
    retry 1 s later for each; retries still pending when the listener closes fail with another traceback
    each. Count the failures and log one line per interval instead. Everything else as before."""
    previous = loop.get_exception_handler()
    quiet = QuietLog(log)

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS and "accept" in str(context.get("message", "")):
            metrics.ACCEPT_ERRORS.inc()
            sock: Any = context.get("socket")
            try:
                host, port = sock.getsockname()[:2]
                where = f"{host}:{port}"
            except (AttributeError, OSError, TypeError, ValueError):
                where = "?"
            quiet.warning("accept", "accept failed on %s: %s (the listener pauses for 1 s)", where, exc)
            return
        if "_start_serving" in str(context.get("message", "")) and isinstance(exc, ValueError | OSError):
            quiet.log("accept_retry", logging.DEBUG, "accept retry after its listener closed: %r", exc)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


class EdgeApp:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.hub = StreamHub()
        self.started_at = time.monotonic()
        self.store: SegmentStore | None = None
        self.rtmp: RtmpServer | None = None
        self.http: HttpFront | None = None
        self.srt: Any = None
        self.supervisor: PipelineSupervisor | None = None
        # With a controller, it authorizes every publish (and places its ladder): the agent and its
        # authorizer exist before any listener starts; the agent itself starts last (its Hello carries
        # the bound ports).
        self.agent: Any = None
        self.authorizer: StreamKeyAuthorizer
        if cfg.origin.address:
            from edged.agent.link import Agent  # gRPC is loaded only with a controller

            self.agent = Agent(cfg, self.node_status)
            self.authorizer = self.agent.authorizer
            self.agent.authorizer.on_revoked = lambda channel: self.hub.async_kick(
                channel, "its stream key was rotated or revoked by the controller")
            if cfg.channels:
                log.warning("the %d configured channel key(s) are not used: with an origin controller it "
                            "authorizes every publish (create channels with `originctl channel create`)",
                            len(cfg.channels))
        else:
            self.authorizer = StaticAuthorizer(cfg.channels)
        self._announced: dict[str, tuple[int, Admission]] = {}  # channel → (start ms, admission) told to it
        # Fleet distribution: the commit bus wakes relay subscriptions; with a controller, the relay manager
        # subscribes to parents for channels asked for here and the relay server serves children (it needs
        # the fleet identity, so it starts once the node is enrolled)
        self.bus = CommitBus()
        self.relay_server: Any = None
        self.relay_manager: Any = None
        self.relay_pusher: Any = None
        self._relay_writer: Any = None
        self._fleet: Any = None  # edged.relay.tls.FleetIdentity once enrolled
        self._relay_restart: asyncio.Task[None] | None = None
        # Chat: the service (local rooms, members), its IRC listeners and the /chat WebSocket on the HTTP front
        self.chat: Any = None  # edged.chat.service.ChatService while chat is on
        self.irc: Any = None  # edged.chat.irc_server.IrcServer once listening
        self._chat_ws: Any = None
        self._drain_watch: asyncio.Task[None] | None = None
        self._started: list[Component] = []
        self._stop_event = asyncio.Event()

    def health(self) -> dict[str, object]:
        out: dict[str, object] = {
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - self.started_at, 1),
            "live_channels": self.hub.live_channels(),
            "rtmp_port": self.rtmp.port if self.rtmp else None,
            "rtmps_port": (self.rtmp.tls_port or None) if self.rtmp else None,
            "srt_port": getattr(self.srt, "port", None),
        }
        if self.chat is not None:
            out["chat"] = {**self.chat.health(), "irc_port": self.irc.port if self.irc else None,
                           "ircs_port": (self.irc.tls_port or None) if self.irc else None}
        if self.agent is not None:
            silence = self.agent.authorizer.silence()
            out["origin"] = {
                "connected": bool(self.agent.connected), "node_id": self.agent.node_id,
                "silence_seconds": round(silence, 1) if silence != float("inf") else None,
            }
        return out

    async def _start(self, comp: Component) -> None:
        await comp.start()
        self._started.append(comp)

    async def start(self) -> None:
        data = self.cfg.data_path
        data.mkdir(parents=True, exist_ok=True)
        store_path = str(data / "store")
        self.store = SegmentStore(store_path, self.cfg.store.max_bytes)
        offline = await asyncio.to_thread(self.store.mark_all_offline)
        if offline:
            log.info("channels left live by a previous run marked offline: %s", ", ".join(offline))
        if self.agent is not None:
            self.supervisor = PipelineSupervisor(self.cfg, self.hub, store_path, self._pipeline_report,
                                                 placement=self.agent.authorizer.placement_for,
                                                 on_admit=self._admitted,
                                                 numbering=self.agent.authorizer.numbering_for,
                                                 on_numbering=self.agent.async_numbering)
            self.hub.add_listener(lambda stream: None, self._stream_ended)
        else:
            self.supervisor = PipelineSupervisor(self.cfg, self.hub, store_path, self._pipeline_report)
        await self._start(self.supervisor)
        if self.cfg.rtmp.enabled:
            self.rtmp = RtmpServer(self.cfg.rtmp, self.hub, self.authorizer)
            await self._start(self.rtmp)
        if self.cfg.srt.enabled:
            await self._start_srt()
        await self._start_relay_manager()
        await self._start_chat()
        # HTTP last of the listeners: once /healthz answers, it reports every ingest port
        self.http = HttpFront(self.cfg, self.store, self.health, self.relay_manager,
                              routes=self._chat_ws.add_routes if self._chat_ws is not None else None, bus=self.bus)
        await self._start(self.http)
        await self._start_control_plane()
        self._watch_drain()
        await self._start_relay_server()
        sdnotify.notify(f"READY=1\nSTATUS=serving; rtmp={self.rtmp.port if self.rtmp else '-'}")
        log.info("edged %s ready (data dir %s)", __version__, data)

    def node_status(self) -> NodeStatus:
        """Figures the agent reports and the LAN announcement carries."""
        http_port = self.http.port if self.http else 0
        host, _ = parse_hostport(self.cfg.http.listen, "http.listen")
        url = self.cfg.node.public_url or f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{http_port}"
        live = tuple(self.hub.live_channels())
        sup = self.supervisor
        return NodeStatus(
            http_url=url, http_port=http_port, rtmp_port=self.rtmp.port if self.rtmp else 0,
            srt_port=getattr(self.srt, "port", 0) or 0, active_streams=len(live), live_channels=live,
            relay_port=self.relay_server.port if self.relay_server is not None else 0,
            transcodes=self.supervisor.transcodes() if self.supervisor else 0,
            viewers=self.http.meter.viewers() if self.http else 0,
            egress_bps=self.http.meter.egress_bps() if self.http else 0,
            cache_bytes=self.store.total_bytes() if self.store else 0,
            cache_capacity_bytes=self.cfg.store.max_bytes,
            transcode_capacity=sup.capacity if sup is not None and sup.transcode_on else 0,
            transcode_encoder=sup.encoder.kind if sup is not None and sup.transcode_on and sup.encoder else "",
        )

    # --- what the controller hears about streams (with --origin) ---------------------------------------

    def _admitted(self, stream: Stream, admission: Admission) -> None:
        """The pipeline decided the stream's ladder: tell the controller (the rungs follow the source probe)."""
        started_ms = int(time.time() * 1000)
        self._announced[stream.channel] = (started_ms, admission)
        self._announce(stream.channel, stream.source, started_ms, admission, ("source",))

    def _announce(self, channel: str, protocol: str, started_ms: int, admission: Admission,
                  renditions: tuple[str, ...]) -> None:
        sup = self.supervisor
        encoder = sup.encoder.kind if admission.transcode and sup is not None and sup.encoder else ""
        self.agent.async_stream_started(channel, protocol, time_unix_ms=started_ms, transcode=admission.transcode,
                                        encoder=encoder, renditions=renditions, reason=admission.reason,
                                        by_controller=admission.by_controller)

    def _pipeline_report(self, channel: str, rep: dict[str, Any]) -> None:
        event = rep.get("event")
        try:  # what the worker committed wakes the relay subscriptions of this channel
            if event == "segment":
                self.bus.segment(channel, str(rep["rendition"]), int(rep["seq"]))
                self.bus.channel_changed(channel)  # the record's renditions (bandwidths) follow each segment
            elif event == "part":  # wakes relay feeds and this edge's blocked LL-HLS requests
                self.bus.part(channel, str(rep["rendition"]), int(rep["seq"]), int(rep["part"]))
            elif event in ("rendition", "shed", "restore", "exited"):
                self.bus.channel_changed(channel)
        except (KeyError, TypeError, ValueError):
            log.warning("channel=%s malformed pipeline report: %r", channel, rep)
        except Exception:  # a relay bug must not stop the pipeline's reports
            log.exception("channel=%s commit notification failed", channel)
        if self.agent is None:
            return
        if rep.get("event") != "ladder" or channel not in self._announced:
            return
        stream = self.hub.get(channel)
        if stream is None:
            return
        started_ms, admission = self._announced[channel]
        self._announce(channel, stream.source, started_ms, admission,
                       ("source", *(str(r) for r in rep.get("renditions", ()))))

    def _stream_ended(self, stream: Stream) -> None:
        self._announced.pop(stream.channel, None)
        self.agent.async_stream_ended(stream.channel, stream.source)

    async def _start_control_plane(self) -> None:
        """The origin link (enrollment, reports, commands) and the LAN announcement."""
        agent = self.agent
        if agent is not None:
            await self._start(agent)  # a refused enrollment token raises: edged exits 1 with the reason
        if self.cfg.node.advertise:
            from edged.agent.discovery import Advertiser

            adv = Advertiser(self.cfg, self.node_status, agent)
            try:
                await self._start(adv)
            except OSError as exc:  # no multicast-capable interface: keep serving
                log.warning("LAN announcement (_edged._tcp) disabled: %s", exc)

    # --- fleet distribution (the relay) ----------------------------------------------------------------

    def _is_local(self, channel: str) -> bool:
        """A publisher is here (the pusher uses this)."""
        return self.hub.get(channel) is not None

    def _is_here(self, channel: str) -> bool:
        """The channel's records originate here or arrive by themselves: a publisher, or an ingest edge
        that cannot be dialled pushes it here."""
        return self._is_local(channel) or (self.relay_server is not None and self.relay_server.pushed(channel))

    def _relay_client(self) -> Any:
        if self._fleet is None:
            return None
        from edged.relay.client import RelayClient

        r = self.cfg.relay
        return RelayClient(self._fleet, max_record_bytes=r.max_record_bytes, stall_timeout=r.stall_timeout)

    def _node_id(self) -> str:
        return str(self.agent.node_id) if self.agent is not None else ""

    async def _start_relay_manager(self) -> None:
        """With a controller: subscriptions to parents on demand (the HTTP front asks it first)."""
        if self.agent is None or not self.cfg.relay.enabled:
            return
        from edged.relay.manager import Pusher, RelayManager
        from edged.relay.storeio import StoreWriter

        assert self.store is not None
        self._relay_writer = StoreWriter(self.store, self.cfg.hls.window + self.cfg.store.retention_segments)
        directory = self.agent.relay_directory
        self.relay_manager = RelayManager(
            self.cfg.relay, self.store, self.bus, self._relay_writer, directory, self._relay_client,
            node_id=self._node_id, is_local=self._is_here,
            children=lambda ch: self.relay_server.children(ch) if self.relay_server is not None else 0)
        await self._start(self.relay_manager)
        self.relay_pusher = Pusher(self.cfg.relay, self.store, self.bus, directory, self._relay_client,
                                   window=self.cfg.hls.window, is_local=self._is_local, node_id=self._node_id)
        await self._start(self.relay_pusher)
        self.hub.add_listener(lambda stream: self.relay_pusher.reconcile())

    async def _start_relay_server(self) -> None:
        """The relay listener, once this node has its fleet identity (it authenticates both ends)."""
        if self.agent is None or not self.cfg.relay.enabled:
            if self.cfg.relay.enabled:
                log.info("relay listener off: a standalone node has no fleet identity to authenticate with "
                         "(enroll it with --origin)")
            return
        self.agent.identity_listeners.append(self._identity_changed)
        if self.agent.identity is not None:
            await self._serve_relay(self.agent.identity)
        else:
            log.info("relay listener waits for this node's enrollment (it serves with the fleet certificate)")

    def _identity_changed(self, ident: Any) -> None:
        if self._relay_restart is None or self._relay_restart.done():
            self._relay_restart = asyncio.get_running_loop().create_task(self._serve_relay(ident))

    async def _serve_relay(self, ident: Any) -> None:
        from edged.agent.enroll import serves_tls
        from edged.relay.server import RelayServer
        from edged.relay.tls import FleetIdentity

        self._fleet = FleetIdentity(ident.node_id, ident.key_pem, ident.cert_pem, ident.ca_pem)
        if not serves_tls(ident.cert_pem):
            log.warning("relay listener waits: this node's certificate predates the relay (clientAuth only); "
                        "the agent renews it")
            return
        old = self.relay_server
        if old is not None:
            await old.stop()
            if old in self._started:
                self._started.remove(old)
        assert self.store is not None
        server = RelayServer(self.cfg.relay, self.store, self.bus, self._fleet, window=self.cfg.hls.window,
                             has_channel=self._relay_has, ensure=self._relay_ensure, writer=self._relay_writer,
                             on_children=self._relay_children)
        try:
            await server.start()
        except OSError as exc:
            log.error("relay listener not started: %s", exc)
            return
        self.relay_server = server
        self._started.append(server)

    def _relay_has(self, channel: str) -> bool:
        return self._is_here(channel) or (self.relay_manager is not None and self.relay_manager.active(channel))

    async def _relay_ensure(self, channel: str, path: tuple[str, ...]) -> bool:
        from edged.relay.gate import Availability

        if self.relay_manager is None:
            return False
        got = await self.relay_manager.request(channel, path)
        return got in (Availability.LOCAL, Availability.READY, Availability.WAITED)

    def _relay_children(self, channel: str) -> None:
        """A child came or went: keep the subscription it uses alive, and the controller's view current."""
        if self.relay_manager is not None:
            self.relay_manager.children_changed(channel)

    # --- chat -----------------------------------------------------------------------------------------

    async def _start_chat(self) -> None:
        """The chat service with its bus, the IRC listeners, and the WebSocket endpoint the HTTP front adds.

        Tokens are verified with the [chat] jwt_public_keys files and, on an enrolled edge, the keys the
        controller pushes (both sets are trusted). An IRC listener that cannot bind is logged and chat runs
        on without it (WebSocket clients still chat)."""
        chat = self.cfg.chat
        if not chat.enabled:
            return
        from edged.chat.identity import TokenVerifier, split_pem_bundle
        from edged.chat.irc_server import IrcServer
        from edged.chat.service import ChatService
        from edged.chat.ws import ChatWebSocket

        local: list[bytes] = []
        for path in chat.jwt_public_keys:
            local.extend(split_pem_bundle(await asyncio.to_thread(_read_file, path)))
        verifier = TokenVerifier(local)
        if self.agent is not None:
            self.agent.on_chat_keys(lambda pems: verifier.update_keys([*local, *pems]))
        bus = await self._chat_bus()
        # submissions carry the node ID their bus knows this edge by (NATS routes verdicts by it)
        bus_node = getattr(bus, "node_id", None)
        node_id = (lambda: str(bus_node)) if isinstance(bus_node, str) else self._node_id
        self.chat = ChatService(chat, bus, verifier, node_id=node_id)
        await self.chat.start()  # stopped first of all in stop(): clients get RECONNECT before anything closes
        if chat.websocket:
            self._chat_ws = ChatWebSocket(self.chat)
        irc = IrcServer(chat, self.chat)
        try:
            await self._start(irc)
        except OSError as exc:
            log.error("chat: IRC listener not started (chat goes on over WebSocket only): %s", exc)
            return
        self.irc = irc

    async def _chat_bus(self) -> Any:
        """The ChatBus [chat] bus asks for: NATS; the controller's hub on an enrolled edge; else in-process."""
        chat = self.cfg.chat
        if chat.bus == "nats":
            from edged.chat.nats_bus import NatsBus

            return NatsBus(chat.nats_url, await self._chat_node_id(), chat.limits)
        if chat.bus == "auto" and self.agent is not None:
            hub = self._hub_chat_bus()
            if hub is not None:
                return hub
        from edged.chat.local_bus import LocalBus

        return LocalBus(chat.limits)

    def _hub_chat_bus(self) -> Any:
        """The controller's hub as the chat bus (edged.chat.hub_bus.HubBus over the agent's mutual-TLS link)."""
        try:
            from edged.chat.hub_bus import HubBus
        except ImportError as exc:
            log.warning("chat: the controller's hub bus is unavailable (%s): rooms are ordered on this edge", exc)
            return None
        return HubBus(self.agent, self.cfg.chat.limits)

    async def _chat_node_id(self) -> str:
        """This node's ID for the NATS bus (its submissions' origin): the enrolled identity's, else host-based."""
        if self.agent is not None:
            from edged.agent.enroll import load_identity

            ident = await asyncio.to_thread(load_identity, self.cfg.data_path)
            if ident is not None:
                return str(ident.node_id)
        import socket
        import uuid

        return f"{self.cfg.node.name or socket.gethostname()}-{uuid.uuid4().hex[:8]}"

    def _watch_drain(self) -> None:
        """When the controller drains this edge, chat clients get RECONNECT (they come back elsewhere or here)."""
        if self.agent is None or self.chat is None:
            return

        async def watch() -> None:
            was = bool(self.agent.draining)
            while True:
                await asyncio.sleep(DRAIN_POLL)
                now = bool(self.agent.draining)
                if now and not was and self.chat is not None:
                    self.chat.reconnect_all()
                was = now

        self._drain_watch = asyncio.get_running_loop().create_task(watch(), name="edged-chat-drain")

    async def _start_srt(self) -> None:
        try:
            from edged.ingest.srt_server import SrtServer
        except ImportError as exc:
            log.warning("SRT ingest unavailable: %s", exc)
            return
        srt = SrtServer(self.cfg.srt, self.hub, self.authorizer)
        try:
            await srt.start()
        except DependencyMissing as exc:
            log.warning("SRT ingest disabled: %s", exc)
            return
        self.srt = srt
        self._started.append(srt)

    async def stop(self) -> None:
        sdnotify.notify("STOPPING=1")
        if self._drain_watch is not None:
            self._drain_watch.cancel()
        if self.chat is not None:  # RECONNECT to chat clients while every listener is still up
            try:
                await asyncio.wait_for(self.chat.stop(), STOP_GRACE)
            except Exception:
                log.exception("error stopping the chat service")
        for comp in reversed(self._started):
            try:
                await asyncio.wait_for(comp.stop(), STOP_GRACE)
            except Exception:  # keep stopping the rest
                log.exception("error stopping %s", type(comp).__name__)
        self._started.clear()
        if self._relay_restart is not None:
            self._relay_restart.cancel()
        if self._relay_writer is not None:
            self._relay_writer.close()
        if self.store is not None:
            self.store.close()

    async def _watchdog(self, interval: float) -> None:
        while True:
            sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, stop."""
        loop = asyncio.get_running_loop()
        install_loop_exception_handler(loop)
        raise_nofile_limit()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop_event.set)
        try:
            await self.start()
            wd = sdnotify.watchdog_interval()
            wd_task = loop.create_task(self._watchdog(wd)) if wd else None
            await self._stop_event.wait()
            log.info("stopping")
            if wd_task is not None:
                wd_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await wd_task
        finally:
            await self.stop()
