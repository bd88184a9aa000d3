"""Text for people: tables, durations, sizes. Pure functions of the domain types."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from originctl.model import (
    Channel,
    ChatRoomView,
    Event,
    GpuSample,
    GpuStatus,
    Node,
    NodeState,
    RelayMember,
    RelayTreeView,
    Route,
    StreamRecord,
)
from originctl.server.health import throttle_names


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    lines += ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in rows]
    return "\n".join(lines)


def age(then_ms: int, now_ms: int) -> str:
    if not then_ms:
        return "never"
    s = max(0.0, (now_ms - then_ms) / 1000)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s / 60:.0f}m"
    if s < 86400:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def when(ms: int) -> str:
    if not ms:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def rate(bps: float) -> str:
    for unit in ("bit/s", "kbit/s", "Mbit/s", "Gbit/s"):
        if bps < 1000 or unit == "Gbit/s":
            return f"{bps:.0f} {unit}" if unit == "bit/s" else f"{bps:.1f} {unit}"
        bps /= 1000
    raise AssertionError("unreachable")


def short_gpu_name(name: str) -> str:
    return name.removeprefix("NVIDIA ").removeprefix("Tesla ")


def gpu_summary(node: Node) -> str:
    r = node.last_report
    if r is None:
        return "-"
    if r.gpu_status is GpuStatus.NVML_ERROR:
        return "nvml-error"
    if r.gpu_status is GpuStatus.NO_GPU or not r.gpus:
        return "no GPU"
    if len(r.gpus) == 1:
        g = r.gpus[0]
        return f"{short_gpu_name(g.name)} {g.utilization_gpu_pct}%"
    avg = sum(g.utilization_gpu_pct for g in r.gpus) / len(r.gpus)
    return f"{len(r.gpus)}x {short_gpu_name(r.gpus[0].name)} {avg:.0f}%"


def relay_summary(node: Node) -> str:
    """The node's relay listener and role, e.g. "10.0.0.5:50061 relay" or "- unreachable"."""
    i = node.info
    flags = [f for f, on in (("relay", i.relay), ("unreachable", not i.reachable)) if on]
    return " ".join([i.relay_address or "-", *flags])


def nodes_table(nodes: Sequence[Node], now_ms: int, wide: bool = False) -> str:
    headers = ["ID", "NAME", "SITE", "STATE", "LAST-REPORT", "STREAMS", "VIEWERS", "GPU"]
    if wide:
        headers += ["EGRESS", "ENC", "TEMP", "VERSION", "PEER", "RELAY", "REASON"]
    rows = []
    for n in nodes:
        r = n.last_report
        row = [n.id, n.info.name or n.info.hostname, n.info.site or "-", n.state.value,
               age(n.last_report_unix_ms, now_ms), str(r.node.active_streams) if r else "-",
               str(r.node.viewers) if r else "-", gpu_summary(n)]
        if wide:
            gpus = r.gpus if r else ()
            row += [rate(r.node.egress_bps) if r else "-",
                    "/".join(f"{g.encoder_utilization_pct}%" for g in gpus) or "-",
                    "/".join(f"{g.temperature_c}C" for g in gpus) or "-",
                    n.info.version or "-", n.peer or "-", relay_summary(n), n.state_reason]
        rows.append(row)
    return table(headers, rows)


def _gpu_lines(g: GpuSample) -> list[str]:
    throttle = ", ".join(throttle_names(g.clocks_event_reasons)) if g.clocks_event_reasons else "none"
    cap = []
    if g.encoder_capacity_h264_pct is not None:
        cap.append(f"h264 {g.encoder_capacity_h264_pct}%")
    if g.encoder_capacity_hevc_pct is not None:
        cap.append(f"hevc {g.encoder_capacity_hevc_pct}%")
    errs = [f"{label} {v}" for label, v in (("ECC uncorrected", g.ecc_uncorrected_volatile),
                                             ("ECC corrected", g.ecc_corrected_volatile),
                                             ("XID", g.xid_errors), ("last XID", g.last_xid),
                                             ("PCIe replays", g.pcie_replay_counter)) if v is not None]
    return [
        f"  {g.index}  {g.name}  {g.uuid}",
        f"     utilization {g.utilization_gpu_pct}%  memory {g.utilization_memory_pct}% "
        f"({size(g.memory_used_bytes)} of {size(g.memory_total_bytes)})  clocks {g.sm_clock_mhz}/{g.memory_clock_mhz} MHz",
        f"     encoder {g.encoder_utilization_pct}% ({g.encoder_sessions} sessions, {g.encoder_average_fps} fps, "
        f"{g.encoder_average_latency_us / 1000:.1f} ms)  decoder {g.decoder_utilization_pct}%  "
        f"capacity left: {', '.join(cap) or '-'}",
        f"     temperature {g.temperature_c} C  power {g.power_w:.0f} of {g.power_limit_w:.0f} W  throttle: {throttle}",
        f"     errors: {', '.join(errs) or 'not offered by this GPU'}",
    ]


