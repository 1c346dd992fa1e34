"""T2: where the exponent add fails, what it returns there, and what the CANN clamp and guard do make safe.

Outside T1's domain (``proofs/amla_identity.py``) the trick y = as_fp32(bits(x) + (n << 23))
is wrong in five ways. For each, a witness (T1's claim refuted inside the case, replayed in
numpy with ``spec.amla.exponent_add``) and a proved statement of what y is:

==========================  ====================================================================
case                        result (proved)
==========================  ====================================================================
x = +-0, n in [-30, -1]     the sign flips and y is +-Inf or |y| >= 2^99 (AMLA's dn range)
subnormal x, n >= 1         y is normal, same sign, |y| > |fl(x 2^n)|: the hidden bit appears
subnormal x, n <= -1        y is NaN or has the opposite sign
e + n = 0                   y is subnormal or zero, same sign, |y| < |fl(x 2^n)|: the hidden bit is lost
e + n <= -1                 y is NaN or has the opposite sign
e + n = 255                 y is +-Inf (f = 0, equal to the overflowed product) or NaN (f != 0)
e + n >= 256                y is finite with the opposite sign
x = +-Inf or NaN, n <= -1   y is finite: infinities and NaNs are laundered into numbers
==========================  ====================================================================

What does hold in the shipped kernel, where the word added is N = round((max(dn, -30) + k) 2^23)
with |k| < 0.0118, i.e. N in [N_MIN, N_MAX] = [-30 * 2^23 - 2^17, 2^17]
(``spec.amla.N_MIN``; proved in ``proofs/amla_compensation.py``):

- ``clamped_add_keeps_normal``: every finite x with e in [32, 253] (2^-95 <= |x| < 2^127) stays
  a normal number of the same sign, its exponent moving by at most -31..+1. So no element
  of O above min_normal * 2^31 is ever corrupted (negative control: e = 31 is not enough).
- ``zero_is_guarded``: x = +-0 becomes NaN, +-Inf or |y| > 1e10 (the guard zeroes it at the
  end), unless N >= 0, where it becomes a subnormal of at most 2^-132 (harmless). Either way
  the contributions later added to a guarded element are lost: the zero hole.
- ``zero_hole_escape``: after three further rescales with dn <= -1 a corrupted zero is still
  above 1e10 (or NaN/Inf); after a fourth it can fall below 1e10 and escape the guard
  (the negative control finds such a chain, replayed with ``spec.amla.int32_add``).
  These chains are of INT32 adds only; between them the kernel adds P~ V in FP32, which
  cannot move a value of magnitude >= 2^36 by more than |P~ V|.
"""

from __future__ import annotations

import numpy as np
import z3

from attnspec.proofs._core import F32, ProofResult, prove, theorem
from attnspec.proofs.amla_identity import (Word, exp_add, in_range, int_add, model_word, replay_identity, scaled_rne,
                                           word)
from attnspec.spec.amla import N_MAX, N_MIN, int32_add

GUARD = z3.FPVal(1e10, F32)  # c29bc10 DealBmm2ResBaseBlock: CompareScalar(|O|, 1e10, LE)
DN_MINUS_ONE_MAX = -2**23 + N_MAX  # the largest N with dn <= -1


def _flipped(x: Word, y: Word) -> z3.BoolRef:
    return x.sign != y.sign


def _nan_or_flipped(x: Word, y: Word) -> z3.BoolRef:
    return z3.Or(z3.fpIsNaN(y.value), _flipped(x, y))


def _guarded(y: Word) -> z3.BoolRef:
    """Return whether V2's guard zeroes y: not |y| <= 1e10 (true for NaN and Inf)."""
    return z3.Not(z3.fpLEQ(z3.fpAbs(y.value), GUARD))


def _case(name: str, pre, claim, statement: str, expect: str = "proved", confirm=None) -> ProofResult:
    return prove(name, claim, pre, statement=statement, expect=expect, confirm=confirm)


def _witness(name: str, pre_of, statement: str) -> ProofResult:
    """Return T1's claim refuted on the case ``pre_of(x, n)``, replayed in numpy."""
    x, n = word("x"), z3.BitVec("n", 32)
    return _case(name, pre_of(x, n), exp_add(x, n).value == scaled_rne(x, n),
                 f"as_fp32(bits(x) + (n << 23)) == RNE(x * 2^n) for {statement}", "refuted", replay_identity(x, n))


def _result(name: str, pre_of, claim_of, statement: str, expect: str = "proved") -> ProofResult:
    """Return the claim ``claim_of(x, n, y)`` on the case ``pre_of(x, n)``, y = exp_add(x, n)."""
    x, n = word("x"), z3.BitVec("n", 32)
    return _case(name, pre_of(x, n), claim_of(x, n, exp_add(x, n)), statement, expect)


