"""Tests of the foundation proofs: each theorem proved, each control refuted, and the encodings themselves checked."""

from __future__ import annotations

from fractions import Fraction

import mpmath
import numpy as np
import pytest
import z3
from hypothesis import given
from hypothesis import strategies as st

import attnspec.proofs.mla_absorption as absorption
import attnspec.proofs.online_softmax as online
import attnspec.proofs.split_kv_combine as split
from attnspec.reference.bounds import attention_error_bound, exceeds
from attnspec.spec.attention import POLICY_FP64
from attnspec.spec.flash import flash_from_problem
from attnspec.spec.problem import attention_problem
from attnspec.spec.split_kv import split_kv_attention

THEOREMS = [online.prove_online_softmax_invariant, online.prove_online_softmax_unrolled,
            online.prove_online_softmax_control_no_rescale_o, online.prove_online_softmax_control_no_rescale_l,
            online.prove_online_softmax_control_stale_max, online.prove_online_softmax_control_negative_weights,
            split.prove_split_kv_combine, split.prove_split_kv_control_uniform_average,
            split.prove_split_kv_control_unnormalised, split.prove_split_kv_control_max_for_logsumexp,
            split.prove_split_kv_control_empty_split_lse_zero,
            absorption.prove_mla_absorption_equivalence, absorption.prove_mla_absorption_control_no_transpose,
            absorption.prove_mla_absorption_control_wrong_head_uv,
            absorption.prove_mla_absorption_control_per_head_rope_key]


@pytest.mark.parametrize("theorem", THEOREMS, ids=lambda f: f.__name__)
def test_theorem_has_its_expected_status(theorem):
    result = theorem()
    assert result.status == result.expected, result.outcome().detail
    assert result.outcome().status == "pass" and result.seconds >= 0
    if result.expected == "refuted":
        assert result.counterexample
        if "control" in result.name and "negative_weights" not in result.name:
            assert result.note.startswith("replayed"), result.note  # confirmed outside the e-domain algebra


def test_every_control_is_a_registered_check():
    from attnspec.registry import all_checks
    assert set(THEOREMS) <= {c.run for c in all_checks(kinds=("proof",))}


# ----------------------------------------------------------------------------------------------
# Mutants: every wrong recurrence / combine is refuted in every formulation
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", [v for v in online.VARIANTS if v != "fa2"])
def test_wrong_recurrences_break_the_invariant(variant):
    parts = online.invariant_parts(block_sizes=(1, 2), variant=variant)
    statuses = {online.prove(label, claim, assumptions, statement=label).status for label, claim, assumptions in parts}
    assert "refuted" in statuses and "unknown" not in statuses


@pytest.mark.parametrize("variant", [v for v in online.VARIANTS if v != "fa2"])
@pytest.mark.parametrize("shape", [(2, 2, 1), (3, 1, 2)])
def test_wrong_recurrences_are_refuted_unrolled(variant, shape):
    parts, es, vs = online.unrolled_parts(*shape, variant=variant)
    result = online.prove("mutant", z3.And(*[c for _, c, _ in parts]), parts[0][2], statement="", expect="refuted",
                          confirm=online.confirm_in_exp_domain(es, vs, shape[1], variant))
    assert result.status == "refuted" and result.note.startswith("replayed")


@pytest.mark.parametrize("variant", [v for v in split.VARIANTS if v != "lse"])
def test_wrong_combines_are_refuted_with_three_splits(variant):
    parts, Zs, Os = split.combine_parts(3, 2, variant)
    result = split.prove("mutant", z3.And(*[c for _, c, _ in parts]), parts[0][2], statement="", expect="refuted",
                         confirm=split.confirm_combine(Zs, Os, 3, variant))
    assert result.status == "refuted"


def test_absorption_mutant_combinations_are_refuted():
    result = absorption.refute_absorption("mutant", "", transpose_uk=False, uv_head_shift=1)
    assert result.status == "refuted"


# ----------------------------------------------------------------------------------------------
# The checkers: confirm hooks reject a non-counterexample; the encodings agree with the exp domain
# ----------------------------------------------------------------------------------------------

def _model(assignments: dict) -> z3.ModelRef:
    s = z3.Solver()
    s.add(*[z3.Real(k) == v for k, v in assignments.items()])
    assert s.check() == z3.sat
    return s.model()


def test_confirm_rejects_a_model_of_the_correct_recurrence():
    es, vs = online._symbols("ok_", 2, 1)
    model = _model({"ok_e0": 1, "ok_e1": 3, "ok_v0_0": 2, "ok_v1_0": -1})
    with pytest.raises(AssertionError, match="agrees with the definition"):
        online.confirm_in_exp_domain(es, vs, 1, "fa2")(model)
    assert online.confirm_in_exp_domain(es, vs, 1, "no_rescale_o")(model).startswith("replayed")


def test_confirm_rejects_a_model_of_the_correct_combine():
    Zs, Os = [z3.Real("z0"), z3.Real("z1")], [[z3.Real("o0")], [z3.Real("o1")]]
    model = _model({"z0": 2, "z1": 1, "o0": 1, "o1": -3})
    with pytest.raises(AssertionError, match="agrees with attention"):
        split.confirm_combine(Zs, Os, 2, "lse")(model)
    assert split.confirm_combine(Zs, Os, 2, "uniform")(model).startswith("replayed")


def test_confirm_rejects_a_model_where_the_forms_agree():
    s = absorption.mla_symbols(absorption.CONTROL_DIMS)
    zero = _model({str(x): 0 for arr in s.values() for x in arr.reshape(-1)})
    with pytest.raises(AssertionError, match="agrees with the naive form"):
        absorption.confirm_exact(s, {"transpose_uk": False})(zero)


