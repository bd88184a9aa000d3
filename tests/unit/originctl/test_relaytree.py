"""Relay tree planning on a fleet sample (tests/data/relay/fleet.json)."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

from originctl.server.relaytree import MAX_DEPTH, Tree, TreeNode, hints, plan

DATA = Path(__file__).resolve().parents[2] / "data" / "relay" / "fleet.json"
VIEWERS = [f"edge-{i:02d}" for i in range(1, 61)]


def fleet() -> dict[str, TreeNode]:
    return {n["id"]: TreeNode(**{k: v for k, v in n.items() if k != "_"}) for n in json.loads(DATA.read_text())["nodes"]}


def check_shape(t: Tree, nodes: dict[str, TreeNode], cap: int) -> None:
    """Every member hangs below a member, within depth, below the ingest edge or a dialable relay node."""
    for child, parent in t.parents.items():
        assert parent in t.members() and t.depth(child) <= MAX_DEPTH, (child, parent)
        if parent != t.ingest:
            assert nodes[parent].can_relay, parent
        else:
            assert nodes[parent].dialable or child == t.push_to
        assert nodes[child].eligible
    assert all(n <= cap for p, n in t.fanout().items() if p != t.ingest), t.fanout()


def test_a_few_children_hang_below_the_ingest_edge() -> None:
    nodes = fleet()
    t = plan("news", "edge-paris", nodes, VIEWERS[:5] + ["edge-lost", "edge-paris"])
    assert t.parents == dict.fromkeys(VIEWERS[:5], "edge-paris")  # the lost one and the ingest edge are not children
    assert t.chain("edge-03") == ("edge-paris",) and not t.recruited and not t.problem


def test_fan_out_past_the_cap_goes_through_relay_nodes() -> None:
    nodes = fleet()
    t = plan("news", "edge-paris", nodes, VIEWERS, max_children=20)
    check_shape(t, nodes, 20)
    assert set(VIEWERS) <= set(t.parents)  # everyone is served
    assert t.fanout()["edge-paris"] <= 20
    assert t.recruited and t.recruited <= {"relay-1", "relay-2", "relay-3"}
    assert "relay-draining" not in t.members()
    deep = max(VIEWERS, key=t.depth)
    assert t.depth(deep) <= MAX_DEPTH and t.chain(deep)[0] == "edge-paris"


def test_plans_are_deterministic() -> None:
    nodes = fleet()
    items = list(nodes.items())
    random.Random(7).shuffle(items)
    wanted = list(VIEWERS)
    random.Random(8).shuffle(wanted)
    assert plan("news", "edge-paris", dict(items), wanted, max_children=8) == \
        plan("news", "edge-paris", nodes, VIEWERS, max_children=8)


def test_existing_children_keep_their_parents() -> None:
    nodes = fleet()
    first = plan("news", "edge-paris", nodes, VIEWERS[:30], max_children=20)
    second = plan("news", "edge-paris", nodes, VIEWERS, previous=first, max_children=20)
    assert all(second.parents[c] == p for c, p in first.parents.items()), "a child moved"
    check_shape(second, nodes, 20)
    # a lower cap later applies: the first children of each parent keep their places, the rest move
    third = plan("news", "edge-paris", nodes, VIEWERS, previous=second, max_children=10)
    assert third.recruited == second.recruited  # relays carry subtrees: they keep their places first
    for parent in ("edge-paris", *second.recruited):
        kids = sorted(second.children(parent), key=lambda c: (c not in second.recruited, c))
        assert [c for c in kids[:10] if third.parents[c] != parent] == []
    assert set(VIEWERS) <= set(third.parents)
    over = [c for c, r in third.reasons.items() if "over relay.max_children" in r]
    assert all(n <= 10 for p, n in third.fanout().items() if p != "edge-paris")
    assert third.fanout()["edge-paris"] <= 10 + len(over)


def test_a_lost_relay_is_replanned() -> None:
    nodes = fleet()
    t = plan("news", "edge-paris", nodes, VIEWERS, max_children=20)
    lost = sorted(t.recruited)[0]
    orphans = t.children(lost)
    assert orphans
    nodes[lost] = dataclasses.replace(nodes[lost], eligible=False)
    again = plan("news", "edge-paris", nodes, VIEWERS, previous=t, max_children=20)
    assert lost not in again.members()
    assert set(VIEWERS) <= set(again.parents)  # the orphans found a sibling relay or the ingest edge
    check_shape(again, nodes, 20)
    kept = [c for c, p in t.parents.items() if p != lost and c != lost and t.chain(c)[1:2] != (lost,)]
    assert all(again.parents[c] == t.parents[c] for c in kept)


def test_a_child_that_excludes_its_parent_gets_another() -> None:
    nodes = fleet()
    t = plan("news", "edge-paris", nodes, VIEWERS[:40], max_children=20)
    child = next(c for c, p in t.parents.items() if p in t.recruited)
    failed = t.parents[child]
    again = plan("news", "edge-paris", nodes, VIEWERS[:40], previous=t, excluded={child: frozenset({failed})},
                 max_children=20)
    assert again.parents[child] != failed and failed not in again.chain(child)
    assert again.parents[child] in ("edge-paris", *again.recruited)


def test_an_unreachable_ingest_edge_pushes_up_to_a_relay_node() -> None:
    nodes = fleet()
    t = plan("sport", "edge-nat", nodes, VIEWERS[:10])
    assert t.push_to in ("relay-1", "relay-2", "relay-3")
    assert t.parents[t.push_to] == "edge-nat"
    assert all(t.chain(c)[:2] == ("edge-nat", t.push_to) for c in VIEWERS[:10])  # nobody dials the NAT'd edge
    check_shape(t, nodes, 20)
    # the push target is stable, and replaced when it is lost
    assert plan("sport", "edge-nat", nodes, VIEWERS[:10], previous=t).push_to == t.push_to
    nodes[t.push_to] = dataclasses.replace(nodes[t.push_to], eligible=False)
    moved = plan("sport", "edge-nat", nodes, VIEWERS[:10], previous=t)
    assert moved.push_to not in ("", t.push_to) and all(moved.chain(c)[1] == moved.push_to for c in VIEWERS[:10])


def test_no_relay_to_push_to_is_a_problem_not_a_tree() -> None:
    nodes = {k: v for k, v in fleet().items() if not v.relay}
    t = plan("sport", "edge-nat", nodes, VIEWERS[:3])
    assert not t.parents and "cannot be dialled" in t.problem
    assert "not serving" in plan("x", "edge-lost", nodes, VIEWERS[:3]).problem


def test_depth_stays_within_three_hops_and_the_root_takes_the_overflow() -> None:
    nodes = fleet()
    t = plan("news", "edge-paris", nodes, VIEWERS, max_children=2)
    assert max(t.depth(c) for c in t.parents) <= MAX_DEPTH
    assert set(VIEWERS) <= set(t.parents)  # beyond what relays can take, the ingest edge takes them over its cap
    assert any("over relay.max_children" in r for r in t.reasons.values())


def test_recruited_relays_leave_when_nobody_is_below_them() -> None:
    nodes = fleet()
    big = plan("news", "edge-paris", nodes, VIEWERS, max_children=20)
    assert big.recruited
    small = plan("news", "edge-paris", nodes, VIEWERS[:3], previous=big, max_children=20)
    assert not (small.recruited - {small.parents.get(c) for c in VIEWERS[:3]})
    assert all(small.parents[c] == big.parents[c] for c in VIEWERS[:3])


def test_hints_for_edges_that_do_not_carry_the_channel() -> None:
    nodes = fleet()
    t = plan("news", "edge-paris", nodes, VIEWERS[:5])
    before = dataclasses.replace(t, parents=dict(t.parents))
    h = hints(t, nodes, ["edge-50", "edge-51", "edge-01", "edge-lost"])
    assert set(h) == {"edge-50", "edge-51"}  # members and lost nodes get none
    for chain in h.values():  # one of the next places a child would take: the ingest edge, or a relay below it
        assert chain[0] == "edge-paris" and len(chain) <= MAX_DEPTH and all(nodes[n].can_relay for n in chain[1:])
    assert hints(t, nodes, ["edge-50", "edge-51", "edge-01", "edge-lost"]) == h  # deterministic
    assert hints(t, nodes, ["edge-50", "edge-51"], slots=1) == {"edge-50": ("edge-paris",), "edge-51": ("edge-paris",)}
    assert t == before
    # hints spread: many askers land on several places, never below themselves
    small = plan("news", "edge-paris", nodes, VIEWERS[:2], max_children=4)
    many = hints(small, nodes, [*VIEWERS, "relay-1", "relay-2", "relay-3"], max_children=4)
    assert len(set(many.values())) > 1 and all(n not in c for n, c in many.items())
