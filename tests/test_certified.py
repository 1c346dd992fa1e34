"""reference.certified: the certified fast oracle against the mpmath oracle, its kernels, and its mutants.

Expected values come from reference.oracle (mpmath intervals, exact tie decisions) or from
exact rational arithmetic, never from the module under test. Each property is also shown to
fail for a mutant of the module: the exp error term or the summation error terms dropped
from the bound, a claimed exp bound below the truth.
"""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnspec.reference import certified
from attnspec.reference.certified import (EXP_REL, U, AttentionCase, adversarial_cases, cancelling_logit_case,
                                          cancelling_weights_case, certified_attention, disagreement,
                                          exact_tie_case, exp_kernel, exp_kernel_error, exp_kernel_sample,
                                          extreme_cases, near_tie_case, round_enclosure)
from attnspec.reference.oracle import OracleUncertifiedError, attention_oracle
from attnspec.reference.strategies import attention_inputs, find_failure
from attnspec.spec.errors import DomainError, FormatError
from attnspec.spec.formats import Format

FORMATS = ("fp32", "bf16", "fp16")
BUILDERS = (near_tie_case, exact_tie_case, cancelling_logit_case, cancelling_weights_case)
small_cases = attention_inputs(max_batch=2, max_heads=4, max_seq=8, max_dim=6)


# ---------------------------------------------------------------------------------------------
# Agreement with the mpmath oracle
# ---------------------------------------------------------------------------------------------

@given(case=small_cases, fmt=st.sampled_from(FORMATS), magnitude=st.sampled_from([1.0, 1e-3, 40.0]))
def test_agrees_with_the_mpmath_oracle(case, fmt, magnitude):
    scaled = AttentionCase(case.q * magnitude, case.k, case.v, case.conventions)
    assert disagreement(scaled, fmt) is None


@given(seed=st.integers(min_value=0, max_value=2**32 - 1), fmt=st.sampled_from(FORMATS),
       build=st.sampled_from(BUILDERS))
def test_agrees_on_constructed_near_and_exact_ties(seed, fmt, build):
    assert disagreement(build(fmt, seed), fmt) is None


@pytest.mark.parametrize("index", range(len(extreme_cases())))
def test_agrees_at_the_extremes(index):
    case, fmt = extreme_cases()[index]
    assert disagreement(case, fmt) is None


def test_near_ties_are_decided_by_the_later_tiers():
    """A near tie cannot be certified by tier 1; the result still matches, and the fallback is counted."""
    case = near_tie_case("fp32", 3)
    got = certified_attention(case.q, case.k, case.v, fmt="fp32", **case.conventions)
    assert got.refined_rows == 1 and got.fallback_out + got.fallback_lse >= 1
    assert disagreement(case, "fp32") is None


def test_fully_masked_rows_follow_the_convention():
    case, fmt = extreme_cases()[4]  # kv_seqlens = 0, empty_lse = +inf
    got = certified_attention(case.q, case.k, case.v, fmt=fmt, **case.conventions)
    assert np.array_equal(got.out, np.zeros_like(got.out)) and np.all(got.lse == np.inf)
    assert np.all(got.out_rad == 0) and got.fallback_rows == 0


def test_float64_enclosure_without_a_format():
    case = near_tie_case("bf16", 0)
    got = certified_attention(case.q, case.k, case.v, fmt=None, **case.conventions)
    assert got.out is None and got.lse is None and got.refined_rows == 0 and got.fallback_rows == 0
    assert np.all(np.isfinite(got.out_rad)) and np.all(got.out_rad < 64 * U * np.abs(got.out_mid).max())


# ---------------------------------------------------------------------------------------------
# Mutants: each dropped error term must let a wrong rounding through on a constructed case
# ---------------------------------------------------------------------------------------------

def test_mutant_without_the_exp_error_term_is_caught(monkeypatch):
    monkeypatch.setattr(certified, "EXP_REL", 0.0)
    seed = find_failure(st.integers(min_value=0, max_value=10**6),
                        lambda s: disagreement(cancelling_weights_case("fp32", s), "fp32") is not None, max_examples=50)
    monkeypatch.undo()
    assert disagreement(cancelling_weights_case("fp32", seed), "fp32") is None


def test_mutant_without_the_summation_error_terms_is_caught(monkeypatch):
    monkeypatch.setattr(certified, "gamma", lambda n: 0.0)
    seed = find_failure(st.integers(min_value=0, max_value=10**6),
                        lambda s: disagreement(cancelling_logit_case("fp32", s), "fp32") is not None, max_examples=50)
    monkeypatch.undo()
    assert disagreement(cancelling_logit_case("fp32", seed), "fp32") is None


def test_agreement_check_catches_a_shifted_enclosure(monkeypatch):
    """The harness's own known-bad input: enclosures moved off the exact value by 1e-9 are reported."""
    real = certified._evaluate

    def shifted(rows, precise, empty_lse):
        e = real(rows, precise, empty_lse)
        return certified._Enclosure(e.out * (1 + 1e-9), e.out_rad, e.lse, e.lse_rad, e.empty)

    monkeypatch.setattr(certified, "_evaluate", shifted)
    assert "misses the exact value" in disagreement(near_tie_case("fp32", 0), "bf16")


# ---------------------------------------------------------------------------------------------
# Kernels: exp, log, split products, certified rounding
# ---------------------------------------------------------------------------------------------

def test_exp_kernel_is_within_its_derived_bound():
    worst = exp_kernel_error(exp_kernel_sample(1, 2000))
    assert worst <= EXP_REL, f"max_rel_err={worst / U:.4f}u, but should be <= {EXP_REL / U:.4f}u [exp_kernel]"
    assert exp_kernel(np.array([0.0]))[0] == 1.0


