"""T3: mantissa compensation. Adding d to the bits multiplies by 1 + d 2^-23/(1+F) unless a carry leaves the mantissa.

The kernel (hicann/ops-transformer @ c29bc10 ``AmlaVecCompute``) must multiply O by
2^dn * c_{i-1}/c_i, where c = r / bf16(r) is the error of rounding the residual r to BF16.
It adds one integer N = round((dn + k) 2^23) with k = 1.5 (c_{i-1}/c_i - 1) + 1e-6: the
integer part moves the exponent (T1), the fraction d = N - dn 2^23 moves the mantissa.

- ``amla.compensation.carry`` (bit-precise): for a normal FP32 x (either sign) with trailing
  significand f and an integer d with 0 <= f + d < 2^23 (the carry condition: the sum stays
  in the 23-bit field), y = as_fp32(bits(x) + d) keeps x's sign and exponent, has
  significand field f + d, and |y| = (2^23 + f + d) ulp(x), |x| = (2^23 + f) ulp(x); hence
  y = x (1 + d 2^-23 / (1 + F)) exactly, F = f 2^-23. Negative control: without the upper
  half of the carry condition the exponent changes.
- ``amla.compensation.bound`` (reals): with k = 1.5 e + beta + delta (beta the 1e-6 bias,
  delta <= 2^-19 all roundings of N), the realised factor a = 1 + k / (1 + F) satisfies
  |a / (1 + e) - 1| <= (|e|/2 + 2^-18) / (1 - |e|): 1.5 = 1 + 1/2 is exact at F = 1/2 and
  off by at most |e|/2 at F = 0. For the BF16 residual range |e| <= E = 0.00785 this is
  <= 0.004 (about one BF16 half-ulp, 2^-8); negative control: E widened to 0.0081.
- ``amla.compensation.carry_bound`` (reals): when the carry condition fails (F + k >= 1, or
  F + k < 0) the realised factor is 2 (F + k) / (1 + F), resp. (2 + F + k) / (2 (1 + F)),
  within |k|/2 of the intended 1 + k / (1 + F); negative control: |k|/3.
- The range of N (bit-precise FP32, the kernel's operations in its order):
  ``residual_ratio``: r^ = round_away_bf16(r) has |r - r^| <= 2^-8 r^ for every positive
  normal r, so c = fl(r / r^) is in [1 - 2^-8, 1 + 2^-8] (correct rounding is monotone and
  the ends are FP32 numbers; this keeps an FP32 divider out of the solver); ``eps_range``:
  then fl(c_{i-1}/c_i) lies between the roundings of the extreme quotients (monotonicity
  again, evaluated exactly with ``round_exact``), and e = fl(ratio - 1) has |e| <= 0.00785
  and k = fl(fl(1.5 e) + 1e-6) has |k| <= 0.0118; ``n_range``: with dn clamped to [-30, 0],
  N = round_away(fl(fl(dn + k) 2^23)) lies in [N_MIN, N_MAX] = [-30 2^23 - 2^17, 2^17]
  (``spec.amla.N_MIN``), the hypothesis of ``proofs/amla_failures.py``. Controls: a subnormal
  r, a residual error of 2^-7, and an unclamped dn = -31.
"""

from __future__ import annotations

from fractions import Fraction

import z3

from attnspec.proofs._core import BF16, F32, ProofResult, prove, theorem
from attnspec.proofs.amla_identity import in_range, int_add, word
from attnspec.spec.amla import CANN, N_MAX, N_MIN
from attnspec.spec.formats import Format, round_exact

E_MAX = 0.00785  # |c_{i-1}/c_i - 1| <= (1 + 2^-8)/(1 - 2^-8) - 1 + 2^-24 < 0.00785
K_MAX = 0.0118  # 1.5 E_MAX + 1e-6 plus two FP32 roundings
DELTA = 2.0**-19  # |N 2^-23 - (dn + k)|: fl(dn + k) with |dn + k| < 32 (2^-20) and the int cast (2^-24)
BIAS = CANN.bias


# ----------------------------------------------------------------------------------------------
# The mantissa add, bit-precise
# ----------------------------------------------------------------------------------------------

