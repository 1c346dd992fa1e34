"""Tests of reference/int8.py: the quantiser against exact rational rounding, the GEMM against the oracle, mutants."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import find, given
from hypothesis import strategies as st

from attnspec.proofs.int8_accumulation import (prove_int32_accumulation_full_int8_range,
                                               prove_int32_accumulation_no_overflow,
                                               prove_int32_accumulation_overflows_one_past)
from attnspec.reference import int8
from attnspec.reference.int8 import (INT32_SAFE_K, QuantizedWeight, dequantize, gemm_oracle, int8_linear,
                                     int8_linear_error_bound, int32_accumulate, quantize_per_token, quantize_rows,
                                     quantize_weight, search_clipping, search_smoothing, smoothing_candidates)
from attnspec.spec.errors import ConventionError, DomainError, FormatError, ShapeError
from attnspec.spec.formats import Format, round_exact, round_to, ulp
from attnspec.spec.mla import MLAWeights, kernel_inputs, mla_latents, mla_queries


# ----------------------------------------------------------------------------------------------
# Strategies (this module's own)
# ----------------------------------------------------------------------------------------------

@st.composite
def quotient_cases(draw):
    """(v (1, n), scale (1,)) FP32 values whose quotients v/scale hit ties, the range ends and beyond."""
    scale = round_to(draw(st.floats(min_value=1e-3, max_value=1e3)), Format.FP32)
    offsets = st.sampled_from([0.0, 0.5, -0.5, 0.25, 0.499999, 0.500001])
    values = []
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        n = draw(st.integers(min_value=-140, max_value=140))
        values.append(float(round_to((n + draw(offsets)) * scale, Format.FP32)))
    return np.array([values]), np.array([float(scale)])


@st.composite
def activations(draw, *, max_tokens: int = 4, max_k: int = 24):
    """BF16 activations (T, K) with no all-zero row, some with repeated extreme values."""
    t = draw(st.integers(min_value=1, max_value=max_tokens))
    k = draw(st.integers(min_value=1, max_value=max_k))
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    spread = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    x = round_to(rng.standard_normal((t, k)) * spread * rng.uniform(0.1, 10, (t, 1)), Format.BF16)
    x[:, 0] = np.where(x[:, 0] == 0, spread, x[:, 0])  # no all-zero row
    return x


@st.composite
def gemm_cases(draw):
    """(x (T, K) BF16, w (O, K) BF16, QuantizedWeight, variant, dequant) for the error-bound property."""
    x = draw(activations(max_k=48))
    o = draw(st.integers(min_value=1, max_value=5))
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    w = round_to(rng.standard_normal((o, x.shape[1])) * draw(st.sampled_from([1e-2, 1.0, 30.0])), Format.BF16)
    w[:, 0] = np.where(np.all(w == 0, axis=1), 1.0, w[:, 0])
    alpha = draw(st.sampled_from([1.0, 0.9, 0.5]))
    smooth = np.ldexp(1.0, rng.integers(-3, 4, x.shape[1])) if draw(st.booleans()) else None
    weight = quantize_weight(w, alpha=alpha, smooth=smooth)
    return x, w, weight, draw(st.sampled_from(["ideal", "cann"])), draw(st.sampled_from(["exact", "fp32_chain"]))


# ----------------------------------------------------------------------------------------------
# The quantiser Q: round half to even, saturation to [-127, 127]
# ----------------------------------------------------------------------------------------------

def exact_q(v: float, s: float) -> int:
    """Return clip(RNE(v / s), -127, 127) in exact rational arithmetic (Python's round is half-to-even)."""
    return max(-127, min(127, round(Fraction(v) / Fraction(s))))


def quantizer_agrees(case) -> bool:
    v, s = case
    return quantize_rows(v, s).tolist() == [[exact_q(a, s[0]) for a in v[0]]]


@given(quotient_cases())
def test_quantizer_is_exact_rne_with_symmetric_saturation(case):
    assert quantizer_agrees(case), f"Q({case[0].tolist()} / {case[1][0]!r}) differs from exact RNE"


def half_away(v):
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


@pytest.mark.parametrize("name, attribute, value", [("round half away", "round_half_even", half_away),
                                                    ("saturate to [-128, 127]", "QMIN", -128)])
def test_quantizer_mutants_are_caught(monkeypatch, name, attribute, value):
    monkeypatch.setattr(int8, attribute, value)
    find(quotient_cases(), lambda case: not quantizer_agrees(case))


def test_rne_lemma_on_ties_and_neighbours():
    # v/s exactly k + 1/2 (ties) and one FP32 ulp either side: binary64 division then rint must agree with exact RNE.
    s = round_to(np.array([0.1, 1 / 3, 7.123, 1e-30]), Format.FP32)
    for scale in s:
        for k in range(-128, 128):
            tie = float(round_to((k + 0.5) * scale, Format.FP32))
            for v in (tie, float(round_to(np.nextafter(np.float32(tie), np.float32(np.inf)), Format.FP32)),
                      float(round_to(np.nextafter(np.float32(tie), np.float32(-np.inf)), Format.FP32))):
                got = int(quantize_rows(np.array([[v]]), np.array([scale]))[0, 0])
                assert got == exact_q(v, float(scale)), f"Q({v!r}/{scale!r}) = {got}, exact {exact_q(v, float(scale))}"


# ----------------------------------------------------------------------------------------------
# Per-token dynamic scales
# ----------------------------------------------------------------------------------------------

def per_token_holds(x) -> bool:
    """The definition: s_t = fl32(max|x_t| / 127), every row reaches +-127, and |x - s q| <= s / 2."""
    a = quantize_per_token(x)
    scale = round_to(np.abs(x).max(axis=1) / 127, Format.FP32)
    return (np.array_equal(a.scale, scale) and np.all(np.abs(a.q).max(axis=1) == 127)
            and np.all(np.abs(x - a.dequantize()) <= a.scale[:, None] / 2))


@given(activations())
def test_per_token_scales(x):
    assert per_token_holds(x)


def test_per_tensor_mutant_is_caught(monkeypatch):
    monkeypatch.setattr(int8, "absmax_rows", lambda v: np.full(v.shape[:-1], np.max(np.abs(v))))
    find(activations(), lambda x: not per_token_holds(x))


@given(activations())
def test_cann_variant_within_its_bound_and_one_step_of_ideal(x):
    ideal = quantize_per_token(x)
    cann = quantize_per_token(x, variant="cann")
    inv = round_to(127 / np.abs(x).max(axis=1), Format.FP32)
    assert np.array_equal(cann.scale, round_to(1 / inv, Format.FP32))
    assert np.all(np.abs(cann.q.astype(int) - ideal.q) <= 1)
    bound = int8.activation_error_bound(x, cann.scale, "cann")
    assert np.all(np.abs(x - cann.dequantize()) <= bound), "cann variant outside its derived bound"


def test_zero_rows():
    x = np.array([[0.0, 0.0], [1.0, -2.0]])
    with pytest.raises(DomainError, match="x: row 0 is all zero"):
        quantize_per_token(x)
    a = quantize_per_token(x, zero_rows="unit_scale")
    assert a.scale[0] == 1.0 and not a.q[0].any() and np.array_equal(a.dequantize()[0], [0.0, 0.0])


# ----------------------------------------------------------------------------------------------
# The GEMM against the exact oracle
# ----------------------------------------------------------------------------------------------

def gemm_within_bound(case) -> bool:
    x, w, weight, variant, dequant = case
    result = int8_linear(x, weight, variant=variant, dequant=dequant)
    oracle = gemm_oracle(x, w)
    bound = int8_linear_error_bound(w, weight, result) + ulp(oracle, Format.FP64) / 2
    return bool(np.all(np.abs(result.y - oracle) <= bound))


@given(gemm_cases())
def test_gemm_error_within_derived_bound(case):
    assert gemm_within_bound(case), "max |Y - x W^T| exceeds int8_linear_error_bound"


@pytest.mark.parametrize("mutant", ["dequant with a neighbour's channel scale", "accumulate one product short"])
def test_gemm_mutants_are_caught(monkeypatch, mutant):
    if mutant.startswith("dequant"):
        original = int8.dequantize
        monkeypatch.setattr(int8, "dequantize", lambda acc, s_x, s_w, **kw: original(acc, s_x, np.roll(s_w, 1), **kw))
    else:
        original = int8.int32_accumulate
        monkeypatch.setattr(int8, "int32_accumulate",
                            lambda xq, wq, **kw: original(xq[:, :-1], wq[:, :-1], **kw))
    find(gemm_cases(), lambda case: not gemm_within_bound(case))


def test_gemm_oracle_is_exact():
    # 2^60 + 1 - 2^60: binary64 matmul loses the 1, fsum of exact products does not.
    x = np.array([[2.0**30, 1.0, -(2.0**30)]])
    w = np.array([[2.0**30, 1.0, 2.0**30]])
    assert gemm_oracle(x, w)[0, 0] == 1.0


# ----------------------------------------------------------------------------------------------
# Dequantisation of on-grid inputs is exact
# ----------------------------------------------------------------------------------------------

@st.composite
def grid_cases(draw):
    """x = s_x n and W = s_w m exactly in FP32 (n, m integers in [-127, 127], each row reaching +-127)."""
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    t, o, k = (draw(st.integers(min_value=1, max_value=4)) for _ in range(3))
    s_x = round_to(rng.uniform(1e-3, 10, t), Format.FP16)  # 11 bits: s n fits FP32, not a BF16 scale
    s_w = round_to(rng.uniform(1e-3, 10, o), Format.FP16)
    n = rng.integers(-127, 128, (t, k))
    m = rng.integers(-127, 128, (o, k))
    n[:, 0], m[:, 0] = 127, -127
    return s_x[:, None] * n, s_w[:, None] * m, draw(st.sampled_from([Format.BF16, Format.FP32]))


def grid_exact(case) -> bool:
    x, w, out = case
    weight = quantize_weight(w)
    result = int8_linear(x, weight, x_format=Format.FP32, out_format=out)
    exact = [[round_exact(sum(Fraction(a) * Fraction(b) for a, b in zip(xr, wr)), out) for wr in w] for xr in x]
    return (np.array_equal(result.activation.dequantize(), x) and np.array_equal(weight.dequantize(), w)
            and np.array_equal(result.y, np.array(exact)))


@given(grid_cases())
def test_on_grid_inputs_dequantise_exactly(case):
    assert grid_exact(case)


def test_on_grid_mutant_is_caught(monkeypatch):
    monkeypatch.setattr(int8, "SCALE_FORMAT", Format.BF16)  # scales held in BF16 lose the grid
    find(grid_cases(), lambda case: not grid_exact(case))


def test_fp32_chain_is_not_exact_beyond_2_pow_24():
    # The documented deviation: INT32 -> FP32 rounds an accumulator above 2^24.
    acc = np.array([[2**24 + 1]])
    assert dequantize(acc, np.ones(1), np.ones(1), out_format=Format.FP64)[0, 0] == 2**24 + 1
    assert dequantize(acc, np.ones(1), np.ones(1), out_format=Format.FP64, dequant="fp32_chain")[0, 0] == 2**24


# ----------------------------------------------------------------------------------------------
# INT32 accumulation
# ----------------------------------------------------------------------------------------------

def test_int32_safe_k_is_floor_of_int32_max_over_127_squared():
    assert INT32_SAFE_K == 133_144 and INT32_SAFE_K * 127**2 <= 2**31 - 1 < (INT32_SAFE_K + 1) * 127**2


@pytest.mark.parametrize("sign", [1, -1])
def test_int32_overflow_boundary(sign):
    for k in (INT32_SAFE_K, INT32_SAFE_K + 1):
        xq = np.full((1, k), 127, dtype=np.int8)
        wq = np.full((1, k), sign * 127, dtype=np.int8)
        if k == INT32_SAFE_K:
            assert int32_accumulate(xq, wq).acc[0, 0] == sign * k * 127**2
            continue
        with pytest.raises(DomainError, match="acc: element"):
            int32_accumulate(xq, wq)
        wrapped = int32_accumulate(xq, wq, on_overflow="wrap")
        assert wrapped.overflow[0, 0] and wrapped.acc[0, 0] == np.array([sign * k * 127**2]).astype(np.int32)[0]


def test_accumulation_proofs():
    for prove in (prove_int32_accumulation_no_overflow, prove_int32_accumulation_overflows_one_past,
                  prove_int32_accumulation_full_int8_range):
        result = prove()
        assert result.ok, f"{result.name}: {result.status}, expected {result.expected}"
    assert "133145 products" in prove_int32_accumulation_overflows_one_past().note


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [0.0, -0.5, math.nan, math.inf, -math.inf])
def test_bad_scales_raise(value):
    with pytest.raises(DomainError, match="s_w"):
        dequantize(np.ones((1, 1), np.int64), np.ones(1), np.array([value]))
    with pytest.raises(DomainError, match="scale"):
        quantize_rows(np.ones((1, 2)), np.array([value]))
    with pytest.raises(DomainError, match="scale"):
        QuantizedWeight(np.ones((1, 2), np.int8), np.array([value]), np.ones(2), np.ones(1))


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_inputs_raise(value):
    x = np.array([[1.0, value]])
    with pytest.raises(DomainError, match="x"):
        quantize_per_token(x)
    with pytest.raises(DomainError, match="x"):
        int8_linear(x, quantize_weight(np.ones((1, 2))))
    with pytest.raises(DomainError, match="w"):
        quantize_weight(x)


