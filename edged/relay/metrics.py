"""edged_relay_* metrics. Labels are bounded: role, direction, reason and result come from fixed sets."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SUBSCRIPTIONS = Gauge("edged_relay_subscriptions", "Relay subscriptions open now: role=child (this edge "
                      "subscribed to a parent), role=parent (children subscribed here)", ["role"])
RECORDS = Counter("edged_relay_records_total", "Relay records sent to children (out) and received from a "
                  "parent or a pushing edge (in)", ["direction"])
BYTES = Counter("edged_relay_bytes_total", "Relay record bytes (header and payload) by direction", ["direction"])
LAG = Histogram("edged_relay_lag_seconds", "From a segment's commit at the ingest edge to its commit here "
                "(wall clocks of both nodes)",
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
REPARENT = Counter("edged_relay_reparent_total", "Subscriptions moved to another parent (or resubscribed), by "
                   "why: stall, error, closed, bad_record, slow, plan", ["reason"])
RESUME = Counter("edged_relay_resume_total", "Subscriptions (re)started from a position: resumed (the parent "
                 "had it), gone (it had not: restarted at its live window), new (no position)", ["result"])
DROPPED = Counter("edged_relay_children_dropped_total", "Child subscriptions this edge ended, by why: slow "
                  "(over relay.max_backlog_segments behind), send_timeout (stopped reading), limit "
                  "(relay.max_streams)", ["reason"])

for _role in ("child", "parent", "push"):
    SUBSCRIPTIONS.labels(role=_role)
for _d in ("in", "out"):
    RECORDS.labels(direction=_d)
    BYTES.labels(direction=_d)