weights_and_values = st.lists(st.tuples(st.fractions(min_value=0, max_value=8, max_denominator=16),
                                        st.fractions(min_value=-4, max_value=4, max_denominator=16)),
                              min_size=1, max_size=7)


@given(weights_and_values, st.integers(min_value=1, max_value=3))
def test_exact_recurrence_equals_the_definition(pairs, block):
    """The e-domain recurrence, evaluated in Fractions, is exactly softmax attention (the theorem, on data)."""
    es, vs = [e for e, _ in pairs], [[v] for _, v in pairs]
    E, l, O = online.run_recurrence(es, vs, block)
    total = sum(es)
    assert (E == 0) == (total == 0)
    if total:
        assert O[0] / l == sum(e * v[0] for e, v in zip(es, vs)) / total and E * l == total


@given(weights_and_values, st.integers(min_value=1, max_value=3))
def test_exp_domain_replay_equals_the_definition(pairs, block):
    """The mpmath replay of spec/flash.py (used to confirm counterexamples) is right for the correct recurrence."""
    with mpmath.workdps(50):
        scores = [mpmath.log(mpmath.mpf(e.numerator) / e.denominator) if e else mpmath.mpf("-inf") for e, _ in pairs]
        values = [[mpmath.mpf(v.numerator) / v.denominator] for _, v in pairs]
        out, lse = online.exp_domain_flash(scores, values, block)
        ref_out, ref_lse = online.exp_domain_definition(scores, values)
        assert abs(out[0] - ref_out[0]) < mpmath.mpf(10) ** -40
        assert lse == ref_lse or abs(lse - ref_lse) < mpmath.mpf(10) ** -40


def test_the_proved_model_is_the_spec_algorithm():
    """spec.flash (binary64) follows the exp-domain recurrence the proofs reason about, mutants do not."""
    rng = np.random.default_rng(3)
    scores = np.array([-np.inf, -np.inf, -1.0, 0.5, 1.5, 2.5])  # masked first block: the guard; rising max: alpha
    values = rng.uniform(-1, 1, size=(6, 2))
    admitted = np.isfinite(scores)
    k = np.where(admitted, scores, 0.0).reshape(1, 1, 6, 1)  # logit_j = 1 * s_j with scale 1
    problem = attention_problem(np.ones((1, 1, 1, 1)), k, values[None, None], scale=1.0,
                                mask=admitted.reshape(1, 1, 1, 6))
    spec = flash_from_problem(problem, POLICY_FP64, block_k=2)
    bound, _ = attention_error_bound(problem, POLICY_FP64, algorithm="flash", block_k=2)
    with mpmath.workdps(40):
        mp_scores = [mpmath.mpf(float(s)) if np.isfinite(s) else mpmath.mpf("-inf") for s in scores]
        mp_values = [[mpmath.mpf(float(x)) for x in row] for row in values]
        for variant in online.VARIANTS:
            out, lse = online.exp_domain_flash(mp_scores, mp_values, 2, variant)
            far = exceeds(spec.out[0, 0, 0], np.array([float(x) for x in out]), bound[0, 0, 0] + 2.0 ** -53)
            assert np.any(far) == (variant != "fa2"), variant


def test_the_proved_combine_is_the_spec_combine():
    """spec.split_kv matches the exp-domain combine the proofs reason about, including an empty split."""
    rng = np.random.default_rng(4)
    q, k, v = rng.uniform(-1, 1, size=(1, 1, 1, 3)), rng.uniform(-1, 1, size=(1, 1, 6, 3)), rng.uniform(-1, 1, size=(1, 1, 6, 2))
    got = split_kv_attention(q, k, v, num_splits=4, block_k=2, policy=POLICY_FP64, kv_seqlens=np.array([4]))
    problem = attention_problem(q, k, v, kv_seqlens=np.array([4]))
    bound, _ = attention_error_bound(problem, POLICY_FP64, algorithm="split", block_k=2, num_splits=4)
    with mpmath.workdps(40):
        scale = 1 / mpmath.sqrt(3)
        outs, lses = [], []
        for start in (0, 2, 4):  # keys 4-5 are past the length: the third split is empty
            keys = [j for j in range(start, start + 2) if j < 4]
            s = [scale * mpmath.fsum(mpmath.mpf(float(a)) * mpmath.mpf(float(b)) for a, b in zip(q[0, 0, 0], k[0, 0, j]))
                 for j in keys]
            rows = [[mpmath.mpf(float(x)) for x in v[0, 0, j]] for j in keys]
            o, lse = online.exp_domain_definition(s, rows) if keys else ([mpmath.mpf(0)] * 2, mpmath.mpf("-inf"))
            outs.append(o)
            lses.append(lse)
        assert lses[2] == mpmath.mpf("-inf")
        out, _ = split.exp_domain_combine(outs, lses)
    assert not np.any(exceeds(got.out[0, 0, 0], np.array([float(x) for x in out]), bound[0, 0, 0] + 2.0 ** -53))


def test_model_fraction_reads_rationals_and_algebraics():
    x, y = z3.Reals("x y")
    s = z3.Solver()
    s.add(x * x == 2, x > 0, y == Fraction(3, 7))
    assert s.check() == z3.sat
    m = s.model()
    assert online.model_fraction(m, y) == Fraction(3, 7)
    assert abs(online.model_fraction(m, x) ** 2 - 2) < Fraction(1, 10**50)
