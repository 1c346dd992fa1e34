"""Tests of reference/amla_cases.py and reference/amla_report.py: named cases, the rule's own checker, the report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attnspec.reference import amla_report
from attnspec.reference.amla_cases import NARROW, amla_cases, case_table
from attnspec.reference.amla_report import (FAMILIES, ReportInput, blas_policy, build_problem, check_amla_rule_quick,
                                            check_amla_vector_zero_hole, check_amla_vector_zero_hole_escape, error_rule,
                                            run_report)
from attnspec.registry import all_checks
from attnspec.spec.amla import POLICY_AMLA, amla_finalize, amla_from_problem, amla_state, no_keys
from attnspec.spec.errors import ConventionError
from attnspec.spec.formats import Format, round_to, ulp
from attnspec.spec.mla import decode_problem


# ----------------------------------------------------------------------------------------------
# The rule's checker, on known-good and known-bad outputs
# ----------------------------------------------------------------------------------------------

GOLD = np.array([[1.0, 0.5, -0.25], [1e-3, 2e-3, -4e-3]])  # two rows of very different magnitude


def test_rule_passes_the_gold_and_the_baseline():
    assert error_rule(GOLD, GOLD, GOLD).ok
    noisy = GOLD + ulp(np.abs(GOLD).max(axis=-1, keepdims=True), Format.BF16) / 2
    assert error_rule(noisy, noisy, GOLD).ok


@pytest.mark.parametrize("bad, why", [
    (GOLD + np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 6e-5]]), "6e-5, two ulps of the small row, with an exact baseline"),
    (GOLD + 2 * ulp(1.0, Format.BF16), "two ulps where the baseline is exact"),
    (np.where(GOLD == 0.5, np.nan, GOLD), "a NaN"),
    (np.where(GOLD == 1e-3, 0.0, GOLD), "a lost element (the zero hole)"),
])
def test_rule_fails_known_bad_outputs(bad, why):
    result = error_rule(bad, GOLD, GOLD)
    assert not result.ok and result.failing_rows >= 1, why


def test_rule_scales_with_the_baseline_error():
    baseline = GOLD + np.array([[0.01, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert error_rule(GOLD - 0.02, baseline, GOLD).ok is False  # row 2 also moved: its baseline is exact
    shifted = GOLD + np.array([[-0.02, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert error_rule(shifted, baseline, GOLD).ok  # 0.02 <= 2 * 0.01 + ulp(1)


def test_blas_substitute_is_bit_exact_with_the_spec_on_bf16_inputs():
    rng = np.random.default_rng(3)
    q = round_to(rng.normal(size=(2, 3, 4, NARROW.latent_dim)), Format.BF16)
    kv = round_to(rng.normal(size=(2, 50, 1, NARROW.latent_dim)), Format.BF16)
    problem = decode_problem(q, kv, cache_seqlens=np.array([50, 33]), scale=0.5, causal=True, config=NARROW)
    for variant in ("cann", "ideal"):
        exact, _ = amla_from_problem(problem, variant, POLICY_AMLA, 16)
        fast, _ = amla_from_problem(problem, variant, blas_policy(POLICY_AMLA), 16)
        assert np.array_equal(exact, fast)


# ----------------------------------------------------------------------------------------------
# The report's inputs do what their families say (the kernel's geometry, 2 heads)
# ----------------------------------------------------------------------------------------------

def _final_state(family: str):
    problem = build_problem(ReportInput(family, 2, 2, 1100, 7, FAMILIES[family][0]))
    state = amla_state(problem, "cann", blas_policy(POLICY_AMLA))
    _, _, state = amla_finalize(state, no_keys(problem), "cann", POLICY_AMLA, problem.empty_lse)
    return problem, state


def test_report_families_reach_their_regimes():
    _, guard = _final_state("large_guard")
    _, large = _final_state("large")
    assert np.any(guard.guarded) and not np.any(large.guarded)
    problem, tiny = _final_state("tiny")
    assert np.any(tiny.guarded)  # corrupted by the rescale, then zeroed
    _, small = _final_state("small")
    assert not np.any(small.guarded) and np.all(np.abs(small.o[small.o != 0]) >= 2.0**-95)


def test_report_runs_and_names_failures(capsys, monkeypatch):
    inputs = [ReportInput("random", 2, 1, 520, 0, True), ReportInput("large_guard", 2, 1, 520, 0, False)]
    report = run_report(0, True, inputs)
    assert [e["input"] for e in report["entries"]] == [i.name for i in inputs]
    assert {f["input"] for f in report["failures"]} == {inputs[1].name}
    assert all(not f["in_domain"] for f in report["failures"])
    assert report["entries"][0]["results"]["cann"]["ok"] and report["entries"][0]["gold_bound"] is not None
    monkeypatch.setattr(amla_report, "report_inputs", lambda seed, quick: inputs)
    assert amla_report.main(["--json", "--quick"]) == 0
    assert json.loads(capsys.readouterr().out)["failures"]
    claimed = [ReportInput("large_guard", 2, 1, 520, 0, True)]  # a failure inside the claimed domain: exit 1
    monkeypatch.setattr(amla_report, "report_inputs", lambda seed, quick: claimed)
    assert amla_report.main([]) == 1
    assert "inside AMLA's domain" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# Named cases and verify checks
# ----------------------------------------------------------------------------------------------

def test_case_names_carry_their_seeds_and_are_unique():
    table = case_table("quick")
    names = [c.name for c in table]
    assert len(set(names)) == len(names)
    assert all(f"_s{c.seed}" in c.name and f"_b{c.block_k}_" in c.name for c in table)
    with pytest.raises(ConventionError, match="level: expected one of"):
        case_table("huge")


def test_cases_are_deterministic():
    a, b = case_table("quick"), case_table("quick")
    for x, y in zip(a, b):
        assert np.array_equal(x.q, y.q) and np.array_equal(x.kv_cache, y.kv_cache)


def test_amla_cases_yield_named_parts():
    cases = {name: (inputs, expected, meta) for name, inputs, expected, meta in amla_cases("quick")}
    inputs, expected, meta = cases["amla_zero_hole_b8_s1"]
    assert set(inputs) == {"q", "kv_cache", "cache_seqlens"} and inputs["q"].shape == (1, 1, 4, 6)
    assert set(expected) == {"out", "lse", "out_bf16", "out_amla_cann"}
    assert sorted(meta["lost"]) == [(0, 0, h, 0) for h in range(4)]  # channel 0 of every head
    assert meta["conventions"]["block_k"] == 8 and not meta["within_rule"]
    escape = cases["amla_zero_hole_escape_b8_s2"]
    assert np.all(np.abs(escape[1]["out_amla_cann"][..., 0]) > 100)  # garbage, not 0, and not guarded
    for name, (inputs, expected, meta) in cases.items():
        if meta["within_rule"]:
            assert meta["lost"] == [], name


@pytest.mark.parametrize("check", [check_amla_rule_quick, check_amla_vector_zero_hole,
                                   check_amla_vector_zero_hole_escape])
def test_verify_checks_pass(check):
    outcome = check()
    assert outcome.status == "pass", outcome.detail


def test_checks_are_registered():
    names = {c.name for c in all_checks(quick=True)}
    assert {"amla.rule.quick", "amla.vector.zero_hole", "amla.vector.zero_hole_escape", "amla.identity",
            "amla.invariant", "amla.failures.zero_is_guarded", "amla.compensation.bound"} <= names
    assert "amla.compensation.carry" in {c.name for c in all_checks()} - names  # a slow one, outside --quick
