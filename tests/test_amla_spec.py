"""Tests of spec/amla.py: the bit tricks and their domains, the kernel's conventions, bad input, and the variants."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from attnspec.reference.amla_cases import NARROW
from attnspec.reference.amla_report import blas_policy, error_rule
from attnspec.reference.bounds import attention_error_bound
from attnspec.spec import amla
from attnspec.spec.amla import (CANN, N_MAX, N_MIN, POLICY_AMLA, POLICY_AMLA_FP16, VARIANTS, AmlaConstants,
                                amla_decode, amla_from_problem, amla_state, exponent_add,
                                exponent_add_domain, int32_add, nupdate, rescale_exponent, rescale_safe_domain,
                                residual, round_half_away, round_half_away_int)
from attnspec.spec.attention import POLICY_FP64, softmax_attention
from attnspec.spec.errors import ConventionError, DomainError, FormatError, ShapeError
from attnspec.spec.flash import flash_from_problem
from attnspec.spec.formats import Format, from_bits, round_exact, round_to
from attnspec.spec.mla import DEEPSEEK_V3, decode_problem
from attnspec.spec.policy import PrecisionPolicy

FP32 = Format.FP32
BF16 = Format.BF16


def bf16(x) -> np.ndarray:
    return round_to(x, BF16)


def words(draw_bits) -> np.ndarray:
    return from_bits(np.array([draw_bits], dtype=np.uint32), FP32)


def narrow_inputs(seed: int, heads: int = 4, sq: int = 1, keys: int = 20, batch: int = 1, spread: float = 1.0):
    rng = np.random.default_rng(seed)
    width = NARROW.latent_dim
    return bf16(rng.normal(0, spread, (batch, sq, heads, width))), bf16(rng.normal(0, spread, (batch, keys, 1, width)))


# ----------------------------------------------------------------------------------------------
# Roundings (CAST_ROUND) against an independent rational definition
# ----------------------------------------------------------------------------------------------

def round_away_exact(x: float, fmt: Format) -> float:
    """Return x rounded to nearest in fmt, ties away from zero, decided in rationals (independent of round_to)."""
    down = round_exact(Fraction(x), fmt)
    if down == x or not math.isfinite(down):  # exact, or past the rounding threshold of max_finite
        return down
    gap = abs(Fraction(x) - Fraction(down))
    # the other neighbour is 2x - down when x is a midpoint: check with exact arithmetic
    mirror = 2 * Fraction(x) - Fraction(down)
    representable = round_exact(mirror, fmt) == float(mirror)
    if abs(Fraction(x) - mirror) == gap and representable and abs(mirror) > abs(Fraction(down)):
        return float(mirror)
    return down


@given(st.floats(width=32, min_value=-(2.0**127), max_value=2.0**127),
       st.sampled_from([BF16, Format.FP16]))
def test_round_half_away_matches_the_rational_definition(x, fmt):
    got = float(round_half_away(np.array([x]), fmt)[0])
    assert got == round_away_exact(x, fmt), f"round_half_away({x!r}, {fmt}) = {got!r}"


@pytest.mark.parametrize("x, fmt, want", [
    (1 + 2**-8, BF16, 1 + 2**-7),  # a tie: away from zero (round_to would give 1.0)
    (-(1 + 2**-8), BF16, -(1 + 2**-7)),
    (1 + 3 * 2**-8, BF16, 1 + 2**-6),  # a tie whose even neighbour is also away
    (1 + 2**-9, BF16, 1.0),  # below the midpoint
    (2049.0, Format.FP16, 2050.0),  # FP16 tie
])
def test_round_half_away_ties(x, fmt, want):
    assert float(round_half_away(np.array([x]), fmt)[0]) == want


def test_round_half_away_int_is_cast_round():
    """CANN's CAST_ROUND example: 2.5 -> 3; and -2.5 -> -3, 0.49999997 -> 0."""
    got = round_half_away_int(np.array([2.5, -2.5, 0.5, -0.5, 1.4999999, float(np.float32(0.49999997))]))
    assert got.tolist() == [3.0, -3.0, 1.0, -1.0, 1.0, 0.0]


# ----------------------------------------------------------------------------------------------
# The exponent add and its domains (numerical companions of proofs/amla_*.py)
# ----------------------------------------------------------------------------------------------

fp32_words = st.integers(min_value=0, max_value=2**32 - 1)