def _carry(upper: bool) -> tuple[list, z3.BoolRef]:
    x, d = word("x"), z3.BitVec("d", 32)
    y = int_add(x, d)
    ulp_bits = z3.If(x.e >= 24, (x.e - 23) << 23, z3.BitVecVal(1, 32) << (x.e - 1))  # 2^(e-150), subnormal if e < 24
    ulp = z3.fpBVToFP(ulp_bits, F32)

    def times_ulp(k):
        return z3.fpMul(z3.RNE(), z3.fpUnsignedToFP(z3.RNE(), k, F32), ulp)  # exact: an integer < 2^24 times 2^j

    pre = [in_range(x.e, 1, 254), in_range(d, -(2**23) + 1, 2**23 - 1), x.f + d >= 0]
    if upper:
        pre.append(x.f + d < 2**23)
    claim = z3.And(y.sign == x.sign, y.e == x.e, y.f == x.f + d,
                   z3.fpAbs(y.value) == times_ulp(2**23 + x.f + d), z3.fpAbs(x.value) == times_ulp(2**23 + x.f))
    return pre, claim


@theorem("amla.compensation.carry", quick=False)
def prove_amla_compensation_carry() -> ProofResult:
    # c29bc10 AmlaVecCompute: Muls(epsUb, epsUb, 1.5) ... Add(nUpdateTmp, nUpdateTmp, epsUb);
    #   Muls(nUpdateTmp, nUpdateTmp, FLOAT_E_SCALAR)   -- the fraction of N lands in the mantissa field
    pre, claim = _carry(upper=True)
    return prove("amla.compensation.carry", claim, pre,
                 statement="normal x, |d| < 2^23, 0 <= f + d < 2^23: bits(x) + d has x's sign and exponent, "
                           "significand f + d, |y| = (2^23 + f + d) ulp(x) and |x| = (2^23 + f) ulp(x), i.e. "
                           "y = x (1 + d 2^-23 / (1 + F))")


@theorem("amla.compensation.carry.control", quick=False)
def prove_amla_compensation_carry_control() -> ProofResult:
    # precondition dropped: f + d < 2^23 (the carry leaves the mantissa and moves the exponent)
    pre, claim = _carry(upper=False)
    return prove("amla.compensation.carry.control", claim, pre, expect="refuted",
                 statement="the carry theorem without f + d < 2^23")


# ----------------------------------------------------------------------------------------------
# The error of the 1.5 e rule, over the reals
# ----------------------------------------------------------------------------------------------

def _factor_vars(e_max: float):
    F, e, beta, delta = z3.Reals("F e beta delta")
    pre = [F >= 0, F < 1, e >= -e_max, e <= e_max, beta >= 0, beta <= BIAS, delta >= -DELTA, delta <= DELTA]
    return F, e, 1.5 * e + beta + delta, pre


def _abs(t):
    return z3.If(t >= 0, t, -t)


def _bound_claim(e_max: float, relative: bool) -> tuple[list, z3.BoolRef]:
    F, e, k, pre = _factor_vars(e_max)
    a = z3.Real("a")  # the realised factor a = 1 + k / (1 + F)
    pre.append(a * (1 + F) == 1 + F + k)
    budget = _abs(e) / 2 + 2 * DELTA
    if relative:  # |a / (1 + e) - 1| <= budget / (1 - |e|), multiplied out (1 + e > 0)
        return pre, _abs(a - (1 + e)) * (1 - _abs(e)) <= budget * (1 + e)
    return pre, _abs(a - (1 + e)) <= 0.004 * (1 + e)  # the numeric instance for |e| <= e_max


@theorem("amla.compensation.bound")
def prove_amla_compensation_bound() -> ProofResult:
    # c29bc10: Muls(epsUb, epsUb, (T)1.5);  // (cof(i - 1) - cof(i)) / cof(i) * 1.5
    pre, general = _bound_claim(E_MAX, relative=True)
    _, numeric = _bound_claim(E_MAX, relative=False)
    return prove("amla.compensation.bound", z3.And(general, numeric), pre,
                 statement="F in [0, 1), |e| <= 0.00785, k = 1.5 e + beta + delta (beta <= 1e-6, |delta| <= 2^-19): "
                           "a = 1 + k/(1+F) has |a/(1+e) - 1| <= (|e|/2 + 2^-18)/(1 - |e|) <= 0.004")


