"""Bit-precise FP16 lemmas of PASA (Z3 FPSort(5, 11), roundTiesToEven).

- ``pasa.fp16.exponent_order``: the attnspec rescale exponent fl(candidate - m_new), with
  m_new = max(fl(m~ + Delta), fl(m + delta)), is <= 0 for every finite FP16 state, so every
  factor exp(.) is in [0, 1] (``spec/pasa.py`` deviation 3). Control: ``pasa()``'s order
  "torch.exp(m_j_1 - m_temp + ave_j_1)", i.e. fl(fl(m - m_new) + delta), can be positive;
  a second control shows it can reach ln(65520) = 11.09, where exp itself overflows FP16 and
  the rescaled l becomes +inf (it needs |m| >= 2**15, where fl(m + delta) drops a delta < 16).
- ``pasa.fp16.rounding_monotone`` (not quick): |x| <= B implies |fl16(x)| <= fl16(B), for every binary32
  x and B (the exact values rounded in PASA's GEMMs and sums are stood in for by binary32
  values: the certificate's "|x| <= B, so |fl(x)| <= fl(B)" step). Control: fl16(x) may
  exceed B itself.
- ``pasa.fp16.rounding_half_ulp`` (not quick): |fl16(x) - x| <= ulp16(B)/2 for |x| <= B
  (B an FP16 value below 65504, ulp16(B) = nextUp(B) - B). Control: a quarter ulp is not enough.
- ``pasa.fp16.shift_gemm`` (not quick): the shifting GEMM "temp_K.permute(0, 1, 3, 2) @ M" at
  n = 3 with beta = 15/16 (M~ entries 11/16, -5/16 from ``spec.pasa.shift_constants``): for
  FP16 keys in [30 - 0.5, 30 + 0.5] the accumulation is exact in binary32 (proved: each
  operation rounds the same toward zero and toward +inf) and |K'_t| <= fl16(X) with X from
  ``proofs/pasa_overflow.py``. Control: one zero key (``pasa()``'s padding when Sk < n)
  leaves the box and breaks the bound.
"""

from __future__ import annotations

from fractions import Fraction

import z3

from attnspec.proofs._core import F16, F32, ProofResult, prove, theorem
from attnspec.spec.pasa import POLICY_PASA_FP16, PasaConfig, shift_constants

RNE = z3.RNE()
#: ln(65520): exp of anything at least this rounds to +inf in FP16.
EXP_OVERFLOW = 11.09


def _finite(*xs) -> list[z3.BoolRef]:
    return [z3.And(z3.Not(z3.fpIsInf(x)), z3.Not(z3.fpIsNaN(x))) for x in xs]


def _exponent_state():
    m, delta, m_loc, offset = z3.FPs("m delta m_loc Delta", F16)
    cand_new = z3.fpAdd(RNE, m_loc, offset)  # m_temp = m_j + ave_j
    cand_old = z3.fpAdd(RNE, m, delta)  # m_temp0 = m_j_1 + Inv_Pam * (S_ave_temp - S_ave_0)
    m_new = z3.fpMax(cand_new, cand_old)
    return m, delta, cand_old, m_new, _finite(m, delta, m_loc, offset, cand_new, cand_old)


@theorem("pasa.fp16.exponent_order")
def prove_pasa_fp16_exponent_order() -> ProofResult:
    """Return the proof that attnspec's rescale exponent fl(fl(m + delta) - m_new) is <= 0."""
    _, _, cand_old, m_new, finite = _exponent_state()
    arg = z3.fpSub(RNE, cand_old, m_new)
    return prove("pasa.fp16.exponent_order", z3.fpLEQ(arg, z3.FPVal(0.0, F16)), finite,
                 statement="fl(cand - max(cand_new, cand_old)) <= 0 for finite FP16 candidates")


