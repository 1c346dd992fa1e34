"""Tests of reference/ep_dispatch.py: routing, exactly-once dispatch, the combine bound, buffers, overflow; mutants."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import find, given
from hypothesis import strategies as st

from attnspec.reference import ep_dispatch as ep
from attnspec.reference.ep_dispatch import (EPLayout, GateConfig, MessageFormat, buffer_report, combine,
                                            combine_within_bound, dispatch, dispatch_problems, ep320_layout,
                                            pack_dispatch_message, replicate_experts, route, routing_problems,
                                            unpack_dispatch_message)
from attnspec.spec.errors import DomainError, FormatError, ImplementationError, ShapeError
from attnspec.spec.formats import Format, round_to

SMALL_GATE = GateConfig(n_experts=8, n_groups=4, topk_groups=2, top_k=3)


# ----------------------------------------------------------------------------------------------
# Strategies (this module's own)
# ----------------------------------------------------------------------------------------------

@st.composite
def ep_cases(draw, *, max_batch: int = 5, tight_capacity: bool = False):
    """A small EP problem: layout (shared ranks, EPLB replicas, 1-3 experts per rank), BF16 tokens, routing,
    replica policy, and max_tokens (None: the worst case; with ``tight_capacity``, sometimes 1 or 2 rows)."""
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    per_rank = draw(st.integers(min_value=1, max_value=3))
    routed_ranks = draw(st.integers(min_value=-(-8 // per_rank), max_value=-(-8 // per_rank) + 2))
    layout = EPLayout(shared_ranks=draw(st.integers(min_value=1, max_value=3)),
                      phy2log=replicate_experts(rng.uniform(0, 10, 8), routed_ranks * per_rank),
                      experts_per_rank=per_rank, n_experts=8)
    batch = draw(st.integers(min_value=1, max_value=max_batch))
    x = round_to(rng.standard_normal((layout.world_size, batch, 6)) * rng.uniform(0.01, 100), Format.BF16)
    x[..., 0] = np.where(x[..., 0] == 0, 1.0, x[..., 0])  # no all-zero token
    routing = route(rng.standard_normal((layout.world_size * batch, 8)),
                    round_to(rng.standard_normal(8) * 0.1, Format.FP32), SMALL_GATE)
    shape = (layout.world_size, batch, -1)
    policy = draw(st.sampled_from(["source_rank", "token"]))
    max_tokens = draw(st.sampled_from([None, 1, 2])) if tight_capacity else None
    return layout, x, routing.expert_ids.reshape(shape), routing.weights.reshape(shape), policy, max_tokens


@st.composite
def gate_inputs(draw, *, config: GateConfig = SMALL_GATE):
    """(logits (T, E), bias (E,) FP32), biases sometimes strongly negative, sometimes with ties."""
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    t = draw(st.integers(min_value=1, max_value=6))
    logits = rng.standard_normal((t, config.n_experts)) * draw(st.sampled_from([0.0, 0.1, 3.0]))
    bias = round_to(rng.standard_normal(config.n_experts) * draw(st.sampled_from([0.01, 1.0])) - draw(
        st.sampled_from([0.0, 1.0])), Format.FP32)
    return logits, bias


# ----------------------------------------------------------------------------------------------
# Gate
# ----------------------------------------------------------------------------------------------

@given(gate_inputs())
def test_routing_properties(inputs):
    routing = route(*inputs, SMALL_GATE)
    problems = routing_problems(routing, SMALL_GATE)
    assert not problems, problems[0]


@given(gate_inputs(config=GateConfig()))
def test_routing_properties_deepseek_v3(inputs):
    problems = routing_problems(route(*inputs), GateConfig())
    assert not problems, problems[0]


def test_release_group_mask_mutant_is_caught():
    # DeepSeek-V3 @ 4c2fdb8 multiplied by the group mask: a negative biased score loses to the masked zeros.
    release = dataclasses.replace(SMALL_GATE, group_mask="multiply")
    find(gate_inputs(), lambda inputs: bool(routing_problems(route(*inputs, release), release)))
    logits, bias, config = ep.release_mask_case()
    assert route(logits, bias, config).expert_ids.tolist() == [[4, 5, 6]]
    assert route(logits, bias, dataclasses.replace(config, group_mask="multiply")).expert_ids.tolist() == [[4, 5, 0]]


def test_ascending_topk_mutant_is_caught(monkeypatch):
    monkeypatch.setattr(ep, "top_indices", lambda values, k: np.argsort(values, axis=-1, kind="stable")[..., :k])
    find(gate_inputs(), lambda inputs: bool(routing_problems(route(*inputs, SMALL_GATE), SMALL_GATE)))


def test_routing_ties_go_to_the_lower_index_and_weights_sum_to_route_scale():
    routing = route(np.zeros((1, 256)), np.zeros(256))
    assert routing.groups.tolist() == [[0, 1, 2, 3]]
    assert routing.expert_ids.tolist() == [list(range(8))]
    assert routing.weights.tolist() == [[0.3125] * 8]  # 0.5 / 4.0 * 2.5, exact


def test_routing_uses_unbiased_scores_for_weights():
    bias = np.zeros(8)
    bias[[2, 3]] = 5.0  # selects group 1 regardless of its scores
    logits = np.array([[3.0, 3.0, -1.0, -2.0, 0.0, 0.0, 0.0, 0.0]])
    routing = route(logits, bias, SMALL_GATE)
    assert set(routing.expert_ids[0, :2].tolist()) == {2, 3}
    chosen = routing.scores[0, routing.expert_ids[0]]
    assert np.allclose(routing.weights[0], chosen / chosen.sum() * 2.5, rtol=2**-21, atol=0)


def test_routing_bad_input():
    with pytest.raises(ShapeError, match="logits: expected \\(T, n_experts=256\\)"):
        route(np.zeros((1, 8)), np.zeros(256))
    with pytest.raises(DomainError, match="logits"):
        route(np.full((1, 256), np.nan), np.zeros(256))
    with pytest.raises(FormatError, match="bias"):
        route(np.zeros((1, 256)), np.full(256, 0.1))
    with pytest.raises(ShapeError, match="top_k"):
        GateConfig(n_experts=8, n_groups=4, topk_groups=1, top_k=3)


# ----------------------------------------------------------------------------------------------
# Placement
# ----------------------------------------------------------------------------------------------

def test_replicate_experts_greedy():
    # slot 4: loads/replicas (10, 1, 1, 6) -> expert 0; slot 5: (5, 1, 1, 6) -> expert 3; slot 6: (5, 1, 1, 3) -> 0.
    assert replicate_experts(np.array([10.0, 1.0, 1.0, 6.0]), 7) == (0, 1, 2, 3, 0, 3, 0)


def test_ep320_layout_and_shared_rank_balance():
    layout = ep320_layout()
    assert layout.world_size == 320 and layout.shared_ranks == 32 and len(layout.phy2log) == 288
    assert sorted(set(layout.phy2log)) == list(range(256))
    counts = np.bincount([ep.shared_rank_of(r, t, 96, 32) for r in range(320) for t in range(96)], minlength=32)
    assert np.all(counts == 96 * 320 // 32)  # CANN's A = BS x epWorldSize / sharedExpertRankNum = 960


def test_layout_bad_input():
    with pytest.raises(DomainError, match="missing \\[3\\]"):
        EPLayout(shared_ranks=1, phy2log=(0, 1, 2, 0), n_experts=4)
    with pytest.raises(ShapeError, match="multiple of experts_per_rank=2"):
        EPLayout(shared_ranks=1, phy2log=(0, 1, 2), experts_per_rank=2, n_experts=3)


# ----------------------------------------------------------------------------------------------
# Messages and buffers
# ----------------------------------------------------------------------------------------------

def test_buffer_sizes_match_the_paper():
    r = buffer_report()
    assert (r.dispatch_msg, r.combine_msg) == (7_680, 14_336)  # 7.5 KiB, 14 KiB
    assert (r.dispatch_buffer, r.combine_buffer, r.total) == (225 * 2**20, 420 * 2**20, 645 * 2**20)
    assert buffer_report(fmt=MessageFormat(scale_region=128)).dispatch_msg == 7_296  # ops-transformer@c29bc10


def test_buffer_formula_mutant_is_caught(monkeypatch):
    monkeypatch.setattr(ep, "capacity", lambda local_batch, top_k, experts_per_rank: local_batch * top_k)
    assert buffer_report().total != 645 * 2**20


@given(st.integers(min_value=1, max_value=64), st.integers(min_value=-127, max_value=127),
       st.floats(min_value=2.0**-100, max_value=2.0**100, width=32), st.tuples(*[st.integers(0, 2**31 - 1)] * 4))
def test_message_round_trip(hidden, value, scale, meta):
    fmt = MessageFormat(hidden=hidden)
    xq = np.full(hidden, value, dtype=np.int8)
    msg = pack_dispatch_message(xq, scale, meta, fmt)
    assert msg.shape == (hidden + 512,) and not msg[hidden + 20:].any()
    got_xq, got_scale, got_meta = unpack_dispatch_message(msg, fmt)
    assert np.array_equal(got_xq, xq) and got_scale == scale and got_meta == meta


# ----------------------------------------------------------------------------------------------
# Dispatch: exactly once
# ----------------------------------------------------------------------------------------------

def seeded_cases(*, tight_capacity: bool = False) -> list[tuple]:
    """Return fixed EP cases in ep_cases' form: 1 and 2 experts per rank, both replica policies."""
    cases = []
    for seed, per_rank, policy in ((0, 1, "source_rank"), (1, 2, "token"), (2, 2, "source_rank")):
        layout, _, x, routing = ep.small_case(seed, experts_per_rank=per_rank)
        ids, weights = ep.split_per_rank(routing, x)
        cases.append((layout, x, ids, weights, policy, 1 if tight_capacity else None))
    return cases