@given(fp32_words, st.integers(min_value=-253, max_value=253))
def test_exponent_add_is_exact_on_its_domain(bits, n):
    """T1 on the numbers: inside exponent_add_domain the trick equals RNE(x * 2^n); outside it never does for n != 0."""
    x = words(bits)
    inside = bool(exponent_add_domain(x, n)[0])
    got = exponent_add(x, n)
    want = round_to(np.ldexp(x, n), FP32)
    same = bool(((got == want) & (np.signbit(got) == np.signbit(want)))[0])
    if inside:
        assert same, f"exponent_add(0x{bits:08x}, {n}) = {got[0]!r}, should be {want[0]!r}"
    elif n != 0 and np.isfinite(x[0]) and np.abs(x[0]) > 0:
        # outside: the result is wrong except where it overflows to the same infinity (e + n = 255, f = 0)
        assert not same or np.isinf(want[0])


def test_exponent_add_domain_catches_a_wrong_shift():
    """Mutant: a shift by 22 instead of 23 must be caught by the domain property."""
    def holds(case):
        bits, n = case
        x = words(bits)
        got = amla.int32_add(x, np.int64(n) << 22)
        return not exponent_add_domain(x, n)[0] or bool(got[0] == round_to(np.ldexp(x, n), FP32)[0])

    find(st.tuples(fp32_words, st.integers(min_value=-253, max_value=253)), lambda case: not holds(case))


def test_int32_add_wraps_like_twos_complement():
    """0 + (-5 << 23) = 0xFD800000 = -2^124 (AMLA §3.1's example), -0 - 2^23 = +Inf, max int wraps to min int."""
    assert exponent_add(np.array([0.0]), -5)[0] == -(2.0**124)
    assert exponent_add(np.array([-0.0]), -1)[0] == np.inf
    top = from_bits(np.array([0x7FFFFFFF], dtype=np.uint32), FP32)  # a NaN word: + 1 wraps to -0
    assert np.signbit(int32_add(top, 1)[0]) and int32_add(top, 1)[0] == 0.0


@given(st.integers(min_value=0, max_value=2**31 - 1), st.booleans(), st.integers(min_value=N_MIN, max_value=N_MAX))
def test_rescale_safe_domain_is_what_the_proof_says(magnitude, negative, big_n):
    """amla.failures.clamped_add_keeps_normal on the numbers: inside the safe domain, normal and same sign."""
    x = words(magnitude | (0x80000000 if negative else 0))
    if not rescale_safe_domain(x)[0]:
        return
    y = int32_add(x, big_n)
    assert np.isfinite(y[0]) and np.abs(y[0]) >= 2.0**-126 and np.signbit(y[0]) == np.signbit(x[0])


@settings(max_examples=25)
@given(st.lists(st.floats(min_value=-60.0, max_value=60.0), min_size=2, max_size=6))
def test_nupdate_stays_in_the_proved_range(increments):
    """N_i of a running max that only grows lies in [N_MIN, N_MAX] (amla.compensation.n_range)."""
    m = np.cumsum(np.abs(round_to(np.array(increments), FP32)))[:, None]
    m = round_to(m, FP32)
    n = rescale_exponent(m)
    r = residual(m, n, POLICY_AMLA)
    c = round_to(r / round_half_away(r, BF16), FP32)
    for i in range(1, len(m)):
        big_n = nupdate(n[i], n[i - 1], c[i], c[i - 1], "cann", POLICY_AMLA)
        assert N_MIN <= int(big_n[0]) <= N_MAX
        assert 2.0**-0.5 * (1 - 2**-23) <= r[i, 0] <= 2.0**0.5 * (1 + 2**-23)


def test_nupdate_range_catches_an_unclamped_kernel():
    unclamped = AmlaConstants(dn_clamp=None)

    def out_of_range(jump):
        m = round_to(np.array([[0.0], [jump]]), FP32)
        n = rescale_exponent(m)
        c = np.ones_like(m)
        return not N_MIN <= int(nupdate(n[1], n[0], c[1], c[0], "cann", POLICY_AMLA, unclamped)[0]) <= N_MAX

    find(st.floats(min_value=0.0, max_value=200.0), out_of_range)


# ----------------------------------------------------------------------------------------------
# The kernel's conventions
# ----------------------------------------------------------------------------------------------

def test_kernel_constants_are_the_shipped_ones():
    assert (CANN.dn_clamp, CANN.compensation, CANN.guard) == (-30.0, 1.5, 1e10)
    assert CANN.bias == float(np.float32(1e-6)) and CANN.mask_fill == float(np.float32(-1e12))
    assert CANN.max_init == float(np.float32(-2e38)) and amla.BLOCK_K == 512


