"""The harness and its tolerance rules: each checker on a known-good and a known-bad input."""

import json

import numpy as np
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from attnspec.reference.cases import build_case, conformance_cases
from attnspec.reference.conformance import as_kernel
from attnspec.reference.harness import check, evaluate, gold_result
from attnspec.reference.mutants import CORRECT, MUTANTS
from attnspec.reference.oracle import oracle_from_problem
from attnspec.reference.strategies import format_arrays
from attnspec.reference.tolerances import FlashMLAComparator, FlashRule, LseRule
from attnspec.spec.errors import ConventionError, FormatError
from attnspec.spec.formats import Format, round_to, ulp

BF16 = Format.BF16


def test_flash_rule_good_and_bad():
    gold = np.linspace(-1, 1, 48).reshape(1, 2, 3, 8)
    good = round_to(gold, BF16)
    rule = FlashRule()
    assert rule.judge(good, gold, [good], BF16, np.zeros_like(gold)).ok
    bad = good + 8 * ulp(good, BF16)
    verdict = rule.judge(bad, gold, [good], BF16, np.zeros_like(gold))
    assert not verdict.ok and "but should be <=" in verdict.message
    with_nan = good.copy()
    with_nan[0, 1, 2, 3] = np.nan
    verdict = rule.judge(with_nan, gold, [good], BF16, np.zeros_like(gold))
    assert not verdict.ok and verdict.where == (0, 1, 2, 3)


def test_flash_rule_floor_and_reference_error():
    """k x the reference error widens the tolerance; the floor alone is 2 ulps at the largest |G|."""
    gold = np.full((1, 1, 1, 4), 0.75)
    rule = FlashRule()
    tol_exact_ref = rule.tolerance(gold, [gold], BF16, np.zeros_like(gold))
    assert tol_exact_ref == 2 * ulp(0.75, BF16)
    tol = rule.tolerance(gold, [gold + 0.01], BF16, np.zeros_like(gold))
    assert tol == pytest.approx(2 * 0.01 + 2 * ulp(0.75, BF16), rel=0, abs=1e-15)
    assert FlashRule(scope="row").tolerance(gold, [gold], BF16, np.zeros_like(gold)).shape == (1, 1, 1)


def test_lse_rule_requires_declared_empty_value():
    gold = np.array([[[1.5, -np.inf]]])
    tol = LseRule().tolerance(gold, np.zeros_like(gold), np.zeros_like(gold), Format.FP32)
    assert LseRule().judge(np.array([[[1.5, -np.inf]]]), gold, tol).ok
    assert not LseRule().judge(np.array([[[1.5, np.inf]]]), gold, tol).ok
    assert not LseRule().judge(np.array([[[1.5 / np.log(2), -np.inf]]]), gold, tol).ok


def test_flashmla_comparator_three_parts():
    rng = np.random.default_rng(3)
    gold = rng.uniform(-1, 1, (2, 64))
    comparator = FlashMLAComparator.flashmla_bf16_out()
    assert comparator.judge(round_to(gold, BF16), gold, "out").ok
    shifted = np.where(np.isinf(gold), gold, gold + 0.05)
    assert not comparator.judge(shifted, gold, "out").ok  # part 2
    anomalies = gold.copy()
    anomalies[0, 0] = np.inf
    assert not comparator.judge(round_to(gold, BF16), anomalies, "out").ok  # part 1
    assert comparator.judge(np.where(np.isinf(anomalies), anomalies, round_to(gold, BF16)), anomalies, "out").ok
    # part 3: every element within abs_tol, but all biased the same way
    loose = FlashMLAComparator(abs_tol=1.0, rel_tol=0.0, cos_diff_tol=1e-6)
    verdict = loose.judge(gold * 1.01 + 0.01, gold, "out")
    assert not verdict.ok and "cos_diff" in verdict.message
    x = gold * 1.001
    expected = np.sum((x - gold) ** 2) / (np.sum(x * x) + np.sum(gold * gold))
    assert loose.judge(x, gold, "out").data["cos_diff"] == pytest.approx(expected, rel=1e-9)


def test_flashmla_carried_tolerances_match_flashmla_for_bf16():
    carried = FlashMLAComparator.for_output(BF16, 1.0)
    assert carried.rel_tol == 2.01 / 128
    assert carried.abs_tol == 2.0 ** -7  # eps max|V|: ~10x FlashMLA's 8e-4, see the tolerances docstring
    assert carried.cos_diff_tol == pytest.approx(5e-6, rel=0.02)


@settings(max_examples=10)
@given(format_arrays((1, 2, 3, 8), fmt="fp32", min_value=-2.0, max_value=2.0))
def test_flash_rule_accepts_any_correct_rounding(gold):
    assert FlashRule().judge(round_to(gold, BF16), gold, [round_to(gold, BF16)], BF16, np.zeros_like(gold)).ok


