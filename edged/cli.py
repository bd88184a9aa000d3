"""`edged` command line: `edged run ...`. Exit 0 ok, 1 operational failure, 2 usage/config error."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from edged import __version__
from edged.config import load, parse_hostport, valid_channel_name
from edged.errors import ConfigError, EdgedError

log = logging.getLogger("edged")


def _channel_pair(value: str) -> tuple[str, str]:
    name, sep, key = value.partition(":")
    if not sep or not name or not key:
        raise argparse.ArgumentTypeError(f"expected NAME:STREAMKEY, got {value!r}")
    if not valid_channel_name(name):
        raise argparse.ArgumentTypeError(f"invalid channel name {name!r} (A-Z a-z 0-9 _ . -, max 64)")
    return name, key


def _hostport(value: str) -> str:
    try:
        parse_hostport(value, "flag")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("config: flag: ")) from None
    return value


def _ladder(value: str) -> list[dict[str, Any]]:
    from dataclasses import asdict

    from edged.media.transcode.ladder import parse_ladder

    try:
        return [asdict(r) for r in parse_ladder(value)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edged", description="Live-video edge appliance daemon.")
    p.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon", description="Run the edge daemon.")
    run.add_argument("--config", metavar="FILE", help="TOML configuration file (flags win over it)")
    run.add_argument("--data-dir", metavar="DIR", help="LMDB store, identity and state (default ./var/edged)")
    run.add_argument("--rtmp", metavar="HOST:PORT", type=_hostport, help="RTMP listener (default 0.0.0.0:1935)")
    run.add_argument("--rtmps", metavar="HOST:PORT", type=_hostport,
                     help="RTMPS listener (default 0.0.0.0:1936; on when [rtmp] tls_cert_file and tls_key_file are set)")
    run.add_argument("--http", metavar="HOST:PORT", type=_hostport, help="HTTP listener (default 0.0.0.0:8080)")
    run.add_argument("--relay", metavar="HOST:PORT", type=_hostport,
                     help="relay listener for other edges, gRPC with mutual TLS (default 0.0.0.0:50061; enrolled nodes)")
    run.add_argument("--srt", metavar="HOST:PORT", type=_hostport, help="SRT listener, UDP (default 0.0.0.0:9000)")
    run.add_argument("--srt-passphrase", metavar="SECRET", help="require this SRT passphrase (10-79 characters)")
    run.add_argument("--no-srt", action="store_true", help="do not listen for SRT")
    run.add_argument("--channel", metavar="NAME:STREAMKEY", action="append", type=_channel_pair, default=[],
                     help="allow STREAMKEY to publish channel NAME (repeatable)")
    run.add_argument("--origin", metavar="HOST:PORT|auto", help="origin controller to enroll with and report to")
    run.add_argument("--enroll-token", metavar="TOKEN", help="one-time bootstrap token from `originctl token create`")
    run.add_argument("--irc", metavar="HOST:PORT", type=_hostport, help="chat over IRC/TCP (default 0.0.0.0:6667)")
    run.add_argument("--ircs", metavar="HOST:PORT", type=_hostport,
                     help="chat over IRC/TLS (default 0.0.0.0:6697; on when [chat] tls_cert_file and tls_key_file are set)")
    run.add_argument("--no-chat", action="store_true", help="no chat (neither IRC listeners nor /chat)")
    run.add_argument("--chat-bus", choices=("auto", "local", "nats"),
                     help="how chat rooms reach the fleet: auto (the controller when enrolled), local, nats")
    run.add_argument("--nats-url", metavar="URL", help="NATS server of the chat bus (with --chat-bus nats)")
    run.add_argument("--chat-key", metavar="FILE", action="append", default=[],
                     help="PEM public key that verifies chat tokens (repeatable; with the controller's keys)")
    run.add_argument("--segment-seconds", type=float, metavar="S", help="target HLS segment duration (default 2)")
    run.add_argument("--hls-format", choices=("cmaf", "ts"),
                     help="segment container: cmaf (LL-HLS with parts, the default) or ts (MPEG-TS, plain HLS)")
    run.add_argument("--part-seconds", type=float, metavar="S", help="LL-HLS part target, 0.2-1.0 (default 0.5)")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="default info")
    run.add_argument("--transcode", action=argparse.BooleanOptionalAction, default=None,
                     help="ABR ladder on/off (default: on where NVENC encodes; CPU-only nodes opt in)")
    run.add_argument("--encoder", choices=("auto", "nvenc", "x264"), help="ladder encoder (default auto)")
    run.add_argument("--ladder", metavar="SPEC", type=_ladder,
                     help="rungs: [NAME=]WxH[@FPS]:KBPS,... or 'default' (rungs above the source are dropped)")

    from edged import bench_transcode

    bench = sub.add_parser("bench", help="measure this box", description="Benchmarks for sizing a box.")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    bench_transcode.add_arguments(bench_sub.add_parser(
        "transcode", help="run the production transcoder on a file as fast as it can",
        description=bench_transcode.__doc__.splitlines()[0] if bench_transcode.__doc__ else None))
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {}
    if args.data_dir:
        o["data_dir"] = args.data_dir
    if args.log_level:
        o["log_level"] = args.log_level
    if args.rtmp:
        o.setdefault("rtmp", {})["listen"] = args.rtmp
    if args.rtmps:
        o.setdefault("rtmp", {})["tls_listen"] = args.rtmps
    if args.http:
        o.setdefault("http", {})["listen"] = args.http
    if args.relay:
        o.setdefault("relay", {})["listen"] = args.relay
    if args.srt:
        o.setdefault("srt", {})["listen"] = args.srt
    if args.srt_passphrase is not None:
        o.setdefault("srt", {})["passphrase"] = args.srt_passphrase
    if args.no_srt:
        o.setdefault("srt", {})["enabled"] = False
    if args.irc:
        o.setdefault("chat", {})["irc_listen"] = args.irc
    if args.ircs:
        o.setdefault("chat", {})["irc_tls_listen"] = args.ircs
    if args.no_chat:
        o.setdefault("chat", {})["enabled"] = False
    if args.chat_bus is not None:
        o.setdefault("chat", {})["bus"] = args.chat_bus
    if args.nats_url is not None:
        o.setdefault("chat", {})["nats_url"] = args.nats_url
    if args.chat_key:
        o.setdefault("chat", {})["jwt_public_keys"] = list(args.chat_key)
    if args.segment_seconds is not None:
        o.setdefault("hls", {})["segment_seconds"] = args.segment_seconds
    if args.hls_format is not None:
        o.setdefault("hls", {})["format"] = args.hls_format
    if args.part_seconds is not None:
        o.setdefault("hls", {})["part_seconds"] = args.part_seconds
    if args.origin is not None:
        o.setdefault("origin", {})["address"] = args.origin
    if args.enroll_token is not None:
        o.setdefault("origin", {})["enroll_token"] = args.enroll_token
    if args.channel:
        o["channels"] = {key: name for name, key in args.channel}
    if args.transcode is not None:
        o.setdefault("transcode", {})["enabled"] = args.transcode
    if args.encoder is not None:
        o.setdefault("transcode", {})["encoder"] = args.encoder
    if args.ladder is not None:
        o.setdefault("transcode", {})["ladder"] = args.ladder
    return o


def _cmd_run(args: argparse.Namespace) -> int:
    cfg = load(args.config, _overrides(args))
    if args.rtmps and not cfg.rtmp.tls_cert_file:
        raise ConfigError("rtmp.tls_cert_file", "--rtmps needs [rtmp] tls_cert_file and tls_key_file (PEM files)")
    if args.ircs and not cfg.chat.tls_cert_file:
        raise ConfigError("chat.tls_cert_file", "--ircs needs [chat] tls_cert_file and tls_key_file (PEM files)")
    from edged import log as edlog
    from edged.app import EdgeApp

    edlog.setup(cfg.log_level)
    if not cfg.channels and not cfg.origin.address:
        log.warning("no channels configured: every publish will be refused (use --channel NAME:STREAMKEY)")
    try:
        asyncio.run(EdgeApp(cfg).run())
    except OSError as exc:
        print(f"edged: cannot start: {exc}", file=sys.stderr)
        return 1
    except EdgedError as exc:
        print(f"edged: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "bench":
            from edged import bench_transcode

            return bench_transcode.run(args)
    except ConfigError as exc:
        print(f"edged: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
