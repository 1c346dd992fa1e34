"""The PASA theorems: each proved, each negative control refuted, the counterexamples replayed outside Z3."""

from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np
import pytest

import attnspec.proofs.pasa_fp16 as fp16
import attnspec.proofs.pasa_overflow as overflow
import attnspec.proofs.pasa_recovery as recovery
import attnspec.proofs.pasa_region as region
import attnspec.proofs.pasa_resonance as resonance
from attnspec.registry import all_checks
from attnspec.spec.pasa import POLICY_PASA_FP16, shift_constants

THEOREMS = [getattr(module, name) for module in (recovery, overflow, fp16, resonance)
            for name in sorted(vars(module)) if name.startswith("prove_")]
CHECKS = [region.check_pasa_region_witnesses, region.check_pasa_region_control_beta_zero,
          region.check_pasa_region_control_gamma_r_first, resonance.check_pasa_resonance_sinusoid]


@functools.lru_cache(maxsize=None)
def _result(theorem):
    return theorem()


@pytest.mark.parametrize("theorem", THEOREMS, ids=lambda f: f.__name__)
def test_theorem_has_its_expected_status(theorem):
    result = _result(theorem)
    assert result.status == result.expected, result.outcome().detail
    if result.expected == "refuted":
        assert result.counterexample


def test_every_theorem_has_a_control_and_every_function_is_registered():
    names = {_result(t).name for t in THEOREMS}
    proved = {n for n in names if ".control" not in n}
    assert all(any(c.startswith(p + ".control") for c in names) for p in proved), \
        sorted(p for p in proved if not any(c.startswith(p + ".control") for c in names))
    registered = {c.run for c in all_checks()}
    assert set(THEOREMS) <= registered and set(CHECKS) <= registered


@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
def test_region_and_resonance_checks_pass(check):
    outcome = check()
    assert outcome.status == "pass", outcome.detail


def test_author_exponent_overflow_replays_in_numpy_float16():
    """The counterexample's shape (m = 49152, delta = 11.375) in numpy float16: pasa()'s factor is +inf, ours is 1."""
    f16 = np.float16
    m, delta, m_loc, offset = f16(49152), f16(11.375), f16(0), f16(0)
    m_new = max(m_loc + offset, m + delta)  # fl(m + delta) = m: the ulp at 49152 is 32
    with np.errstate(over="ignore"):
        author = np.exp(np.float64((m - m_new) + delta)).astype(f16)
    ours = np.exp(np.float64((m + delta) - m_new)).astype(f16)
    assert m + delta == m and author == np.inf and ours == 1


def test_zero_padding_control_replays_in_the_spec():
    """A zero pad key next to keys near 30 leaves the shift bound, in the spec's own FP16 shifting GEMM."""
    shift, _ = shift_constants(fp16.GEMM_CONFIG, 1.0, POLICY_PASA_FP16)
    _, _, bound = fp16._shift_gemm(False)
    boxed = POLICY_PASA_FP16.to_input(POLICY_PASA_FP16.matmul(shift, np.array([[30.5], [29.5], [30.0]])))
    padded = POLICY_PASA_FP16.to_input(POLICY_PASA_FP16.matmul(shift, np.array([[30.0], [30.0], [0.0]])))
    assert np.all(np.abs(boxed) <= bound) and abs(padded[2, 0]) > bound  # the pad's own row: -beta kbar


def test_closed_form_control_is_a_real_counterexample():
    """Replay the closed-form control's model in rationals: the comment's f gives another beta."""
    result = recovery.prove_pasa_recovery_control_closed_form()
    a, b, c = (Fraction(result.counterexample[x]) for x in ("a", "b", "c"))
    n = Fraction(result.counterexample["n"])
    f = c * n * b / (a * (a - n * b))
    assert f / (1 + f) != 1 - (a - n * b) / c
