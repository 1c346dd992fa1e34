"""spec.pasa_beta: the rounding-aware fixed points of beta/(1 - beta) = f(beta).

Expected values come from the sources, not from the code: chenglong92/PASA@14f5c6f
``optimal_para.py`` seeds 1 - 2**-4, 1 - 2**-5, 1 - 2**-6 with n = 128 and FP16, whose
fixed points are 0.9375, 0.968994140625 ("0.9689939" in the README) and 0.9844970703125
("afa = 0.984497" in PASA_Verification.py); with BF16 the first becomes 0.93798828125; with
the scale 1/sqrt(128) folded into M they move to 0.937431..., 0.968953... and 0.984711....
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnspec.reference.strategies import find_failure
from attnspec.spec.errors import DomainError, ShapeError
from attnspec.spec.formats import Format, round_to
from attnspec.spec.pasa_beta import (beta_map, fixed_point, fixed_points, is_fixed_point, recovery_coefficient,
                                     stored_shift_entries)

SEEDS = (1 - 2.0 ** -4, 1 - 2.0 ** -5, 1 - 2.0 ** -6)
FP16_N128 = (0.9375, 0.968994140625, 0.9844970703125)
SCALED_N128 = (0.937431, 0.968953, 0.984711)  # six digits, with c = 1/sqrt(128)


@pytest.mark.parametrize("seed, expected", list(zip(SEEDS, FP16_N128)))
def test_fp16_fixed_points_of_the_author(seed, expected):
    point = fixed_point(seed, 128)
    assert point.beta == expected and is_fixed_point(point.beta, 128)
    assert point.gamma == expected / (1 - expected)


def test_bf16_fixed_points():
    assert [fixed_point(s, 128, fmt="bf16").beta for s in SEEDS] == [0.93798828125, 0.968994140625, 0.9844970703125]


@pytest.mark.parametrize("seed, expected", list(zip(SEEDS, SCALED_N128)))
def test_fixed_points_with_the_scale_folded_in(seed, expected):
    point = fixed_point(seed, 128, scale=1 / math.sqrt(128))
    assert round(point.beta, 6) == expected
    assert stored_shift_entries(point.beta, 128, scale=1 / math.sqrt(128)) == point.stored_entries


def test_0_9375_is_exact_for_n_128():
    m0, m1 = stored_shift_entries(0.9375, 128)
    assert (Fraction(m0), Fraction(m1)) == (Fraction(2033, 2048), Fraction(-15, 2048))
    assert float(round_to(0.9375 / 0.0625, Format.FP16)) == 15.0  # gamma is an FP16 value too
    assert float(round_to(0.968994140625 / (1 - 0.968994140625), Format.FP16)) != 0.968994140625 / (1 - 0.968994140625)


@given(beta=st.floats(min_value=0.5, max_value=0.999), n=st.sampled_from([16, 64, 128, 100]),
       scale=st.sampled_from([1.0, 0.125, 1 / math.sqrt(128)]))
def test_closed_form_is_the_authors_map(beta, n, scale):
    f = recovery_coefficient(beta, n, scale=scale)
    assert abs(float(beta_map(beta, n, scale=scale)) - f / (1 + f)) <= 64 * 2.0 ** -53


def test_mutant_map_without_the_diagonal_term_is_caught():
    """optimal_para.py's header comment omits (c - a)/a; that map is not f/(1+f) of the code."""
    def comment_map(beta, n, scale):
        m0, m1 = stored_shift_entries(beta, n, scale=scale)
        b = -m1
        a = m0 + b
        f = scale * n * b / (a * (a - n * b))
        return f / (1 + f)

    cases = st.tuples(st.floats(min_value=0.5, max_value=0.999), st.sampled_from([64, 128]),
                      st.sampled_from([1.0, 1 / math.sqrt(128)]))
    find_failure(cases, lambda c: abs(float(beta_map(*c[:2], scale=c[2])) - comment_map(*c)) > 64 * 2.0 ** -53)


def test_enumeration_finds_the_authors_points():
    found = fixed_points(128, lo=0.93, hi=0.99)
    assert set(FP16_N128) <= set(found)
    assert all(is_fixed_point(b, 128) for b in found)
    assert found == sorted(found) and len(found) > 3  # the map is piecewise constant: many fixed points


def test_non_fixed_points_are_reported():
    assert not is_fixed_point(0.984497, 128)  # the script's literal is 7e-8 away from its fixed point
    assert not is_fixed_point(0.95, 128)


@pytest.mark.parametrize("call, error", [
    (lambda: stored_shift_entries(1.0, 128), DomainError), (lambda: stored_shift_entries(0.5, 0), ShapeError),
    (lambda: stored_shift_entries(0.5, 128, scale=0.0), DomainError),
    (lambda: fixed_points(128, lo=0.9, hi=0.8), DomainError),
    (lambda: fixed_point(0.9375, 128, max_iter=0), DomainError),
])
def test_bad_arguments(call, error):
    with pytest.raises(error):
        call()


def test_fixed_point_recovery_has_no_block_mean_error():
    """At beta = 0.9375 (n = 128, c = 1) the stored M~ inverts exactly: S' + gamma r' = S for any block."""
    rng = np.random.default_rng(0)
    m0, m1 = (Fraction(x) for x in stored_shift_entries(0.9375, 128))
    s = [Fraction(int(x)) for x in rng.integers(-1000, 1000, 128)]
    shifted = [m0 * x + m1 * (sum(s) - x) for x in s]  # S M~
    r = sum(shifted) / 128
    assert all(x + 15 * r == y for x, y in zip(shifted, s))
    off = (Fraction(x) for x in stored_shift_entries(0.95, 128))  # not a fixed point: a block-mean error remains
    m0, m1 = off
    gamma = Fraction(0.95) / (1 - Fraction(0.95))
    shifted = [m0 * x + m1 * (sum(s) - x) for x in s]
    assert any(x + gamma * sum(shifted) / 128 != y for x, y in zip(shifted, s))