@theorem("amla.compensation.bound.control")
def prove_amla_compensation_bound_control() -> ProofResult:
    # precondition weakened: |e| <= 0.0081 (wider than the BF16 residual range allows)
    pre, numeric = _bound_claim(0.0081, relative=False)
    return prove("amla.compensation.bound.control", numeric, pre, expect="refuted",
                 statement="|a/(1+e) - 1| <= 0.004 for |e| <= 0.0081")


def _carry_bound(ratio: float) -> tuple[list, z3.BoolRef]:
    F, e, k, pre = _factor_vars(E_MAX)
    intended, realised = z3.Reals("intended realised")
    pre += [intended * (1 + F) == 1 + F + k,
            z3.Or(z3.And(F + k >= 1, realised * (1 + F) == 2 * (F + k)),  # carry into the exponent
                  z3.And(F + k < 0, realised * 2 * (1 + F) == 2 + F + k))]  # borrow from the exponent
    return pre, _abs(realised - intended) <= ratio * _abs(k)


@theorem("amla.compensation.carry_bound")
def prove_amla_compensation_carry_bound() -> ProofResult:
    pre, claim = _carry_bound(0.5)
    return prove("amla.compensation.carry_bound", claim, pre,
                 statement="when f + d leaves [0, 2^23), the realised factor is within |k|/2 of the intended "
                           "1 + k/(1+F)")


@theorem("amla.compensation.carry_bound.control")
def prove_amla_compensation_carry_bound_control() -> ProofResult:
    pre, claim = _carry_bound(1 / 3)
    return prove("amla.compensation.carry_bound.control", claim, pre, expect="refuted",
                 statement="the carry bound with |k|/3")


# ----------------------------------------------------------------------------------------------
# The range of N, with the kernel's FP32 operations
# ----------------------------------------------------------------------------------------------

def _fp(v: float) -> z3.FPRef:
    return z3.FPVal(v, F32)


def _residual_ratio(normal: bool) -> tuple[list, z3.BoolRef]:
    r = z3.FP("r", F32)
    r_hat = z3.fpFPToFP(z3.RNE(), z3.fpFPToFP(z3.RNA(), r, BF16), F32)  # Cast(CAST_ROUND) to bf16; Cast back
    pre = [z3.fpIsPositive(r), z3.fpLT(r, _fp(2.0**127))]
    pre.append(z3.fpIsNormal(r) if normal else z3.fpIsSubnormal(r))
    gap = z3.fpAbs(z3.fpSub(z3.RNE(), r, r_hat))  # exact (Sterbenz: r_hat / 2 <= r <= 2 r_hat)
    return pre, z3.And(z3.fpLEQ(gap, z3.fpMul(z3.RNE(), r_hat, _fp(2.0**-8))), z3.fpIsNormal(r_hat))


@theorem("amla.compensation.residual_ratio", quick=False)
def prove_amla_compensation_residual_ratio() -> ProofResult:
    # c29bc10: Cast(nTmp_KvT, nTmp, CAST_ROUND); Cast(nUpdateTmp2, nTmp_KvT, CAST_NONE);
    #          Div(tmpCofUb, nTmp, nUpdateTmp2)
    pre, claim = _residual_ratio(normal=True)
    return prove("amla.compensation.residual_ratio", claim, pre,
                 statement="r positive normal FP32 below 2^127, r^ = round_away_bf16(r): |r - r^| <= 2^-8 r^, so "
                           "r / r^ and (rounding being monotone, 1 -+ 2^-8 being FP32 numbers) c = fl(r / r^) lie "
                           "in [1 - 2^-8, 1 + 2^-8]")


@theorem("amla.compensation.residual_ratio.control")
def prove_amla_compensation_residual_ratio_control() -> ProofResult:
    # precondition dropped: r normal (BF16's subnormal quantum 2^-133 is coarse relative to a subnormal r)
    pre, claim = _residual_ratio(normal=False)
    return prove("amla.compensation.residual_ratio.control", claim, pre, expect="refuted",
                 statement="the same for subnormal r")