def dispatch_case(case) -> list[str]:
    """Return the exactly-once violations of dispatching ``case`` (dropping on overflow when capacity is tight)."""
    layout, x, ids, _, policy, max_tokens = case
    try:
        result = dispatch(x, ids, layout, replica_policy=policy, max_tokens=max_tokens,
                          overflow="raise" if max_tokens is None else "drop")
    except DomainError as exc:  # a region overflowed at the worst-case capacity
        return [str(exc)]
    return dispatch_problems(result, x, ids, layout)


@given(ep_cases(tight_capacity=True))
def test_every_token_reaches_each_expert_exactly_once_or_is_reported(case):
    problems = dispatch_case(case)
    assert not problems, problems[0]


def wrong_replica(replicas, src, token, local_batch, policy):
    return (replicas[0] + 1) % 8  # the slot after the expert's first: another expert's, as 0..7 hold experts 0..7


def ring_buffer(counts, dst, src, max_tokens, overflow, where):
    row = int(counts[dst, src])
    counts[dst, src] = row + 1 if row + 1 < max_tokens else 0  # wraps round and overwrites, reporting nothing
    return row


@pytest.mark.parametrize("name, attribute, mutant", [
    ("wrong replica", "choose_replica", wrong_replica),
    ("shared token to a routed rank", "shared_rank_of", lambda src, t, batch, shared: shared),
    ("ring buffer overwrites", "claim_row", ring_buffer),
])
def test_dispatch_mutants_are_caught(monkeypatch, name, attribute, mutant):
    monkeypatch.setattr(ep, attribute, mutant)
    assert all(dispatch_case(case) for case in seeded_cases(tight_capacity=attribute == "claim_row"))


