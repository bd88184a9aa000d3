"""Publish authorization by the origin controller (edged run --origin), behind StreamKeyAuthorizer.

Two sources, one rule for how long they are believed:

  * `authorize()` (RTMP and SRT, on the loop) asks the controller (AuthorizePublish over the agent's
    mutual-TLS channel): its answer is definitive and carries the placement of the stream's ladder,
    kept for the transcode supervisor (`placement_for`).
  * The key table: the controller pushes SHA-256 digests of every channel's stream key after each
    Welcome and on every change (create, rotate, delete). `lookup()` answers from it synchronously,
    inside libsrt's listen callback, and `authorize()` falls back to it when the controller cannot be
    asked (unreachable, or no answer within AUTHORIZE_TIMEOUT).

Bound (`origin.auth_cache_seconds`, C), counted from the last time the controller was *heard from*
(any message on its stream, or an answer to AuthorizePublish), not from when the link was seen to
break: the table is believed until C seconds after that, so the bound holds even while a hung
controller's connection still looks open. While the link is up, a controller that sends a pulse at
least every P seconds (Welcome.pulse_seconds) keeps the table current for as long as it is heard from
within the link's silence limit (edged/agent/link.py: 3 pulses), whatever C is; a rotated or deleted
key is refused from the moment the push arrives (and the controller refuses it itself). After C (or
the silence limit, whichever is later) every key is refused until a new link has delivered a fresh
table. (An older controller sends no pulses and is quiet while well: with it, the link's end counts as
the last time it was heard from.) A table is never read from disk: an edge that starts while the controller is unreachable
refuses every publish until it connects.

Loop-only except `lookup`, which any thread may call: it reads one dict, a few floats and a flag
(each read atomic under the GIL) and never blocks.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from edged.agent.errors import ControllerUnavailable
from edged.errors import AuthError
from edged.log import QuietLog

log = logging.getLogger("edged.agent.auth")

PLACEMENT_TTL = 60.0  # s a placement waits for its stream's pipeline (which may wait for the encoder probe)
MAX_PLACEMENTS = 1024  # pending placements kept (each stream takes one at its start)

AUTHORIZATIONS = Counter("edged_publish_authorizations_total", "Publish authorizations by the controller or the "
                         "cached key table, by result", ["via", "result"])
KEY_TABLE = Gauge("edged_key_table_channels", "Channels in the key table pushed by the controller")
KEY_TABLE_FRESH = Gauge("edged_key_table_fresh", "1 while the key table pushed by the controller may answer publishes "
                        "(origin.auth_cache_seconds)")


@dataclass(frozen=True, slots=True)
class PlacementOrder:
    """Where the controller wants a new stream's ladder: "transcode" here or "passthrough" only."""

    mode: str
    encoder: str = ""
    reason: str = ""
    node_id: str = ""


@dataclass(frozen=True, slots=True)
class Grant:
    """The controller's answer to one publish."""

    allowed: bool
    channel: str = ""
    reason: str = ""
    placement: PlacementOrder | None = None
    next_seq: int = 0  # the channel's fleet-wide numbering, as the controller last heard it
    disc_seq: int = 0


# (stream key, protocol, remote address) → the controller's answer; raises ControllerUnavailable
AskController = Callable[[str, str, str], Awaitable[Grant]]


def key_sha256(stream_key: str) -> str:
    return hashlib.sha256(stream_key.encode()).hexdigest()


