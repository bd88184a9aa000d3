"""edged_srt_* metrics. The channel label exists only while that channel has a live SRT publisher
(`forget_channel` removes it when the publisher ends), so label cardinality stays bounded."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from edged.ingest.libsrt import LinkStats

CONNECTIONS = Gauge("edged_srt_connections", "Open SRT connections (accepted, before and while publishing)")
REFUSED = Counter("edged_srt_refused_total", "SRT callers refused or ended by us, by reason", ["reason"])

RTT = Gauge("edged_srt_rtt_seconds", "Smoothed round-trip time to the SRT publisher", ["channel"])
BANDWIDTH = Gauge("edged_srt_bandwidth_bits_per_second", "libsrt's estimate of the link capacity", ["channel"])
RECV_RATE = Gauge("edged_srt_receive_rate_bits_per_second", "Rate of data received from the publisher",
                  ["channel"])
BUFFER = Gauge("edged_srt_receive_buffer_seconds", "Media time held in the SRT receive buffer", ["channel"])
LATENCY = Gauge("edged_srt_latency_seconds", "Negotiated receiver latency (TSBPD delay)", ["channel"])
LOST = Counter("edged_srt_packets_lost_total", "Packets detected missing (recovered or not)", ["channel"])
RETRANSMITTED = Counter("edged_srt_packets_retransmitted_total", "Retransmitted packets received",
                        ["channel"])
DROPPED = Counter("edged_srt_packets_dropped_total", "Packets never recovered in time (gaps in the media)",
                  ["channel"])
UNDECRYPTED = Counter("edged_srt_packets_undecrypted_total", "Packets that failed decryption", ["channel"])
BYTES = Counter("edged_srt_received_bytes_total", "Payload bytes received over SRT", ["channel"])

_PER_CHANNEL = (RTT, BANDWIDTH, RECV_RATE, BUFFER, LATENCY, LOST, RETRANSMITTED, DROPPED, UNDECRYPTED, BYTES)

# Refusal reasons (the `reason` label): a fixed set, so the label stays bounded.
REASONS = (
    "bad_streamid",  # stream ID malformed
    "mode",  # m=request / bidirectional
    "unknown_key",  # key refused by the authorizer's fast lookup (handshake) or by authorize()
    "auth_error",  # the authorizer failed (e.g. the controller is unreachable)
    "busy",  # channel already has a publisher
    "capacity",  # too many SRT connections
    "encryption",  # passphrase missing, unexpected or wrong (seen in libsrt's log)
    "idle",  # publisher sent nothing for idle_timeout
    "no_media",  # bytes but no decodable media
    "revoked",  # the controller rotated or revoked the channel's key while it was live
    "overflow",  # the demuxer fell behind by more than its buffer
    "demux",  # the MPEG-TS could not be demuxed
)


def refused(reason: str) -> None:
    REFUSED.labels(reason=reason).inc()


def observe(channel: str, s: LinkStats) -> None:
    """Record one srt_bstats sample (interval counters) for a live channel."""
    RTT.labels(channel=channel).set(s.rtt_ms / 1000.0)
    BANDWIDTH.labels(channel=channel).set(s.bandwidth_mbps * 1e6)
    RECV_RATE.labels(channel=channel).set(s.recv_rate_mbps * 1e6)
    BUFFER.labels(channel=channel).set(s.rcv_buf_ms / 1000.0)
    LATENCY.labels(channel=channel).set(s.latency_ms / 1000.0)
    for metric, value in ((LOST, s.lost_delta), (RETRANSMITTED, s.retrans_delta), (DROPPED, s.dropped_delta),
                          (UNDECRYPTED, s.undecrypted_delta), (BYTES, s.recv_bytes_delta)):
        metric.labels(channel=channel).inc(max(0, value))


def forget_channel(channel: str) -> None:
    """Drop every per-channel series once the channel's SRT publisher has ended."""
    for metric in _PER_CHANNEL:
        try:
            metric.remove(channel)
        except KeyError:
            pass