@theorem("pasa.fp16.exponent_order.control_author", quick=False)
def prove_pasa_fp16_control_author_order() -> ProofResult:
    """Return the counterexample: pasa()'s fl(fl(m - m_new) + delta) can be positive."""
    m, delta, _, m_new, finite = _exponent_state()
    arg = z3.fpAdd(RNE, z3.fpSub(RNE, m, m_new), delta)
    # Narrows the search to where fl(m + delta) can drop delta (ulp(m) = 1 on [1024, 2048)); a model of the
    # narrower query is a model of the claim's negation, and the solver finds it fast in any context state.
    hint = [z3.fpGEQ(m, z3.FPVal(1024.0, F16)), z3.fpLT(m, z3.FPVal(2048.0, F16)),
            z3.fpGT(delta, z3.FPVal(0.0, F16)), z3.fpLT(delta, z3.FPVal(0.5, F16))]
    return prove("pasa.fp16.exponent_order.control_author", z3.fpLEQ(arg, z3.FPVal(0.0, F16)), finite + hint,
                 expect="refuted", statement="pasa()'s exp(m_j_1 - m_temp + ave_j_1) has a positive argument")


@theorem("pasa.fp16.exponent_order.control_author_overflow")
def prove_pasa_fp16_control_author_overflow() -> ProofResult:
    """Return the counterexample: pasa()'s argument can reach ln(65520), where exp overflows FP16."""
    m, delta, _, m_new, finite = _exponent_state()
    arg = z3.fpAdd(RNE, z3.fpSub(RNE, m, m_new), delta)
    hint = [z3.fpGEQ(m, z3.FPVal(2.0**15, F16)), z3.fpGEQ(delta, z3.FPVal(EXP_OVERFLOW, F16)),
            z3.fpLT(delta, z3.FPVal(16.0, F16))]  # where fl(m + delta) = m: a narrower query, for speed
    return prove("pasa.fp16.exponent_order.control_author_overflow",
                 z3.fpLT(arg, z3.FPVal(EXP_OVERFLOW, F16)), finite + hint, expect="refuted",
                 statement="pasa()'s rescale exponent can reach 11.09: exp -> +inf in FP16")


def _monotone(round_bound: bool) -> tuple[z3.BoolRef, list[z3.BoolRef]]:
    x, bound = z3.FPs("x B", F32)
    fx = z3.fpToFP(RNE, x, F16)
    limit = z3.fpToFP(RNE, bound, F16) if round_bound else bound
    claim = z3.fpLEQ(z3.fpToFP(RNE, z3.fpAbs(fx), F32), z3.fpToFP(RNE, limit, F32))
    return claim, _finite(x, bound) + [z3.fpLEQ(z3.fpAbs(x), bound)]


@theorem("pasa.fp16.rounding_monotone", quick=False)
def prove_pasa_fp16_rounding_monotone() -> ProofResult:
    """Return the proof that |x| <= B implies |fl16(x)| <= fl16(B) (binary32 x, B)."""
    claim, assumptions = _monotone(True)
    return prove("pasa.fp16.rounding_monotone", claim, assumptions,
                 statement="|x| <= B => |fl16(x)| <= fl16(B), x and B binary32")


@theorem("pasa.fp16.rounding_monotone.control")
def prove_pasa_fp16_control_monotone() -> ProofResult:
    """Return the counterexample: fl16(x) can exceed B itself."""
    claim, assumptions = _monotone(False)
    return prove("pasa.fp16.rounding_monotone.control", claim, assumptions, expect="refuted",
                 statement="|fl16(x)| <= B is false: rounding can go up past B")


def _half_ulp(fraction: float) -> tuple[z3.BoolRef, list[z3.BoolRef]]:
    x = z3.FP("x", F32)
    bound = z3.FP("B", F16)
    above = z3.fpBVToFP(z3.fpToIEEEBV(bound) + 1, F16)  # nextUp(B) for a positive finite B
    gap = z3.fpSub(RNE, z3.fpToFP(RNE, above, F32), z3.fpToFP(RNE, bound, F32))  # ulp16(B), exact in binary32
    err = z3.fpAbs(z3.fpSub(RNE, z3.fpToFP(RNE, z3.fpToFP(RNE, x, F16), F32), x))  # exact in binary32 (Sterbenz)
    claim = z3.fpLEQ(err, z3.fpMul(RNE, gap, z3.FPVal(fraction, F32)))
    return claim, _finite(x) + [z3.fpIsPositive(bound), z3.fpLT(bound, z3.FPVal(65504.0, F16)),
                                z3.fpLEQ(z3.fpAbs(x), z3.fpToFP(RNE, bound, F32))]


