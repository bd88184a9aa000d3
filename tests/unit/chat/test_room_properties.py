"""Properties of edged.chat.room.Room over random input sequences (hypothesis).

- two rooms fed the same ordered inputs decide exactly the same (what makes NATS edges agree);
- a replica fed only the events converges on the same modes, restrictions and history (HubBus, edges);
- the bounds hold after every step; arbitrary text never raises;
- nobody restricted has a line in the history, and no accepted message comes from a restricted chatter.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from edged.chat.model import (
    ChatLimits,
    Chatter,
    EventKind,
    Moderation,
    ModerationAction,
    RoomSnapshot,
    Submission,
)
from edged.chat.room import Outcome, Room

T0 = 1_700_000_000_000

CHATTERS = [
    Chatter(user_id="1", login="alice"),
    Chatter(user_id="2", login="bob"),
    Chatter(user_id="3", login="sub", roles=frozenset({"subscriber"})),
    Chatter(user_id="4", login="vip", roles=frozenset({"vip"})),
    Chatter(user_id="10", login="mod", roles=frozenset({"moderator"})),
    Chatter(user_id="11", login="mod2", roles=frozenset({"moderator"})),
    Chatter(user_id="100", login="demo", roles=frozenset({"broadcaster"})),
    Chatter(user_id="", login="justinfan1"),
]
LOGINS = [c.login for c in CHATTERS] + ["stranger", "@Bob", "bad name"]

words = st.sampled_from(["hi", "gg", "Kappa", "hello there", "x" * 501, "", "  "])
targets = st.sampled_from(LOGINS)
durations = st.sampled_from(["", "1", "5", "30s", "2m", "1h", "0", "3w", "junk"])
msg_ids = st.integers(min_value=0, max_value=40).map(lambda i: f"s{i}")


@st.composite
def texts(draw: st.DrawFn) -> str:
    kind = draw(st.integers(min_value=0, max_value=11))
    if kind <= 3 or kind >= 10:
        return draw(words)
    if kind == 4:
        return "/me " + draw(words)
    if kind == 5:
        cmd = draw(st.sampled_from(["/ban", "/timeout", "/unban", "/untimeout", ".ban", ".timeout"]))
        return f"{cmd} {draw(targets)} {draw(durations)} {draw(words)}".strip()
    if kind == 6:
        return f"/delete {draw(msg_ids)}"
    if kind == 7:
        return draw(
            st.sampled_from(
                ["/clear", "/slow", "/slow 2", "/slow 0", "/slowoff", "/subscribers", "/subscribersoff",
                 "/emoteonly", "/emoteonlyoff", "/r9kbeta", "/r9kbetaoff", "/frob", "/me", ".net rocks"]
            )
        )  # fmt: skip
    return draw(st.text(max_size=40))


@dataclass(frozen=True)
class Say:
    chatter: int
    text: str
    id: str
    nonce: str
    emotes: str
    dt: int


@dataclass(frozen=True)
class Mod:
    action: ModerationAction
    target: str
    msg_id: str
    seconds: int
    dt: int


gaps = st.one_of(
    st.integers(min_value=0, max_value=1_500),
    st.integers(min_value=0, max_value=1_500),
    st.integers(min_value=0, max_value=700_000),
)
says = st.builds(
    Say,
    chatter=st.integers(min_value=0, max_value=len(CHATTERS) - 1),
    text=texts(),
    id=msg_ids,
    nonce=st.sampled_from(["", "", "n1", "n2"]),
    emotes=st.sampled_from(["", "25:0-4", "1:0-1", "garbage", "9:0-99"]),
    dt=gaps,
)
mods = st.builds(
    Mod,
    action=st.one_of(  # restrictions more often than modes, so rooms are not locked in emote-only mode
        st.sampled_from(list(ModerationAction)),
        st.sampled_from([ModerationAction.BAN, ModerationAction.TIMEOUT, ModerationAction.UNBAN]),
        st.sampled_from([ModerationAction.UNTIMEOUT, ModerationAction.DELETE, ModerationAction.SLOWOFF]),
        st.sampled_from([ModerationAction.SUBSCRIBERSOFF, ModerationAction.EMOTEONLYOFF]),
    ),
    target=targets,
    msg_id=msg_ids,
    seconds=st.sampled_from([0, 1, 10, 600, -5, 10_000_000]),
    dt=gaps,
)
steps = st.one_of(says, says, says, mods)


def new_room(**kw: int) -> Room:
    return Room(RoomSnapshot(room="demo", room_id="7"), ChatLimits(), **kw)


def run(room: Room, step: Say | Mod, now: int) -> Outcome:
    if isinstance(step, Say):
        sub = Submission(
            id=step.id,
            room="demo",
            chatter=CHATTERS[step.chatter],
            text=step.text,
            sent_ms=0,
            client_nonce=step.nonce,
            emotes=step.emotes,
        )
        return room.submit(sub, now)
    mod = Moderation(
        room="demo",
        action=step.action,
        target_login=step.target,
        target_msg_id=step.msg_id,
        seconds=step.seconds,
    )
    return room.moderate(mod, now)


def restrictions(room: Room, now: int) -> list[tuple[str, str, int]]:
    return [(r.login, r.user_id, r.until_ms) for r in room.snapshot(now).restrictions]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(steps, st.none() | st.integers(min_value=0, max_value=900_000)), min_size=10, max_size=60
    )
)
def test_two_rooms_fed_the_same_inputs_decide_the_same(seq: list[tuple[Say | Mod, int | None]]) -> None:
    # `a` is also read (history, snapshot, restriction) at arbitrary moments, even ahead of the inputs'
    # clock, as a hub or an edge does on a watch: reading must not change what it decides next
    a, b = new_room(), new_room()
    now = T0
    for step, peek in seq:
        now += step.dt
        assert run(a, step, now) == run(b, step, now)
        if peek is not None:
            a.history(now + peek)
            a.snapshot(now + peek)
            a.restriction("bob", now + peek)
    assert a.snapshot(now) == b.snapshot(now)
    assert a.history(now) == b.history(now)


@settings(max_examples=300, deadline=None)
@given(st.lists(steps, min_size=10, max_size=60))
def test_a_replica_fed_the_events_converges(seq: list[Say | Mod]) -> None:
    orderer, replica = new_room(), new_room()
    now = T0
    for step in seq:
        now += step.dt
        for event in run(orderer, step, now).events:
            replica.apply(event)
    assert replica.modes == orderer.modes
    assert restrictions(replica, now) == restrictions(orderer, now)
    assert replica.history(now) == orderer.history(now)


@settings(max_examples=200, deadline=None)
@given(st.lists(steps, min_size=10, max_size=80))
def test_bounds_and_moderation_invariants_hold_after_every_step(seq: list[Say | Mod]) -> None:
    room = new_room(max_users=3, max_seen=5, max_r9k_texts=4, max_privileged=2)
    now = T0
    for step in seq:
        now += step.dt
        out = run(room, step, now)
        assert room.tracked_users <= 3 and room.tracked_ids <= 5
        history = room.history(now)
        assert len(history) <= room.limits.history_messages
        assert all(now - line.sent_ms <= room.limits.history_seconds * 1000 for line in history)
        restricted = {r.login for r in room.snapshot(now).restrictions}
        assert not any(line.chatter.login in restricted for line in history)
        for event in out.events:
            assert event.seq == 0 and event.room == "demo" and event.time_ms == now
            if event.kind is EventKind.MESSAGE:
                assert event.line is not None and event.line.chatter.login not in restricted
                assert out.verdict is None
        if out.duplicate:
            assert out.events == () and out.verdict is None


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(CHATTERS), st.text(max_size=60), st.text(max_size=30)),
        max_size=30,
    )
)
def test_arbitrary_text_and_emotes_never_raise(items: list[tuple[Chatter, str, str]]) -> None:
    room = new_room()
    for i, (chatter, text, emotes) in enumerate(items):
        for prefix in ("", "/", ".", "/timeout bob ", "/slow "):
            sub = Submission(
                id=f"{i}{prefix}", room="demo", chatter=chatter, text=prefix + text, sent_ms=0, emotes=emotes
            )
            out = room.submit(sub, T0 + i)
            if out.verdict is not None:
                assert (out.verdict.submission_id, out.verdict.login, out.verdict.room) == (
                    sub.id,
                    chatter.login,
                    "demo",
                )
                assert out.verdict.notice_id and out.verdict.text
            for event in out.events:
                if event.kind is EventKind.MESSAGE:
                    assert event.line is not None and event.line.id == sub.id
                    assert len(event.line.text) <= room.limits.max_body_chars


probes = st.lists(
    st.tuples(st.integers(min_value=0, max_value=len(CHATTERS) - 1), words, st.sampled_from(["", "25:0-4"])),
    min_size=1,
    max_size=10,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(steps, min_size=10, max_size=60), probes)
def test_a_replica_in_step_decides_messages_as_the_orderer_would(
    seq: list[Say | Mod], probe: list[tuple[int, str, str]]
) -> None:
    # what a HubBus replica does while the hub is away; refused submissions (which only the orderer saw)
    # count towards rate limits there, so the rate limit is out of this comparison
    limits = ChatLimits(messages_per_window=10_000, moderator_messages_per_window=10_000)
    orderer = Room(RoomSnapshot(room="demo", room_id="7"), limits)
    replica = Room(RoomSnapshot(room="demo", room_id="7"), limits)
    now = T0
    for step in seq:
        now += step.dt
        for event in run(orderer, step, now).events:
            replica.apply(event)
    for i, (chatter, text, emotes) in enumerate(probe):
        now += 700
        step = Say(chatter=chatter, text=text, id=f"probe-{i}", nonce="", emotes=emotes, dt=0)
        assert run(replica, step, now) == run(orderer, step, now)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(steps, st.integers(min_value=-60_000, max_value=0)), min_size=10, max_size=60))
def test_a_clock_that_steps_back_never_breaks_the_rules_or_the_bounds(
    seq: list[tuple[Say | Mod, int]],
) -> None:
    # a HubBus replica orders with the edge's clock between events stamped by the hub's: they may disagree
    a, b = new_room(max_users=3, max_seen=5), new_room(max_users=3, max_seen=5)
    now = T0
    for step, back in seq:
        now += step.dt + back
        assert run(a, step, now) == run(b, step, now)
        assert a.tracked_users <= 3 and a.tracked_ids <= 5
        assert len(a.history(now)) <= a.limits.history_messages
    assert a.snapshot(now) == b.snapshot(now)
