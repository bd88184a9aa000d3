"""What the running edge daemon tells the agent about itself at each heartbeat."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """Per-node figures, filled by edged's app from the live daemon (the agent adds CPU, memory, GPUs)."""

    http_url: str = ""  # how viewers reach this node, e.g. "http://203.0.113.7:8080"
    http_port: int = 0  # bound ports (the real ones when the config said :0)
    rtmp_port: int = 0
    srt_port: int = 0
    relay_port: int = 0  # the bound relay listener ([relay] listen); 0 = not running
    active_streams: int = 0  # live publishers on this node
    live_channels: tuple[str, ...] = ()
    transcodes: int = 0  # running transcoder processes
    viewers: int = 0  # HLS/chat clients served now
    egress_bps: int = 0  # bits/s sent to viewers over the last few seconds
    cache_bytes: int = 0  # segment store bytes in use
    cache_capacity_bytes: int = 0
    transcode_capacity: int = 0  # concurrent ladders at most; 0 = transcoding off
    transcode_encoder: str = ""  # "nvenc", "x264", or "" (off, or still detecting)
