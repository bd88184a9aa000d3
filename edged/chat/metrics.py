"""edged_chat_* Prometheus metrics. Labels are bounded: a transport, a direction, a result, a close reason;
never a room, a chatter or an address."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TRANSPORTS = ("irc", "ircs", "ws")

CONNECTIONS = Gauge("edged_chat_connections", "Open chat connections, by transport (irc, ircs, ws)", ["transport"])
MESSAGES = Counter(
    "edged_chat_messages_total",
    "Chat messages by direction and result. in: a local chatter's PRIVMSG, delivered (ordered and sent to the "
    "room), rate_limited (msg_ratelimit, msg_slowmode) or rejected (any other refusal); out: message lines "
    "written to local clients (delivered) or lost with a client dropped for reading too slowly (dropped_slow)",
    ["direction", "result"])
DELIVERY = Histogram(
    "edged_chat_delivery_seconds",
    "From a room event's time at its orderer (the hub's sequence) to its write to this edge's client sockets",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
BUS_CONNECTED = Gauge("edged_chat_bus_connected",
                      "1 while the chat bus reaches the rest of the fleet (in-process bus: always 1); 0 while "
                      "rooms are ordered locally (degraded)")
CLOSED = Counter("edged_chat_closed_total",
                 "Chat connections ended by this edge, by reason (protocol, login_timeout, pong_timeout, flood, "
                 "slow_reader, login_failed, refused, reconnect)", ["reason"])
ROOMS = Gauge("edged_chat_rooms", "Rooms with members on this edge")

IN_DELIVERED = MESSAGES.labels(direction="in", result="delivered")
IN_RATE_LIMITED = MESSAGES.labels(direction="in", result="rate_limited")
IN_REJECTED = MESSAGES.labels(direction="in", result="rejected")
OUT_DELIVERED = MESSAGES.labels(direction="out", result="delivered")
OUT_DROPPED_SLOW = MESSAGES.labels(direction="out", result="dropped_slow")

for _t in TRANSPORTS:
    CONNECTIONS.labels(transport=_t)