def test_checker_catches_corrupted_buffers():
    layout, _, x, routing = ep.small_case(0)
    ids, _ = ep.split_per_rank(routing, x)
    result = dispatch(x, ids, layout)
    assert not dispatch_problems(result, x, ids, layout)
    counts = result.counts.copy()
    dst, src = np.argwhere(counts > 0)[0]
    counts[dst, src] -= 1  # the last message of a region is not counted: lost
    assert any("received 0 times" in p for p in dispatch_problems(
        ep.DispatchResult(result.buffers, counts, result.placed, (), result.activations, result.fmt,
                          result.max_tokens), x, ids, layout))
    buffers = result.buffers.copy()
    buffers[dst, src, 0, 0] ^= 1  # one payload bit flipped
    assert any("payload" in p for p in dispatch_problems(
        ep.DispatchResult(buffers, result.counts, result.placed, (), result.activations, result.fmt,
                          result.max_tokens), x, ids, layout))


def test_ep320_full_layout():
    outcome = ep.check_ep320_exactly_once()
    assert outcome.status == "pass", outcome.detail


# ----------------------------------------------------------------------------------------------
# Capacity and overflow
# ----------------------------------------------------------------------------------------------

@given(ep_cases())
def test_default_capacity_is_the_worst_case(case):
    layout, x, ids, _, policy, _ = case
    result = dispatch(x, ids, layout, replica_policy=policy)  # overflow="raise" by default: must not raise
    assert result.counts.max() <= x.shape[1] * min(ids.shape[2], layout.experts_per_rank)


