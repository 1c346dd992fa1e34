"""spec.pasa: exactness against the oracle, the author variant bit for bit, and the catalogue of deviations.

1. In binary64, attnspec's PASA equals the mpmath oracle within the bound derived in
   :func:`fp64_bound`, for GQA, causal and windowed masks, variable lengths, decode, every
   block length and beta in [0, 0.99], with the scale on Q or folded into M. Mutant: a gamma
   that does not invert the shift (the recovery is then off by (gamma' - gamma) r' per block).
2. The ``author`` variant equals :func:`author_reference`, an independent transcription of
   chenglong92/PASA@14f5c6f ``pasa()`` in numpy float16/float32 arithmetic, bit for bit.
   Mutant: attnspec's exponent order, which the comparison must tell apart.
3. Each deviation of the catalogue (spec/pasa.py) shows on a concrete input.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import attnspec.spec.pasa as pasa_module
from attnspec.reference.oracle import attention_oracle
from attnspec.reference.strategies import AttentionCase, attention_inputs, find_failure
from attnspec.spec.attention import POLICY_FP64, attention
from attnspec.spec.errors import ConventionError, DomainError, FormatError, MaskError, ShapeError
from attnspec.spec.formats import Format, round_to
from attnspec.spec.pasa import (AUTHOR_INITIAL_MAX, PASA_ATTNSPEC, PASA_AUTHOR, POLICY_PASA_FP16, POLICY_PASA_HYBRID,
                                PasaConfig, pasa_attention)

U64 = 2.0 ** -53


# ----------------------------------------------------------------------------------------------
# 1. Exactness in binary64
# ----------------------------------------------------------------------------------------------

def fp64_budget(case: AttentionCase, config: PasaConfig) -> tuple[float, float, float]:
    """Return (tau, S, max|v|) for PASA evaluated in binary64 (u = 2**-53): each weight is within e^{+-tau}.

    Write X = c d max|q| max|k| (c = |scale|): every true logit, shifted score, row mean and
    reference is at most S = (1 + beta) X in magnitude, and gamma = beta / (1 - beta).

    - K' = fl(M~ K): M~'s entries carry u, the GEMM gamma_n (BLAS order), the result u:
      |dK'| <= (n + 3) u (1 + beta) c_M max|k|; then S' = fl(q.K') adds gamma_d:
      |dS'| <= e_s = (n + d + 4) u S (c_M max|q_c| = c max|q|).
    - r = fl(mean S'): |dr| <= e_r = e_s + (n + 2) u S.
    - The reference R may be anything (spec/pasa.py, proofs/pasa_recovery.py): its rounding
      costs nothing. What reaches a key's final exponent is S'_t + gamma (r_t - R_T) plus the
      roundings of Delta, of each delta, of each m + delta and of the exponent arguments
      (proofs/pasa_overflow.py telescoping_errors): at most (6 T + 10) of them, each
      <= u |operand| with operands <= 3 (1 + 2 gamma) S.
    So each weight exp(e_t) is within a factor e^{+-sigma} of the exact exp(S_t - C),
    sigma = e_s + gamma e_r + (6 T + 10) u 3 (1 + 2 gamma) S; the roundings of exp and of the
    sums add (n + 2 T + 4) u. tau doubles the total once for slack in the counting.
    """
    problem = pasa_module.attention_problem(case.q, case.k, case.v, **case.conventions)
    n, dk = config.block_k, problem.q.shape[3]
    blocks = max(1, -(-problem.k.shape[2] // n))
    gamma = config.beta / (1 - config.beta)
    x = abs(problem.scale) * dk * np.max(np.abs(problem.q), initial=0) * np.max(np.abs(problem.k), initial=0)
    s = (1 + config.beta) * x
    e_s = (n + dk + 4) * U64 * s
    e_r = e_s + (n + 2) * U64 * s
    sigma = e_s + gamma * e_r + (6 * blocks + 10) * U64 * 3 * (1 + 2 * gamma) * s
    tau = 2 * (sigma + (n + 2 * blocks + 4) * U64)
    return tau, s, float(np.max(np.abs(problem.v), initial=0))


def fp64_bound(case: AttentionCase, config: PasaConfig) -> float:
    """Return the bound on max |O_pasa - O|: the perturbed-weights lemma of reference/bounds.py.

    With every weight within e^{+-tau}, |O^ - O| <= 2 eps/(1 - eps) max|v|, eps = e^{2 tau} - 1,
    plus 4 u max|v| for the final O/l and the cast.
    """
    tau, _, v_max = fp64_budget(case, config)
    eps = math.expm1(2 * tau)
    return (2 * eps / (1 - eps) + 4 * U64) * v_max


@st.composite
def pasa_cases(draw, *, max_seq: int = 20):
    """Draw an attention case without softcap, a block length, beta and the scale placement."""
    case = draw(attention_inputs(max_batch=1, max_heads=4, max_seq=max_seq, max_dim=6))
    case = AttentionCase(case.q, case.k, case.v, {k: v for k, v in case.conventions.items() if k != "softcap"})
    config = PasaConfig(beta=draw(st.sampled_from([0.0, 0.5, 0.9375, 0.99])),
                        block_k=draw(st.integers(min_value=1, max_value=8)),
                        scale_placement=draw(st.sampled_from(["q", "shift"])))
    return case, config


def within_fp64_bound(case_and_config, config_of=lambda c: c) -> bool:
    case, config = case_and_config
    got = pasa_attention(case.q, case.k, case.v, config=config_of(config), policy=POLICY_FP64, **case.conventions)
    want = attention_oracle(case.q, case.k, case.v, **case.conventions)
    return bool(np.all(np.abs(got.out - want.out) <= fp64_bound(case, config)))


@settings(max_examples=15)
@given(case_and_config=pasa_cases())
def test_pasa_fp64_equals_the_oracle(case_and_config):
    assert within_fp64_bound(case_and_config)


def test_mutant_gamma_is_caught(monkeypatch):
    real = pasa_module.shift_constants

    def wrong_gamma(config, scale, policy):
        m, gamma = real(config, scale, policy)
        return m, gamma * 1.01  # no longer beta / (1 - beta): the recovery misses 1% of gamma r'

    monkeypatch.setattr(pasa_module, "shift_constants", wrong_gamma)
    find_failure(pasa_cases(), lambda c: not within_fp64_bound(c), max_examples=200)


def test_lse_diagnostic_is_the_logsumexp():
    """LSE = m + gamma R + log l: the weights' budget tau, log's rounding, and u of each of three terms."""
    rng = np.random.default_rng(3)
    case = AttentionCase(rng.uniform(20, 40, (1, 2, 3, 8)), rng.uniform(20, 40, (1, 1, 37, 8)),
                         rng.uniform(-1, 1, (1, 1, 37, 4)))
    config = replace(PASA_ATTNSPEC, block_k=8)
    got = pasa_attention(case.q, case.k, case.v, config=config, policy=POLICY_FP64).lse
    want = attention_oracle(case.q, case.k, case.v).lse
    tau, s, _ = fp64_budget(case, config)
    gamma = config.beta / (1 - config.beta)
    assert np.max(np.abs(got - want)) <= 2 * tau + 4 * U64 * (3 * (1 + 2 * gamma) * s + gamma * s + math.log(37))


# ----------------------------------------------------------------------------------------------
# 2. The author variant, bit for bit
# ----------------------------------------------------------------------------------------------

def _gemm16(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return fp16(a @ b) with the exact sum rounded once (a Cube unit), for fp16 (or fp32) operands."""
    b = np.broadcast_to(b, a.shape[:-2] + b.shape[-2:])
    out = np.empty(a.shape[:-1] + b.shape[-1:], dtype=np.float16)
    for idx in np.ndindex(out.shape):
        terms = (a[idx[:-1]].astype(np.float64) * b[idx[:-2] + (slice(None), idx[-1])].astype(np.float64)).tolist()
        total = math.fsum(terms)
        assert math.fsum(terms + [-total]) == 0.0, "test data must keep the GEMM sums exact in binary64"
        out[idx] = np.float16(total)
    return out


def _exp16(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        return np.exp(x.astype(np.float64)).astype(np.float16)


def author_reference(q, k, v, *, beta: float, scale: float, s2: int, exponent_order: str = "author") -> np.ndarray:
    """Return pasa() of chenglong92/PASA@14f5c6f for every head, in numpy float16 arithmetic.

    numpy's float16 +, -, *, / go through float32, which for 11-bit operands is the correctly
    rounded float16 result; exp is binary64 then one rounding, like the spec's policy.
    ``exponent_order="attnspec"`` is the mutant with the spec's other variant's exponents.
    """
    f16, f32 = np.float16, np.float32
    q, k, v = q.astype(f16), k.astype(f16), v.astype(f16)
    heads, kv_heads = q.shape[1], k.shape[1]
    k, v = np.repeat(k, heads // kv_heads, axis=1), np.repeat(v, heads // kv_heads, axis=1)
    length = k.shape[2]
    total = ((length - 1) // s2 + 1) * s2
    pad = total - length
    mask = np.zeros(q.shape[:3] + (total,), dtype=bool)  # True = masked
    if pad:
        if length < s2:
            extra_k, extra_v = np.zeros(k.shape[:2] + (pad, k.shape[3]), f16), np.zeros(v.shape[:2] + (pad, v.shape[3]), f16)
        else:
            extra_k, extra_v = k[:, :, -pad:], v[:, :, -pad:]
        k, v = np.concatenate([k, extra_k], axis=2), np.concatenate([v, extra_v], axis=2)
        mask[..., length:] = True
    additive = np.where(mask, -np.inf, 0.0).astype(f16)
    afa = f32(beta)
    m_matrix = (np.eye(s2, dtype=f32) - np.ones((s2, s2), dtype=f32) * afa / f32(s2))
    m_matrix = (m_matrix * f32(scale)).astype(f16)
    inv_pam = (afa / (f32(1.0) - afa)).astype(f16)
    for j in range(total // s2):
        block = k[:, :, j * s2:(j + 1) * s2]
        k[:, :, j * s2:(j + 1) * s2] = np.swapaxes(_gemm16(np.swapaxes(block, -1, -2), m_matrix), -1, -2)
    m = np.full(q.shape[:3] + (1,), -60000, dtype=f16)
    l = np.zeros_like(m)
    o = np.zeros(q.shape, dtype=f16)
    for j in range(total // s2):
        cols = slice(j * s2, (j + 1) * s2)
        s = _gemm16(q, np.swapaxes(k[:, :, cols], -1, -2))
        s_ave = (s.astype(np.float64).sum(axis=-1, keepdims=True) / s2).astype(f16)  # exact sum, one rounding
        s = s + additive[..., cols]
        m_j = s.max(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore"):
            p = _exp16(s - m_j)
        l_j = p.astype(np.float64).sum(axis=-1, keepdims=True).astype(f16)
        if j == 0:
            s_ave_0 = s_ave
        s_ave_temp = s_ave_0
        s_ave_0 = s_ave * f16(1.0 / (j + 1)) + s_ave_0 * f16(j / (j + 1))
        ave_j = (s_ave - s_ave_0) * inv_pam
        ave_j_1 = inv_pam * (s_ave_temp - s_ave_0)
        with np.errstate(invalid="ignore"):
            m_temp = np.maximum(m_j + ave_j, m + ave_j_1)
            if exponent_order == "author":
                old, new = _exp16(m - m_temp + ave_j_1), _exp16(m_j - m_temp + ave_j)
            else:
                old, new = _exp16((m + ave_j_1) - m_temp), _exp16((m_j + ave_j) - m_temp)
            pv = _gemm16(p, v[:, :, cols])
            if j == 0:
                l, o = _exp16(m_j - m_temp + ave_j_1) * l_j, _exp16(m_j - m_temp + ave_j_1) * pv
            else:
                l, o = old * l + new * l_j, old * o + new * pv
        m = m_temp
    with np.errstate(invalid="ignore", divide="ignore"):
        return (o / l).astype(np.float64)


@st.composite
def author_inputs(draw):
    """FP16 inputs on a coarse grid (so the reference's binary64 GEMM sums stay exact), several blocks, padding."""
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    bias = draw(st.sampled_from([0.0, 6.0, 30.0]))
    amp = draw(st.sampled_from([0.5, 4.0]))
    s2 = draw(st.sampled_from([8, 16]))
    length = draw(st.sampled_from([5, s2, 2 * s2 + 3]))
    d = 8

    def grid(shape):  # multiples of 1/8: FP16 values whose products and sums are exact in binary64
        return np.round(rng.uniform(bias - amp, bias + amp, shape) * 8) / 8

    q, k, v = grid((1, 2, 3, d)), grid((1, 1, length, d)), grid((1, 1, length, d))
    beta = draw(st.sampled_from([0.9375, 0.984497]))
    return q, k, v, beta, s2


def author_matches(inputs, exponent_order: str = "author") -> bool:
    q, k, v, beta, s2 = inputs
    scale = 1 / math.sqrt(q.shape[-1])
    got = pasa_attention(q, k, v, config=replace(PASA_AUTHOR, beta=beta, block_k=s2), scale=scale).out
    want = author_reference(q, k, v, beta=beta, scale=scale, s2=s2, exponent_order=exponent_order)
    return bool(np.all(np.isfinite(got)) and np.array_equal(got, want))  # no masked row here: no NaN either


@settings(max_examples=10)
@given(inputs=author_inputs())
def test_author_variant_is_pasa_bit_for_bit(inputs):
    assert author_matches(inputs)


def test_mutant_exponent_order_is_told_apart():
    find_failure(author_inputs(), lambda x: author_matches(x, exponent_order="attnspec"), max_examples=100)


# ----------------------------------------------------------------------------------------------
# 3. The catalogue of deviations, and bad input
# ----------------------------------------------------------------------------------------------

def _small(seed=0, sq=4, sk=37, d=8, bias=0.0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(bias - 2, bias + 2, (1, 2, sq, d)), rng.uniform(bias - 2, bias + 2, (1, 1, sk, d)),
            rng.uniform(-1, 1, (1, 1, sk, d)))


def test_deviation_1_fully_masked_block_is_nan_for_the_author_only():
    q, k, v = _small(sq=20, sk=20)
    config = replace(PASA_AUTHOR, block_k=8)
    author = pasa_attention(q, k, v, config=config, policy=POLICY_FP64, causal=True)
    assert np.all(np.isnan(author.out[:, :, 0]))  # query 0: every block masked by triu(ones)
    fixed = pasa_attention(q, k, v, config=replace(PASA_ATTNSPEC, block_k=8), policy=POLICY_FP64,
                           causal=True, causal_alignment="top_left")
    want = attention_oracle(q, k, v, causal=True, causal_alignment="top_left").out
    assert np.all(np.isfinite(fixed.out)) and np.max(np.abs(fixed.out - want)) < 1e-9


def test_deviation_2_author_causal_mask_excludes_the_diagonal():
    q, k, v = _small(sq=6, sk=6)
    got = pasa_attention(q, k, v, config=replace(PASA_AUTHOR, initial_max=-np.inf, block_k=64), policy=POLICY_FP64,
                         causal=True)
    strict = np.tri(6, 6, -1, dtype=bool)  # key j < query i
    want = attention(q, k, v, mask=strict).out
    rows = slice(1, None)  # row 0 has no key under the strict mask: NaN for the author (deviation 1)
    assert np.all(np.isnan(got.out[:, :, 0])) and np.max(np.abs(got.out[:, :, rows] - want[:, :, rows])) < 1e-5
    with pytest.raises(MaskError, match="causal_alignment"):
        pasa_attention(q, k, v, config=PASA_AUTHOR, causal=True, causal_alignment="top_left")


def test_deviation_4_padding_rule():
    q, k, v = _small(sk=5)
    problem = pasa_module.attention_problem(q, k, v, kv_seqlens=np.array([3]))
    k_author, _ = pasa_module.padded_kv(problem, replace(PASA_AUTHOR, block_k=8))
    k_spec, _ = pasa_module.padded_kv(problem, replace(PASA_ATTNSPEC, block_k=8))
    assert np.all(k_author[:, :, 5:] == 0) and np.all(k_author[:, :, 3:5] == 0)  # Sk < n: zeros
    assert np.all(k_spec[:, :, 3:] == k_spec[:, :, 2:3])  # the last valid key, repeated
    problem = pasa_module.attention_problem(*_small(sk=11))
    k_author, _ = pasa_module.padded_kv(problem, replace(PASA_AUTHOR, block_k=8))
    assert np.array_equal(k_author[:, :, 11:], problem.k[:, :, 6:11])  # Sk >= n: the last rows again


def test_deviation_8_sentinel_loses_rows_far_below_it():
    q, k, v = _small(seed=4)
    shift = np.full((1, 1, 4, 37), -62000.0)  # a uniform additive offset: softmax does not change
    want = attention(q, k, v).out
    exact = pasa_attention(q, k, v, policy=POLICY_FP64, mask=shift).out
    sentinel = pasa_attention(q, k, v, config=replace(PASA_ATTNSPEC, initial_max=AUTHOR_INITIAL_MAX),
                              policy=POLICY_FP64, mask=shift).out
    assert np.max(np.abs(exact - want)) < 1e-6
    assert np.all(np.isnan(sentinel))  # every weight underflows against m = -60000: l = 0, O/l = 0/0


def test_decode_and_gqa_equal_their_expansions():
    q, k, v = _small(sq=1, sk=300, bias=20.0)
    got = pasa_attention(q, k, v)  # FP16, decode, GQA group 2
    expanded = pasa_attention(q, np.repeat(k, 2, axis=1), np.repeat(v, 2, axis=1))
    assert np.array_equal(got.out, expanded.out)


def test_hybrid_vector_path_is_no_worse_than_fp16():
    q, k, v = _small(sq=8, sk=300, bias=20.0)
    want = attention(q, k, v).out
    fp16 = np.max(np.abs(pasa_attention(q, k, v, policy=POLICY_PASA_FP16).out - want))
    hybrid = pasa_attention(q, k, v, policy=POLICY_PASA_HYBRID)
    author = pasa_attention(q, k, v, config=PASA_AUTHOR, policy=POLICY_PASA_HYBRID)
    assert not hybrid.overflowed and not author.overflowed
    assert np.max(np.abs(hybrid.out - want)) <= fp16 and np.max(np.abs(author.out - want)) <= 2 * fp16


@pytest.mark.parametrize("kwargs, error, text", [
    (dict(beta=1.0), DomainError, "beta"), (dict(beta=-0.1), DomainError, "beta"),
    (dict(beta=0.5, block_k=0), ShapeError, "block_k"), (dict(beta=0.5, scale_placement="k"), ConventionError, "scale"),
    (dict(beta=0.5, variant="paper"), ConventionError, "variant"),
    (dict(beta=0.5, initial_max=0.0), DomainError, "initial_max"),
])
def test_bad_config_is_rejected(kwargs, error, text):
    with pytest.raises(error, match=text):
        PasaConfig(**kwargs)


def test_bad_input_is_rejected():
    q, k, v = _small()
    with pytest.raises(ConventionError, match="softcap"):
        pasa_attention(q, k, v, softcap=30.0)
    with pytest.raises(ShapeError, match="q"):
        pasa_attention(q[0], k, v)
    with pytest.raises(FormatError, match="fp16"):
        pasa_attention(q, k, v, strict=True)
    assert not pasa_attention(round_to(q, Format.FP16), round_to(k, Format.FP16), round_to(v, Format.FP16),
                              strict=True).overflowed