def test_other_bad_inputs():
    weight = quantize_weight(np.ones((2, 3)))
    with pytest.raises(ShapeError, match="x: expected K = 3"):
        int8_linear(np.ones((1, 2)), weight)
    with pytest.raises(FormatError, match="x: expected values exactly representable in bf16"):
        int8_linear(np.full((1, 3), 1 + 2**-20), weight)
    with pytest.raises(FormatError, match="at most 24 bits"):
        int8_linear(np.ones((1, 3)), weight, x_format=Format.FP64)
    with pytest.raises(ShapeError, match="rows >= 1"):
        quantize_per_token(np.ones((0, 3)))
    with pytest.raises(DomainError, match="powers of two"):
        quantize_weight(np.ones((2, 3)), smooth=np.array([1.0, 3.0, 1.0]))
    with pytest.raises(ConventionError, match="variant"):
        quantize_per_token(np.ones((1, 3)), variant="fast")
    with pytest.raises(DomainError, match="w: row 1 is all zero"):
        quantize_weight(np.array([[1.0, 2.0], [0.0, 0.0]]))


# ----------------------------------------------------------------------------------------------
# Offline calibration
# ----------------------------------------------------------------------------------------------

def test_smoothing_search_is_argmin_and_exact():
    x, w = int8.outlier_problem(5)
    search = search_smoothing(x, w)
    reference = x @ w.T
    for s, error in zip(smoothing_candidates(x, w), search.errors):  # every candidate, recomputed
        y = int8_linear(x, quantize_weight(w, smooth=1 / s), out_format=Format.FP64).y
        assert error == float(np.linalg.norm(y - reference))
        # power-of-two migration preserves x W^T bit for bit
        assert np.array_equal(gemm_oracle(x * (1 / s), w * s), gemm_oracle(x, w))
    assert search.errors[search.index] == min(search.errors) < search.errors[0]
    assert np.array_equal(search.smooth, 1 / smoothing_candidates(x, w)[search.index])