def test_capacity_without_min_mutant_is_caught(monkeypatch):
    monkeypatch.setattr(ep, "capacity", lambda local_batch, top_k, experts_per_rank: local_batch)
    assert any("max_tokens" in " ".join(dispatch_case(case)) for case in seeded_cases())


def test_overflow_policies():
    layout, _, x, routing = ep.small_case(5, experts_per_rank=2)
    ids, weights = ep.split_per_rank(routing, x)
    with pytest.raises(DomainError, match="max_tokens: expected room for token"):
        dispatch(x, ids, layout, max_tokens=2)
    result = dispatch(x, ids, layout, max_tokens=2, overflow="drop")
    assert result.dropped and not dispatch_problems(result, x, ids, layout)
    combined = combine(result, weights, layout)
    assert combined.dropped == result.dropped
    for src, t, k, _ in result.dropped:
        assert combined.expected[src, t] < ids.shape[2] + 1
    assert int((ids.shape[2] + 1) * x.shape[0] * x.shape[1] - combined.expected.sum()) == len(result.dropped)


# ----------------------------------------------------------------------------------------------
# Combine: identity experts give the weighted sum within the INT8 bound
# ----------------------------------------------------------------------------------------------

def combine_holds(case, variant: str = "ideal") -> bool:
    layout, x, ids, weights, policy, _ = case
    result = dispatch(x, ids, layout, replica_policy=policy, variant=variant)
    return combine_within_bound(x, weights, result, combine(result, weights, layout), variant)[0]


@given(ep_cases(), st.sampled_from(["ideal", "cann"]))
def test_combine_of_dispatch_is_the_weighted_sum_within_the_int8_bound(case, variant):
    assert combine_holds(case, variant)


@pytest.mark.parametrize("mutant", ["scale dropped from the message", "expert outputs written to the wrong rows"])
def test_combine_mutants_are_caught(monkeypatch, mutant):
    if mutant.startswith("scale"):
        monkeypatch.setattr(ep, "pack_dispatch_message",
                            lambda xq, scale, meta, fmt: pack_dispatch_message(xq, 1.0, meta, fmt))
    else:
        original = ep.receive

        def misaligned(result, rank, experts_per_rank):
            got = original(result, rank, experts_per_rank)
            return ep.Received(got.tokens, got.meta, got.rows[::-1].copy(), got.expert_counts)

        monkeypatch.setattr(ep, "receive", misaligned)
    assert not any(combine_holds(case) for case in seeded_cases())


def test_missing_contribution_is_an_error():
    layout, _, x, routing = ep.small_case(3)
    ids, weights = ep.split_per_rank(routing, x)
    result = dispatch(x, ids, layout)
    counts = result.counts.copy()
    counts[tuple(np.argwhere(counts > 0)[0])] -= 1
    broken = ep.DispatchResult(result.buffers, counts, result.placed, (), result.activations, result.fmt,
                               result.max_tokens)
    with pytest.raises(ImplementationError, match="would hang"):
        combine(broken, weights, layout)


def test_dispatch_bad_input():
    layout, _, x, routing = ep.small_case(0)
    ids, weights = ep.split_per_rank(routing, x)
    bad = ids.copy()
    bad[0, 0, 1] = bad[0, 0, 0]
    with pytest.raises(DomainError, match="distinct experts per token, token \\(0, 0\\)"):
        dispatch(x, bad, layout)
    with pytest.raises(ShapeError, match="x: expected \\(R=12"):
        dispatch(x[:3], ids[:3], layout)
    nan = x.copy()
    nan[1, 2, 3] = np.nan
    with pytest.raises(DomainError, match="x"):
        dispatch(nan, ids, layout)
    with pytest.raises(FormatError, match="weights"):
        combine(dispatch(x, ids, layout), weights + 2**-40, layout)


def test_ep_buffers_report(capsys):
    assert ep.ep_buffers_report([]) == 0
    assert "total per die = 676331520 B = 645.0 MiB" in capsys.readouterr().out
    assert ep.ep_buffers_report(["--scale-region", "128", "--json"]) == 0
    assert '"dispatch_msg": 7296' in capsys.readouterr().out