def node_detail(n: Node, now_ms: int) -> str:
    i = n.info
    lines = [
        f"ID:           {n.id}",
        f"Name:         {i.name or '-'} (host {i.hostname or '-'})",
        f"Site:         {i.site or '-'}",
        f"State:        {n.state.value} for {age(n.state_since_unix_ms, now_ms)}: {n.state_reason}",
        f"Connected:    {'yes, from ' + n.peer if n.connected else 'no'}",
        f"Last report:  {age(n.last_report_unix_ms, now_ms)} ago" if n.last_report_unix_ms else "Last report:  never",
        f"Version:      {i.version or '-'}",
        f"Enrolled:     {when(n.enrolled_unix_ms)}; certificate valid until {when(n.certificate_not_after_unix_ms)}",
        f"Serves:       {i.public_url or '-'} (http {i.http_port or '-'}, rtmp {i.rtmp_port or '-'}, "
        f"srt {i.srt_port or '-'})",
        f"Relay:        {i.relay_address or 'no relay listener'}; "
        f"{'relay node' if i.relay else 'not a relay node'}; "
        f"{'reachable by other nodes' if i.reachable else 'unreachable (pushes its channels up to a relay node)'}",
        f"Prefixes:     {', '.join(i.prefixes) or '-'}",
        f"Location:     {i.latitude}, {i.longitude}" if i.latitude is not None and i.longitude is not None
        else "Location:     -",
        f"Heartbeat:    every {i.heartbeat_seconds:g} s",
    ]
    r = n.last_report
    if r is not None:
        s = r.node
        lines += [
            f"CPU:          load {s.cpu_load1:.2f} on {s.cpu_count} CPUs; memory {size(s.memory_used_bytes)} of "
            f"{size(s.memory_total_bytes)}",
            f"Streams:      {s.active_streams} live ({', '.join(s.live_channels) or '-'}), {s.transcodes} transcoding",
            f"Viewers:      {s.viewers}, egress {rate(s.egress_bps)}",
            f"Cache:        {size(s.cache_bytes)} of {size(s.cache_capacity_bytes)}",
        ]
        if r.gpu_status is GpuStatus.OK and r.gpus:
            lines.append(f"GPUs ({i.driver_version and 'driver ' + i.driver_version or 'NVML'}):")
            for g in r.gpus:
                lines += _gpu_lines(g)
        elif r.gpu_status is GpuStatus.NVML_ERROR:
            lines.append(f"GPUs:         NVML failed: {r.gpu_error}")
        else:
            lines.append(f"GPUs:         none{' (' + r.gpu_error + ')' if r.gpu_error else ''}")
    return "\n".join(lines)


def events_table(events: Sequence[Event]) -> str:
    rows = []
    for e in events:
        change = ""
        if e.to_state is not None:
            change = f"{e.from_state.value if e.from_state else '-'} -> {e.to_state.value}"
        rows.append([when(e.time_unix_ms), e.node_id, e.kind, change, e.reason])
    return table(["TIME", "NODE", "KIND", "CHANGE", "REASON"], rows)


