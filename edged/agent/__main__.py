"""`python -m edged.agent`: the agent (and its mDNS announcement) alone, without the media daemon.

For tests and bring-up before edged's app wires the agent in; `edged run --origin ...` is the real thing.

    python -m edged.agent [--config FILE] [--data-dir DIR] [--http HOST:PORT]
                          --origin HOST:PORT|auto [--enroll-token TOKEN]

Exit codes as edged's: 0 stopped by a signal, 1 enrollment refused, 2 configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from edged.config import load, parse_hostport
from edged.errors import ConfigError, EdgedError


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.data_dir:
        out["data_dir"] = args.data_dir
    if args.http:
        out["http"] = {"listen": args.http}
    origin: dict[str, Any] = {}
    if args.origin:
        origin["address"] = args.origin
    if args.enroll_token:
        origin["enroll_token"] = args.enroll_token
    if origin:
        out["origin"] = origin
    return out


async def _run(cfg: Any) -> int:
    from edged.agent.discovery import Advertiser
    from edged.agent.link import Agent
    from edged.agent.status import NodeStatus

    _, http_port = parse_hostport(cfg.http.listen, "http.listen")
    status = NodeStatus(http_url=cfg.node.public_url or f"http://127.0.0.1:{http_port}", http_port=http_port)
    agent = Agent(cfg, lambda: status)
    advertiser = Advertiser(cfg, lambda: status, agent) if cfg.node.advertise else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await agent.start()
    try:
        if advertiser is not None:
            await advertiser.start()
        await stop.wait()
    finally:
        if advertiser is not None:
            await advertiser.stop()
        await agent.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edged.agent")
    p.add_argument("--config")
    p.add_argument("--data-dir")
    p.add_argument("--http", metavar="HOST:PORT", help="the HTTP port to announce")
    p.add_argument("--origin", metavar="HOST:PORT|auto")
    p.add_argument("--enroll-token", metavar="TOKEN")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load(args.config, _overrides(args))
        if not cfg.origin.address:
            raise ConfigError("origin.address", "pass --origin HOST:PORT or auto")
        return asyncio.run(_run(cfg))
    except ConfigError as exc:
        print(f"edged: {exc}", file=sys.stderr)
        return 2
    except EdgedError as exc:
        print(f"edged: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