@theorem("pasa.fp16.rounding_half_ulp", quick=False)
def prove_pasa_fp16_rounding_half_ulp() -> ProofResult:
    """Return the proof that |fl16(x) - x| <= ulp16(B)/2 whenever |x| <= B."""
    claim, assumptions = _half_ulp(0.5)
    return prove("pasa.fp16.rounding_half_ulp", claim, assumptions,
                 statement="|x| <= B (B in FP16, B < 65504) => |fl16(x) - x| <= (nextUp(B) - B)/2")


@theorem("pasa.fp16.rounding_half_ulp.control", quick=False)
def prove_pasa_fp16_control_half_ulp() -> ProofResult:
    """Return the counterexample for a quarter of an ulp."""
    claim, assumptions = _half_ulp(0.25)
    return prove("pasa.fp16.rounding_half_ulp.control", claim, assumptions, expect="refuted",
                 statement="|fl16(x) - x| <= ulp16(B)/4 is false")


#: The shifting-GEMM lemma's block: n = 3 keys, beta = 15/16, box [30 - 0.5, 30 + 0.5].
GEMM_N, GEMM_BIAS, GEMM_AMP = 3, 30.0, 0.5
GEMM_CONFIG = PasaConfig(beta=0.9375, block_k=GEMM_N)


def _shift_gemm(zero_key: bool) -> tuple[z3.BoolRef, list[z3.BoolRef], Fraction]:
    m, _ = shift_constants(GEMM_CONFIG, 1.0, POLICY_PASA_FP16)
    diag, off = Fraction(float(m[0, 0])), Fraction(float(m[0, 1]))
    a, b_off = diag - off, -off
    x_bound = abs(a - GEMM_N * b_off) * Fraction(GEMM_BIAS) + (abs(a - b_off) + (GEMM_N - 1) * abs(b_off)) \
        * Fraction(GEMM_AMP)  # proofs/pasa_overflow.py shift_bound
    keys = [z3.FP(f"k{i}", F16) for i in range(GEMM_N)]
    box = [z3.And(z3.fpGEQ(k, z3.FPVal(GEMM_BIAS - GEMM_AMP, F16)), z3.fpLEQ(k, z3.FPVal(GEMM_BIAS + GEMM_AMP, F16)))
           for k in keys]
    if zero_key:
        box[-1] = z3.fpIsZero(keys[-1])
    row = GEMM_N - 1  # the output row of the last key (the padded one in the control)
    acc, exact = z3.FPVal(0.0, F32), []
    for s, k in enumerate(keys):
        entry = z3.FPVal(float(diag if s == row else off), F32)
        wide = z3.fpToFP(RNE, k, F32)
        prod = z3.fpMul(RNE, wide, entry)
        exact.append(z3.fpMul(z3.RTZ(), wide, entry) == z3.fpMul(z3.RTP(), wide, entry))
        exact.append(z3.fpAdd(z3.RTZ(), acc, prod) == z3.fpAdd(z3.RTP(), acc, prod))
        acc = z3.fpAdd(RNE, acc, prod)
    k_shift = z3.fpToFP(RNE, acc, F16)  # the Cube unit's exact sum, rounded once to FP16
    limit = z3.fpToFP(RNE, z3.RealVal(x_bound), F16)
    claim = z3.And(z3.fpLEQ(z3.fpAbs(k_shift), limit), *exact)
    return claim, box, x_bound


@theorem("pasa.fp16.shift_gemm", quick=False)
def prove_pasa_fp16_shift_gemm() -> ProofResult:
    """Return the proof that the FP16 shifting GEMM is exact before its rounding and stays within fl16(X)."""
    claim, assumptions, x_bound = _shift_gemm(False)
    return prove("pasa.fp16.shift_gemm", claim, assumptions,
                 statement=f"n = {GEMM_N}, beta = 15/16, k in FP16 [{GEMM_BIAS} +- {GEMM_AMP}]: "
                           f"|fl16(sum M~ k)| <= fl16({float(x_bound)}), accumulation exact")


@theorem("pasa.fp16.shift_gemm.control_zero_padding", quick=False)
def prove_pasa_fp16_control_zero_padding() -> ProofResult:
    """Return the counterexample with one zero key, as pasa() pads when Sk < n."""
    claim, assumptions, _ = _shift_gemm(True)
    return prove("pasa.fp16.shift_gemm.control_zero_padding", claim, assumptions, expect="refuted",
                 statement="a zero pad key: its shifted value -beta kbar leaves the bound")