def test_flash_rule_property_has_a_mutant():
    """The property above fails for a result 6 ulps off: hypothesis finds such a gold."""
    def holds(gold):
        bad = round_to(gold, BF16) + 6 * ulp(round_to(gold, BF16), BF16)
        return FlashRule().judge(bad, gold, [round_to(gold, BF16)], BF16, np.zeros_like(gold)).ok
    find(format_arrays((1, 2, 3, 8), fmt="fp32", min_value=-2.0, max_value=2.0), lambda g: not holds(g))


def test_fp64_gold_within_its_bound_of_the_oracle():
    for params in ({"seed": 4, "b": 1, "hkv": 1, "group": 2, "sq": 3, "sk": 12, "dk": 8, "dv": 4, "scale_factor": 1.0,
                    "causal": True, "causal_alignment": "bottom_right", "amplitude": 4.0},
                   {"seed": 5, "b": 1, "hkv": 1, "group": 1, "sq": 2, "sk": 9, "dk": 16, "dv": 4, "scale_factor": 2.0,
                    "growth": 40.0}):
        problem = build_case("growing_max" if "growth" in params else "uniform", "bf16", params).problem()
        out, lse, out_bound, lse_bound, _ = gold_result(problem, "fp64")
        exact = oracle_from_problem(problem)
        assert np.all(np.abs(out - exact.out) <= out_bound)
        assert np.all(np.abs(lse - exact.lse) <= lse_bound)


def test_check_reports_worst_case_and_saves_a_reproducer(tmp_path):
    report = check(MUTANTS["lse_base2"].kernel, op="attention", dtype="bf16", examples=2, save_dir=tmp_path)
    assert not report.ok and report.worst.ratio > 1
    summary = report.summary()
    assert "reproduce: attnspec check" in summary and "--seed 0" in summary and report.saved in summary
    assert (tmp_path / report.saved.rsplit("/", 1)[-1] / "MANIFEST.json").is_file()
    assert json.loads(json.dumps(report.as_json(), default=str))["failed"] == len(report.failed)


def test_check_is_reproducible_from_its_seed():
    kernel = CORRECT["spec_flash"].kernel
    names = [[r.case.name for r in check(kernel, dtype="fp16", examples=3, seed=7, save=False).results] for _ in (0, 1)]
    assert names[0] == names[1]
    assert names[0] != [r.case.name for r in check(kernel, dtype="fp16", examples=3, seed=8, save=False).results]


def test_check_rejects_bad_arguments():
    kernel = CORRECT["spec_flash"].kernel
    with pytest.raises(ConventionError, match="op: expected"):
        check(kernel, op="softmax")
    with pytest.raises(FormatError, match="dtype"):
        check(kernel, dtype="fp8_e4m3")
    with pytest.raises(FormatError, match="for op 'amla'"):
        check(CORRECT["spec_amla"].kernel, op="amla", dtype="fp32")
    with pytest.raises(ConventionError, match="examples"):
        check(kernel, examples=0)


def test_kernel_that_raises_is_a_failure_not_a_crash():
    def broken(q, k, v, *, scale):
        raise RuntimeError("device lost")
    report = check(broken, dtype="fp32", examples=1, save=False)
    assert not report.ok and "device lost" in report.worst.message


@settings(max_examples=8)
@given(st.data())
def test_cases_respect_what_the_kernel_takes(data):
    def plain(q, k, v, *, scale):
        return q
    kernel = as_kernel(plain)
    case = data.draw(conformance_cases("attention", kernel, "fp32"))
    assert set(case.conventions) <= {"scale", "causal", "causal_alignment"}
    assert not case.conventions["causal"]


def test_flashmla_rule_runs_end_to_end():
    """FlashMLA's comparator, on FlashMLA's ground: MLA decode in BF16 (docs/conformance.md says why only there)."""
    report = check(CORRECT["spec_mla"].kernel, op="mla", dtype="bf16", examples=1, rule="flashmla", save=False)
    assert report.ok, report.summary()
    assert not check(MUTANTS["mla_ignores_softmax_scale"].kernel, op="mla", dtype="bf16", examples=1, rule="flashmla",
                     save=False, fail_fast=True).ok


def test_evaluate_with_the_oracle_gold():
    case = build_case("uniform", "bf16", {"seed": 9, "b": 1, "hkv": 1, "group": 1, "sq": 2, "sk": 6, "dk": 4, "dv": 4,
                                          "scale_factor": 1.0})
    assert evaluate(CORRECT["spec_flash"].kernel, case, "attention", gold="oracle").ok
    assert not evaluate(MUTANTS["missing_scale"].kernel, case, "attention", gold="oracle").ok


def test_cases_property_has_a_mutant():
    """The property above fails for a kernel that takes every convention: cases then use them."""
    everything = as_kernel(lambda q, k, v, **conventions: q)
    find(conformance_cases("attention", everything, "fp32"),
         lambda case: not set(case.conventions) <= {"scale", "causal", "causal_alignment"})
