"""`originctl`: the controller daemon (`serve`) and the operator's verbs.

Exit codes: 0 ok, 1 operational error (controller unreachable, token refused, no such node), 2 usage or
configuration error (argparse's own errors included). Errors are one line on stderr saying what to do.
Data goes to stdout (tables for people, `-o json` for scripts); `token create` prints only tokens and
`channel create` / `channel rotate-key` only the stream key, `chat token` only the chatter token. `route`
exits 1 when no node can serve the viewer; a `chat` moderation verb exits 1 when the room's rules refuse it
(already banned, no such ban, ...); `relay tree` exits 1 when the channel is not live; `drain` exits 1 when the node is not
empty by the end of --wait.

The admin token comes from --token, else $ORIGINCTL_TOKEN, else `token` in the CLI config file
(originctl/config.py), else ./var/origin/admin.token when readable (the default data dir of `serve`).
The controller address: --origin, else $ORIGINCTL_ORIGIN, else `origin` in the config file, else
127.0.0.1:50051.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from originctl import __version__
from originctl.errors import OriginctlError, UsageError

DEFAULT_TOKEN_FILE = Path("var/origin/admin.token")


def _duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a duration like 90s, 15m, 1h or 7d, got {text!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _location(text: str) -> tuple[float, float]:
    try:
        lat_s, lon_s = text.split(",")
        lat, lon = float(lat_s), float(lon_s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAT,LON in degrees, got {text!r}") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise argparse.ArgumentTypeError(f"out of range: {text!r}")
    return lat, lon


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="originctl", description="Origin controller for edged appliances.")
    p.add_argument("--origin", metavar="HOST:PORT", help="controller address (default 127.0.0.1:50051)")
    p.add_argument("--token", metavar="T", help="admin token (default: $ORIGINCTL_TOKEN or the config file)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="seconds per call (default 10)")
    p.add_argument("--version", action="version", version=f"originctl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("serve", help="run the origin controller")
    s.add_argument("--config", metavar="FILE", help="controller TOML config")
    s.add_argument("--data-dir", metavar="DIR", help="state directory (default ./var/origin)")
    s.add_argument("--grpc", metavar="HOST:PORT", help="enrollment + admin API (default 0.0.0.0:50051)")
    s.add_argument("--edge-grpc", metavar="HOST:PORT", help="edge streams, mutual TLS (default: grpc port + 1)")
    s.add_argument("--http", metavar="HOST:PORT", help="/healthz, /metrics, /play (default 0.0.0.0:8081)")
    s.add_argument("--no-advertise", action="store_true", help="do not announce _originctl._tcp on the LAN")
    s.add_argument("--geoip-database", metavar="FILE", help="MaxMind GeoIP2/GeoLite2 City .mmdb for viewer locations")
    s.add_argument("--log-level", choices=("debug", "info", "warning", "error"))

    def output(sp: argparse.ArgumentParser, choices: tuple[str, ...] = ("table", "json")) -> None:
        sp.add_argument("-o", "--output", choices=choices, default="table")

    n = sub.add_parser("nodes", help="list nodes")
    output(n, ("table", "wide", "json"))
    n.add_argument("--state", choices=("healthy", "degraded", "unhealthy", "draining", "lost"))

    node = sub.add_parser("node", help="one node")
    node_sub = node.add_subparsers(dest="node_command", metavar="VERB", required=True)
    show = node_sub.add_parser("show", help="show a node's details")
    show.add_argument("id", metavar="ID", help="node ID, unique ID prefix, or unique name")
    output(show)

    e = sub.add_parser("events", help="recent events, newest first")
    e.add_argument("--node", metavar="ID")
    e.add_argument("--limit", type=int, default=50)
    output(e)

    t = sub.add_parser("top", help="live table of nodes and GPUs")
    t.add_argument("--interval", type=float, default=2.0, metavar="S")
    t.add_argument("--count", type=int, default=0, metavar="N", help="refresh N times, then exit (0 = until ^C)")

    tok = sub.add_parser("token", help="bootstrap tokens")
    tok_sub = tok.add_subparsers(dest="token_command", metavar="VERB", required=True)
    create = tok_sub.add_parser("create", help="print a one-time enrollment token (only the token on stdout)")
    create.add_argument("--ttl", type=_duration, default=3600.0, metavar="DURATION", help="e.g. 15m, 1h (default), 7d")
    create.add_argument("--site", default="", metavar="NAME", help="site given to the node that enrolls with it")
    create.add_argument("--count", type=int, default=1, metavar="N", help="print N tokens, one per line")

    ch = sub.add_parser("channel", help="one channel: create, rotate-key, delete")
    ch_sub = ch.add_subparsers(dest="channel_command", metavar="VERB", required=True)
    cc = ch_sub.add_parser("create", help="create a channel; print its stream key (only the key on stdout)")
    cc.add_argument("name", metavar="NAME", help="1-64 characters of A-Z a-z 0-9 _ . -")
    cr = ch_sub.add_parser("rotate-key", help="print a new stream key for the channel; the old key stops working "
                                              "on every edge")
    cr.add_argument("name", metavar="NAME")
    cd = ch_sub.add_parser("delete", help="delete a channel: its key stops working on every edge")
    cd.add_argument("name", metavar="NAME")

    chs = sub.add_parser("channels", help="list channels and where they are live")
    output(chs)

    st = sub.add_parser("streams", help="live streams: ingest node, ladder and why")
    output(st, ("table", "wide", "json"))
    st.add_argument("--all", action="store_true", help="include recently ended streams")
    st.add_argument("--limit", type=int, default=100, metavar="N", help="ended streams listed with --all")

    ro = sub.add_parser("route", help="explain where /play/CHANNEL sends a viewer")
    ro.add_argument("channel", metavar="CHANNEL")
    ro.add_argument("--client-ip", required=True, metavar="IP", help="the viewer's address")
    ro.add_argument("--location", type=_location, metavar="LAT,LON",
                    help="the viewer's location (default: from the controller's GeoIP database, if any)")
    output(ro)

    rel = sub.add_parser("relay", help="fleet distribution: how live channels are relayed between edges")
    rel_sub = rel.add_subparsers(dest="relay_command", metavar="VERB", required=True)
    rt = rel_sub.add_parser("tree", help="draw a live channel's relay tree (ingest edge, relays, edges)")
    rt.add_argument("channel", metavar="CHANNEL")
    output(rt)

    dr = sub.add_parser("drain", help="send a node no new viewers or transcodes; report until it is empty")
    dr.add_argument("id", metavar="NODE", help="node ID, unique ID prefix, or unique name")
    dr.add_argument("--wait", type=_duration, default=600.0, metavar="DURATION",
                    help="report progress until its streams and viewers are gone, at most this long "
                         "(default 10m; 0 = do not wait)")
    dr.add_argument("--interval", type=float, default=2.0, metavar="S", help="seconds between progress lines")
    un = sub.add_parser("uncordon", help="let a drained node take viewers and transcodes again")
    un.add_argument("id", metavar="NODE")

    _chat_parser(sub, output)

    d = sub.add_parser("discover", help="list edged appliances announced on the LAN (mDNS)")
    d.add_argument("--timeout", type=float, default=3.0, metavar="S", help="seconds to listen (default 3)")
    d.add_argument("--controllers", action="store_true", help="list controllers instead of edges")
    output(d)
    return p


def _chat_parser(sub: Any, output: Any) -> None:
    from edged.chat.model import ROLES

    chat = sub.add_parser("chat", help="live chat: moderation across the fleet, chatter tokens")
    cs = chat.add_subparsers(dest="chat_command", metavar="VERB", required=True)

    tok = cs.add_parser("token", help="mint a chatter token signed by the controller's own key (only the token "
                                      "on stdout; PASS oauth:TOKEN)")
    tok.add_argument("--user", required=True, metavar="ID", help="the chatter's stable user ID (user-id tag)")
    tok.add_argument("--login", required=True, metavar="NAME", help="the IRC nick (1-25 of a-z 0-9 _)")
    tok.add_argument("--display-name", default="", metavar="NAME")
    tok.add_argument("--role", action="append", default=[], choices=ROLES, help="repeat for several roles")
    tok.add_argument("--color", default="", metavar="#RRGGBB")
    tok.add_argument("--ttl", type=_duration, default=3600.0, metavar="DURATION", help="e.g. 15m, 1h (default), 7d")
    tok.add_argument("--case-safe", action="store_true",
                     help="print it in base32, a form that survives lower-casing (tmi.js lower-cases its password)")

    def room(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("channel", metavar="CHANNEL", help="the room (channel name, '#' optional)")

    ban = cs.add_parser("ban", help="ban a chatter from a room on every edge")
    room(ban)
    ban.add_argument("user", metavar="USER", help="login")
    ban.add_argument("--reason", default="")
    to = cs.add_parser("timeout", help="time a chatter out of a room on every edge")
    room(to)
    to.add_argument("user", metavar="USER", help="login")
    to.add_argument("duration", nargs="?", type=_duration, default=0.0, metavar="DURATION",
                    help="e.g. 30s, 10m (default: the rules' default, 10m), 1d")
    to.add_argument("--reason", default="")
    ub = cs.add_parser("unban", help="lift a chatter's ban or timeout")
    room(ub)
    ub.add_argument("user", metavar="USER", help="login")
    de = cs.add_parser("delete", help="delete one message (its id tag) on every edge")
    room(de)
    de.add_argument("message_id", metavar="MSGID")
    sl = cs.add_parser("slow", help="slow mode: one message per chatter per interval (off or 0 to end it)")
    room(sl)
    sl.add_argument("interval", metavar="DURATION|off", help="e.g. 30s, 2m; off")
    mo = cs.add_parser("mode", help="show a room's modes, or switch them")
    room(mo)
    mo.add_argument("--subscribers", action=argparse.BooleanOptionalAction, help="subscribers-only mode")
    mo.add_argument("--emote-only", action=argparse.BooleanOptionalAction, help="emote-only mode")
    mo.add_argument("--r9k", action=argparse.BooleanOptionalAction, help="unique-chat (r9k) mode")
    output(mo)
    bans = cs.add_parser("bans", help="a room's bans and timeouts")
    room(bans)
    output(bans)


# --- credentials ------------------------------------------------------------------------------------


def resolve_origin(args: argparse.Namespace) -> str:
    from originctl.config import DEFAULT_ORIGIN, load_client

    return args.origin or os.environ.get("ORIGINCTL_ORIGIN") or load_client().origin or DEFAULT_ORIGIN


def resolve_token(args: argparse.Namespace) -> str:
    from originctl.config import client_config_path, load_client

    if args.token:
        return str(args.token)
    if os.environ.get("ORIGINCTL_TOKEN"):
        return os.environ["ORIGINCTL_TOKEN"]
    cfg = load_client()
    if cfg.token:
        return cfg.token
    try:
        return DEFAULT_TOKEN_FILE.read_text().strip()
    except OSError:
        pass
    raise UsageError(f"no admin token: pass --token, set ORIGINCTL_TOKEN, or set token = \"...\" in "
                     f"{client_config_path()}; the controller wrote it to DATA_DIR/admin.token")


def _client(args: argparse.Namespace) -> Any:
    from originctl.client import AdminClient

    return AdminClient(resolve_origin(args), resolve_token(args), timeout=args.timeout)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _json(obj: Any) -> None:
    from originctl.model import to_jsonable

    print(json.dumps(to_jsonable(obj), indent=2))


# --- commands ---------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from originctl.config import load_serve

    cfg = load_serve(args.config, {"data_dir": args.data_dir, "grpc": args.grpc, "edge_grpc": args.edge_grpc,
                                   "http": args.http, "log_level": args.log_level,
                                   "geoip_database": args.geoip_database,
                                   "advertise": False if args.no_advertise else None})
    logging.basicConfig(level=cfg.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve(cfg))


async def _serve(cfg: Any) -> int:
    from originctl.server.app import Controller

    controller = Controller(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await controller.start()
    try:
        await stop.wait()
    finally:
        logging.getLogger("originctl").info("stopping")
        await controller.stop()
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    from originctl import render
    from originctl.model import NodeState

    with _client(args) as c:
        nodes = c.nodes(NodeState(args.state) if args.state else None)
    if args.output == "json":
        _json(nodes)
    else:
        print(render.nodes_table(nodes, _now_ms(), wide=args.output == "wide"))
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    from originctl import render

    with _client(args) as c:
        node = c.node(args.id)
    if args.output == "json":
        _json(node)
    else:
        print(render.node_detail(node, _now_ms()))
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    from originctl import render

    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    with _client(args) as c:
        events = c.events(args.node or "", args.limit)
    if args.output == "json":
        _json(events)
    else:
        print(render.events_table(events))
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from originctl import render

    if args.interval <= 0:
        raise UsageError("--interval must be positive")
    tty = sys.stdout.isatty()
    with _client(args) as c:
        i = 0
        while True:
            screen = render.top_screen(c.nodes(), c.origin, _now_ms())
            print(("\x1b[H\x1b[2J" if tty else "") + screen, flush=True)
            i += 1
            if args.count and i >= args.count:
                return 0
            time.sleep(args.interval)


def cmd_token(args: argparse.Namespace) -> int:
    if not 1 <= args.count <= 10_000:
        raise UsageError("--count must be between 1 and 10000")
    with _client(args) as c:
        tokens, expires_ms = c.create_tokens(args.ttl, args.site, args.count)
    print("\n".join(tokens))
    if sys.stderr.isatty():
        from originctl.render import when

        print(f"one-time; expires {when(expires_ms)}. On the edge: edged run --origin HOST:PORT --enroll-token TOKEN",
              file=sys.stderr)
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    from originctl import discovery, render

    service = discovery.CONTROLLER_SERVICE if args.controllers else discovery.EDGE_SERVICE
    found = asyncio.run(discovery.browse(service, args.timeout))
    if args.output == "json":
        _json(found)
        return 0
    if args.controllers:
        rows = [[f.name, ",".join(f.addresses), str(f.port), f.properties.get("edge_port", ""),
                 f.properties.get("http_port", ""), f.properties.get("version", ""), f.properties.get("ca", "")]
                for f in found]
        print(render.table(["NAME", "ADDRESS", "GRPC", "EDGE", "HTTP", "VERSION", "CA"], rows))
    else:
        rows = [[f.name, f.properties.get("id", "") or "-", ",".join(f.addresses),
                 f.properties.get("http_port", str(f.port)), f.properties.get("version", ""),
                 f.properties.get("gpu", "") or "-", f.properties.get("site", "") or "-"] for f in found]
        print(render.table(["NAME", "NODE-ID", "ADDRESS", "HTTP", "VERSION", "GPU", "SITE"], rows))
    if not found:
        print(f"nothing announced {service} within {args.timeout:g}s", file=sys.stderr)
    return 0


def cmd_channel(args: argparse.Namespace) -> int:
    with _client(args) as c:
        if args.channel_command == "create":
            _, key = c.create_channel(args.name)
        elif args.channel_command == "rotate-key":
            _, key = c.rotate_channel_key(args.name)
        else:
            c.delete_channel(args.name)
            if sys.stderr.isatty():
                print(f"deleted channel {args.name}; its key no longer publishes", file=sys.stderr)
            return 0
    print(key)
    if sys.stderr.isatty():
        print(f"the stream key of {args.name}: shown once, keep it (RTMP: rtmp://EDGE/live/KEY; SRT streamid "
              f"#!::r=KEY,m=publish)", file=sys.stderr)
    return 0


def cmd_channels(args: argparse.Namespace) -> int:
    from originctl import render

    with _client(args) as c:
        channels = c.channels()
    if args.output == "json":
        _json(channels)
    else:
        print(render.channels_table(channels))
    return 0


def cmd_streams(args: argparse.Namespace) -> int:
    from originctl import render

    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    with _client(args) as c:
        streams = c.streams(include_ended=args.all, limit=args.limit)
        names = {} if args.output == "json" else {n.id: n.info.name or n.id for n in c.nodes()}
        trees = {t.channel: t for t in c.relay_trees()} if args.output == "wide" else {}
    if args.output == "json":
        _json(streams)
    else:
        print(render.streams_table(streams, _now_ms(), names, wide=args.output == "wide", trees=trees))
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    from originctl import render

    with _client(args) as c:
        (tree,) = c.relay_trees(args.channel)
    if args.output == "json":
        _json(tree)
    else:
        print(render.relay_tree_text(tree))
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    from originctl import render

    with _client(args) as c:
        route = c.route(args.channel, args.client_ip, args.location)
    if args.output == "json":
        _json(route)
    else:
        print(render.route_text(route))
    return 0 if route.routed else 1


def cmd_drain(args: argparse.Namespace) -> int:
    from originctl.render import when

    if args.interval <= 0:
        raise UsageError("--interval must be positive")
    with _client(args) as c:
        node = c.set_draining(args.id, True)
        label = f"{node.info.name or node.id} ({node.id})" if node.info.name else node.id
        print(f"{label}: draining: no new viewers or transcodes", flush=True)
        deadline = time.monotonic() + args.wait
        while True:
            node = c.node(node.id)
            streams = sum(s.node_id == node.id for s in c.streams())
            viewers = node.last_report.node.viewers if node.connected and node.last_report else 0
            if not args.wait:
                print(f"{when(_now_ms())} {label}: {streams} streams, {viewers} viewers left", flush=True)
                return 0
            if not streams and not viewers:
                print(f"{when(_now_ms())} {label}: drained (no streams, no viewers)", flush=True)
                return 0
            if time.monotonic() >= deadline:
                print(f"originctl: {label} still has {streams} streams and {viewers} viewers after "
                      f"{args.wait:g}s; it stays draining (`originctl uncordon {node.id}` undoes it)", file=sys.stderr)
                return 1
            print(f"{when(_now_ms())} {label}: {streams} streams, {viewers} viewers left", flush=True)
            time.sleep(min(args.interval, max(0.0, deadline - time.monotonic())))


def cmd_uncordon(args: argparse.Namespace) -> int:
    with _client(args) as c:
        node = c.set_draining(args.id, False)
    print(f"{node.info.name or node.id} ({node.id}): taking viewers and transcodes again (state {node.state.value})")
    return 0


def _moderated(args: argparse.Namespace, result: Any) -> int:
    room = f"#{result.room.room}"
    if result.ok:
        print(f"{room}: {result.text or result.notice_id or 'done'}")
        return 0
    print(f"originctl: {room}: {result.text} ({result.notice_id})", file=sys.stderr)
    return 1


def cmd_chat(args: argparse.Namespace) -> int:
    from originctl import render

    verb = args.chat_command
    with _client(args) as c:
        if verb == "token":
            token, expires_ms = c.chat_token(args.user, args.login, display_name=args.display_name,
                                             roles=tuple(args.role), ttl_seconds=args.ttl, color=args.color)
            if args.case_safe:
                from edged.chat.identity import case_safe_token

                token = case_safe_token(token)
            print(token)
            if sys.stderr.isatty():
                print(f"expires {render.when(expires_ms)}. In an IRC client: PASS oauth:TOKEN, NICK {args.login.lower()}",
                      file=sys.stderr)
            return 0
        if verb == "ban":
            return _moderated(args, c.chat_moderate(args.channel, "ban", target_login=args.user, reason=args.reason))
        if verb == "timeout":
            if args.duration and not 1 <= args.duration <= 1_209_600:
                raise UsageError("a timeout lasts between 1s and 14d")
            return _moderated(args, c.chat_moderate(args.channel, "timeout", target_login=args.user,
                                                    seconds=int(args.duration), reason=args.reason))
        if verb == "unban":
            return _moderated(args, c.chat_moderate(args.channel, "unban", target_login=args.user))
        if verb == "delete":
            return _moderated(args, c.chat_moderate(args.channel, "delete", target_msg_id=args.message_id))
        if verb == "slow":
            seconds = 0 if args.interval.strip().lower() == "off" else int(_duration_arg(args.interval))
            if seconds > 1800:
                raise UsageError("slow mode: at most 30m between messages")
            if seconds == 0:
                return _moderated(args, c.chat_moderate(args.channel, "slowoff"))
            return _moderated(args, c.chat_moderate(args.channel, "slow", seconds=seconds))
        if verb == "mode":
            rc = 0
            for flag, on, off in (("subscribers", "subscribers", "subscribersoff"),
                                  ("emote_only", "emoteonly", "emoteonlyoff"), ("r9k", "r9kbeta", "r9kbetaoff")):
                value = getattr(args, flag)
                if value is not None:
                    rc = max(rc, _moderated(args, c.chat_moderate(args.channel, on if value else off)))
            view = c.chat_room(args.channel)
            if args.output == "json":
                _json(view)
            else:
                print(render.chat_modes_text(view))
            return rc
        view = c.chat_room(args.channel)  # bans
    if args.output == "json":
        _json(view.restrictions)
    else:
        print(render.chat_bans_table(view, _now_ms()))
    return 0


def _duration_arg(text: str) -> float:
    try:
        return _duration(text)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(str(exc)) from None


COMMANDS = {"serve": cmd_serve, "nodes": cmd_nodes, "node": cmd_node, "events": cmd_events, "top": cmd_top,
            "token": cmd_token, "discover": cmd_discover, "channel": cmd_channel, "channels": cmd_channels,
            "streams": cmd_streams, "route": cmd_route, "relay": cmd_relay, "drain": cmd_drain,
            "uncordon": cmd_uncordon, "chat": cmd_chat}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except OriginctlError as exc:
        print(f"originctl: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `originctl nodes | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
