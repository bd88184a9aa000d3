"""edged_transcode_* metrics (main process; workers report, the supervisor records).

Label values are bounded: encoder and reason come from fixed sets, rendition names from the
configured ladder, and the channel label exists only while that channel is live.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ENCODER_INFO = Gauge(
    "edged_transcode_encoder_info",
    "The H.264 encoder this node uses for ABR ladders (1 for the current choice) and why",
    ["encoder", "reason"],
)
CAPACITY = Gauge("edged_transcode_capacity", "Concurrent transcodes (ladders) this node admits")
ACTIVE = Gauge("edged_transcode_active", "Channels being transcoded now")
REFUSED = Counter("edged_transcode_refused_total", "Transcodes refused because the node was at capacity "
                  "(the stream is served as passthrough only)")
SHED = Counter("edged_transcode_shed_total", "Rungs shed because a transcoder fell behind real time", ["rendition"])
RESTORED = Counter("edged_transcode_restored_total", "Shed rungs added back after the transcoder caught up",
                   ["rendition"])
RUNGS_SHED = Gauge("edged_transcode_rungs_shed", "Rungs currently shed, per live channel", ["channel"])
BACKLOG = Gauge("edged_transcode_backlog_seconds",
                "Media seconds a live channel's transcoder is behind its input", ["channel"])
RENDITION_ERRORS = Counter("edged_transcode_rendition_errors_total", "Rungs that failed (encoder or muxer errors)",
                           ["rendition"])


def set_encoder(encoder: str, reason: str) -> None:
    """Exactly one series is 1: the current choice."""
    ENCODER_INFO.clear()
    ENCODER_INFO.labels(encoder=encoder, reason=reason).set(1)


def channel_ended(channel: str) -> None:
    for g in (RUNGS_SHED, BACKLOG):
        try:
            g.remove(channel)
        except KeyError:
            pass
