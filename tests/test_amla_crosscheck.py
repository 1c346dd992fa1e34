"""An independent second implementation of the shipped AMLA kernel, bit-exact against spec/amla.py.

Written from hicann/ops-transformer @ c29bc10 ``fia_block_vec_nonquant_mla.h`` directly, with
native numpy float32 arithmetic (IEEE round-to-nearest-even per operation), BF16 casts by bit
manipulation on the uint32 words, the INT32 add on the int32 view, and one row at a time.
It shares no code with the spec beyond numpy. Dot products are formed in binary64: for the
BF16 inputs used here (at most 6 + 2 channels, 8 keys per block) every product is exact and
so is their binary64 sum, so the cast to float32 is the single rounding the spec defines.
The row sum of P uses math.fsum (correctly rounded to binary64) and then float32.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnspec.reference.amla_cases import NARROW, case_table
from attnspec.spec.amla import AmlaConstants, amla_decode

F = np.float32
LN2 = F(0.6931471805599453094172)  # static constexpr T LN2
RECIP_LN2 = F(1) / LN2  # static constexpr T RECIP_OF_LN2 = 1 / LN2


def bf16_ties_away(x: np.ndarray) -> np.ndarray:
    """CAST_ROUND float -> bfloat16 -> float: add half a BF16 ulp to the magnitude bits and truncate."""
    u = x.astype(F).view(np.uint32).astype(np.uint64)
    return ((u + 0x8000) & 0xFFFF0000).astype(np.uint32).view(F)


def bf16_ties_even(x: np.ndarray) -> np.ndarray:
    """CAST_RINT float -> bfloat16 -> float: add 0x7FFF plus the lowest kept bit, then truncate."""
    u = x.astype(F).view(np.uint32).astype(np.uint64)
    return (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(F)


def int_round_away(x: np.ndarray) -> np.ndarray:
    """CAST_ROUND to an integer: 2.5 -> 3, -2.5 -> -3."""
    x = x.astype(np.float64)
    return np.trunc(x + np.copysign(0.5, x))


def exp32(x: np.ndarray) -> np.ndarray:
    return np.exp(x.astype(F).astype(np.float64)).astype(F)


def kernel_rows(q: np.ndarray, k: np.ndarray, scale: float, limits: np.ndarray, block: int, variant: str) -> np.ndarray:
    """Return the rows (M, Dv) of one task: q (M, W), k (L, W), V = k[:, :Dv]; key j admitted iff j < limits[row]."""
    dv = NARROW.kv_lora_rank
    rows, length = q.shape[0], k.shape[0]
    m, l = np.full(rows, F(-2e38)), np.zeros(rows, F)  # SOFTMAX_MIN_NUM, FLOAT_ZERO
    o = n_prev = c_prev = r_hat = None
    for start in range(0, length, block):
        kb = k[start:start + block]
        s = (q.astype(np.float64) @ kb.T.astype(np.float64)).astype(F) * F(scale)  # C1; Muls(scaleValue)
        key = np.arange(start, start + kb.shape[0])
        s = np.where(key[None, :] < limits[:, None], s, F(-1e12)).astype(F)  # SelectWithBytesMask
        m_new = np.maximum(m, s.max(axis=1))  # SoftmaxFlashV2
        p = exp32(s - m_new[:, None])
        l = exp32(m - m_new) * l + np.array([F(math.fsum(row.astype(np.float64))) for row in p], F)
        n = int_round_away(m_new * (-RECIP_LN2)).astype(F)  # Muls(-1 * RECIP_OF_LN2); Cast CAST_ROUND
        r = exp32(((m_new * RECIP_LN2) + n) * LN2)
        r_hat = r if variant == "exact_residual" else bf16_ties_away(r)
        c = r / r_hat
        p_tilde = bf16_ties_away(p * r_hat[:, None])
        x = (p_tilde.astype(np.float64) @ kb[:, :dv].astype(np.float64)).astype(F)  # C2 in L0C
        if o is None:
            o = x  # the first block is written, not added
        else:
            if variant == "ideal":
                factor = np.exp2((n - n_prev).astype(np.float64)) * (c_prev.astype(np.float64) / c)
                o = (o.astype(np.float64) * factor[:, None]).astype(F)
            else:
                k_comp = ((c_prev / c) - F(1)) * F(1.5) if variant != "no_compensation" else np.zeros(rows, F)
                t = (np.maximum(n - n_prev, F(-30)) + (k_comp + F(1e-6))) * F(8388608)
                big_n = int_round_away(t).astype(np.int64)
                words = (o.view(np.int32).astype(np.int64) + big_n[:, None]) & 0xFFFFFFFF  # SetAtomicAdd<int32_t>
                o = words.astype(np.uint32).view(F)
            with np.errstate(invalid="ignore", over="ignore"):
                o = o + x  # SetAtomicAdd<float>
            o = np.where(np.isnan(o), F(np.nan), o)  # the spec's pinned default NaN 0x7FC00000
        m, n_prev, c_prev = m_new, n, c
    if variant != "ideal":
        with np.errstate(invalid="ignore"):
            o = np.where(np.abs(o) <= F(1e10), o, F(0))  # CompareScalar LE; Select
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        out = bf16_ties_even(o / (l * r_hat)[:, None])  # RowDivs by aMlaSum; CAST_RINT
    return np.where((limits > 0)[:, None], out, F(0))  # DealInvalidRows


def kernel_decode(q, kv, lengths, scale: float, block: int, causal: bool, variant: str) -> np.ndarray:
    """Return out (B, s_q, h_q, Dv) one (sequence, head) task at a time."""
    b, sq, heads, _ = q.shape
    out = np.zeros((b, sq, heads, NARROW.kv_lora_rank), F)
    for i in range(b):
        length = int(lengths[i])
        if length == 0:
            continue  # InitAllZeroOutput
        positions = np.arange(sq)
        limits = np.minimum(length - sq + positions + 1, length) if causal else np.full(sq, length)
        for h in range(heads):
            rows = kernel_rows(q[i, :, h].astype(F), kv[i, :length, 0].astype(F), scale,
                               np.maximum(limits, 0), block, variant)
            out[i, :, h] = rows
    return out


def assert_bit_exact(case_args: dict, variant: str) -> None:
    q, kv, lengths = case_args["q"], case_args["kv"], case_args["lengths"]
    spec = amla_decode(q, kv, cache_seqlens=lengths, scale=case_args["scale"], causal=case_args["causal"],
                       config=NARROW, block_k=case_args["block"], variant=variant, strict=True).out
    mine = kernel_decode(q, kv, lengths, case_args["scale"], case_args["block"], case_args["causal"], variant)
    spec32 = spec.astype(F)
    same = (spec32.view(np.uint32) == mine.view(np.uint32)) | (spec32 == mine)  # +0 == -0 only where both are 0
    assert np.all(same), (f"{int((~same).sum())} elements differ, e.g. spec {spec32[~same][:3]} vs second "
                          f"implementation {mine[~same][:3]} [{variant}]")


@pytest.mark.parametrize("case", case_table("quick"), ids=lambda c: c.name)
@pytest.mark.parametrize("variant", ["cann", "exact_residual", "no_compensation", "ideal"])
def test_named_cases_bit_exact(case, variant):
    assert_bit_exact({"q": case.q, "kv": case.kv_cache, "lengths": case.cache_seqlens, "scale": case.scale,
                      "causal": case.causal, "block": case.block_k}, variant)


@st.composite
def kernel_cases(draw):
    seed = draw(st.integers(min_value=0, max_value=2**31))
    rng = np.random.default_rng(seed)
    sq = draw(st.integers(min_value=1, max_value=4))
    batch = draw(st.integers(min_value=1, max_value=2))
    keys = draw(st.integers(min_value=1, max_value=40))
    spread = draw(st.sampled_from([0.25, 1.0, 3.0]))
    width = NARROW.latent_dim
    q = rng.normal(0, spread, (batch, sq, 2, width))
    kv = rng.normal(0, spread, (batch, keys, 1, width))
    if draw(st.booleans()):  # the max jumps at a block boundary
        kv[:, 8 * (keys // 16):, 0, -1] += draw(st.sampled_from([5.0, 30.0, 100.0]))
    lengths = np.array(draw(st.lists(st.integers(min_value=0, max_value=keys), min_size=batch, max_size=batch)))
    return {"q": bf16_ties_even(q.astype(F)).astype(np.float64), "kv": bf16_ties_even(kv.astype(F)).astype(np.float64),
            "lengths": lengths, "scale": 0.5, "causal": draw(st.booleans()),
            "block": 8}


@settings(deadline=None)
@given(kernel_cases())
def test_random_cases_bit_exact(case_args):
    assert_bit_exact(case_args, "cann")


def test_second_implementation_detects_a_changed_constant():
    """The harness has a test of its own: a spec run with 1.0 in place of 1.5 is not bit-exact with the kernel."""
    case = case_table("quick")[-1]  # a random MTP case: every block rescales
    spec = amla_decode(case.q, case.kv_cache, cache_seqlens=case.cache_seqlens, scale=case.scale, causal=case.causal,
                       config=NARROW, block_k=case.block_k, constants=AmlaConstants(compensation=1.0)).out
    mine = kernel_decode(case.q, case.kv_cache, case.cache_seqlens, case.scale, case.block_k, case.causal, "cann")
    assert not np.array_equal(spec.astype(F), mine)