def test_paged_equals_dense():
    rng = np.random.default_rng(5)
    q, dense = narrow_inputs(5, heads=4, sq=2, keys=24, batch=2)
    lengths = np.array([24, 13])
    page = 4
    pages = dense.reshape(2 * 6, page, 1, NARROW.latent_dim)  # (blocks, page, 1, W)
    perm = rng.permutation(12)
    cache = np.full_like(pages, np.nan)
    cache[perm] = pages
    table = perm.reshape(2, 6)
    table[1, 4:] = 2147480000  # never read past the length
    kw = dict(cache_seqlens=lengths, scale=0.5, causal=True, config=NARROW, block_k=8)
    a = amla_decode(q, dense, **kw)
    b = amla_decode(q, cache, block_table=table, **kw)
    assert np.array_equal(a.out, b.out) and np.array_equal(a.lse, b.lse)


@pytest.mark.parametrize("sq", [1, 2, 3, 4])
@pytest.mark.parametrize("heads, keys", [(16, 1100), (128, 513)])
def test_mtp_heads_and_lengths_within_the_rule(sq, heads, keys):
    """s_q 1..4, 16 and 128 heads, lengths not multiples of 512, causal: cann within the rule against binary64."""
    q, kv = narrow_inputs(sq * 100 + heads, heads=heads, sq=sq, keys=keys)
    problem = decode_problem(q, kv, scale=0.5, causal=True, config=NARROW)
    gold = softmax_attention(problem, POLICY_FP64).out
    bound, _ = attention_error_bound(problem, POLICY_FP64, algorithm="naive")
    fa = flash_from_problem(problem, POLICY_AMLA, 512).out
    out, _ = amla_from_problem(problem)
    result = error_rule(out, fa, gold, gold_bound=float(bound.max()))
    assert result.ok, f"worst_ratio={result.worst_ratio:.3g}, but should be <= 1 [amla cann sq={sq} h={heads} S={keys}]"


def test_mtp_rows_without_keys_are_zero():
    """kv_len < s_q under causal masking: the first rows see no key (c29bc10 DealInvalidRows): O = 0, LSE = -inf."""
    q, kv = narrow_inputs(1, heads=2, sq=4, keys=2)
    r = amla_decode(q, kv, scale=0.5, causal=True, config=NARROW, block_k=8)
    assert np.all(r.out[0, :2] == 0) and np.all(r.lse[0, :, :2] == -np.inf)
    assert np.all(np.isfinite(r.lse[0, :, 2:])) and np.any(r.out[0, 2:] != 0)


def test_zero_length_sequence_is_zero():
    """cache_seqlens = 0 (c29bc10 InitAllZeroOutput): O = 0, LSE = empty_lse; the other sequence is unaffected."""
    q, kv = narrow_inputs(2, heads=2, sq=1, keys=9, batch=2)
    kw = dict(scale=0.5, config=NARROW, block_k=8)
    r = amla_decode(q, kv, cache_seqlens=np.array([0, 9]), empty_lse=np.inf, **kw)
    alone = amla_decode(q[1:], kv[1:], **kw)
    assert np.all(r.out[0] == 0) and np.all(r.lse[0] == np.inf)
    assert np.array_equal(r.out[1:], alone.out)


def test_fp16_policy_within_the_rule():
    q, kv = narrow_inputs(3, heads=4, sq=2, keys=40)
    q, kv = round_to(q, Format.FP16), round_to(kv, Format.FP16)
    problem = decode_problem(q, kv, scale=0.5, causal=True, config=NARROW)
    fa = flash_from_problem(problem, POLICY_AMLA_FP16, 8).out
    out, _ = amla_from_problem(problem, "cann", POLICY_AMLA_FP16, 8)
    assert error_rule(out, fa, softmax_attention(problem, POLICY_FP64).out, Format.FP16).ok


def test_masked_keys_beat_admitted_logits_below_minus_1e12():
    """Known deviation: the -1e12 mask fill exceeds admitted logits below -1e12, so the masked key takes the weight."""
    width = NARROW.latent_dim
    q = np.zeros((1, 2, 1, width))
    q[..., 0] = 2.0**20
    kv = np.zeros((1, 3, 1, width))
    kv[0, :2, 0, 0] = -(2.0**21)  # admitted logits 0.5 * 2^41 ~ -1.1e12 for query 0
    kv[0, 2, 0, 1] = 1.0  # key 2, masked for query 0 (causal), has V = e_1
    out = amla_decode(q, kv, scale=0.5, causal=True, config=NARROW, block_k=8).out
    assert out[0, 0, 0, 1] == 1.0  # the definition gives 0 here: keys 0 and 1 have V[1] = 0
    exact = softmax_attention(decode_problem(q, kv, scale=0.5, causal=True, config=NARROW), POLICY_FP64).out
    assert exact[0, 0, 0, 1] == 0.0


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------

