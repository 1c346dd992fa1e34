"""reference.oracle, validated independently with exact rationals.

exp of a rational is bracketed from its Taylor series with an explicit remainder, in
fractions.Fraction arithmetic with outward rounding to 160-bit dyadics; no mpmath involved.
The oracle's enclosures must overlap these brackets, and its certified roundings must agree
with the roundings of the brackets wherever the brackets decide them.
"""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnspec.reference import oracle as oracle_module
from attnspec.reference.oracle import OracleUncertifiedError, _to_fraction, attention_oracle
from attnspec.reference.strategies import AttentionCase, attention_inputs, find_failure
from attnspec.spec.errors import AttnSpecError
from attnspec.spec.formats import Format, round_exact

BITS = 160


def _down(x: Fraction) -> Fraction:
    return Fraction(x.numerator * 2 ** BITS // x.denominator, 2 ** BITS)


def _up(x: Fraction) -> Fraction:
    return -_down(-x)


def exp_bracket(x: Fraction) -> tuple[Fraction, Fraction]:
    """Return [lo, hi] with lo <= exp(x) <= hi, for rational x <= 0."""
    halvings = 0
    while abs(x) > 1:
        x /= 2
        halvings += 1
    term, total = Fraction(1), Fraction(1)
    for n in range(1, 27):  # |x| <= 1: the remainder after the x^26 term is below 1/27! < 10^-28
        term = term * x / n
        total += term
    rem = Fraction(1, 10 ** 28)
    lo, hi = _down(total - rem), _up(total + rem)
    for _ in range(halvings):  # exp(x) = exp(x / 2)^2, monotone on positives
        lo, hi = _down(lo * lo), _up(hi * hi)
    return max(lo, Fraction(0)), hi


def rational_bracket(case: AttentionCase):
    """Return per-row brackets of O and of exp(LSE - shift) for scale-given, unmasked, uncapped cases."""
    scale = Fraction(case.conventions["scale"])
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (case.q, case.k, case.v))
    b, hq, sq, _ = q.shape
    group = hq // k.shape[1]
    brackets = {}
    for bi, h, i in np.ndindex(b, hq, sq):
        kh = h // group
        logits = [scale * sum(Fraction(float(a)) * Fraction(float(c)) for a, c in zip(q[bi, h, i], k[bi, kh, j]))
                  for j in range(k.shape[2])]
        shift = max(logits)
        weights = [exp_bracket(s - shift) for s in logits]
        den = (sum(w[0] for w in weights), sum(w[1] for w in weights))
        outs = []
        for d in range(v.shape[3]):
            terms = [(w[0] * Fraction(float(v[bi, kh, j, d])), w[1] * Fraction(float(v[bi, kh, j, d])))
                     for j, w in enumerate(weights)]
            num = (sum(min(t) for t in terms), sum(max(t) for t in terms))
            ratios = [n / m for n in num for m in den]
            outs.append((min(ratios), max(ratios)))
        brackets[(bi, h, i)] = (outs, den, shift)
    return brackets


rational_cases = attention_inputs(max_batch=1, max_heads=2, min_seq=1, max_seq=4, max_dim=3, masks=False,
                                  varlen=False).map(lambda c: AttentionCase(c.q, c.k, c.v, {"scale": 0.625}))


def oracle_agrees_with_rationals(case: AttentionCase, oracle=attention_oracle) -> bool:
    r = oracle(case.q, case.k, case.v, **case.conventions)
    for (bi, h, i), (outs, den, shift) in rational_bracket(case).items():
        for d, (lo, hi) in enumerate(outs):
            enclosure = [_to_fraction(e) for e in r.out_iv[bi, h, i, d]._mpi_]
            if enclosure[1] < lo or enclosure[0] > hi:
                return False
            for fmt in (Format.FP32, Format.BF16):
                if round_exact(lo, fmt) == round_exact(hi, fmt) and r.rounded(fmt)[0][bi, h, i, d] != round_exact(lo, fmt):
                    return False
        lse_mid = _to_fraction(r.lse_iv[bi, h, i].mid._mpi_[0])
        width = _to_fraction(r.lse_iv[bi, h, i].delta._mpi_[1]) + Fraction(1, 2 ** 150)
        lo_e, hi_e = exp_bracket(lse_mid - width - shift - 64)[0], exp_bracket(lse_mid + width - shift - 64)[1]
        scale64 = exp_bracket(Fraction(-64))  # exp(lse - shift) = exp(lse - shift - 64) * e^64; keep x <= 0
        if hi_e / scale64[0] < den[0] or lo_e / scale64[1] > den[1]:
            return False
    return True


@given(case=rational_cases)
def test_oracle_agrees_with_exact_rational_brackets(case):
    assert oracle_agrees_with_rationals(case), case.describe()