def test_non_power_of_two_migration_is_not_exact():
    # Why the grid is powers of two: SmoothQuant's raw factor changes x W^T.
    x, w = int8.outlier_problem(5)
    s = round_to(np.sqrt(np.abs(x).max(axis=0) / np.abs(w).max(axis=0)), Format.FP32)
    assert not np.array_equal(gemm_oracle(round_to(x / s, Format.FP32), round_to(w * s, Format.FP32)),
                              gemm_oracle(x, w))


def test_clipping_search_is_argmin_per_block():
    x, w = int8.outlier_problem(6)
    search = search_clipping(x, w, block_rows=5)
    for b, start in enumerate(range(0, w.shape[0], 5)):
        block = w[start:start + 5]
        errors = [float(np.linalg.norm(x @ (block - quantize_weight(block, alpha=a).dequantize()).T))
                  for a in int8.CLIP_GRID]
        assert search.errors[b] == tuple(errors)
        assert search.indices[b] == errors.index(min(errors)) and min(errors) < errors[0]
        assert np.all(search.alpha[start:start + 5] == int8.CLIP_GRID[search.indices[b]])


def test_search_mutant_is_caught(monkeypatch):
    x, w = int8.outlier_problem(6)
    monkeypatch.setattr(int8, "best_index", lambda errors: int(np.argmax(errors)))
    search = search_clipping(x, w, block_rows=5)
    assert any(e[i] > min(e) for i, e in zip(search.indices, search.errors))


