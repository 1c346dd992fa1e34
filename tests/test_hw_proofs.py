"""The preload-pipeline theorems: each proves, each negative control is refuted, wrong periods are refuted."""

from __future__ import annotations

import pytest
import z3

from attnspec.hw_model import predictions
from attnspec.proofs import preload_pipeline as pp
from attnspec.proofs._core import prove

THEOREMS = [pp.prove_period_none, pp.prove_period_atomic, pp.prove_period_cann, pp.prove_cube_bound_iff,
            pp.prove_textbook_period_fails_for_atomic, pp.prove_cann_without_sync_fails,
            predictions.prove_amla_cube_bound, predictions.refute_amla_beyond_margin,
            predictions.refute_baseline_cube_bound]


@pytest.mark.parametrize("theorem", THEOREMS, ids=lambda f: f.__name__)
def test_theorem_has_its_expected_status(theorem):
    result = theorem()
    assert result.status == result.expected, result.outcome().detail


def test_negative_controls_come_with_confirmed_counterexamples():
    for theorem in (pp.prove_textbook_period_fails_for_atomic, pp.prove_cann_without_sync_fails):
        result = theorem()
        assert result.counterexample and "replayed" in result.note


def _wrong_period(variant, mutate):
    d = pp._symbols()
    claim, assumptions = pp._period_claim(d, variant, mutate(d, pp.period(d, variant)))
    return prove(f"mutant_{variant}", claim, assumptions, expect="refuted", timeout_s=10, statement="mutant period")


@pytest.mark.parametrize("variant", pp.VARIANTS)
@pytest.mark.parametrize("mutate", [lambda d, t: t + 1, lambda d, t: d["c1"] + d["c2"]],
                         ids=["period_too_large", "period_is_cube_only"])
def test_wrong_period_is_refuted(variant, mutate):
    """Too large a period fails the lower bound; the Cube-only period fails the induction step."""
    result = _wrong_period(variant, mutate)
    assert result.status == "refuted", result.outcome().detail


def test_cube_bound_condition_agrees_with_period_on_the_textbook_counterexample():
    # amla.md §5: c1 = c2 = 1, v1 = 1.5, v2 = 0.1 gives T = 2.5 with the AMLA edge, 2 without.
    d = {"c1": 1, "c2": 1, "v1": 1.5, "vn": 0, "v2": 0.1, "s": 0}
    assert pp.period(d, "atomic") == 2.5 and not pp.cube_bound_condition(d, "atomic")
    assert pp.period(d, "none") == 2 and pp.cube_bound_condition(d, "none")


def test_step_accepts_z3_terms_and_numbers_alike():
    d = {k: z3.RealVal(v) for k, v in {"c1": 2, "c2": 3, "v1": 1, "vn": 1, "v2": 1, "s": 0}.items()}
    x = [z3.RealVal(2), z3.RealVal(7), z3.RealVal(9)]
    symbolic = [z3.simplify(t) for t in pp.step(x, d, "cann")]
    numeric = pp.step((2, 7, 9), {"c1": 2, "c2": 3, "v1": 1, "vn": 1, "v2": 1, "s": 0}, "cann")
    assert [float(t.as_fraction()) for t in symbolic] == list(numeric) == [9, 14, 12]  # C1(k+1), C2(k), V2(k-1)