class ControllerAuthorizer:
    def __init__(self, cache_seconds: float, ask: AskController | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cache_seconds = cache_seconds
        self.ask = ask
        self._clock = clock
        self._by_digest: dict[str, str] = {}  # key digest → channel
        self._digest_of: dict[str, str] = {}  # channel → key digest
        self._staging: dict[str, str] | None = None  # a full table arriving in several messages
        self._have_table = False  # a complete table arrived over some link (never from disk)
        self._link_up = False
        self._heard_at = float("-inf")  # monotonic: the controller's last message or answer
        self._silence_limit = float("inf")  # s the link may stay silent and still count as up (no pulses: inf)
        self._placements: dict[str, tuple[PlacementOrder, float]] = {}
        self._numbering: dict[str, tuple[int, int, float]] = {}  # channel → (next seq, disc seq, when granted)
        self._quiet = QuietLog(log)  # publishers may retry without end
        KEY_TABLE_FRESH.set_function(lambda: float(self.fresh()))
        # Called with a channel whose key was rotated or revoked: its live publisher is disconnected.
        self.on_revoked: Callable[[str], None] | None = None

    # --- the key table (from the controller's stream) ------------------------------------------------

    def fresh(self) -> bool:
        """Whether the key table may be believed now."""
        if not self._have_table:
            return False
        quiet = self._clock() - self._heard_at
        return quiet <= self.cache_seconds or (self._link_up and quiet <= self._silence_limit)

    def silence(self) -> float:
        """Seconds since the controller was last heard from (inf: never)."""
        return self._clock() - self._heard_at

    def async_heard(self) -> None:
        """A message (or an answer) came from the controller just now."""
        self._heard_at = self._clock()

    def async_link_up(self, silence_limit: float = float("inf")) -> None:
        """A stream to the controller is open (its Welcome arrived); it counts as down after `silence_limit`
        seconds without a message (inf: the controller sends no pulses, only the link's end tells)."""
        self._link_up = True
        self._silence_limit = silence_limit
        self.async_heard()

    def async_table(self, entries: Iterable[tuple[str, str]], *, full: bool, more: bool = False) -> None:
        """(channel, key digest) pairs: a full table (possibly in parts), or upserts."""
        if full:
            self._staging = {}
        if self._staging is not None:
            for channel, digest in entries:
                self._staging[channel] = digest
            if more:
                return
            staged, self._staging = self._staging, None
            revoked = [c for c, d in self._digest_of.items() if staged.get(c) != d]
            self._digest_of = staged
            self._by_digest = {d: c for c, d in staged.items()}  # swapped whole: lookup() may run in a thread
            self._have_table = True
            self._link_up = True  # it came over a link that is up
            self.async_heard()
            KEY_TABLE.set(len(staged))
            log.info("key table from the controller: %d channel(s)", len(staged))
            if self.on_revoked is not None:
                for channel in revoked:
                    self.on_revoked(channel)
            return
        for channel, digest in entries:
            old = self._digest_of.get(channel)
            self._digest_of[channel] = digest
            self._by_digest[digest] = channel
            if old is not None and old != digest:
                self._by_digest.pop(old, None)
                log.info("channel=%s stream key rotated by the controller", channel)
                if self.on_revoked is not None:
                    self.on_revoked(channel)
        KEY_TABLE.set(len(self._digest_of))

    def async_invalidate(self, channel: str) -> None:
        """The controller revoked the channel's key (deleted the channel)."""
        digest = self._digest_of.pop(channel, None)
        if digest is not None:
            self._by_digest.pop(digest, None)
        self._placements.pop(channel, None)
        KEY_TABLE.set(len(self._digest_of))
        log.info("channel=%s stream key revoked by the controller", channel)
        if self.on_revoked is not None:
            self.on_revoked(channel)

    def async_link_down(self) -> None:
        """The stream to the controller ended: the table ages from when the controller was last heard from."""
        if self._link_up and math.isinf(self._silence_limit):
            # an older controller that sends no pulses is quiet while well: its link's end is its last sign of life
            self.async_heard()
        self._link_up = False
        self._staging = None

    # --- StreamKeyAuthorizer --------------------------------------------------------------------------

    def lookup(self, stream_key: str) -> str | None:
        if not self.fresh():
            return None
        return self._by_digest.get(key_sha256(stream_key))

    async def authorize(self, stream_key: str, *, protocol: str, remote: str) -> str:
        try:
            if self.ask is None:
                raise ControllerUnavailable("no controller link")
            grant = await self.ask(stream_key, protocol, remote)
        except Exception as exc:  # unreachable, timed out, or a bug: fall back to the table's bound
            if not isinstance(exc, ControllerUnavailable):
                log.exception("asking the controller failed")
            return self._from_table(stream_key, protocol, remote, exc)
        self.async_heard()
        if not grant.allowed:
            AUTHORIZATIONS.labels("controller", "refused").inc()
            raise AuthError(grant.reason or "refused by the origin controller")
        AUTHORIZATIONS.labels("controller", "allowed").inc()
        if grant.placement is not None:
            self._keep_placement(grant.channel, grant.placement)
        else:
            self._placements.pop(grant.channel, None)
        if grant.next_seq or grant.disc_seq:
            if len(self._numbering) >= MAX_PLACEMENTS:
                self._numbering.pop(next(iter(self._numbering)))
            self._numbering[grant.channel] = (grant.next_seq, grant.disc_seq, self._clock())
        else:
            self._numbering.pop(grant.channel, None)
        return grant.channel

    def _from_table(self, stream_key: str, protocol: str, remote: str, exc: Exception) -> str:
        channel = self.lookup(stream_key)
        if channel is None:
            AUTHORIZATIONS.labels("cache", "refused").inc()
            if not self.fresh():
                if not self._have_table:
                    why = "no key table from it yet"
                else:
                    why = (f"the key table it pushed expired (nothing heard from the controller for "
                           f"{self.silence():.1f} s; origin.auth_cache_seconds is {self.cache_seconds:g})")
            else:
                why = "the key is not in the key table it pushed"
            raise AuthError(f"the origin controller cannot be asked ({exc or 'timed out'}) and {why}")
        AUTHORIZATIONS.labels("cache", "allowed").inc()
        self._placements.pop(channel, None)  # no order: the node decides the ladder itself
        self._quiet.warning("cache-allowed", "channel=%s %s publish from %s allowed by the cached key table: the "
                            "controller cannot be asked (%s)", channel, protocol, remote, exc or "timed out")
        return channel

    # --- placement, for the transcode supervisor -----------------------------------------------------

    def _keep_placement(self, channel: str, order: PlacementOrder) -> None:
        now = self._clock()
        if len(self._placements) >= MAX_PLACEMENTS:
            for ch in [c for c, (_, at) in self._placements.items() if now - at > PLACEMENT_TTL]:
                del self._placements[ch]
            if len(self._placements) >= MAX_PLACEMENTS:
                self._placements.pop(next(iter(self._placements)))
        self._placements[channel] = (order, now)

    def numbering_for(self, channel: str) -> tuple[int, int] | None:
        """(next sequence number, discontinuity count) of the channel fleet-wide, as the controller answered the
        publish now starting, once; None when it did not say (the node numbers from its own store)."""
        kept = self._numbering.pop(channel, None)
        if kept is None or self._clock() - kept[2] > PLACEMENT_TTL:
            return None
        return kept[0], kept[1]

    def placement_for(self, channel: str) -> tuple[str, str] | None:
        """(mode, reason) the controller decided for the stream now starting on `channel`, once; None when it
        did not decide (the node then decides itself)."""
        kept = self._placements.pop(channel, None)
        if kept is None or self._clock() - kept[1] > PLACEMENT_TTL:
            return None
        return kept[0].mode, kept[0].reason