def top_screen(nodes: Sequence[Node], origin: str, now_ms: int) -> str:
    counts = {s: 0 for s in NodeState}
    for n in nodes:
        counts[n.state] += 1
    head = (f"originctl top  {origin}  {when(now_ms)}  nodes {len(nodes)}: "
            + ", ".join(f"{c} {s.value}" for s, c in counts.items() if c))
    rows = []
    for n in nodes:
        r = n.last_report
        base = [n.info.name or n.id, n.state.value]
        load = [str(r.node.active_streams), str(r.node.viewers), rate(r.node.egress_bps)] if r else ["-", "-", "-"]
        gpus = r.gpus if r and r.gpu_status is GpuStatus.OK else ()
        if not gpus:
            rows.append([*base, "-", gpu_summary(n) if r else "-", "-", "-", "-", "-", "-", "-", *load])
        for g in gpus:
            rows.append([*base, str(g.index), short_gpu_name(g.name), f"{g.utilization_gpu_pct}%",
                         f"{g.encoder_utilization_pct}%", f"{g.decoder_utilization_pct}%", str(g.encoder_sessions),
                         f"{g.memory_used_bytes * 100 // max(1, g.memory_total_bytes)}%", f"{g.temperature_c}C", *load])
            base = ["", ""]
    return head + "\n\n" + table(["NODE", "STATE", "GPU", "MODEL", "UTIL", "ENC", "DEC", "SESS", "MEM", "TEMP",
                                  "STREAMS", "VIEWERS", "EGRESS"], rows)


def channels_table(channels: Sequence[Channel]) -> str:
    rows = [[c.name, ",".join(c.live_nodes) or "-", str(c.next_seq), str(c.disc_seq), when(c.created_unix_ms),
             when(c.key_rotated_unix_ms)] for c in channels]
    return table(["NAME", "LIVE-ON", "NEXT-SEQ", "DISCONTINUITIES", "CREATED", "KEY-ROTATED"], rows)


def ladder(s: StreamRecord) -> str:
    if s.mode == "transcode":
        return f"transcode ({s.encoder})" if s.encoder else "transcode"
    return s.mode


def relayed_by(tree: RelayTreeView | None, names: dict[str, str]) -> str:
    """The edges relaying a channel, e.g. "3: relay-1 (2), viewer-b, viewer-c" (children in brackets)."""
    if tree is None:
        return "-"
    if tree.problem:
        return f"! {tree.problem}"
    relays = [m for m in tree.members if m.role != "ingest"]
    if not relays:
        return "0"
    shown = [names.get(m.node_id, m.node_id) + (f" ({m.children})" if m.children else "") for m in relays[:8]]
    more = f", +{len(relays) - 8}" if len(relays) > 8 else ""
    return f"{len(relays)}: {', '.join(shown)}{more}"


def streams_table(streams: Sequence[StreamRecord], now_ms: int, names: dict[str, str] | None = None,
                  wide: bool = False, trees: dict[str, RelayTreeView] | None = None) -> str:
    """`names`: node ID → node name, for people; `trees` (wide): channel → its relay tree."""
    names = names or {}
    trees = trees or {}
    headers = ["CHANNEL", "NODE", "PROTOCOL", "AGE", "LADDER", "DECIDED-BY", "WHY"]
    if wide:
        headers = ["ID", "CHANNEL", "NODE", "NODE-ID", "PROTOCOL", "STARTED", "ENDED", "LADDER", "RENDITIONS",
                   "DECIDED-BY", "RELAYED-BY", "WHY", "END-REASON"]
    rows = []
    for s in streams:
        by = "controller" if s.decided_by_controller else "edge"
        age_ = age(s.started_unix_ms, s.ended_unix_ms or now_ms) + ("" if s.live else " (ended)")
        if wide:
            rows.append([s.id, s.channel, names.get(s.node_id, "-"), s.node_id, s.protocol or "-",
                         when(s.started_unix_ms), when(s.ended_unix_ms), ladder(s), ",".join(s.renditions) or "-",
                         by, relayed_by(trees.get(s.channel), names) if s.live else "-", s.reason or "-",
                         s.end_reason or "-"])
        else:
            why = s.reason if len(s.reason) <= 80 else s.reason[:77] + "..."
            rows.append([s.channel, names.get(s.node_id, s.node_id), s.protocol or "-", age_, ladder(s), by,
                         why or "-"])
    return table(headers, rows)