def test_mutant_oracle_with_wrong_scale_is_caught():
    def off_by_scale(q, k, v, **conventions):
        return attention_oracle(q, k, v, **{**conventions, "scale": conventions["scale"] * (1 + 2.0 ** -30)})
    find_failure(rational_cases, lambda c: not oracle_agrees_with_rationals(c, off_by_scale))


def test_exact_midpoint_ties_round_to_even():
    """All-equal logits make O the mean of V; a mean on an FP32 midpoint must round to even."""
    q = np.zeros((1, 1, 1, 2))
    k = np.ones((1, 1, 2, 2))
    v = np.array([1.0, 1 + 2.0 ** -23]).reshape(1, 1, 2, 1)  # mean 1 + 2^-24: the midpoint of 1 and 1 + 2^-23
    out32, lse32 = attention_oracle(q, k, v).rounded(Format.FP32)
    assert out32[0, 0, 0, 0] == 1.0
    v2 = np.array([1 + 2.0 ** -22, 1 + 2.0 ** -23]).reshape(1, 1, 2, 1)  # midpoint of 1+2^-23 and 1+2^-22
    assert attention_oracle(q, k, v2).rounded(Format.FP32)[0][0, 0, 0, 0] == 1 + 2.0 ** -22
    capped = attention_oracle(q, k, v, softcap=3.0).rounded(Format.FP32)[0]  # one group: decided under softcap too
    assert capped[0, 0, 0, 0] == 1.0
    single = attention_oracle(np.ones((1, 1, 1, 1)), np.full((1, 1, 1, 1), 3.0), v[:, :, :1], scale=0.5)
    assert single.rounded(Format.FP16)[1][0, 0, 0] == 1.5  # LSE of one key is its logit, exactly


def test_distinct_group_means_are_not_ties():
    """Two groups with different means: O is transcendental, so escalation separates it from any midpoint."""
    q = np.array([[[[1.0]]]])
    k = np.array([[[[0.0], [1.0]]]])
    v = np.array([[[[1.0], [1 + 2.0 ** -23]]]])
    r = attention_oracle(q, k, v, scale=1.0)
    out, _ = r.rounded(Format.FP32)
    assert out[0, 0, 0, 0] == 1 + 2.0 ** -23  # e/(1+e) > 1/2 of the way: above the midpoint
    assert r.certified


def test_equal_group_means_are_decided_under_softcap_too():
    """Two groups whose means both sit on a midpoint: O is exactly that mean for any logits."""
    q = np.array([[[[1.0]]]])
    k = np.array([[[[0.0], [0.0], [1.0], [1.0]]]])
    v = np.array([[[[1.0], [1 + 2.0 ** -23], [1.0], [1 + 2.0 ** -23]]]])
    r = attention_oracle(q, k, v, scale=1.0, softcap=2.0)
    assert r.rounded(Format.FP32)[0][0, 0, 0, 0] == 1.0 and r.certified  # ties to even


def near_tie_case():
    """Logits 2**-60 apart and V means on either side of an FP32 midpoint: O is 2**-85 above it."""
    q = np.array([[[[1.0]]]])
    k = np.array([[[[1.0], [1 + 2.0 ** -52]]]])
    v = np.array([[[[1.0], [1 + 2.0 ** -23]]]])
    return q, k, v


def test_near_ties_are_separated_by_escalation():
    q, k, v = near_tie_case()
    r = attention_oracle(q, k, v, scale=2.0 ** -8, dps=15)
    assert r.rounded(Format.FP32)[0][0, 0, 0, 0] == 1 + 2.0 ** -23 and r.certified


def test_uncertified_results_are_never_guessed(monkeypatch):
    """Without escalation, 58 bits cannot separate that value from the midpoint: the oracle refuses."""
    monkeypatch.setattr(oracle_module, "ESCALATIONS", 0)
    q, k, v = near_tie_case()
    r = attention_oracle(q, k, v, scale=2.0 ** -8, dps=15)
    with pytest.raises(OracleUncertifiedError, match="cannot certify"):
        r.rounded(Format.FP32)
    out, _ = r.rounded(Format.FP32, strict=False)
    assert not r.certified and r.uncertified == [("fp32", (0, 0, 0))]
    assert out[0, 0, 0, 0] in (1.0, 1 + 2.0 ** -23)


@pytest.mark.parametrize("dps", [10, 20000, 2.5])
def test_bad_precision(dps):
    with pytest.raises(AttnSpecError, match="dps: expected an int"):
        attention_oracle(np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1)), dps=dps)


@given(case=attention_inputs(max_batch=1, max_heads=2, max_seq=6, max_dim=3), dps=st.sampled_from([30, 50, 80]))
def test_enclosures_are_tight(case, dps):
    """The stated accuracy: enclosure widths are below 10**-(dps - 5) relative."""
    assert attention_oracle(case.q, case.k, case.v, dps=dps, **case.conventions).max_relative_width() < 10.0 ** (5 - dps)
