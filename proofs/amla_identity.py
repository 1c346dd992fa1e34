"""T1: adding n << 23 to the bits of a normal FP32 x multiplies it by 2^n exactly, when the exponent stays in range.

Claim (AMLA, arXiv 2509.25224 §3.1; ``spec/amla.py::exponent_add`` and its domain
``exponent_add_domain``): for every FP32 word x with biased exponent e in [1, 254] (x normal,
either sign) and every integer n with e + n in [1, 254],

    as_fp32(bits(x) + (n << 23)) == RNE_FP32(x * 2^n)

where the right side is the correctly rounded product (here exact). Bit-precise: x is a
32-bit vector read through ``fpBVToFP`` (FPSort(8, 24)); 2^n is built in FPSort(10, 24), whose
exponent range holds every 2^n with |n| <= 253, so the product x * 2^n is formed exactly
there and then rounded (ties to even) into FP32. Equality is SMT equality of FP values
(+0 and -0 differ; there is no NaN in the domain).

Negative controls drop one precondition each: x subnormal (e = 0), e + n = 0 (underflow),
e + n = 255 (overflow); the solver must produce a counterexample, which is replayed with
``spec.amla.exponent_add`` and ``spec.formats.round_to`` in numpy. What the trick returns
outside the domain is ``proofs/amla_failures.py``.

Solver: z3-solver 5.4.1.0 (see ``proofs/_core.py``); the proved claim takes ~0.3 s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import z3

from attnspec.proofs._core import F32, ProofResult, prove, theorem
from attnspec.spec.amla import exponent_add, exponent_add_domain
from attnspec.spec.formats import Format, from_bits, round_to

#: A float format wide enough to hold x * 2^n exactly for every x in FP32 and |n| <= 253.
WIDE = z3.FPSort(10, 24)
WIDE_BIAS = 511


@dataclass(frozen=True)
class Word:
    """One FP32 word as a Z3 bit-vector, with its fields and its value."""

    bits: z3.BitVecRef

    @property
    def sign(self) -> z3.BitVecRef:
        return z3.Extract(31, 31, self.bits)

    @property
    def e(self) -> z3.BitVecRef:
        """The biased exponent field, zero-extended to 32 bits (compare it unsigned or as a small int)."""
        return z3.ZeroExt(24, z3.Extract(30, 23, self.bits))

    @property
    def f(self) -> z3.BitVecRef:
        """The 23-bit trailing significand field, zero-extended to 32 bits."""
        return z3.ZeroExt(9, z3.Extract(22, 0, self.bits))

    @property
    def value(self) -> z3.FPRef:
        return z3.fpBVToFP(self.bits, F32)


def word(name: str) -> Word:
    """Return a fresh symbolic FP32 word."""
    return Word(z3.BitVec(name, 32))


def int_add(x: Word, n: z3.BitVecRef) -> Word:
    """Return the word bits(x) + n (mod 2^32): the INT32 add of ``spec.amla.int32_add``."""
    return Word(x.bits + n)


def exp_add(x: Word, n: z3.BitVecRef) -> Word:
    """Return bits(x) + (n << 23): ``spec.amla.exponent_add``."""
    return int_add(x, n << 23)


def scaled_rne(x: Word, n: z3.BitVecRef) -> z3.FPRef:
    """Return RNE_FP32(x * 2^n) for |n| <= 253: exact product in FPSort(10, 24), then one rounding."""
    power = z3.fpBVToFP(z3.Concat(z3.BitVecVal(0, 1), z3.Extract(9, 0, n + WIDE_BIAS), z3.BitVecVal(0, 23)), WIDE)
    product = z3.fpMul(z3.RNE(), z3.fpFPToFP(z3.RNE(), x.value, WIDE), power)
    return z3.fpFPToFP(z3.RNE(), product, F32)


def in_range(v: z3.BitVecRef, lo: int, hi: int) -> z3.BoolRef:
    """Return lo <= v <= hi for a bit-vector read as a signed integer."""
    return z3.And(v >= lo, v <= hi)


def model_word(model: z3.ModelRef, v: z3.BitVecRef) -> int:
    """Return the value of a bit-vector in ``model`` as a signed 32-bit int."""
    raw = model.eval(v, model_completion=True).as_long()
    return raw - 2**32 if raw >= 2**31 else raw


def replay_identity(x: Word, n: z3.BitVecRef):
    """Return a ``confirm`` hook: replay (x, n) with spec.amla.exponent_add against round_to(x * 2^n)."""

    def confirm(model: z3.ModelRef) -> str:
        bits = model_word(model, x.bits) % 2**32
        shift = model_word(model, n)
        value = from_bits(np.array([bits], dtype=np.uint32), Format.FP32)
        got = exponent_add(value, shift)
        want = round_to(np.ldexp(value, shift), Format.FP32)
        same = (got == want) & (np.signbit(got) == np.signbit(want)) | (np.isnan(got) & np.isnan(want))
        if bool(same[0]) or bool(exponent_add_domain(value, shift)[0]):
            raise AssertionError(f"x=0x{bits:08x}, n={shift}: no counterexample in numpy ({got[0]} vs {want[0]})")
        return (f"replayed in numpy: x=0x{bits:08x}, n={shift}: trick gives {float(got[0])!r}, "
                f"fl(x*2^n) = {float(want[0])!r}")

    return confirm


def identity_claim(pre_edit=None, name: str = "amla.identity", expect: str = "proved",
                   statement: str = "") -> ProofResult:
    """Return T1 (``pre_edit`` None) or a control whose preconditions ``pre_edit(x, n, pre)`` replaces."""
    x, n = word("x"), z3.BitVec("n", 32)
    pre = [in_range(x.e, 1, 254), in_range(n, -253, 253), in_range(x.e + n, 1, 254)]
    if pre_edit is not None:
        pre = pre_edit(x, n, pre)
    return prove(name, exp_add(x, n).value == scaled_rne(x, n), pre, expect=expect, timeout_s=30,
                 statement=statement or "as_fp32(bits(x) + (n << 23)) == RNE(x * 2^n) for x with e in [1, 254] "
                                        "(both signs) and e + n in [1, 254]",
                 confirm=replay_identity(x, n) if expect == "refuted" else None)


@theorem("amla.identity")
def prove_amla_identity() -> ProofResult:
    # c29bc10 ProcessAmlaNupdate: SetAtomicAdd<int32_t>(); DataCopy(mm2ResInt32Gm[...], nUpdate broadcast)
    #   i.e. as_int32(O) += N with N = dn << 23 when the compensation is zero
    return identity_claim()


@theorem("amla.identity.control.subnormal")
def prove_amla_identity_control_subnormal() -> ProofResult:
    # precondition weakened: e >= 1 dropped (x may be zero or subnormal)
    return identity_claim(lambda x, n, pre: [in_range(x.e, 0, 254)] + pre[1:], "amla.identity.control.subnormal",
                          "refuted", "T1 with e = 0 allowed (zero and subnormal x)")


@theorem("amla.identity.control.underflow", quick=False)
def prove_amla_identity_control_underflow() -> ProofResult:
    # precondition weakened: e + n >= 1 relaxed to e + n >= 0
    return identity_claim(lambda x, n, pre: pre[:2] + [in_range(x.e + n, 0, 254)], "amla.identity.control.underflow",
                          "refuted", "T1 with e + n = 0 allowed")


@theorem("amla.identity.control.overflow")
def prove_amla_identity_control_overflow() -> ProofResult:
    # precondition weakened: e + n <= 254 relaxed to e + n <= 255
    return identity_claim(lambda x, n, pre: pre[:2] + [in_range(x.e + n, 1, 255)], "amla.identity.control.overflow",
                          "refuted", "T1 with e + n = 255 allowed")
