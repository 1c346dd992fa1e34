"""Property tests of spec/amla.py against the oracle, each seen to fail on a deliberately broken kernel (a mutant).

Mutants are the shipped kernel with one constant changed (``spec.amla.AmlaConstants``): no
zero guard, no clamp of dn at -30, 1.0 or 2.0 in place of the 1.5 compensation; and the
``cann`` variant itself where the property is one that only ``ideal`` has (the zero hole).
Hypothesis finds the failing input for most; for two, the named zero-hole cases of
``reference.amla_cases`` are the fixed witnesses (shrinking a found case took ~10 s each).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import find, given
from hypothesis import strategies as st

from attnspec.reference.amla_cases import NARROW, zero_hole, zero_hole_escape
from attnspec.reference.amla_report import error_rule
from attnspec.reference.oracle import oracle_from_problem
from attnspec.spec.amla import (CANN, POLICY_AMLA, AmlaConstants, amla_from_problem, int32_add,
                                nupdate, rescale_exponent, residual, round_half_away)
from attnspec.spec.attention import POLICY_FP64, softmax_attention
from attnspec.spec.flash import flash_from_problem
from attnspec.spec.formats import Format, from_bits, round_to
from attnspec.spec.mla import decode_problem

BLOCK = 8
IN_DOMAIN = ("random", "growing", "jumps")
NO_GUARD = AmlaConstants(guard=None)
NO_CLAMP = AmlaConstants(dn_clamp=None)


@st.composite
def amla_problems(draw, families=IN_DOMAIN + ("zero_channel",)):
    """Draw a small kernel-view problem: 1-2 sequences, s_q 1..4, 2-4 heads, up to 5 blocks of 8 keys, BF16 values.

    Families: ``random`` N(0, 1); ``growing`` the max rises by ~1.5 per block; ``jumps`` it
    rises by ~100 per block (dn far below -30: the clamp matters); ``zero_channel`` V channel 0
    is exactly 0 in the first block and the max grows by ~1.5 per block (the zero hole).
    """
    family = draw(st.sampled_from(families))
    seed = draw(st.integers(min_value=0, max_value=2**31))
    rng = np.random.default_rng(seed)
    batch, sq = draw(st.integers(min_value=1, max_value=2)), draw(st.integers(min_value=1, max_value=4))
    heads = draw(st.sampled_from([2, 4]))
    keys = draw(st.integers(min_value=1 if family == "random" else BLOCK + 1, max_value=5 * BLOCK))
    width = NARROW.latent_dim
    q = rng.normal(size=(batch, sq, heads, width))
    kv = rng.normal(size=(batch, keys, 1, width))
    q[..., -1] = 1.0
    kv[..., -1] = 0.0
    per_block = {"random": 0.0, "growing": 3.0, "jumps": 200.0, "zero_channel": 3.0}[family]
    kv[0, :, 0, -1] = per_block * (np.arange(keys) // BLOCK)  # scale 0.5: logits rise by per_block / 2
    if family == "zero_channel":
        kv[:, :BLOCK, 0, 0] = 0.0
    lengths = np.array(draw(st.lists(st.integers(min_value=1, max_value=keys), min_size=batch, max_size=batch)))
    lengths[0] = keys
    q, kv = round_to(q, Format.BF16), round_to(kv, Format.BF16)
    return decode_problem(q, kv, cache_seqlens=lengths, scale=0.5, causal=draw(st.booleans()), config=NARROW)


def rule_holds(problem, variant="cann", constants=CANN, gold=None) -> bool:
    """Return whether the AMLA output is within the acceptance rule against ``gold`` (default: the oracle)."""
    if gold is None:
        gold = oracle_from_problem(problem).out
    fa = flash_from_problem(problem, POLICY_AMLA, BLOCK).out
    out, _ = amla_from_problem(problem, variant, POLICY_AMLA, BLOCK, constants)
    return error_rule(out, fa, gold).ok


def fp64_gold(problem):
    return softmax_attention(problem, POLICY_FP64).out


# ----------------------------------------------------------------------------------------------
# The acceptance rule
# ----------------------------------------------------------------------------------------------

@given(amla_problems(IN_DOMAIN))
def test_cann_within_the_rule_on_its_domain(problem):
    assert rule_holds(problem), "amla(cann) error exceeds 2 err(FA with BF16 P) + 1 ulp in some row"


def test_rule_catches_a_kernel_without_the_clamp():
    """Without max(dn, -30) a jump of 100 underflows O past its sign bit: garbage, guarded to 0, new blocks lost."""
    find(amla_problems(("jumps",)), lambda p: not rule_holds(p, constants=NO_CLAMP, gold=fp64_gold(p)))


@given(amla_problems())
def test_ideal_within_the_rule_everywhere(problem):
    """The ``ideal`` rescale (no bit trick) has no zero hole: within the rule on every family."""
    assert rule_holds(problem, "ideal")


def test_ideal_property_catches_the_zero_hole_of_cann():
    """The shipped kernel fails the property ``ideal`` has, on the named zero-hole case (a fixed witness: fast)."""
    case = zero_hole(1, BLOCK)
    assert rule_holds(case.problem(), "ideal") and not rule_holds(case.problem(), "cann")


# ----------------------------------------------------------------------------------------------
# Boundedness: the output is a convex combination of V
# ----------------------------------------------------------------------------------------------

def bounded(problem, constants=CANN) -> bool:
    """Return whether |out_d| <= max over admitted keys |V_jd| (1 + 2^-6) in every row (BF16 weights and cast)."""
    out, _ = amla_from_problem(problem, "cann", POLICY_AMLA, BLOCK, constants)
    v = np.abs(problem.v_per_q_head())  # (B, Hq, Sk, Dv)
    v_max = np.max(np.where(problem.allowed[..., None], v[:, :, None], 0.0), axis=-2, initial=0.0)
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.abs(out) <= v_max * (1 + 2.0**-6)))


@given(amla_problems())
def test_cann_output_is_bounded_by_v(problem):
    """Even where the zero hole loses a channel, the guard keeps the output inside V's range."""
    assert bounded(problem)