def test_calibrated_weight_beats_plain_quantisation_on_outliers():
    x, w = int8.outlier_problem(7)
    reference = gemm_oracle(x, w)
    plain = int8_linear(x, quantize_weight(w), out_format=Format.FP64).y
    tuned = int8_linear(x, int8.calibrate_weight(x, w, block_rows=4), out_format=Format.FP64).y
    assert np.linalg.norm(tuned - reference) < np.linalg.norm(plain - reference) / 2


# ----------------------------------------------------------------------------------------------
# The INT8 path of MLAProlog
# ----------------------------------------------------------------------------------------------

def prolog_case(seed: int, b: int = 2, s: int = 3, spread: float = 1.0):
    """(x (B, S, hidden) BF16, MLAWeights (BF16), positions) of int8.SMALL_MLA, seeded."""
    rng = np.random.default_rng(seed)
    x = round_to(rng.standard_normal((b, s, int8.SMALL_MLA.hidden)) * spread, Format.BF16)
    positions = rng.integers(0, int8.SMALL_MLA.max_seq_len, (b, s))
    return x, MLAWeights.random(int8.SMALL_MLA, seed, fmt=Format.BF16), positions


@st.composite
def prolog_cases(draw):
    """Seeded prolog cases with 1-2 sequences of 1-3 tokens at magnitudes 0.1, 1 and 10."""
    return prolog_case(draw(st.integers(min_value=0, max_value=2**16)), draw(st.integers(min_value=1, max_value=2)),
                       draw(st.integers(min_value=1, max_value=3)), draw(st.sampled_from([0.1, 1.0, 10.0])))