def route_text(r: Route) -> str:
    where = "unknown"
    if r.client_location is not None:
        where = f"{r.client_location[0]:.4f}, {r.client_location[1]:.4f}"
    lines = [f"Channel:     {r.channel}", f"Client:      {r.client_ip or '-'} (location {where})"]
    if not r.routed:
        return "\n".join([*lines, f"No route:    {r.reason}: {r.detail}"])
    lines += [
        f"Node:        {r.node_id}",
        f"URL:         {r.url}",
        f"Reason:      {r.reason}: {r.detail}",
    ]
    if r.distance_km is not None:
        lines.append(f"Distance:    {r.distance_km:.0f} km")
    if r.chain:
        how = "carries it already" if r.carrying else "subscribes on the viewer's first request"
        lines.append(f"Relay:       {' → '.join(r.chain)} ({how})")
    elif r.routed:
        lines.append("Relay:       - (no relay path planned: the edge asks when its first viewer comes)")
    lines.append("Alternates:  " + ("; ".join(f"{n} {u}" for n, u in r.alternates) or "-"))
    return "\n".join(lines)


def _member_line(m: RelayMember) -> str:
    label = f"{m.node_id} ({m.name})" if m.name and m.name != m.node_id else m.node_id
    bits = [m.role]
    if m.children:
        bits.append(f"{m.children} {'child' if m.children == 1 else 'children'}")
    if m.reported:
        bits.append(f"reports: {m.reported}")
    return f"{label}  [{', '.join(bits)}]"


def relay_tree_text(t: RelayTreeView) -> str:
    """A channel's relay tree drawn with box characters, the ingest edge at the top, and why each parent."""
    by_parent: dict[str, list[RelayMember]] = {}
    root = None
    for m in t.members:
        if m.role == "ingest":
            root = m
        else:
            by_parent.setdefault(m.parent_node_id, []).append(m)
    relaying = sum(1 for m in t.members if m.role != "ingest")
    lines = [f"Channel {t.channel}: ingested on {t.ingest_node_id}, relayed by {relaying} "
             f"{'node' if relaying == 1 else 'nodes'}"]
    if t.problem:
        lines.append(f"Problem: {t.problem}")
    if root is None:
        return "\n".join(lines)
    lines.append(_member_line(root))
    why: list[str] = []

    def draw(node: str, prefix: str) -> None:
        kids = by_parent.get(node, [])
        for i, m in enumerate(kids):
            last = i == len(kids) - 1
            lines.append(f"{prefix}{'└─ ' if last else '├─ '}{_member_line(m)}")
            if m.reason:
                why.append(f"  {m.node_id}: {m.reason}")
            draw(m.node_id, prefix + ("   " if last else "│  "))

    draw(root.node_id, "")
    if why:
        lines += ["", "Why:", *why]
    return "\n".join(lines)


def _remaining(until_ms: int, now_ms: int) -> str:
    s = max(0.0, (until_ms - now_ms) / 1000)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s // 60:.0f}m{s % 60:02.0f}s"
    if s < 86400:
        return f"{s // 3600:.0f}h{s % 3600 // 60:02.0f}m"
    return f"{s / 86400:.1f}d"


def chat_bans_table(room: ChatRoomView, now_ms: int) -> str:
    """`originctl chat bans CHANNEL`: one line per ban or timeout, bans first."""
    rows = [[r.login, r.user_id or "-", "ban" if r.until_ms == 0 else "timeout",
             "never" if r.until_ms == 0 else f"{when(r.until_ms)} (in {_remaining(r.until_ms, now_ms)})",
             r.reason or "-"]
            for r in sorted(room.restrictions, key=lambda r: (r.until_ms != 0, r.login))]
    return table(["LOGIN", "USER-ID", "KIND", "EXPIRES", "REASON"], rows)


def chat_modes_text(room: ChatRoomView) -> str:
    """`originctl chat mode CHANNEL`: the room's modes, one per line."""
    m = room.modes
    watching = ", ".join(room.watching_nodes) or "none"
    return "\n".join([
        f"room:          #{room.room} (room-id {room.room_id})",
        f"slow:          {f'{m.slow_seconds}s' if m.slow_seconds else 'off'}",
        f"subscribers:   {'on' if m.subscribers_only else 'off'}",
        f"emote-only:    {'on' if m.emote_only else 'off'}",
        f"r9k:           {'on' if m.r9k else 'off'}",
        f"bans/timeouts: {len(room.restrictions)}",
        f"edges:         {watching}",
    ])
