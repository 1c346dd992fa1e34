"""spec.policy: the "exact" and "sequential" accumulation rules against exact rational sums."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnspec.reference.strategies import find_failure, format_arrays
from attnspec.spec.errors import ConventionError
from attnspec.spec.formats import Format, round_exact, round_to
from attnspec.spec.policy import PrecisionPolicy, matmul_rounded, sum_rounded


def exact_matmul(a, b, fmt):
    """Independent definition: sum the exact products in rationals, round once."""
    out = np.empty((a.shape[0], b.shape[1]))
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            out[i, j] = round_exact(sum((Fraction(float(x)) * Fraction(float(y)) for x, y in zip(a[i], b[:, j])),
                                        Fraction(0)), fmt)
    return out


@st.composite
def operand_pairs(draw, *, fmt=Format.BF16, max_dim=12):
    m, k, n = (draw(st.integers(min_value=1, max_value=max_dim)) for _ in range(3))
    a = draw(format_arrays((m, k), fmt=fmt, min_value=-8, max_value=8))
    b = draw(format_arrays((k, n), fmt=fmt, min_value=-8, max_value=8))
    return a, b


@pytest.mark.parametrize("acc", [Format.FP32, Format.BF16, Format.FP16], ids=str)
@given(pair=operand_pairs())
def test_exact_rule_is_correctly_rounded_sum(acc, pair):
    a, b = pair
    assert np.array_equal(matmul_rounded(a, b, acc, "exact"), exact_matmul(a, b, acc))


def test_exact_rule_fallback_on_cancellation_near_a_tie():
    """A sum whose float64 evaluation lands within the error radius of an FP16 midpoint."""
    a = np.array([[1.0, 2.0 ** -11, 2.0 ** -40, -2.0 ** -40]])
    b = np.ones((4, 1))
    got = matmul_rounded(round_to(a, Format.FP32), b, Format.FP16, "exact")
    assert got[0, 0] == round_exact(Fraction(1) + Fraction(1, 2 ** 11), Format.FP16) == 1.0  # tie to even
    a2 = np.array([[1.0, 2.0 ** -11, 2.0 ** -40]])
    assert matmul_rounded(a2, np.ones((3, 1)), Format.FP16, "exact")[0, 0] == 1 + 2.0 ** -10


@given(pair=operand_pairs(fmt=Format.FP16, max_dim=8))
def test_sequential_rule_rounds_after_every_addition(pair):
    a, b = pair
    want = np.zeros((a.shape[0], b.shape[1]))
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            acc = Fraction(0)
            for x, y in zip(a[i], b[:, j]):
                acc = Fraction(round_exact(acc + Fraction(float(x)) * Fraction(float(y)), Format.FP16))
            want[i, j] = float(acc)
    assert np.array_equal(matmul_rounded(a, b, Format.FP16, "sequential"), want)


def test_exact_and_sequential_differ_and_the_test_would_notice():
    """Mutant check: treating 'sequential' as 'exact' is caught by the sequential property."""
    def differs(pair):
        a, b = pair
        return not np.array_equal(matmul_rounded(a, b, Format.FP16, "exact"),
                                  matmul_rounded(a, b, Format.FP16, "sequential"))
    find_failure(operand_pairs(fmt=Format.FP16, max_dim=8), differs)


@given(x=format_arrays((5, 33), fmt=Format.FP32, min_value=-1e3, max_value=1e3))
def test_sum_rules(x):
    want = np.array([round_exact(sum((Fraction(float(v)) for v in row), Fraction(0)), Format.BF16) for row in x])
    assert np.array_equal(sum_rounded(x, -1, Format.BF16, "exact")[:, 0], want)
    assert sum_rounded(x, 0, Format.BF16, "exact").shape == (1, 33)


def test_batched_matmul_broadcasts():
    rng = np.random.default_rng(3)
    a = round_to(rng.standard_normal((2, 1, 3, 5)), Format.BF16)
    b = round_to(rng.standard_normal((1, 4, 5, 2)), Format.BF16)
    got = matmul_rounded(a, b, Format.FP32)
    assert got.shape == (2, 4, 3, 2)
    assert np.array_equal(got[1, 2], exact_matmul(a[1, 0], b[0, 2], Format.FP32))


def test_policy_validation_and_names():
    assert PrecisionPolicy.uniform("fp16").name == "fp16"
    assert PrecisionPolicy("bf16", "fp32", "fp32", "bf16").matmul_input is Format.BF16
    with pytest.raises(ConventionError, match="accumulation: expected 'exact' or 'sequential'"):
        PrecisionPolicy.uniform("fp32", accumulation="pairwise")