@pytest.mark.parametrize("case", [zero_hole(1, BLOCK), zero_hole(6, BLOCK), zero_hole_escape(2, BLOCK)],
                         ids=lambda c: c.name)
def test_boundedness_catches_a_kernel_without_the_guard(case):
    """Without the guard the corrupted zero (about -2^99 / l r^) reaches the output."""
    assert not bounded(case.problem(), NO_GUARD)


# ----------------------------------------------------------------------------------------------
# The compensation on the numbers (companions of proofs/amla_compensation.py)
# ----------------------------------------------------------------------------------------------

@st.composite
def rescales(draw, mantissa=None):
    """Draw (x, N, exact factor, e) for one INT32 rescale of an FP32 x in the safe domain by the kernel's N."""
    m_prev = round_to(np.array([[draw(st.floats(min_value=-50, max_value=50))]]), Format.FP32)
    m = round_to(m_prev + draw(st.floats(min_value=0, max_value=25)), Format.FP32)
    f = draw(st.integers(min_value=2**17, max_value=2**23 - 2**17 - 1)) if mantissa is None else mantissa
    e_field = draw(st.integers(min_value=70, max_value=200))
    x = from_bits(np.array([(e_field << 23) | f], dtype=np.uint32), Format.FP32)
    return m_prev, m, x, f


def compensated(case, constants=CANN):
    """Return (realised factor y/x / 2^dn, exact c_prev/c, e = fl(c_prev/c) - 1) of one rescale."""
    m_prev, m, x, _ = case
    n_prev, n = rescale_exponent(m_prev), rescale_exponent(m)
    c_prev, c = (round_to(r / round_half_away(r, Format.BF16), Format.FP32)
                 for r in (residual(m_prev, n_prev, POLICY_AMLA), residual(m, n, POLICY_AMLA)))
    big_n = nupdate(n, n_prev, c, c_prev, "cann", POLICY_AMLA, constants)
    y = int32_add(x, big_n[0, 0])
    dn = max(float(n[0, 0] - n_prev[0, 0]), -30.0)
    exact = float(c_prev[0, 0] / c[0, 0])
    e = float(round_to(round_to(c_prev / c, Format.FP32) - 1.0, Format.FP32)[0, 0])
    return float(y[0] / x[0]) / 2.0**dn, exact, e


def exact_at_half(case, constants=CANN) -> bool:
    """At F = 1/2 the 1.5 rule is exact: the realised factor is c_prev/c up to N's roundings and the bias."""
    realised, exact, _ = compensated(case, constants)
    return abs(realised / exact - 1) <= 2.0**-19 + 2.0**-20


@given(rescales(mantissa=2**22))
def test_compensation_is_exact_at_mantissa_one_half(case):
    assert exact_at_half(case)


def test_exactness_at_one_half_catches_compensation_one():
    find(rescales(mantissa=2**22), lambda case: not exact_at_half(case, AmlaConstants(compensation=1.0)))


def within_t3_bound(case, constants=CANN) -> bool:
    """|realised / exact - 1| <= (|e|/2 + 2^-18)/(1 - |e|) + 2^-23 (amla.compensation.bound, plus the division)."""
    realised, exact, e = compensated(case, constants)
    return abs(realised / exact - 1) <= (abs(e) / 2 + 2.0**-18) / (1 - abs(e)) + 2.0**-23


@given(rescales())
def test_compensation_within_the_proved_bound(case):
    assert within_t3_bound(case)


def test_t3_bound_catches_compensation_two():
    find(rescales(), lambda case: not within_t3_bound(case, AmlaConstants(compensation=2.0)))