def prolog_within_bound(case) -> bool:
    x, weights, positions = case
    uq_qr = quantize_weight(weights.wq_b)
    a = int8.mla_prolog(x, weights, int8.SMALL_MLA, uq_qr=uq_qr, positions=positions)
    b = int8.mla_prolog(x, weights, int8.SMALL_MLA, positions=positions)
    query_bound, rope_bound = int8.prolog_deviation_bound(a, b, weights, uq_qr, int8.SMALL_MLA)
    return (bool(np.all(np.abs(a.query - b.query) <= query_bound))
            and bool(np.all(np.abs(a.query_rope - b.query_rope) <= rope_bound))
            and np.array_equal(a.c, b.c) and np.array_equal(a.k_pe, b.k_pe))


@given(prolog_cases())
def test_int8_prolog_within_bound_of_the_bf16_path(case):
    assert prolog_within_bound(case)


def test_int8_prolog_mutant_is_caught(monkeypatch):
    original = int8.dequantize
    monkeypatch.setattr(int8, "dequantize", lambda acc, s_x, s_w, **kw: original(acc, s_x, np.roll(s_w, 1), **kw))
    assert not any(prolog_within_bound(prolog_case(seed)) for seed in range(3))


def test_bf16_prolog_is_spec_mla():
    x, weights, positions = prolog_case(11)
    policy = int8.PROLOG_POLICY
    got = int8.mla_prolog(x, weights, int8.SMALL_MLA, positions=positions)
    q_nope, q_pe = mla_queries(x, weights, int8.SMALL_MLA, positions=positions, policy=policy)
    c, k_pe = mla_latents(x, weights, int8.SMALL_MLA, positions=positions, policy=policy)
    query, _ = kernel_inputs(q_nope, q_pe, c, k_pe, weights, int8.SMALL_MLA, policy=policy)
    r = int8.SMALL_MLA.kv_lora_rank
    assert np.array_equal(got.query, query[..., :r]) and np.array_equal(got.query_rope, query[..., r:])
    assert np.array_equal(got.c, c) and np.array_equal(got.k_pe, k_pe)


def test_int8_report(capsys):
    assert int8.int8_report(["--tokens", "4", "--k", "32", "--out", "8", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"int32_safe_k": 133144' in out and '"weight": "smoothed+clipped"' in out