# ----------------------------------------------------------------------------------------------
# The failure set, case by case
# ----------------------------------------------------------------------------------------------

def _zero(x: Word, n, lo: int = -30):
    return [z3.Or(x.bits == 0, x.bits == 0x80000000), in_range(n, lo, -1)]


def _zero_result(x, n, y):
    return z3.And(_flipped(x, y), z3.Or(z3.fpIsInf(y.value), z3.fpGEQ(z3.fpAbs(y.value), z3.FPVal(2.0**99, F32))))


@theorem("amla.failures.zero")
def prove_amla_failures_zero() -> ProofResult:
    # O element exactly 0 when c29bc10 ProcessAmlaNupdate adds N = dn << 23, dn in [-30, -1]
    return _result("amla.failures.zero", _zero, _zero_result,
                   "x = +-0, n in [-30, -1]: y has the opposite sign and is +-Inf or |y| >= 2^99")


@theorem("amla.failures.zero.witness")
def prove_amla_failures_zero_witness() -> ProofResult:
    return _witness("amla.failures.zero.witness", _zero, "x = +-0, n in [-30, -1]")


@theorem("amla.failures.zero.control")
def prove_amla_failures_zero_control() -> ProofResult:
    # range weakened: n = -31 gives 2^98, below the stated 2^99
    return _result("amla.failures.zero.control", lambda x, n: _zero(x, n, -31), _zero_result,
                   "the zero result with n in [-31, -1]", "refuted")


def _subnormal(x: Word, n, lo: int, hi: int):
    return [x.e == 0, x.f != 0, in_range(n, lo, hi)]


def _subnormal_up(x, n, y):
    return z3.And(z3.fpIsNormal(y.value), x.sign == y.sign, z3.fpGT(z3.fpAbs(y.value), z3.fpAbs(scaled_rne(x, n))))


@theorem("amla.failures.subnormal_up", quick=False)
def prove_amla_failures_subnormal_up() -> ProofResult:
    return _result("amla.failures.subnormal_up", lambda x, n: _subnormal(x, n, 1, 253), _subnormal_up,
                   "subnormal x, n in [1, 253]: y is normal, same sign, and |y| > |RNE(x * 2^n)|")


@theorem("amla.failures.subnormal_up.control", quick=False)
def prove_amla_failures_subnormal_up_control() -> ProofResult:
    # precondition weakened: n = 0 (no rescale) leaves y = x
    return _result("amla.failures.subnormal_up.control", lambda x, n: _subnormal(x, n, 0, 253), _subnormal_up,
                   "the subnormal_up result with n = 0 allowed", "refuted")


@theorem("amla.failures.subnormal_down")
def prove_amla_failures_subnormal_down() -> ProofResult:
    return _result("amla.failures.subnormal_down", lambda x, n: _subnormal(x, n, -253, -1),
                   lambda x, n, y: _nan_or_flipped(x, y),
                   "subnormal x, n in [-253, -1]: y is NaN or has the opposite sign")


@theorem("amla.failures.subnormal_down.control")
def prove_amla_failures_subnormal_down_control() -> ProofResult:
    return _result("amla.failures.subnormal_down.control", lambda x, n: _subnormal(x, n, -253, 0),
                   lambda x, n, y: _nan_or_flipped(x, y), "the subnormal_down result with n = 0 allowed", "refuted")


@theorem("amla.failures.subnormal.witness")
def prove_amla_failures_subnormal_witness() -> ProofResult:
    return _witness("amla.failures.subnormal.witness", lambda x, n: _subnormal(x, n, -253, 253) + [n != 0],
                    "subnormal x, n != 0")


def _underflow(x: Word, n, lo: int, hi: int):
    return [in_range(x.e, 1, 254), in_range(n, -253, 253), in_range(x.e + n, lo, hi)]


def _underflow_to_subnormal(x, n, y):
    return z3.And(z3.Or(z3.fpIsSubnormal(y.value), z3.fpIsZero(y.value)), x.sign == y.sign,
                  z3.fpLT(z3.fpAbs(y.value), z3.fpAbs(scaled_rne(x, n))))


@theorem("amla.failures.underflow_to_zero_exponent")
def prove_amla_failures_underflow_to_zero_exponent() -> ProofResult:
    return _result("amla.failures.underflow_to_zero_exponent", lambda x, n: _underflow(x, n, 0, 0),
                   _underflow_to_subnormal,
                   "normal x, e + n = 0: y is subnormal or zero, same sign, |y| < |RNE(x * 2^n)|")