def _call(**overrides):
    q, kv = narrow_inputs(7, heads=2, sq=1, keys=9)
    args = dict(q=q, kv_cache=kv, scale=0.5, config=NARROW, block_k=8)
    args.update(overrides)
    return amla_decode(args.pop("q"), args.pop("kv_cache"), **args)


def _with(arr_name, index, value):
    q, kv = narrow_inputs(7, heads=2, sq=1, keys=9)
    arrays = {"q": q, "kv_cache": kv}
    arrays[arr_name][index] = value
    return arrays


@pytest.mark.parametrize("overrides, error, message", [
    (_with("q", (0, 0, 1, 3), np.nan), DomainError, "q: expected finite values"),
    (_with("kv_cache", (0, 4, 0, 0), np.inf), DomainError, "k: expected finite values"),
    (_with("q", (0, 0, 0, 0), 1.0 + 2**-12), FormatError, "q: expected values exactly representable in bf16"),
    ({"q": np.zeros((1, 1, 2, 7))}, ShapeError, "q: expected (B, s_q, h_q, kv_lora_rank + qk_rope_head_dim = 6)"),
    ({"kv_cache": np.zeros((1, 9, 1, 5))}, ShapeError,
     "kv_cache: expected (B, S, h_kv, kv_lora_rank + qk_rope_head_dim = 6)"),
    ({"variant": "fast"}, ConventionError, "variant: expected one of"),
    ({"block_k": 0}, ShapeError, "block_k: expected a positive int"),
    ({"policy": PrecisionPolicy.uniform(Format.FP32)}, FormatError, "policy.matmul_input: expected bf16 or fp16"),
    ({"policy": PrecisionPolicy(BF16, BF16, FP32, BF16)}, FormatError, "policy.accumulate: expected fp32"),
])
def test_bad_input_raises_named_error(overrides, error, message):
    with pytest.raises(error) as info:
        _call(strict=True, **overrides)
    assert message in str(info.value)


def test_wrong_latent_width_names_576():
    q = np.zeros((1, 1, 16, 512))
    with pytest.raises(ShapeError, match="576"):
        amla_decode(q, np.zeros((1, 4, 1, 576)))


def test_nan_beyond_the_length_is_never_read():
    q, kv = narrow_inputs(8, heads=2, sq=1, keys=12)
    kv[0, 9:] = np.nan
    a = _call(q=q, kv_cache=kv, cache_seqlens=np.array([9]))
    b = _call(q=q, kv_cache=kv[:, :9])
    assert np.array_equal(a.out, b.out)


def test_logit_overflow_is_a_domain_error():
    q, kv = narrow_inputs(9, heads=2, sq=1, keys=9)
    q[..., 0], kv[..., 0] = 2.0**100, 2.0**100
    with pytest.raises(DomainError, match="scaled logits finite in FP32"):
        _call(q=q, kv_cache=kv)


# ----------------------------------------------------------------------------------------------
# Variants
# ----------------------------------------------------------------------------------------------

def test_exact_residual_has_unit_ratio_and_no_compensation():
    q, kv = narrow_inputs(11, heads=4, sq=1, keys=40)
    problem = decode_problem(q, kv, scale=0.5, config=NARROW)
    state = amla_state(problem, "exact_residual", POLICY_AMLA, 8)
    assert np.all(state.c == 1.0)
    cann = amla_state(problem, "cann", POLICY_AMLA, 8)
    assert np.any(cann.c != 1.0) and np.all(np.abs(cann.c - 1) <= 2.0**-8)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_runs_on_the_kernel_geometry(variant):
    """576 / 512 wide, blocks of 512, 16 heads, 513 keys (two blocks): finite, within 1% of the exact output."""
    rng = np.random.default_rng(13)
    q = bf16(rng.normal(size=(1, 1, 16, 576)))
    kv = bf16(rng.normal(size=(1, 513, 1, 576)) * 0.5)
    problem = decode_problem(q, kv, config=DEEPSEEK_V3)
    gold = softmax_attention(problem, POLICY_FP64).out
    out, _ = amla_from_problem(problem, variant, blas_policy(POLICY_AMLA))  # exact dots would take ~30 s here
    assert np.all(np.isfinite(out)) and np.max(np.abs(out - gold)) <= 0.01 * np.max(np.abs(gold))
