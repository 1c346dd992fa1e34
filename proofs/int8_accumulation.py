"""INT32 accumulation of INT8 products cannot overflow for K <= 133,144, and can for K = 133,145.

Claim (``reference/int8.py``, after arXiv:2506.12708v3 §5.5.3 "INT8 in, INT32 accumulate"):

    acc = 0;  for k in range(K): acc += int32(Xq[t, k]) * int32(Wq[o, k])     (the Cube's INT32 MAC)
    Xq, Wq in [-127, 127]  (Q saturates symmetrically)                        int8.saturate

never leaves [-2^31, 2^31 - 1] (no wrap-around, no saturation, in any order of the k) when
K <= INT32_SAFE_K = floor((2^31 - 1) / 127^2) = 133,144.

Proof by induction on the number of terms, checked by Z3 on 32-bit two's-complement
bit-vectors: the invariant |acc_k| <= k 127^2 holds for k = 0 (acc = 0), and one symbolic
step from any k < K_max preserves it and does not overflow (``z3.BVAddNoOverflow`` /
``BVAddNoUnderflow``, signed). As every prefix sum is bounded, the result holds for any
summation order and for saturating accumulators too.

Negative controls: the same step with K_max + 1 terms has a counterexample, and the witness
K_max + 1 products 127 * 127 = 2,147,495,705 > 2^31 - 1 is replayed in exact integers, so
133,145 is the first K at which overflow can happen; with the range weakened to the full
INT8 range [-128, 127] (a quantiser that saturates to -128) the step fails already below
K_max: (-128)^2 = 16,384 gives the threshold floor((2^31 - 1) / 16384) = 131,071.
"""

from __future__ import annotations

import z3

from attnspec.proofs._core import BV32, ProofResult, prove, theorem
from attnspec.reference.int8 import INT32_MAX, INT32_MIN, INT32_SAFE_K, QMAX, QMIN

BV64 = z3.BitVecSort(64)


def accumulation_step(k_max: int, qmin: int, qmax: int) -> tuple[z3.BoolRef, list[z3.BoolRef], dict]:
    """Return (claim, assumptions, variables) of one inductive step of INT32 accumulation.

    The bound after k terms, L_k = k b (b the largest |product|), is a variable L with
    0 <= L <= (k_max - 1) b: every L_k of a step that stays within k_max terms is such an L,
    and the step adds b. This keeps multiplication out of the query (Z3 times out on k * b).
    """
    acc = z3.Const("acc", BV32)  # the accumulator after k terms
    bound = z3.Const("L", BV64)  # L_k = k b
    x, w = z3.BitVecs("x w", 8)
    b = max(qmin * qmin, qmax * qmax)

    def wide(v):  # exact integer value of a signed 32-bit word, in 64 bits
        return z3.SignExt(32, v)

    x16, w16 = z3.SignExt(8, x), z3.SignExt(8, w)
    product = z3.SignExt(16, x16 * w16)  # int32(Xq) * int32(Wq), formed in 16 bits (|.| <= 2^14)
    assumptions = [
        z3.ULE(bound, (k_max - 1) * b),  # one more term keeps the count <= k_max
        x >= qmin, x <= qmax, w >= qmin, w <= qmax,  # signed comparisons on the 8-bit words
        wide(acc) <= bound, wide(acc) >= -bound,  # the invariant after k terms
    ]
    new = acc + product  # acc += Xq * Wq in INT32
    claim = z3.And(z3.BVMulNoOverflow(x16, w16, True), z3.BVAddNoOverflow(acc, product, True),
                   z3.BVAddNoUnderflow(acc, product), wide(new) <= bound + b, wide(new) >= -(bound + b))
    return claim, assumptions, {"acc": acc, "L": bound, "x": x, "w": w}


def _witness(bound_model: int, terms: int, q: int) -> str:
    """Return a note replaying ``terms`` products q * q in exact integers; raise unless they overflow INT32.

    ``bound_model`` is the counterexample's L: it must lie beyond the proved range (terms - 2) q^2.
    """
    if bound_model <= (terms - 2) * q * q and q == QMAX:
        raise AssertionError(f"the counterexample has L = {bound_model}, inside the proved range")
    total = terms * q * q
    if INT32_MIN <= total <= INT32_MAX:
        raise AssertionError(f"{terms} products {q}*{q} sum to {total}, which fits INT32: not a counterexample")
    first = INT32_MAX // (q * q) + 1
    return (f"replayed: {terms} products {q}*{q} = {total} > 2^31 - 1; "
            f"first overflowing K for |q| <= {abs(q)} is {first}")


@theorem("int8.int32_accumulation_no_overflow")
def prove_int32_accumulation_no_overflow() -> ProofResult:
    """K <= 133,144 products of [-127, 127] values never overflow an INT32 accumulator (every prefix)."""
    claim, assumptions, _ = accumulation_step(INT32_SAFE_K, QMIN, QMAX)
    return prove("int8.int32_accumulation_no_overflow", claim, assumptions,
                 statement=f"|acc_k| <= k*127^2 and acc_k in INT32 for every k <= {INT32_SAFE_K} (inductive step)")


@theorem("int8.int32_accumulation_overflows_one_past")
def prove_int32_accumulation_overflows_one_past() -> ProofResult:
    """Negative control: with K_max + 1 = 133,145 terms the step fails, and the all-127 witness overflows."""
    k_max = INT32_SAFE_K + 1
    claim, assumptions, v = accumulation_step(k_max, QMIN, QMAX)
    return prove("int8.int32_accumulation_overflows_one_past", claim, assumptions, expect="refuted",
                 statement=f"the step with K_max = {k_max} (one past the bound) has a counterexample",
                 confirm=lambda m: _witness(m.eval(v["L"]).as_long(), k_max, QMAX))


@theorem("int8.int32_accumulation_full_int8_range")
def prove_int32_accumulation_full_int8_range() -> ProofResult:
    """Negative control: saturating to [-128, 127] breaks the bound (-128 * -128 = 16,384 > 127^2)."""
    claim, assumptions, v = accumulation_step(INT32_SAFE_K, -128, QMAX)
    return prove("int8.int32_accumulation_full_int8_range", claim, assumptions, expect="refuted",
                 statement=f"with Xq, Wq in [-128, 127] the step up to K = {INT32_SAFE_K} has a counterexample",
                 confirm=lambda m: _witness(m.eval(v["L"]).as_long(), INT32_MAX // 128**2 + 1, -128))