@theorem("amla.failures.underflow_to_zero_exponent.control")
def prove_amla_failures_underflow_to_zero_exponent_control() -> ProofResult:
    return _result("amla.failures.underflow_to_zero_exponent.control", lambda x, n: _underflow(x, n, 0, 1),
                   _underflow_to_subnormal, "the e + n = 0 result with e + n = 1 allowed", "refuted")


@theorem("amla.failures.underflow_past_zero")
def prove_amla_failures_underflow_past_zero() -> ProofResult:
    return _result("amla.failures.underflow_past_zero", lambda x, n: _underflow(x, n, -253, -1),
                   lambda x, n, y: _nan_or_flipped(x, y),
                   "normal x, e + n <= -1: y is NaN or has the opposite sign (the borrow reaches the sign bit)")


@theorem("amla.failures.underflow_past_zero.control")
def prove_amla_failures_underflow_past_zero_control() -> ProofResult:
    return _result("amla.failures.underflow_past_zero.control", lambda x, n: _underflow(x, n, -253, 0),
                   lambda x, n, y: _nan_or_flipped(x, y), "the e + n <= -1 result with e + n = 0 allowed", "refuted")


@theorem("amla.failures.underflow.witness")
def prove_amla_failures_underflow_witness() -> ProofResult:
    return _witness("amla.failures.underflow.witness", lambda x, n: _underflow(x, n, -253, 0), "normal x, e + n <= 0")


def _overflow_result(x, n, y):
    return z3.And(z3.Implies(x.e + n == 255, z3.Or(z3.And(x.f == 0, y.value == scaled_rne(x, n)),
                                                   z3.And(x.f != 0, z3.fpIsNaN(y.value)))),
                  z3.Implies(x.e + n >= 256, z3.And(_flipped(x, y), z3.Not(z3.fpIsInf(y.value)),
                                                    z3.Not(z3.fpIsNaN(y.value)))))


@theorem("amla.failures.overflow", quick=False)
def prove_amla_failures_overflow() -> ProofResult:
    return _result("amla.failures.overflow", lambda x, n: _underflow(x, n, 255, 507), _overflow_result,
                   "normal x, e + n = 255: y = +-Inf = RNE(x * 2^n) if f = 0, NaN if f != 0; "
                   "e + n >= 256: y is finite with the opposite sign")


@theorem("amla.failures.overflow.control")
def prove_amla_failures_overflow_control() -> ProofResult:
    # the same statement claimed for e + n = 254 too, where y is the (finite) product
    def claim(x, n, y):
        return z3.Or(z3.fpIsInf(y.value), z3.fpIsNaN(y.value), _flipped(x, y))

    return _result("amla.failures.overflow.control", lambda x, n: _underflow(x, n, 254, 507), claim,
                   "y is Inf, NaN or sign-flipped for e + n >= 254", "refuted")


@theorem("amla.failures.overflow.witness")
def prove_amla_failures_overflow_witness() -> ProofResult:
    return _witness("amla.failures.overflow.witness", lambda x, n: _underflow(x, n, 255, 507), "normal x, e + n >= 255")


def _special(x: Word, n, hi: int):
    return [x.e == 255, in_range(n, -253, hi)]


def _finite(x, n, y):
    return z3.Not(z3.Or(z3.fpIsInf(y.value), z3.fpIsNaN(y.value)))


@theorem("amla.failures.inf_nan")
def prove_amla_failures_inf_nan() -> ProofResult:
    return _result("amla.failures.inf_nan", lambda x, n: _special(x, n, -1), _finite,
                   "x = +-Inf or NaN, n in [-253, -1]: y is a finite number")


@theorem("amla.failures.inf_nan.control")
def prove_amla_failures_inf_nan_control() -> ProofResult:
    return _result("amla.failures.inf_nan.control", lambda x, n: _special(x, n, 0), _finite,
                   "the Inf/NaN result with n = 0 allowed", "refuted")


@theorem("amla.failures.inf_nan.witness")
def prove_amla_failures_inf_nan_witness() -> ProofResult:
    return _witness("amla.failures.inf_nan.witness", lambda x, n: _special(x, n, -1), "x = +-Inf or NaN, n <= -1")


# ----------------------------------------------------------------------------------------------
# What the CANN clamp and guard make safe
# ----------------------------------------------------------------------------------------------

def _clamped_add(e_lo: int) -> tuple[list, z3.BoolRef]:
    x, big_n = word("x"), z3.BitVec("N", 32)
    y = int_add(x, big_n)
    pre = [in_range(x.e, e_lo, 253), in_range(big_n, N_MIN, N_MAX)]
    claim = z3.And(z3.fpIsNormal(y.value), x.sign == y.sign, in_range(y.e - x.e, -31, 1))
    return pre, claim


