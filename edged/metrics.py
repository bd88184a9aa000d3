"""edged_* Prometheus metrics of the core media path. Labels are bounded: no viewer labels, and a
channel label only where the channel is live (removed when it ends)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

STREAMS_LIVE = Gauge("edged_streams_live", "Live publishers by ingest protocol", ["source"])
STREAM_DROPPED = Counter(
    "edged_stream_dropped_packets_total", "Packets dropped for readers that fell behind", ["reader"]
)
RTMP_CONNECTIONS = Gauge("edged_rtmp_connections", "Open RTMP connections")
RTMP_REJECTED = Counter("edged_rtmp_rejected_total", "RTMP connections ended by us, by reason", ["reason"])
INGEST_BYTES = Counter("edged_ingest_bytes_total", "Media payload bytes received", ["source"])
PUBLISH_REFUSED = Counter("edged_publish_refused_total", "Publishes refused, by reason", ["source", "reason"])

SEGMENTS_WRITTEN = Counter("edged_segments_written_total", "Segments written to the store", ["rendition"])
SEGMENT_BYTES = Counter("edged_segment_bytes_total", "Segment payload bytes written", ["rendition"])
HLS_FORCED_CUTS = Counter("edged_hls_forced_cuts_total", "Segments cut at hls.max_segment_seconds without a keyframe "
                          "(the source's keyframe interval is longer)", ["rendition"])
HLS_OVER_TARGET = Counter("edged_hls_segments_over_target_total",
                          "Segments whose rounded duration exceeds the playlist's EXT-X-TARGETDURATION", ["rendition"])
PARTS_WRITTEN = Counter("edged_hls_parts_written_total", "LL-HLS parts (CMAF) written to the store", ["rendition"])
INGEST_TO_PART = Histogram(
    "edged_ingest_to_part_seconds",
    "Time from a part's first packet arriving at the ingest socket to the part being listed (source rendition)",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5),
)
INGEST_TO_PLAYLIST = Histogram(
    "edged_ingest_to_playlist_seconds",
    "Time from a segment's first packet arriving at the ingest socket to the segment being listed",
    buckets=(0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10, 15),
)
WORKER_RESTARTS = Counter("edged_pipeline_worker_restarts_total", "Pipeline worker processes restarted after a failure")
WORKER_FAILURES = Counter("edged_pipeline_worker_failures_total", "Pipeline worker processes that exited abnormally")
WORKERS = Gauge("edged_pipeline_workers", "Running pipeline worker processes")

STORE_BYTES = Gauge("edged_store_bytes", "Segment payload bytes held in the LMDB store")
STORE_EVICTED = Counter("edged_store_evicted_segments_total", "Segments evicted from the store")

HTTP_REQUESTS = Counter(
    "edged_http_requests_total", "HTTP requests by kind (master, playlist, segment, part, init; healthz, metrics, "
    "other) and "
    "result: local (served from this edge's store), relay_wait (served once a relay subscription was ready), "
    "404, 503, or the status class of any other answer", ["kind", "result"])
HLS_BLOCKED = Gauge("edged_hls_blocked_requests", "LL-HLS requests blocked now, by kind (playlist: a reload "
                    "with _HLS_msn; part: a GET of a part not committed yet)", ["kind"])
HLS_BLOCK_REFUSED = Counter("edged_hls_blocking_refused_total", "LL-HLS blocking requests answered 503, by reason "
                            "(timeout: not satisfied within 3 x target duration; max_blocking_requests: the "
                            "rendition's waiter cap was reached)", ["reason"])
HTTP_BYTES = Counter("edged_http_sent_bytes_total", "Response body bytes sent", ["route"])
HTTP_CONNECTIONS = Gauge("edged_http_connections", "Open HTTP connections")
HTTP_CONNECTION_LIMIT = Gauge("edged_http_connection_limit", "HTTP connection cap in force (config and descriptor limit)")
HTTP_REFUSED = Counter("edged_http_connections_refused_total",
                       "HTTP connections closed at accept, by reason (max_connections, per_address)", ["reason"])
HTTP_EVICTED = Counter("edged_http_connections_evicted_total",
                       "Idle HTTP connections closed at the connection cap to admit a new one")
HTTP_TIMEOUTS = Counter("edged_http_timeouts_total",
                        "HTTP connections closed by a timeout, by kind (header, keepalive, send)", ["kind"])
HTTP_BAD_REQUESTS = Counter("edged_http_bad_requests_total", "Malformed HTTP requests answered 400 and closed")
ACCEPT_ERRORS = Counter("edged_accept_errors_total",
                        "accept() calls failed on a listening socket (EMFILE, ENFILE, ENOBUFS, ENOMEM); asyncio "
                        "pauses that listener for 1 s")