def ratio_range(c_err: float) -> tuple[float, float]:
    """Return [fl(lo), fl(hi)] of the exact c_prev / c for c_prev, c in [1 - c_err, 1 + c_err] (rounding is monotone)."""
    lo, hi = Fraction(1) - Fraction(c_err), Fraction(1) + Fraction(c_err)
    return round_exact(lo / hi, Format.FP32), round_exact(hi / lo, Format.FP32)


def _eps_range(c_err: float) -> tuple[list, z3.BoolRef]:
    ratio = z3.FP("ratio", F32)  # fl(c_prev / c): Div(epsUb, cofValueUb[prev], tmpCofUb)
    lo, hi = ratio_range(c_err)
    pre = [z3.fpLEQ(_fp(lo), ratio), z3.fpLEQ(ratio, _fp(hi))]
    e = z3.fpSub(z3.RNE(), ratio, _fp(1.0))  # Adds(epsUb, epsUb, -1)
    k = z3.fpAdd(z3.RNE(), z3.fpMul(z3.RNE(), e, _fp(1.5)), _fp(BIAS))  # Muls 1.5; Adds 1e-6
    claim = z3.And(z3.fpLEQ(z3.fpAbs(e), _fp(E_MAX)), z3.fpLEQ(z3.fpAbs(k), _fp(K_MAX)))
    return pre, claim


@theorem("amla.compensation.eps_range", quick=False)
def prove_amla_compensation_eps_range() -> ProofResult:
    pre, claim = _eps_range(2.0**-8)
    lo, hi = ratio_range(2.0**-8)
    return prove("amla.compensation.eps_range", claim, pre,
                 statement=f"c_prev, c in [1 - 2^-8, 1 + 2^-8], so fl(c_prev / c) in [{lo!r}, {hi!r}]: "
                           "e = fl(ratio - 1) has |e| <= 0.00785 and k = fl(fl(1.5 e) + 1e-6) has |k| <= 0.0118")


@theorem("amla.compensation.eps_range.control", quick=False)
def prove_amla_compensation_eps_range_control() -> ProofResult:
    # precondition weakened: the residual error 2^-7 instead of 2^-8
    pre, claim = _eps_range(2.0**-7)
    return prove("amla.compensation.eps_range.control", claim, pre, expect="refuted",
                 statement="the same with c in [1 - 2^-7, 1 + 2^-7]")


def _n_range(dn_lo: int) -> tuple[list, z3.BoolRef]:
    dn, k = z3.FP("dn", F32), z3.FP("k", F32)
    dn_int = z3.BitVec("dn_int", 32)
    pre = [dn == z3.fpSignedToFP(z3.RNE(), dn_int, F32), in_range(dn_int, dn_lo, 0),  # integer-valued
           z3.fpLEQ(z3.fpAbs(k), _fp(K_MAX))]
    t = z3.fpMul(z3.RNE(), z3.fpAdd(z3.RNE(), dn, k), _fp(2.0**23))  # Add(nUpdateTmp, ..., epsUb); Muls 2^23
    big_n = z3.fpToSBV(z3.RNA(), t, z3.BitVecSort(32))  # Cast(nInt32Out, nUpdateTmp, CAST_ROUND)
    return pre, in_range(big_n, N_MIN, N_MAX)


@theorem("amla.compensation.n_range", quick=False)
def prove_amla_compensation_n_range() -> ProofResult:
    # c29bc10: Maxs(nUpdateTmp, nUpdateTmp, (T)(-30.0)) ... Cast(nInt32Out, nUpdateTmp, RoundMode::CAST_ROUND)
    pre, claim = _n_range(-30)
    return prove("amla.compensation.n_range", claim, pre,
                 statement=f"dn integer in [-30, 0], |k| <= 0.0118: N = round_away(fl(fl(dn + k) 2^23)) "
                           f"is in [{N_MIN}, {N_MAX}]")


@theorem("amla.compensation.n_range.control", quick=False)
def prove_amla_compensation_n_range_control() -> ProofResult:
    # precondition weakened: the clamp at -30 removed (dn = -31 allowed)
    pre, claim = _n_range(-31)
    return prove("amla.compensation.n_range.control", claim, pre, expect="refuted",
                 statement="the N range with dn = -31 allowed")