@theorem("amla.failures.clamped_add_keeps_normal")
def prove_amla_failures_clamped_add_keeps_normal() -> ProofResult:
    # c29bc10 AmlaVecCompute: Maxs(nUpdateTmp, nUpdateTmp, -30.0) ... Cast(nInt32Out, ..., CAST_ROUND)
    pre, claim = _clamped_add(32)
    return prove("amla.failures.clamped_add_keeps_normal", claim, pre,
                 statement=f"x with e in [32, 253] and N in [{N_MIN}, {N_MAX}]: as_fp32(bits(x) + N) is normal, "
                           "has x's sign, and its exponent is within e - 31 .. e + 1")


@theorem("amla.failures.clamped_add_keeps_normal.control")
def prove_amla_failures_clamped_add_keeps_normal_control() -> ProofResult:
    pre, claim = _clamped_add(31)
    return prove("amla.failures.clamped_add_keeps_normal.control", claim, pre, expect="refuted",
                 statement="the same for e in [31, 253]")


def _zero_claim(harmless: bool):
    x, big_n = word("x"), z3.BitVec("N", 32)
    y = int_add(x, big_n)
    pre = [z3.Or(x.bits == 0, x.bits == 0x80000000), in_range(big_n, N_MIN, N_MAX)]
    claim = _guarded(y)
    if harmless:
        claim = z3.Or(claim, z3.And(big_n >= 0, z3.fpLEQ(z3.fpAbs(y.value), z3.FPVal(2.0**-132, F32))))
    return pre, claim


@theorem("amla.failures.zero_is_guarded")
def prove_amla_failures_zero_is_guarded() -> ProofResult:
    # c29bc10 DealBmm2ResBaseBlock: Abs; CompareScalar(cmpMaskUb, absBmm2ResUb, 1e10, LE); Select(..., FLOAT_ZERO)
    pre, claim = _zero_claim(harmless=True)
    return prove("amla.failures.zero_is_guarded", claim, pre,
                 statement=f"x = +-0, N in [{N_MIN}, {N_MAX}]: as_fp32(bits(x) + N) is zeroed by the 1e10 guard "
                           "(NaN, Inf or |y| > 1e10), or N >= 0 and |y| <= 2^-132")


@theorem("amla.failures.zero_is_guarded.control")
def prove_amla_failures_zero_is_guarded_control() -> ProofResult:
    pre, claim = _zero_claim(harmless=False)
    return prove("amla.failures.zero_is_guarded.control", claim, pre, expect="refuted",
                 statement="every zero is zeroed by the guard after one clamped add (the N >= 0 case dropped)")


def _chain(adds: int) -> tuple[list, z3.BoolRef, list]:
    x = word("x")
    ns = [z3.BitVec(f"N{i}", 32) for i in range(adds)]
    y = x
    for big_n in ns:
        y = int_add(y, big_n)
    pre = [z3.Or(x.bits == 0, x.bits == 0x80000000)] + [in_range(big_n, N_MIN, DN_MINUS_ONE_MAX) for big_n in ns]
    return pre, _guarded(y), ns


def _replay_chain(ns):
    def confirm(model: z3.ModelRef) -> str:
        words = [model_word(model, big_n) for big_n in ns]
        y = np.zeros(1)
        for big_n in words:
            y = int32_add(y, big_n)
        if not (np.isfinite(y[0]) and abs(y[0]) <= 1e10):
            raise AssertionError(f"chain {words} from 0 gives {y[0]!r} in numpy: guarded after all")
        return f"replayed with spec.amla.int32_add: 0 -> N = {words} -> {float(y[0])!r}, below the 1e10 guard"

    return confirm


@theorem("amla.failures.zero_hole_escape")
def prove_amla_failures_zero_hole_escape() -> ProofResult:
    pre, claim, _ = _chain(3)
    return prove("amla.failures.zero_hole_escape", claim, pre,
                 statement=f"from x = +-0, three INT32 adds with N in [{N_MIN}, {DN_MINUS_ONE_MAX}] (dn <= -1 each) "
                           "leave a value the guard zeroes")


@theorem("amla.failures.zero_hole_escape.control")
def prove_amla_failures_zero_hole_escape_control() -> ProofResult:
    pre, claim, ns = _chain(4)
    return prove("amla.failures.zero_hole_escape.control", claim, pre, expect="refuted",
                 statement="the same after four adds", confirm=_replay_chain(ns))

