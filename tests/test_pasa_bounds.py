"""reference/pasa_bounds.py: the box-model verdicts against the spec's own FP16 runs.

1. Wherever the certificate holds, PASA (FP16) stays finite and every traced magnitude is
   within its certified bound, for inputs anywhere in the box (corners included), causal
   masks and shorter sequences. Mutant: a spec whose shift removes beta/2 of the mean.
2. Naive FP16 FA overflows only where ``possible`` and always where ``certain``; at the
   all-(b + A) input it overflows exactly when ``possible``. Mutant: ``possible`` with |b|
   in place of |b| + A.
3. The certificate's binding link at the paper's worst cell is real: all-equal q and k make
   l = N_kv and O = N_kv v, which overflows FP16 at N_kv = 1407, v = 50.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import attnspec.spec.pasa as pasa_module
from attnspec.reference.pasa_bounds import Box, naive_fa_overflow, pasa_certificate
from attnspec.reference.strategies import find_failure
from attnspec.spec.errors import ConventionError, DomainError
from attnspec.spec.flash import flash_attention
from attnspec.spec.formats import Format, round_to
from attnspec.spec.pasa import PASA_ATTNSPEC, PASA_AUTHOR, pasa_attention
from attnspec.spec.policy import PrecisionPolicy

FP16 = PrecisionPolicy.uniform(Format.FP16)


@st.composite
def boxed_inputs(draw):
    """Draw a box, shapes, and FP16 inputs in the box: uniform, all at one end, or alternating ends."""
    bias = draw(st.sampled_from([0.0, 3.0, 20.0, 30.0, 60.0, -40.0]))
    amp = draw(st.sampled_from([0.0, 0.5, 5.0, 20.0]))
    d = draw(st.sampled_from([8, 64, 128]))
    n = draw(st.sampled_from([4, 16]))
    sk = draw(st.integers(min_value=1, max_value=50))
    v_max = draw(st.sampled_from([1.0, abs(bias) + amp]))
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    lo, hi = float(round_to(bias - amp, Format.FP16)), float(round_to(bias + amp, Format.FP16))

    def fill(shape):
        pattern = draw(st.sampled_from(["uniform", "low", "high", "alternate"]))
        if pattern == "uniform":
            return np.clip(round_to(rng.uniform(lo, hi, shape), Format.FP16), lo, hi)
        if pattern == "alternate":
            return np.where(rng.random(shape) < 0.5, lo, hi)
        return np.full(shape, lo if pattern == "low" else hi)

    q, k = fill((1, 2, 3, d)), fill((1, 1, sk, d))
    v = round_to(rng.uniform(-v_max, v_max, (1, 1, sk, 4)), Format.FP16)
    conventions = {"causal": draw(st.booleans())}
    if draw(st.booleans()):
        conventions["kv_seqlens"] = np.array([draw(st.integers(min_value=0, max_value=sk))])
    return Box(bias, amp), q, k, v, v_max, n, conventions


def within_certificate(drawn) -> bool:
    """Return True unless the certificate holds and the spec leaves it (overflow or a larger magnitude)."""
    box, q, k, v, v_max, n, conventions = drawn
    config = replace(PASA_ATTNSPEC, block_k=n)
    cert = pasa_certificate(box, box, v_max, q.shape[3], k.shape[2], scale=1 / np.sqrt(q.shape[3]), config=config)
    if not cert.safe:
        return True
    result = pasa_attention(q, k, v, config=config, **conventions)
    return not result.overflowed and all(result.peaks[name] <= bound for name, bound in cert.bounds.items()
                                         if name in result.peaks)


@settings(max_examples=20)
@given(drawn=boxed_inputs())
def test_pasa_stays_within_its_certificate(drawn):
    assert within_certificate(drawn)


def test_mutant_half_shift_leaves_the_certificate(monkeypatch):
    real = pasa_module.shift_constants

    def half_shift(config, scale, policy):
        _, gamma = real(config, scale, policy)
        m, _ = real(replace(config, beta=config.beta / 2), scale, policy)
        return m, gamma

    monkeypatch.setattr(pasa_module, "shift_constants", half_shift)  # pasa_bounds keeps its own reference
    find_failure(boxed_inputs(), lambda x: not within_certificate(x), max_examples=200)


def naive_consistent(drawn, possible=None) -> bool:
    box, q, k, v, _, _, _ = drawn
    verdict = naive_fa_overflow(box, box, q.shape[3])
    with np.errstate(invalid="ignore", over="ignore"):
        overflowed = not np.all(np.isfinite(flash_attention(q, k, v, policy=FP16).out))
    allowed = verdict.possible if possible is None else possible(box, q.shape[3])
    return (allowed or not overflowed) and (overflowed or not verdict.certain)


@settings(max_examples=20)
@given(drawn=boxed_inputs())
def test_naive_fp16_overflows_as_the_box_says(drawn):
    assert naive_consistent(drawn)


def test_mutant_possible_without_the_amplitude_is_caught():
    def bias_only(box, d):
        return d * Fraction(box.bias) ** 2 >= 65520

    find_failure(boxed_inputs(), lambda x: not naive_consistent(x, bias_only), max_examples=300)


@pytest.mark.parametrize("top", [22.5, 22.625, 22.75, 30.5])
def test_the_worst_input_overflows_exactly_when_possible(top):
    q = np.full((1, 1, 1, 128), top)
    verdict = naive_fa_overflow(Box(top - 0.5, 0.5), Box(top - 0.5, 0.5), 128)
    with np.errstate(invalid="ignore", over="ignore"):
        overflowed = not np.all(np.isfinite(flash_attention(q, q, q[..., :4], policy=FP16).out))
    assert overflowed == verdict.possible == (128 * top * top >= 65520)


def test_accumulator_link_is_real_at_the_worst_paper_cell():
    box = Box(30.0, 20.0)
    cert = pasa_certificate(box, box, 50.0, 128, 1407, scale=1 / np.sqrt(128))
    assert cert.failed == "acc"
    q = np.full((1, 1, 2, 128), 50.0)  # every logit equal: l = N_kv, O = N_kv * 50 > 65504
    result = pasa_attention(q, np.full((1, 1, 1407, 128), 50.0), np.full((1, 1, 1407, 4), 50.0))
    assert "acc" in result.nonfinite
    shorter = pasa_certificate(box, box, 50.0, 128, 1300, scale=1 / np.sqrt(128))
    assert shorter.safe  # 1300 * 50 = 65000 < 65504


def test_bad_arguments():
    with pytest.raises(DomainError, match="box"):
        Box(0.0, -1.0)
    with pytest.raises(ConventionError, match="attnspec variant"):
        pasa_certificate(Box(0, 1), Box(0, 1), 1.0, 8, 8, scale=0.5, config=PASA_AUTHOR)
    with pytest.raises(DomainError, match="n_kv"):
        pasa_certificate(Box(0, 1), Box(0, 1), 1.0, 8, 0, scale=0.5)