def test_exp_bound_below_the_truth_is_refuted():
    """A claimed bound of 0.45 u (less than a correctly rounded exp can promise) must be violated."""
    assert exp_kernel_error(exp_kernel_sample(1, 2000)) > 0.45 * U


@given(s=st.floats(min_value=0.5, max_value=2.0**60))
def test_log_enclosure_contains_log(s):
    import mpmath

    lam, err = certified._log_enclosure(np.array([s]))
    with mpmath.workprec(200):
        assert abs(mpmath.log(mpmath.mpf(s)) - mpmath.mpf(float(lam[0]))) <= mpmath.mpf(float(err[0]))


@given(seed=st.integers(min_value=0, max_value=2**32 - 1), slices=st.integers(min_value=1, max_value=2),
       spread=st.sampled_from([1.0, 2.0**20, 2.0**60]))
def test_split_product_encloses_the_exact_product(seed, slices, spread):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((3, 7)) * spread ** rng.uniform(-1, 1, (3, 7))
    b = rng.standard_normal((7, 4)) * spread ** rng.uniform(-1, 1, (7, 4))
    parts, tail, err = certified._split_terms(a, b, slices)
    for i, j in np.ndindex(3, 4):
        exact = sum(Fraction(float(a[i, t])) * Fraction(float(b[t, j])) for t in range(7))
        head = sum(Fraction(float(p[i, j])) for p in parts)
        assert abs(exact - head - Fraction(float(np.broadcast_to(tail, err.shape)[i, j]))) <= Fraction(float(err[i, j]))


def test_split_product_without_its_tail_misses():
    """Mutant of the split: the leading slices alone are not the product when the operands have more bits."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 7)), rng.standard_normal((7, 4))
    parts, _, _ = certified._split_terms(a, b, 1)
    exact = [[sum(Fraction(float(a[i, t])) * Fraction(float(b[t, j])) for t in range(7)) for j in range(4)]
             for i in range(3)]
    assert any(Fraction(float(parts[0][i, j])) != exact[i][j] for i in range(3) for j in range(4))


@pytest.mark.parametrize("fmt", ["fp32", "bf16", "fp16"])
def test_round_enclosure_known_good_and_known_bad(fmt):
    info = Format[fmt.upper()].info if fmt != "bf16" else Format.BF16.info
    one_up = 1 + 2.0 ** (1 - info.p)
    midpoint = (1 + one_up) / 2
    value, ok = round_enclosure(np.array([1.0, midpoint, midpoint, np.nan, 1.0]),
                                np.array([2.0**-40, 0.0, 2.0**-60, 0.0, np.inf]), fmt)
    assert ok.tolist() == [True, False, False, False, False]
    assert value[0] == 1.0


# ---------------------------------------------------------------------------------------------
# Bad input and the oracle's undecidable cases
# ---------------------------------------------------------------------------------------------

def test_bad_input_is_rejected():
    q, k, v = np.ones((1, 1, 1, 2)), np.ones((1, 1, 3, 2)), np.ones((1, 1, 3, 2))
    with pytest.raises(FormatError, match="fmt: expected fp32, bf16"):
        certified_attention(q, k, v, fmt="fp64")
    with pytest.raises(FormatError, match="format: expected one of"):
        certified_attention(q, k, v, fmt="fp33")
    with pytest.raises(DomainError, match="q: expected finite values"):
        certified_attention(np.full((1, 1, 1, 2), np.nan), k, v)


def test_undecided_elements_are_passed_through_as_the_oracle_reports_them():
    """Two logit groups with the same V mean under softcap: O is that mean exactly, a bf16 midpoint.

    Whatever the mpmath oracle can decide, the certified oracle must report alike: raise
    OracleUncertifiedError when strict exactly when the oracle does, and list the same rows as
    uncertified when not strict.
    """
    mid = float(np.float64(1.0) + 2.0**-8)  # a bf16 midpoint
    v = np.array([mid - 2.0**-10, mid + 2.0**-10, mid - 2.0**-9, mid + 2.0**-9]).reshape(1, 1, 4, 1)
    k = np.array([0.5, 0.5, 1.5, 1.5]).reshape(1, 1, 4, 1)  # groups {0, 1} and {2, 3}, each of mean mid
    q = np.ones((1, 1, 1, 1))
    conventions = dict(scale=1.0, softcap=20.0)
    exact = attention_oracle(q, k, v, **conventions)
    try:
        expected = exact.rounded("bf16")
    except OracleUncertifiedError:
        expected = None
    if expected is None:
        with pytest.raises(OracleUncertifiedError):
            certified_attention(q, k, v, fmt="bf16", **conventions)
    else:
        assert disagreement(AttentionCase(q, k, v, conventions), "bf16") is None
    lenient = certified_attention(q, k, v, fmt="bf16", strict=False, **conventions)
    oracle_lenient = attention_oracle(q, k, v, **conventions)
    oracle_lenient.rounded("bf16", strict=False)
    assert lenient.certified == oracle_lenient.certified


def test_seeded_adversarial_set_is_nonempty_and_mixed():
    cases = adversarial_cases(range(1))
    assert len(cases) >= 20 and {fmt for _, fmt in cases} == set(FORMATS)


@pytest.mark.parametrize("shapes", [((1, 2, 0, 3), (1, 1, 4, 3), (1, 1, 4, 2)),  # no queries
                                    ((0, 2, 1, 3), (0, 1, 4, 3), (0, 1, 4, 2)),  # no batch
                                    ((1, 2, 1, 3), (1, 1, 0, 3), (1, 1, 0, 2))])  # no keys: empty rows
def test_degenerate_shapes(shapes):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(s) for s in shapes)
    assert disagreement(AttentionCase(q, k, v), "fp16") is None
