"""The controller's durable state behind one interface: nodes, bootstrap tokens, events.

`Store` is the interface (a distributed backend for HA can implement it later); `SqliteStore` is the
embedded default. All SQLite work happens on one writer thread that owns the connection: callers on
the event loop await futures, and jobs that queue up while a transaction runs are committed together
(group commit), each inside its own SAVEPOINT so one failing job does not undo its neighbours.

Schema changes are appended to MIGRATIONS; `PRAGMA user_version` says how many have run. Migration 2
adds channels (with the SHA-256 of their stream keys only) and streams (publish sessions and their
placement); migration 3 the fleet-wide numbering of each channel (next sequence number and
discontinuity count, which only go up); migration 4 chat rooms (modes, the seq no event went past) and
their bans and timeouts; migration 5 the same for the fleet's chat on NATS JetStream (rooms, bans and
timeouts as the chat stream decided them, and the stream position they are as of), kept apart from the
hub's.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edged.chat.model import Restriction, RoomModes
from originctl.errors import Conflict, NotFound, StoreError, TokenExpired, TokenInvalid, TokenUsed
from originctl.model import (
    ChannelRecord,
    ChatNatsState,
    ChatRoomRecord,
    Event,
    NodeInfo,
    NodeRecord,
    NodeState,
    StreamRecord,
    TokenRecord,
)

log = logging.getLogger("originctl.store")

MAX_BATCH = 512  # jobs per transaction: bounds the latency a large batch adds to the next caller
MAX_EVENTS = 200_000  # rows kept in `events`; the oldest are pruned past this
MAX_ENDED_STREAMS = 100_000  # ended rows kept in `streams`; the oldest are pruned past this
MAX_SQLITE_INT = (1 << 63) - 1


class Store(abc.ABC):
    """Everything the controller must remember across restarts."""

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    # tokens
    @abc.abstractmethod
    async def add_tokens(self, tokens: list[TokenRecord]) -> None: ...

    @abc.abstractmethod
    async def check_token(self, secret_sha256: str, now_ms: int) -> TokenRecord:
        """The unused, unexpired token, or TokenInvalid / TokenUsed / TokenExpired."""

    # nodes
    @abc.abstractmethod
    async def enroll(self, secret_sha256: str, node: NodeRecord, now_ms: int) -> Event:
        """Consume the token and add the node, atomically; returns the 'enrolled' event."""

    @abc.abstractmethod
    async def list_nodes(self) -> list[NodeRecord]: ...

    @abc.abstractmethod
    async def update_node_info(self, node_id: str, info: NodeInfo) -> None: ...

    @abc.abstractmethod
    async def set_draining(self, node_id: str, draining: bool) -> None: ...

    @abc.abstractmethod
    async def touch_nodes(self, last_reports: Iterable[tuple[str, int]]) -> None:
        """Persist (node ID, last report time in unix ms) pairs."""

    # events
    @abc.abstractmethod
    async def record_transition(
        self, node_id: str, from_state: NodeState | None, to_state: NodeState, reason: str, at_ms: int
    ) -> Event:
        """Store the node's new state and the event that says why, atomically."""

    @abc.abstractmethod
    async def add_event(self, node_id: str, kind: str, reason: str, at_ms: int) -> Event: ...

    @abc.abstractmethod
    async def list_events(self, node_id: str | None = None, limit: int = 100) -> list[Event]:
        """Newest first."""

    # channels
    @abc.abstractmethod
    async def create_channel(self, channel: ChannelRecord) -> None:
        """Add a channel; Conflict if the name (or, astronomically unlikely, the key digest) exists."""

    @abc.abstractmethod
    async def set_channel_key(self, name: str, key_sha256: str, at_ms: int) -> ChannelRecord:
        """Replace the channel's key digest; NotFound if there is no such channel."""

    @abc.abstractmethod
    async def delete_channel(self, name: str) -> None:
        """NotFound if there is no such channel."""

    @abc.abstractmethod
    async def list_channels(self) -> list[ChannelRecord]: ...

    # streams
    @abc.abstractmethod
    async def save_streams(self, streams: Iterable[StreamRecord]) -> None:
        """Insert or replace by stream ID."""

    @abc.abstractmethod
    async def list_streams(self, live_only: bool = True, limit: int = 1000) -> list[StreamRecord]:
        """Newest first."""

    # fleet-wide numbering and certificate renewal (fleet distribution)
    @abc.abstractmethod
    async def save_numbering(self, rows: Iterable[tuple[str, int, int, str, int]]) -> None:
        """(channel, next sequence, discontinuity count, node ID, unix ms): each number only ever goes up."""

    @abc.abstractmethod
    async def list_numbering(self) -> list[tuple[str, int, int]]:
        """(channel, next sequence, discontinuity count) for every channel that ever committed a segment."""

    @abc.abstractmethod
    async def update_node_cert(self, node_id: str, cert_serial: str, not_after_ms: int) -> None:
        """The node's certificate was renewed: only the new serial is accepted from now on."""

    # chat (the controller's hub)
    @abc.abstractmethod
    async def list_chat_rooms(self, now_ms: int) -> list[ChatRoomRecord]:
        """Every stored room with its live restrictions (timeouts that lapsed before `now_ms` are deleted)."""

    @abc.abstractmethod
    async def save_chat_room(self, room: str, room_id: str, modes: RoomModes, seq: int, at_ms: int) -> None:
        """Insert or update a room's modes and seq bound (the bound only goes up)."""

    @abc.abstractmethod
    async def save_chat_heads(self, rows: Iterable[tuple[str, str, int]], at_ms: int) -> None:
        """(room, room ID, seq) rows: set each room's seq bound to exactly `seq` (a clean stop: nothing above
        it was issued), inserting rooms not stored yet."""

    @abc.abstractmethod
    async def save_chat_restrictions(self, room: str, upsert: Iterable[Restriction], delete: Iterable[str],
                                     at_ms: int) -> None:
        """Insert or replace bans/timeouts by login and delete those of the `delete` logins, atomically."""

    # chat on NATS JetStream (the controller follows the chat stream)
    @abc.abstractmethod
    async def load_chat_nats(self, stream: str, now_ms: int) -> ChatNatsState:
        """Where the follower of `stream` stands and every room's state (live restrictions only; lapsed
        timeouts are deleted); a fresh state (next_sseq 1, no rooms) when it never applied anything."""

    @abc.abstractmethod
    async def save_chat_nats(self, stream: str, position: ChatNatsState, rooms: Iterable[ChatRoomRecord],
                             upsert: Iterable[tuple[str, Restriction]], delete: Iterable[tuple[str, str]],
                             at_ms: int) -> None:
        """In one transaction: the follower's position (`position`'s next_sseq, time_ms, stream_created_ms; its
        rooms are not read), the rooms' room IDs, modes and last sequences
        (`ChatRoomRecord.seq`; their restrictions are not read), restrictions inserted or replaced by (room,
        login) and the (room, login) restrictions deleted."""


MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        info TEXT NOT NULL,
        cert_serial TEXT NOT NULL,
        cert_not_after_ms INTEGER NOT NULL,
        enrolled_ms INTEGER NOT NULL,
        state TEXT NOT NULL,
        state_reason TEXT NOT NULL,
        state_since_ms INTEGER NOT NULL,
        last_report_ms INTEGER NOT NULL DEFAULT 0,
        draining INTEGER NOT NULL DEFAULT 0,
        revoked INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE tokens (
        secret_sha256 TEXT PRIMARY KEY,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        site TEXT NOT NULL DEFAULT '',
        used_ms INTEGER NOT NULL DEFAULT 0,
        used_by TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time_ms INTEGER NOT NULL,
        node_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT,
        reason TEXT NOT NULL
    );
    CREATE INDEX events_by_node ON events (node_id, id);
    """,
    """
    CREATE TABLE channels (
        name TEXT PRIMARY KEY,
        key_sha256 TEXT NOT NULL UNIQUE,
        created_ms INTEGER NOT NULL,
        key_rotated_ms INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE streams (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        channel TEXT NOT NULL,
        node_id TEXT NOT NULL,
        protocol TEXT NOT NULL,
        started_ms INTEGER NOT NULL,
        ended_ms INTEGER NOT NULL DEFAULT 0,
        mode TEXT NOT NULL,
        encoder TEXT NOT NULL,
        renditions TEXT NOT NULL,
        reason TEXT NOT NULL,
        end_reason TEXT NOT NULL DEFAULT '',
        decided_by_controller INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX streams_by_seq ON streams (seq);
    CREATE INDEX streams_live ON streams (ended_ms, seq);
    """,
    """
    CREATE TABLE numbering (
        channel TEXT PRIMARY KEY,
        next_seq INTEGER NOT NULL,
        disc_seq INTEGER NOT NULL,
        node_id TEXT NOT NULL DEFAULT '',
        updated_ms INTEGER NOT NULL
    );
    """,
    """
    CREATE TABLE chat_rooms (
        room TEXT PRIMARY KEY,
        room_id TEXT NOT NULL,
        slow_seconds INTEGER NOT NULL DEFAULT 0,
        subscribers_only INTEGER NOT NULL DEFAULT 0,
        emote_only INTEGER NOT NULL DEFAULT 0,
        r9k INTEGER NOT NULL DEFAULT 0,
        seq INTEGER NOT NULL DEFAULT 0,
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE chat_restrictions (
        room TEXT NOT NULL,
        login TEXT NOT NULL,
        user_id TEXT NOT NULL DEFAULT '',
        until_ms INTEGER NOT NULL DEFAULT 0,
        reason TEXT NOT NULL DEFAULT '',
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (room, login)
    );
    """,
    """
    CREATE TABLE chat_nats_position (
        stream TEXT PRIMARY KEY,
        next_sseq INTEGER NOT NULL,
        time_ms INTEGER NOT NULL,
        stream_created_ms INTEGER NOT NULL DEFAULT 0,
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE chat_nats_rooms (
        stream TEXT NOT NULL,
        room TEXT NOT NULL,
        room_id TEXT NOT NULL,
        slow_seconds INTEGER NOT NULL DEFAULT 0,
        subscribers_only INTEGER NOT NULL DEFAULT 0,
        emote_only INTEGER NOT NULL DEFAULT 0,
        r9k INTEGER NOT NULL DEFAULT 0,
        last_sseq INTEGER NOT NULL DEFAULT 0,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (stream, room)
    );
    CREATE TABLE chat_nats_restrictions (
        stream TEXT NOT NULL,
        room TEXT NOT NULL,
        login TEXT NOT NULL,
        user_id TEXT NOT NULL DEFAULT '',
        until_ms INTEGER NOT NULL DEFAULT 0,
        reason TEXT NOT NULL DEFAULT '',
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (stream, room, login)
    );
    """,
)


@dataclass(slots=True)
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


def _info_json(info: NodeInfo) -> str:
    return json.dumps(asdict(info), separators=(",", ":"))


def _info_from_json(text: str) -> NodeInfo:
    d = json.loads(text)
    known = {k: v for k, v in d.items() if k in NodeInfo.__dataclass_fields__}
    for k in ("prefixes", "gpu_models"):
        if k in known:
            known[k] = tuple(known[k])
    return NodeInfo(**known)


def _channel_row(row: sqlite3.Row) -> ChannelRecord:
    return ChannelRecord(name=row["name"], key_sha256=row["key_sha256"], created_unix_ms=row["created_ms"],
                         key_rotated_unix_ms=row["key_rotated_ms"])


def _stream_row(row: sqlite3.Row) -> StreamRecord:
    return StreamRecord(
        id=row["id"], channel=row["channel"], node_id=row["node_id"], protocol=row["protocol"],
        started_unix_ms=row["started_ms"], ended_unix_ms=row["ended_ms"], mode=row["mode"], encoder=row["encoder"],
        renditions=tuple(json.loads(row["renditions"])), reason=row["reason"], end_reason=row["end_reason"],
        decided_by_controller=bool(row["decided_by_controller"]),
    )


def _state(value: str | None) -> NodeState | None:
    return NodeState(value) if value else None


def _event_row(row: sqlite3.Row) -> Event:
    return Event(id=row["id"], time_unix_ms=row["time_ms"], node_id=row["node_id"], kind=row["kind"],
                 from_state=_state(row["from_state"]), to_state=_state(row["to_state"]), reason=row["reason"])


def _insert_event(conn: sqlite3.Connection, node_id: str, kind: str, from_state: NodeState | None,
                  to_state: NodeState | None, reason: str, at_ms: int) -> Event:
    cur = conn.execute(
        "INSERT INTO events (time_ms, node_id, kind, from_state, to_state, reason) VALUES (?,?,?,?,?,?)",
        (at_ms, node_id, kind, from_state.value if from_state else None, to_state.value if to_state else None,
         reason),
    )
    return Event(id=int(cur.lastrowid or 0), time_unix_ms=at_ms, node_id=node_id, kind=kind,
                 from_state=from_state, to_state=to_state, reason=reason)


class SqliteStore(Store):
    """SQLite in WAL mode, one writer thread, group commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events_since_prune = 0
        self._streams_since_prune = 0

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="originctl-store", daemon=True)
        self._thread.start()
        await ready

    async def close(self) -> None:
        if self._thread is None:
            return
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    # --- the writer thread ------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for i, script in enumerate(MIGRATIONS[version:], start=version + 1):
            conn.executescript(f"BEGIN; {script}; PRAGMA user_version={i}; COMMIT;")
        return conn

    def _settle(self, fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    def _post(self, fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._settle, fut, result, exc)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _run(self, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            self._post(ready, None, StoreError(f"cannot open {self.path}: {exc}"))
            return
        self._post(ready, None, None)
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._run_batch(conn, batch)
        conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        results: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                conn.execute("SAVEPOINT job")
                try:
                    result = job.fn(conn)
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK TO job")
                    results.append((job, None, StoreError(f"{self.path}: {exc}")))
                except Exception as exc:  # domain errors (TokenUsed, ...) travel to the caller as they are
                    conn.execute("ROLLBACK TO job")
                    results.append((job, None, exc))
                else:
                    results.append((job, result, None))
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("store transaction failed: %s", exc)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            results = [(job, None, StoreError(f"{self.path}: {exc}")) for job in batch]
        for job, result, error in results:
            self._post(job.future, result, error)

    async def _call(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._thread is None or self._loop is None:
            raise StoreError("the store is not open")
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put(_Job(fn, fut))
        return await fut

    # --- tokens -----------------------------------------------------------------------------------

    async def add_tokens(self, tokens: list[TokenRecord]) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO tokens (secret_sha256, created_ms, expires_ms, site) VALUES (?,?,?,?)",
                [(t.secret_sha256, t.created_unix_ms, t.expires_unix_ms, t.site) for t in tokens],
            )
        await self._call(fn)

    @staticmethod
    def _usable_token(conn: sqlite3.Connection, secret_sha256: str, now_ms: int) -> TokenRecord:
        row = conn.execute("SELECT * FROM tokens WHERE secret_sha256 = ?", (secret_sha256,)).fetchone()
        if row is None:
            raise TokenInvalid("unknown enrollment token: create one with `originctl token create`")
        if row["used_ms"]:
            raise TokenUsed("this enrollment token was already used (tokens are one-time): create a new "
                            "one with `originctl token create`")
        if now_ms >= row["expires_ms"]:
            raise TokenExpired("this enrollment token has expired: create a new one with "
                               "`originctl token create --ttl 1h`")
        return TokenRecord(secret_sha256=row["secret_sha256"], created_unix_ms=row["created_ms"],
                           expires_unix_ms=row["expires_ms"], site=row["site"])

    async def check_token(self, secret_sha256: str, now_ms: int) -> TokenRecord:
        return await self._call(lambda conn: self._usable_token(conn, secret_sha256, now_ms))  # type: ignore[no-any-return]

    # --- nodes ------------------------------------------------------------------------------------

    async def enroll(self, secret_sha256: str, node: NodeRecord, now_ms: int) -> Event:
        def fn(conn: sqlite3.Connection) -> Event:
            self._usable_token(conn, secret_sha256, now_ms)
            conn.execute("UPDATE tokens SET used_ms = ?, used_by = ? WHERE secret_sha256 = ?",
                         (now_ms, node.id, secret_sha256))
            conn.execute(
                "INSERT INTO nodes (id, info, cert_serial, cert_not_after_ms, enrolled_ms, state, state_reason,"
                " state_since_ms, last_report_ms, draining, revoked) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (node.id, _info_json(node.info), node.cert_serial, node.cert_not_after_unix_ms,
                 node.enrolled_unix_ms, node.state.value, node.state_reason, node.state_since_unix_ms,
                 node.last_report_unix_ms, int(node.draining), int(node.revoked)),
            )
            return _insert_event(conn, node.id, "enrolled", None, None,
                                 f"enrolled as {node.info.name or node.id} from host {node.info.hostname}", now_ms)
        return await self._call(fn)  # type: ignore[no-any-return]

    async def list_nodes(self) -> list[NodeRecord]:
        def fn(conn: sqlite3.Connection) -> list[NodeRecord]:
            return [
                NodeRecord(
                    id=r["id"], info=_info_from_json(r["info"]), cert_serial=r["cert_serial"],
                    cert_not_after_unix_ms=r["cert_not_after_ms"], enrolled_unix_ms=r["enrolled_ms"],
                    state=NodeState(r["state"]), state_reason=r["state_reason"],
                    state_since_unix_ms=r["state_since_ms"], last_report_unix_ms=r["last_report_ms"],
                    draining=bool(r["draining"]), revoked=bool(r["revoked"]),
                )
                for r in conn.execute("SELECT * FROM nodes ORDER BY id")
            ]
        return await self._call(fn)  # type: ignore[no-any-return]

    async def update_node_info(self, node_id: str, info: NodeInfo) -> None:
        await self._call(lambda conn: conn.execute("UPDATE nodes SET info = ? WHERE id = ?",
                                                   (_info_json(info), node_id)))

    async def set_draining(self, node_id: str, draining: bool) -> None:
        await self._call(lambda conn: conn.execute("UPDATE nodes SET draining = ? WHERE id = ?",
                                                   (int(draining), node_id)))

    async def touch_nodes(self, last_reports: Iterable[tuple[str, int]]) -> None:
        rows = [(ms, node_id) for node_id, ms in last_reports]
        if rows:
            await self._call(lambda conn: conn.executemany(
                "UPDATE nodes SET last_report_ms = ? WHERE id = ?", rows))

    # --- events -----------------------------------------------------------------------------------

    def _maybe_prune(self, conn: sqlite3.Connection) -> None:
        self._events_since_prune += 1
        if self._events_since_prune >= 1000:
            self._events_since_prune = 0
            conn.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (MAX_EVENTS,))

    async def record_transition(
        self, node_id: str, from_state: NodeState | None, to_state: NodeState, reason: str, at_ms: int
    ) -> Event:
        def fn(conn: sqlite3.Connection) -> Event:
            conn.execute("UPDATE nodes SET state = ?, state_reason = ?, state_since_ms = ? WHERE id = ?",
                         (to_state.value, reason, at_ms, node_id))
            self._maybe_prune(conn)
            return _insert_event(conn, node_id, "state", from_state, to_state, reason, at_ms)
        return await self._call(fn)  # type: ignore[no-any-return]

    async def add_event(self, node_id: str, kind: str, reason: str, at_ms: int) -> Event:
        def fn(conn: sqlite3.Connection) -> Event:
            self._maybe_prune(conn)
            return _insert_event(conn, node_id, kind, None, None, reason, at_ms)
        return await self._call(fn)  # type: ignore[no-any-return]

    async def list_events(self, node_id: str | None = None, limit: int = 100) -> list[Event]:
        def fn(conn: sqlite3.Connection) -> list[Event]:
            if node_id:
                rows = conn.execute("SELECT * FROM events WHERE node_id = ? ORDER BY id DESC LIMIT ?",
                                    (node_id, limit))
            else:
                rows = conn.execute("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
            return [_event_row(r) for r in rows]
        return await self._call(fn)  # type: ignore[no-any-return]

    # --- channels ---------------------------------------------------------------------------------

    async def create_channel(self, channel: ChannelRecord) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM channels WHERE name = ?", (channel.name,)).fetchone():
                raise Conflict(f"channel {channel.name!r} exists: rotate its key with `originctl channel "
                               f"rotate-key {channel.name}`")
            try:
                conn.execute("INSERT INTO channels (name, key_sha256, created_ms, key_rotated_ms) VALUES (?,?,?,?)",
                             (channel.name, channel.key_sha256, channel.created_unix_ms, channel.key_rotated_unix_ms))
            except sqlite3.IntegrityError:
                raise Conflict("that stream key digest is taken; try again") from None
        await self._call(fn)

    async def set_channel_key(self, name: str, key_sha256: str, at_ms: int) -> ChannelRecord:
        def fn(conn: sqlite3.Connection) -> ChannelRecord:
            cur = conn.execute("UPDATE channels SET key_sha256 = ?, key_rotated_ms = ? WHERE name = ?",
                               (key_sha256, at_ms, name))
            if not cur.rowcount:
                raise NotFound(f"no channel {name!r}: list them with `originctl channels`")
            return _channel_row(conn.execute("SELECT * FROM channels WHERE name = ?", (name,)).fetchone())
        return await self._call(fn)  # type: ignore[no-any-return]

    async def delete_channel(self, name: str) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            if not conn.execute("DELETE FROM channels WHERE name = ?", (name,)).rowcount:
                raise NotFound(f"no channel {name!r}: list them with `originctl channels`")
        await self._call(fn)

    async def list_channels(self) -> list[ChannelRecord]:
        def fn(conn: sqlite3.Connection) -> list[ChannelRecord]:
            return [_channel_row(r) for r in conn.execute("SELECT * FROM channels ORDER BY name")]
        return await self._call(fn)  # type: ignore[no-any-return]

    # --- streams ----------------------------------------------------------------------------------

    async def save_streams(self, streams: Iterable[StreamRecord]) -> None:
        rows = [(s.id, s.channel, s.node_id, s.protocol, s.started_unix_ms, s.ended_unix_ms, s.mode, s.encoder,
                 json.dumps(list(s.renditions)), s.reason, s.end_reason, int(s.decided_by_controller))
                for s in streams]
        if not rows:
            return

        def fn(conn: sqlite3.Connection) -> None:
            for row in rows:
                # seq keeps the first insertion order (newest first = highest seq) across replacements
                conn.execute(
                    "INSERT INTO streams (id, seq, channel, node_id, protocol, started_ms, ended_ms, mode, encoder,"
                    " renditions, reason, end_reason, decided_by_controller)"
                    " VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM streams), ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
                    " ?10, ?11, ?12)"
                    " ON CONFLICT (id) DO UPDATE SET protocol = ?4, started_ms = ?5, ended_ms = ?6, mode = ?7,"
                    " encoder = ?8, renditions = ?9, reason = ?10, end_reason = ?11, decided_by_controller = ?12",
                    row)
            self._streams_since_prune += len(rows)
            if self._streams_since_prune >= 1000:
                self._streams_since_prune = 0
                conn.execute("DELETE FROM streams WHERE ended_ms > 0 AND seq <= (SELECT MAX(seq) FROM streams) - ?",
                             (MAX_ENDED_STREAMS,))
        await self._call(fn)

    async def list_streams(self, live_only: bool = True, limit: int = 1000) -> list[StreamRecord]:
        def fn(conn: sqlite3.Connection) -> list[StreamRecord]:
            where = "WHERE ended_ms = 0 " if live_only else ""
            rows = conn.execute(f"SELECT * FROM streams {where}ORDER BY seq DESC LIMIT ?", (limit,))
            return [_stream_row(r) for r in rows]
        return await self._call(fn)  # type: ignore[no-any-return]

    # --- fleet-wide numbering, certificates ---------------------------------------------------------

    async def save_numbering(self, rows: Iterable[tuple[str, int, int, str, int]]) -> None:
        batch = list(rows)
        if not batch:
            return
        await self._call(lambda conn: conn.executemany(
            "INSERT INTO numbering (channel, next_seq, disc_seq, node_id, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)"
            " ON CONFLICT (channel) DO UPDATE SET next_seq = MAX(next_seq, ?2), disc_seq = MAX(disc_seq, ?3),"
            " node_id = ?4, updated_ms = ?5", batch))

    async def list_numbering(self) -> list[tuple[str, int, int]]:
        def fn(conn: sqlite3.Connection) -> list[tuple[str, int, int]]:
            return [(r["channel"], int(r["next_seq"]), int(r["disc_seq"]))
                    for r in conn.execute("SELECT * FROM numbering ORDER BY channel")]
        return await self._call(fn)  # type: ignore[no-any-return]

    async def update_node_cert(self, node_id: str, cert_serial: str, not_after_ms: int) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            if not conn.execute("UPDATE nodes SET cert_serial = ?, cert_not_after_ms = ? WHERE id = ?",
                                (cert_serial, not_after_ms, node_id)).rowcount:
                raise NotFound(f"no node {node_id!r}")
        await self._call(fn)

    # --- chat ---------------------------------------------------------------------------------------

    async def list_chat_rooms(self, now_ms: int) -> list[ChatRoomRecord]:
        def fn(conn: sqlite3.Connection) -> list[ChatRoomRecord]:
            conn.execute("DELETE FROM chat_restrictions WHERE until_ms > 0 AND until_ms <= ?", (now_ms,))
            restrictions: dict[str, list[Restriction]] = {}
            for r in conn.execute("SELECT * FROM chat_restrictions ORDER BY room, login"):
                restrictions.setdefault(r["room"], []).append(
                    Restriction(login=r["login"], user_id=r["user_id"], until_ms=r["until_ms"], reason=r["reason"]))
            rooms = []
            for r in conn.execute("SELECT * FROM chat_rooms ORDER BY room"):
                modes = RoomModes(slow_seconds=r["slow_seconds"], subscribers_only=bool(r["subscribers_only"]),
                                  emote_only=bool(r["emote_only"]), r9k=bool(r["r9k"]))
                rooms.append(ChatRoomRecord(room=r["room"], room_id=r["room_id"], modes=modes,
                                            restrictions=tuple(restrictions.pop(r["room"], ())), seq=r["seq"]))
            for room, rs in sorted(restrictions.items()):  # restrictions of a room never saved (not expected)
                rooms.append(ChatRoomRecord(room=room, room_id="", restrictions=tuple(rs)))
            return rooms
        return await self._call(fn)  # type: ignore[no-any-return]

    async def save_chat_room(self, room: str, room_id: str, modes: RoomModes, seq: int, at_ms: int) -> None:
        row = (room, room_id, modes.slow_seconds, int(modes.subscribers_only), int(modes.emote_only), int(modes.r9k),
               min(max(0, seq), MAX_SQLITE_INT), at_ms)
        await self._call(lambda conn: conn.execute(
            "INSERT INTO chat_rooms (room, room_id, slow_seconds, subscribers_only, emote_only, r9k, seq, updated_ms)"
            " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (room) DO UPDATE SET room_id = ?2, slow_seconds = ?3,"
            " subscribers_only = ?4, emote_only = ?5, r9k = ?6, seq = MAX(seq, ?7), updated_ms = ?8", row))

    async def save_chat_heads(self, rows: Iterable[tuple[str, str, int]], at_ms: int) -> None:
        batch = [(room, room_id, min(max(0, seq), MAX_SQLITE_INT), at_ms) for room, room_id, seq in rows]
        if batch:
            await self._call(lambda conn: conn.executemany(
                "INSERT INTO chat_rooms (room, room_id, seq, updated_ms) VALUES (?1, ?2, ?3, ?4)"
                " ON CONFLICT (room) DO UPDATE SET seq = ?3, updated_ms = ?4", batch))

    async def save_chat_restrictions(self, room: str, upsert: Iterable[Restriction], delete: Iterable[str],
                                     at_ms: int) -> None:
        rows = [(room, r.login, r.user_id, r.until_ms, r.reason, at_ms) for r in upsert]
        gone = [(room, login) for login in delete]
        if not rows and not gone:
            return

        def fn(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM chat_restrictions WHERE room = ? AND login = ?", gone)
            conn.executemany(
                "INSERT OR REPLACE INTO chat_restrictions (room, login, user_id, until_ms, reason, created_ms)"
                " VALUES (?,?,?,?,?,?)", rows)
        await self._call(fn)

    # --- chat on NATS JetStream -----------------------------------------------------------------------

    async def load_chat_nats(self, stream: str, now_ms: int) -> ChatNatsState:
        def fn(conn: sqlite3.Connection) -> ChatNatsState:
            conn.execute("DELETE FROM chat_nats_restrictions WHERE stream = ? AND until_ms > 0 AND until_ms <= ?",
                         (stream, now_ms))
            pos = conn.execute("SELECT * FROM chat_nats_position WHERE stream = ?",
                               (stream,)).fetchone()
            restrictions: dict[str, list[Restriction]] = {}
            for r in conn.execute("SELECT * FROM chat_nats_restrictions WHERE stream = ? ORDER BY room, login",
                                  (stream,)):
                restrictions.setdefault(r["room"], []).append(
                    Restriction(login=r["login"], user_id=r["user_id"], until_ms=r["until_ms"], reason=r["reason"]))
            rooms = []
            for r in conn.execute("SELECT * FROM chat_nats_rooms WHERE stream = ? ORDER BY room", (stream,)):
                modes = RoomModes(slow_seconds=r["slow_seconds"], subscribers_only=bool(r["subscribers_only"]),
                                  emote_only=bool(r["emote_only"]), r9k=bool(r["r9k"]))
                rooms.append(ChatRoomRecord(room=r["room"], room_id=r["room_id"], modes=modes,
                                            restrictions=tuple(restrictions.pop(r["room"], ())), seq=r["last_sseq"]))
            for room, rs in sorted(restrictions.items()):  # restrictions of a room never saved (not expected)
                rooms.append(ChatRoomRecord(room=room, room_id="", restrictions=tuple(rs)))
            if pos is None:
                return ChatNatsState(rooms=tuple(rooms))
            return ChatNatsState(next_sseq=int(pos["next_sseq"]), time_ms=int(pos["time_ms"]),
                                 stream_created_ms=int(pos["stream_created_ms"]), rooms=tuple(rooms))
        return await self._call(fn)  # type: ignore[no-any-return]

    async def save_chat_nats(self, stream: str, position: ChatNatsState, rooms: Iterable[ChatRoomRecord],
                             upsert: Iterable[tuple[str, Restriction]], delete: Iterable[tuple[str, str]],
                             at_ms: int) -> None:
        room_rows = [(stream, r.room, r.room_id, r.modes.slow_seconds, int(r.modes.subscribers_only),
                      int(r.modes.emote_only), int(r.modes.r9k), min(max(0, r.seq), MAX_SQLITE_INT), at_ms)
                     for r in rooms]
        rows = [(stream, room, r.login, r.user_id, r.until_ms, r.reason, at_ms) for room, r in upsert]
        gone = [(stream, room, login) for room, login in delete]
        row = (stream, min(max(1, position.next_sseq), MAX_SQLITE_INT), position.time_ms, position.stream_created_ms,
               at_ms)

        def fn(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO chat_nats_rooms (stream, room, room_id, slow_seconds, subscribers_only, emote_only, r9k,"
                " last_sseq, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (stream, room) DO"
                " UPDATE SET room_id = ?3, slow_seconds = ?4, subscribers_only = ?5, emote_only = ?6, r9k = ?7,"
                " last_sseq = ?8, updated_ms = ?9", room_rows)
            conn.executemany("DELETE FROM chat_nats_restrictions WHERE stream = ? AND room = ? AND login = ?", gone)
            conn.executemany(
                "INSERT OR REPLACE INTO chat_nats_restrictions (stream, room, login, user_id, until_ms, reason,"
                " created_ms) VALUES (?,?,?,?,?,?,?)", rows)
            conn.execute(
                "INSERT INTO chat_nats_position (stream, next_sseq, time_ms, stream_created_ms, updated_ms)"
                " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (stream) DO UPDATE SET next_sseq = ?2, time_ms = ?3,"
                " stream_created_ms = ?4, updated_ms = ?5", row)
        await self._call(fn)
